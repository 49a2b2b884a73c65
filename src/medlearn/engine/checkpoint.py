"""Safe checkpoint I/O and loud partial loading.

- Reading: always ``torch.load(..., weights_only=True)``: a checkpoint from a colleague or the web
  cannot execute code. medlearn checkpoints hold only tensors and plain Python values. A file that
  cannot be used (truncated, not a PyTorch file, one that would run code, another method's
  checkpoint) is refused with a :class:`CheckpointError` that names the file and says why in one line.
- Trusting a checkpoint's contents: a Lightning checkpoint names classes (``_class_path``, the
  ``_instantiator``) that LightningCLI and ``load_from_checkpoint`` import; :func:`check_checkpoint`
  accepts only medlearn's own, so a checkpoint cannot make medlearn import a module of its choosing.
- Writing: atomic (temp file in the same folder, ``fsync``, ``os.replace``, ``fsync`` of the
  folder), so a run killed while saving never leaves a truncated ``last.ckpt`` behind; a write that
  fails (full disk, quota) raises :class:`CheckpointWriteError` and keeps the previous file. The
  unfinished temp file of a killed write (``.last.ckpt.<random>.tmp``) is removed by
  :func:`remove_partial_writes` when the next run claims the folder.
- :func:`load_pretrained` moves weights between models (a C2L encoder into a classifier backbone),
  mapping key prefixes and failing loudly when something that should load does not.
- Checkpoints written by other code bases (a paper's released weights) are read through an
  importer that a method registers (:func:`register_importer`): it recognises the foreign layout
  and rewrites it into the layout of the medlearn module it corresponds to, so
  ``pretrained: <their file>`` works like ``pretrained: <a medlearn checkpoint>``.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn

from medlearn.io.errors import DataError

__all__ = ["AtomicCheckpointIO", "atomic_save", "safe_load", "load_pretrained", "load_encoder", "encoder_prefix_of",
           "LoadReport", "CheckpointError", "CheckpointImporter", "register_importer", "list_importers",
           "read_checkpoint", "grey_from_rgb", "CheckpointWriteError", "check_checkpoint", "check_weights_fit",
           "remove_partial_writes", "TRUSTED_INSTANTIATOR"]

#: The only ``_instantiator`` a checkpoint may name (the one LightningCLI writes).
TRUSTED_INSTANTIATOR = "lightning.pytorch.cli.instantiate_module"
#: The package of the module a checkpoint may belong to.
_TRUSTED_PACKAGE = "medlearn."
#: Packages of the classes a checkpoint's hyper-parameters may name (``class_path`` of an argument).
_TRUSTED_PACKAGES = (_TRUSTED_PACKAGE, "torch.", "monai.", "lightning.")


class CheckpointError(DataError):
    """A checkpoint that cannot be used (unreadable, or keys that do not fit the model)."""


class CheckpointWriteError(OSError):
    """A checkpoint that could not be written (full disk, quota, lost mount); the previous file is kept.

    Args:
        path: the checkpoint that was being written.
        cause: the operating system's error.
    """

    def __init__(self, path: str | Path, cause: OSError) -> None:
        self.path = Path(path)
        kept = (f"the previous {self.path.name} is kept unchanged" if self.path.is_file()
                else f"no {self.path.name} was written")
        reason = cause.strerror or str(cause) or type(cause).__name__
        super().__init__(cause.errno or errno.EIO, f"{self.path}: could not write the checkpoint ({reason}); {kept}")

    def __str__(self) -> str:
        return str(self.strerror)


class _WriteErrorRecorder:
    """A binary file that keeps the first error its ``write`` raised.

    ``torch.save`` reports a failed write of its zip container as an unrelated ``RuntimeError``
    ("unexpected pos ..."); this keeps the operating system's own error (``ENOSPC``) to report.
    """

    def __init__(self, f: Any) -> None:
        self._f = f
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return int(self._f.write(data))
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        self._f.flush()


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temp file beside ``path``, then rename over it (atomic on POSIX).

    Raises:
        CheckpointWriteError: the operating system refused a write (full disk, quota ...); ``path``
            is unchanged and the temp file removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            writer = _WriteErrorRecorder(f)
            try:
                torch.save(obj, cast(IO[bytes], writer))  # torch needs only write() and flush()
            except RuntimeError as exc:
                if writer.error is not None:
                    raise writer.error from exc
                raise
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, CheckpointWriteError):
            raise CheckpointWriteError(path, exc) from exc
        raise
    _fsync_folder(path.parent)


def remove_partial_writes(folder: str | Path) -> list[Path]:
    """Remove the temp files of checkpoint writes that never finished (a run killed while saving).

    Only call this while holding the run folder (:class:`medlearn.engine.runlock.RunLock`): a temp
    file of a run that is still writing looks the same.

    Returns:
        The removed files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in sorted(folder.glob(".*.ckpt.*.tmp")):
        try:
            p.unlink()
            removed.append(p)
        except FileNotFoundError:
            pass
    return removed


def _load_failure(path: Path, exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in one line a user can act on."""
    text = str(exc)
    unsafe = re.search(r"GLOBAL (\S+)", text)
    if unsafe:
        return (f"loading it would call {unsafe.group(1)}: it could run code, so it was not loaded (medlearn "
                "reads weights only; a medlearn checkpoint never needs this)")
    if path.stat().st_size == 0:
        return "the file is empty"
    if isinstance(exc, EOFError) or "central directory" in text or "PytorchStreamReader" in text:
        return "truncated or corrupt: not a complete PyTorch file (an interrupted copy or write?)"
    first = text.strip().splitlines()[0][:200] if text.strip() else ""
    return f"not a PyTorch checkpoint ({type(exc).__name__}{': ' + first if first else ''})"


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
        CheckpointError: missing, empty, truncated or not a medlearn/PyTorch checkpoint, or one that
            needs arbitrary code to unpickle (the message is one line, naming the file).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "checkpoint file not found")
    classes = sorted({c for imp in _IMPORTERS.values() for c in imp.safe_globals}, key=lambda c: c.__qualname__)
    allowed: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = list(classes)
    try:
        with torch.serialization.safe_globals(allowed):
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types (UnpicklingError, RuntimeError, EOFError, KeyError)
        raise CheckpointError(path, _load_failure(path, exc)) from exc
    if not isinstance(obj, Mapping):
        raise CheckpointError(path, f"expected a dict checkpoint, got {type(obj).__name__}")
    return dict(obj)


def _named_classes(obj: Any, key: str = "") -> list[tuple[str, str]]:
    """Every ``(key, value)`` under ``obj`` whose key names something to import."""
    found: list[tuple[str, str]] = []
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if str(k) in ("class_path", "_class_path", "_instantiator") and isinstance(v, str):
                found.append((str(k), v))
            else:
                found += _named_classes(v, str(k))
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            found += _named_classes(v, key)
    return found


def check_checkpoint(ckpt: Mapping[str, Any], path: str | Path, module: str | None = None) -> str | None:
    """Check that a loaded checkpoint is a medlearn training checkpoint medlearn may act on.

    Args:
        ckpt: what :func:`safe_load` returned.
        path: its file (for the message).
        module: the class path of the module it should belong to (``None``: any medlearn module).

    Returns:
        The class path of the module that wrote it (``None`` when the checkpoint does not say).

    Raises:
        CheckpointError: no ``state_dict`` of tensors (a plain state dict, another program's file),
            not a Lightning checkpoint, a class or instantiator outside medlearn, or another module
            than ``module``.
    """
    sd = ckpt.get("state_dict")
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        what = ("a plain state dict of tensors" if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values())
                else f"keys {sorted(map(str, ckpt))[:6]}")
        raise CheckpointError(path, f"not a medlearn training checkpoint: no 'state_dict' of tensors (it holds {what})")
    if "pytorch-lightning_version" not in ckpt:
        raise CheckpointError(path, "not a medlearn training checkpoint: it was not written by Lightning")
    info = ckpt.get("medlearn")
    hp = ckpt.get("hyper_parameters")
    named = _named_classes(hp)
    modules = [v for k, v in named if k == "_class_path"]
    if isinstance(info, Mapping) and "module" in info:
        modules.append(str(info["module"]))
    for key, value in named:
        if key == "_instantiator" and value != TRUSTED_INSTANTIATOR:
            raise CheckpointError(path, f"it names {value!r} to build its model, not Lightning's "
                                        f"{TRUSTED_INSTANTIATOR}")
        if key == "class_path" and not value.startswith(_TRUSTED_PACKAGES):
            raise CheckpointError(path, f"a hyper-parameter names the class {value!r}, outside "
                                        f"{', '.join(p.rstrip('.') for p in _TRUSTED_PACKAGES)}")
    for value in modules:
        if not value.startswith(_TRUSTED_PACKAGE):
            raise CheckpointError(path, f"not a medlearn checkpoint: it was written by {value!r}, not by a medlearn "
                                        "module")
    written_by = modules[-1] if modules else None
    if module is not None and written_by is not None and str(written_by) != module:
        raise CheckpointError(path, f"written by {written_by}, but this run's model is {module} (a checkpoint of "
                                    "another method or model)")
    return str(written_by) if written_by is not None else None


def check_weights_fit(model: nn.Module, state_dict: Mapping[str, Any], path: str | Path, strict: bool = True) -> None:
    """Refuse, in one line, a state dict whose keys or shapes do not fit ``model``.

    Model tensors without elements (placeholders a module resizes when loading, e.g. an image pool)
    are not compared by shape. ``strict=False`` allows keys of the model missing from the state dict.

    Raises:
        CheckpointError: unexpected keys, missing keys (``strict``), or different shapes.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict] if strict else []
    unexpected = [k for k in state_dict if k not in own]
    shapes = [k for k, v in state_dict.items() if k in own and isinstance(v, torch.Tensor)
              and own[k].numel() > 0 and tuple(own[k].shape) != tuple(v.shape)]
    if not (missing or unexpected or shapes):
        return
    parts = [f"{len(x)} {name} (e.g. {x[0]})" for x, name in ((missing, "model keys missing"),
                                                               (unexpected, "unknown keys"),
                                                               (shapes, "shapes differ")) if x]
    raise CheckpointError(path, f"its weights do not fit {type(model).__name__}: " + "; ".join(parts))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint plugin: atomic writes, weights-only reads of medlearn training checkpoints only."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        """Write ``checkpoint`` to ``path`` atomically (temp file, fsync, rename)."""
        atomic_save(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        """Read ``path`` with ``weights_only=True`` (on the CPU unless ``map_location`` says otherwise).

        Raises:
            CheckpointError: see :func:`safe_load` and :func:`check_checkpoint`.
        """
        ckpt = safe_load(path, map_location=map_location if map_location is not None else "cpu")
        check_checkpoint(ckpt, path)
        return ckpt


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
