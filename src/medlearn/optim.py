"""Learning-rate schedules shared by the methods (epoch-based)."""

from __future__ import annotations

import math

import torch

__all__ = ["build_scheduler"]


def build_scheduler(opt: torch.optim.Optimizer, kind: str, max_epochs: int, milestones: list[int] | None = None,
                    warmup_epochs: int = 0, gamma: float = 0.1) -> torch.optim.lr_scheduler.LRScheduler:
    """Epoch-stepped schedule: ``"step"`` (x gamma at milestones), ``"cosine"`` or ``"constant"``,
    each with optional linear warm-up over ``warmup_epochs``.
    """
    max_epochs = max(1, int(max_epochs))
    milestones = sorted(milestones or [])

    def factor(epoch: int) -> float:
        w = 1.0 if warmup_epochs <= 0 or epoch >= warmup_epochs else (epoch + 1) / (warmup_epochs + 1)
        if kind == "step":
            return w * gamma ** sum(epoch >= m for m in milestones)
        if kind == "cosine":
            return w * 0.5 * (1 + math.cos(math.pi * min(epoch, max_epochs) / max_epochs))
        if kind == "constant":
            return w
        raise ValueError(f"schedule must be 'step', 'cosine' or 'constant', got {kind!r}")

    factor(0)  # validate kind now, not at the first epoch end
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)
