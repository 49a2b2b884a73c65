"""Seeding and RNG state that travels with checkpoints.

Lightning's checkpoints restore model, optimiser, scheduler, loops and epoch, but not the random
number generators. :class:`RNGStateCallback` adds the Python, NumPy and torch (CPU and CUDA)
generator states to every checkpoint and restores them on resume, so a resumed run draws the same
augmentations, shuffles and mixup coefficients as an uninterrupted one. States are stored as
tensors and lists only, so the checkpoint still loads with ``weights_only=True``.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, seed_everything

__all__ = ["seed_everything", "RNGStateCallback", "get_rng_state", "set_rng_state"]


def get_rng_state() -> dict[str, Any]:
    """Current RNG states as weights-only-safe values."""
    py = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {"name": name, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore states produced by :func:`get_rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RNGStateCallback(Callback):
    """Save the RNG states in each checkpoint; restore them when a run resumes."""

    def state_dict(self) -> dict[str, Any]:
        """The RNG states, stored in the checkpoint."""
        return get_rng_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep a checkpoint's RNG states until training starts."""
        self._pending: dict[str, Any] | None = state_dict

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """Restore the pending RNG states (after Lightning's own set-up may have drawn numbers)."""
        # Restore as late as possible, after Lightning's own setup may have drawn numbers.
        pending = getattr(self, "_pending", None)
        if pending is not None:
            set_rng_state(pending)
            self._pending = None
