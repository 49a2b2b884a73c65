"""Safe checkpoint I/O and loud partial loading.

- Reading: always ``torch.load(..., weights_only=True)``: a checkpoint from a colleague or the web
  cannot execute code. medlearn checkpoints hold only tensors and plain Python values.
- Writing: atomic (temp file in the same folder, ``fsync``, ``os.replace``), so a run killed while
  saving never leaves a truncated ``last.ckpt`` behind.
- :func:`load_pretrained` moves weights between models (a C2L encoder into a classifier backbone),
  mapping key prefixes and failing loudly when something that should load does not.
- Checkpoints written by other code bases (a paper's released weights) are read through an
  importer that a method registers (:func:`register_importer`): it recognises the foreign layout
  and rewrites it into the layout of the medlearn module it corresponds to, so
  ``pretrained: <their file>`` works like ``pretrained: <a medlearn checkpoint>``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn

from medlearn.io.errors import DataError

__all__ = ["AtomicCheckpointIO", "atomic_save", "safe_load", "load_pretrained", "load_encoder", "encoder_prefix_of",
           "LoadReport", "CheckpointError", "CheckpointImporter", "register_importer", "list_importers",
           "read_checkpoint", "grey_from_rgb"]


class CheckpointError(DataError):
    """A checkpoint that cannot be used (unreadable, or keys that do not fit the model)."""


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temp file beside ``path``, then rename over it (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@dataclass(frozen=True)
class CheckpointImporter:
    """Reads one foreign checkpoint layout (see :func:`register_importer`).

    Attributes:
        name: what the layout is, for messages (``"C2L official (funnyzhou/C2L_MICCAI2020)"``).
        detect: ``detect(checkpoint) -> bool`` on the loaded dict.
        convert: ``convert(checkpoint, where) -> dict``: a medlearn-layout checkpoint,
            ``{"state_dict": {...}, "medlearn": {"module": ..., "encoder_prefix": ..., ...}}``;
            ``medlearn["rgb_inputs"]`` may list first-convolution keys whose weights expect RGB
            input (:func:`load_pretrained` folds them for grey models). Raises
            :class:`CheckpointError` when the layout is recognised but incomplete.
        safe_globals: plain-data classes the layout pickles besides tensors (e.g.
            ``argparse.Namespace`` for saved command-line options), allowed in weights-only reads.
    """

    name: str
    detect: Callable[[Mapping[str, Any]], bool]
    convert: Callable[[Mapping[str, Any], str], dict[str, Any]]
    safe_globals: tuple[type, ...] = ()


_IMPORTERS: dict[str, CheckpointImporter] = {}


def register_importer(importer: CheckpointImporter) -> CheckpointImporter:
    """Teach :func:`read_checkpoint` (and so :func:`load_pretrained`) a foreign checkpoint layout.

    A method registers the importers of its authors' released weights when it is imported
    (``import medlearn.methods`` registers them all; the CLI does). Re-registering a name replaces it.
    """
    _IMPORTERS[importer.name] = importer
    return importer


def list_importers() -> list[str]:
    """Names of the registered foreign checkpoint layouts."""
    return list(_IMPORTERS)


def safe_load(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``.

    Besides tensors and plain Python values, only the plain-data classes that registered importers
    declare (:attr:`CheckpointImporter.safe_globals`) may be unpickled.

    Raises:
        CheckpointError: missing, truncated or not a medlearn/PyTorch checkpoint, or one that needs
            arbitrary code to unpickle.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "checkpoint file not found")
    classes = sorted({c for imp in _IMPORTERS.values() for c in imp.safe_globals}, key=lambda c: c.__qualname__)
    allowed: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = list(classes)
    try:
        with torch.serialization.safe_globals(allowed):
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types (UnpicklingError, RuntimeError, EOFError)
        raise CheckpointError(path, f"cannot load as a weights-only checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, Mapping):
        raise CheckpointError(path, f"expected a dict checkpoint, got {type(obj).__name__}")
    return dict(obj)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint plugin: atomic writes, weights-only reads."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        """Write ``checkpoint`` to ``path`` atomically (temp file, fsync, rename)."""
        atomic_save(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        """Read ``path`` with ``weights_only=True`` (on the CPU unless ``map_location`` says otherwise)."""
        return safe_load(path, map_location=map_location if map_location is not None else "cpu")


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did."""

    loaded: list[str] = field(default_factory=list)
    skipped_source: list[str] = field(default_factory=list)
    not_covered: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    imported: str | None = None

    def __str__(self) -> str:
        text = (f"loaded {len(self.loaded)} tensors; {len(self.skipped_source)} source keys outside the map; "
                f"{len(self.not_covered)} model keys outside the map keep their init")
        if self.adapted:
            text += f"; RGB filters summed for grey input: {', '.join(self.adapted)}"
        return text + (f" (read as {self.imported})" if self.imported else "")


def grey_from_rgb(weight: torch.Tensor) -> torch.Tensor:
    """First-convolution weights for grey input from weights for RGB input: summed over the input channels.

    ``(O, 3, k...) -> (O, 1, k...)``. A grey image repeated on three channels gives the RGB
    convolution exactly the output the summed filter gives the grey image (the common way to use
    RGB-pretrained weights on radiographs).

    Raises:
        ValueError: ``weight`` does not have 3 input channels.
    """
    if weight.ndim < 3 or weight.shape[1] != 3:
        raise ValueError(f"expected convolution weights (O, 3, k...), got {tuple(weight.shape)}")
    return weight.sum(dim=1, keepdim=True)


def read_checkpoint(checkpoint: str | Path | Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """A checkpoint as a dict in medlearn's layout, and where it came from (for messages).

    A path is read with :func:`safe_load`. A checkpoint without medlearn's ``"medlearn"`` block
    that a registered importer recognises is rewritten by it (``medlearn["imported"]`` then names
    the importer).

    Raises:
        CheckpointError: unreadable, or recognised by an importer but incomplete.
    """
    if isinstance(checkpoint, (str, Path)):
        ckpt, where = safe_load(checkpoint), str(checkpoint)
    else:
        ckpt, where = dict(checkpoint), "<state dict>"
    if "medlearn" not in ckpt:
        for imp in _IMPORTERS.values():
            if imp.detect(ckpt):
                ckpt = imp.convert(ckpt, where)
                ckpt.setdefault("medlearn", {})["imported"] = imp.name
                break
    return ckpt, where


def _state_dict_of(ckpt: Mapping[str, Any], where: str) -> dict[str, torch.Tensor]:
    sd = ckpt.get("state_dict", ckpt)
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(where, "no state_dict of tensors found in the checkpoint")
    return dict(sd)


def load_pretrained(model: nn.Module, checkpoint: str | Path | Mapping[str, Any],
                    key_map: Mapping[str, str], ignore: tuple[str, ...] = ()) -> LoadReport:
    """Copy weights from ``checkpoint`` into ``model`` under a prefix map; refuse silent partial loads.

    Every source key that starts with a prefix in ``key_map`` is renamed (``src_prefix`` ->
    ``dst_prefix``). Then, for every destination prefix, the model's keys under it must be exactly
    the renamed keys, with equal shapes. Model keys outside every destination prefix keep their
    initialisation (e.g. a new classification head) and are listed in the report.

    A foreign checkpoint that a registered importer recognises is read in medlearn's layout first
    (:func:`read_checkpoint`). First-convolution weights it declares RGB (``medlearn["rgb_inputs"]``)
    are summed over the input channels (:func:`grey_from_rgb`) when the model's convolution takes one
    channel; the report lists them.

    Args:
        model: the model to fill (modified in place).
        checkpoint: a path (Lightning checkpoint, plain state dict or a registered foreign layout)
            or a loaded dict.
        key_map: ``{source_prefix: destination_prefix}``, e.g.
            ``{"student.backbone.": "backbone."}``.
        ignore: destination key suffixes allowed to be missing or extra (e.g. ``("num_batches_tracked",)``).

    Returns:
        A :class:`LoadReport`.

    Raises:
        CheckpointError: no key matched a source prefix; a model key under a destination prefix has
            no source; a source key has no place in the model; shapes differ.
    """
    ckpt, where = read_checkpoint(checkpoint)
    sd = _state_dict_of(ckpt, where)
    info = ckpt.get("medlearn")
    info = info if isinstance(info, Mapping) else {}
    rgb_inputs = set(info.get("rgb_inputs") or ())
    mapped: dict[str, torch.Tensor] = {}
    report = LoadReport(imported=info.get("imported"))
    target = model.state_dict()
    for k, v in sd.items():
        for src, dst in key_map.items():
            if k.startswith(src):
                new = dst + k[len(src):]
                if (k in rgb_inputs and new in target and target[new].ndim == v.ndim and v.ndim >= 3
                        and v.shape[1] == 3 and target[new].shape[1] == 1):
                    v = grey_from_rgb(v)
                    report.adapted.append(new)
                mapped[new] = v
                break
        else:
            report.skipped_source.append(k)
    if not mapped:
        raise CheckpointError(where, f"no key starts with any of {list(key_map)}; the checkpoint has e.g. "
                                     f"{list(sd)[:5]}")
    dst_prefixes = tuple(key_map.values())
    problems: list[str] = []
    for k in target:
        if k.startswith(dst_prefixes) and k not in mapped and not k.endswith(ignore):
            problems.append(f"model key {k!r} has no source in the checkpoint")
    for k, v in mapped.items():
        if k not in target:
            if not k.endswith(ignore):
                problems.append(f"checkpoint key maps to {k!r}, which the model does not have")
        elif target[k].shape != v.shape:
            problems.append(f"{k!r}: checkpoint shape {tuple(v.shape)} != model shape {tuple(target[k].shape)}")
    if problems:
        raise CheckpointError(where, "pretrained weights do not fit the model", problems)
    to_load = {k: v for k, v in mapped.items() if k in target}
    model.load_state_dict(to_load, strict=False)
    report.loaded = sorted(to_load)
    report.not_covered = sorted(k for k in target if not k.startswith(dst_prefixes))
    return report


def encoder_prefix_of(checkpoint: str | Path | Mapping[str, Any]) -> str:
    """The encoder prefix a checkpoint offers for transfer, as its module declared it.

    Every :class:`~medlearn.engine.module.MethodModule` writes ``{"medlearn": {"module": ...,
    "encoder_prefix": ...}}`` into its checkpoints (a method declares the prefix in its
    :class:`~medlearn.registry.MethodSpec`, a task on its class), so the engine never guesses.

    Raises:
        CheckpointError: the checkpoint declares no encoder (its module offers none, or it was not
            written by medlearn); the message lists the key prefixes it holds, for an explicit prefix.
    """
    ckpt, where = read_checkpoint(checkpoint)
    info = ckpt.get("medlearn")
    prefix = info.get("encoder_prefix") if isinstance(info, Mapping) else None
    if not prefix:
        sd = ckpt.get("state_dict", ckpt)
        tops = sorted({k.split(".")[0] + "." for k in sd}) if isinstance(sd, Mapping) else []
        module = info.get("module") if isinstance(info, Mapping) else None
        raise CheckpointError(where, ("its module " + str(module) if module else "it") + " declares no encoder to "
                              f"transfer; give the encoder's key prefix explicitly (top-level prefixes: {tops[:8]})"
                              + ("" if module else "; checkpoints of other code bases are read by the importers "
                                 "methods register (import medlearn.methods; known: "
                                 f"{', '.join(list_importers()) or 'none'})"))
    return str(prefix)


def load_encoder(model: nn.Module, checkpoint: str | Path, dst_prefix: str, prefix: str = "auto") -> str:
    """Load a pretraining checkpoint's encoder into ``model``'s ``dst_prefix`` (e.g. ``"backbone."``).

    Args:
        model: the downstream model.
        checkpoint: a checkpoint path.
        dst_prefix: where the encoder lives in ``model``.
        prefix: the encoder's prefix in the checkpoint, or ``"auto"``: the prefix the checkpoint
            declares (:func:`encoder_prefix_of`).

    Returns:
        A one-line description of what was loaded (for reports).

    Raises:
        CheckpointError: no declared prefix (with ``"auto"``), or the weights do not fit (see
            :func:`load_pretrained`).
    """
    if prefix == "auto":
        prefix = encoder_prefix_of(checkpoint)
    report = load_pretrained(model, checkpoint, {prefix: dst_prefix}, ignore=("num_batches_tracked",))
    return f"encoder from {checkpoint} ({prefix}*): {report}"
