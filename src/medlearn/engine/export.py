"""Export a trained model for deployment: ONNX or TorchScript, checked against PyTorch, with its preprocessing.

``medlearn export --ckpt CKPT --format onnx|torchscript [--out FILE]`` turns any medlearn checkpoint
(classifiers, segmenters, localisers, generators, encoders) into one file a deployment team runs
without medlearn: the module named in the checkpoint (``checkpoint["medlearn"]["module"]``) is
rebuilt with its weights (weights-only loading), and its ``forward`` is exported on its
``example_input_array`` with a dynamic batch axis (ONNX: ``torch.onnx.export``'s TorchScript-based
exporter, opset 17; TorchScript: ``torch.jit.trace``). What the network returns is what a method's
``forward`` returns (logits, heatmaps, translated images in [-1, 1]); decoding them stays with the
caller, as documented per method.

Beside the model, ``<out>.json`` records what the network expects: the module, each input's name,
shape (batch axis dynamic) and dtype, the outputs, the model's hyper-parameters and the data
module's preprocessing settings stored in the checkpoint (image size, scaling, channel order ...),
the format and the parity check: the exported model and PyTorch on a random batch of another size
than the example, max absolute difference (refused above ``tolerance``). :func:`load_exported`
reads both back (an ONNX Runtime session or a TorchScript module, and the JSON).
"""

from __future__ import annotations

import importlib
import json
import math
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import nn

from medlearn.engine.checkpoint import CheckpointError, check_checkpoint, safe_load
from medlearn.io import atomic_write_text

__all__ = ["FORMATS", "export_checkpoint", "load_exported"]

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}


class _Forward(nn.Module):
    """The module's ``forward`` on positional tensors, outputs as a tuple of tensors."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(*xs)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _jsonable(v: Any) -> Any:
    if isinstance(v, (str, bool, int)) or v is None:
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return str(v)


def _load_module(ckpt: Path) -> tuple[Any, dict[str, Any]]:
    raw = safe_load(ckpt)
    class_path = check_checkpoint(raw, ckpt)  # only medlearn's modules are imported
    if not class_path:
        raise CheckpointError(ckpt, "not a medlearn training checkpoint: it does not name its module")
    mod_name, _, cls_name = str(class_path).rpartition(".")
    try:
        cls = getattr(importlib.import_module(mod_name), cls_name)
    except (ImportError, AttributeError) as exc:
        raise CheckpointError(ckpt, f"its module {class_path} is not available in this medlearn") from exc
    if not (isinstance(cls, type) and issubclass(cls, LightningModule)):
        raise CheckpointError(ckpt, f"{class_path} is not a medlearn module")
    try:
        model = cls.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    except RuntimeError as exc:  # load_state_dict lists every key; one line is enough here
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(ckpt, f"its weights do not fit {class_path} of this medlearn ({first})") from exc
    return model.eval(), raw


def _examples(model: Any, batch: int) -> tuple[torch.Tensor, ...]:
    ex = getattr(model, "example_input_array", None)
    if ex is None:
        raise ValueError(f"{type(model).__name__} declares no example_input_array: nothing to export from")
    ex = tuple(ex) if isinstance(ex, (tuple, list)) else (ex,)
    g = torch.Generator().manual_seed(0)
    out = []
    for t in ex:
        shape = (batch, *t.shape[1:])
        if t.dtype.is_floating_point:
            out.append(torch.rand(shape, generator=g).mul(2).sub(1).to(t.dtype))
        else:
            out.append(t[:1].expand(shape).clone())
    # one-hot codes (MGAN) keep their one-hot rows
    return tuple(torch.eye(t.shape[1])[torch.arange(batch) % t.shape[1]] if t.ndim == 2 and bool(
        ((t == 0) | (t == 1)).all()) and t.dtype.is_floating_point else x for t, x in zip(ex, out))


def export_checkpoint(ckpt: str | Path, fmt: str = "onnx", out: str | Path | None = None, opset: int = 17,
                      tolerance: float = 1e-4) -> tuple[Path, Path]:
    """Export ``ckpt``'s network as ``fmt``; returns ``(model file, info JSON)``.

    Args:
        ckpt: a medlearn checkpoint (``last.ckpt`` / ``best.ckpt``).
        fmt: ``"onnx"`` or ``"torchscript"``.
        out: the model file (default: beside the checkpoint, ``<stem>.onnx`` / ``<stem>.pt``).
        opset: ONNX opset.
        tolerance: the largest max-abs difference to PyTorch accepted on the check batch.

    Raises:
        CheckpointError: not a readable medlearn checkpoint.
        ValueError: an unknown format, a module without example inputs, or a parity check that fails.
        ImportError: ONNX export without the ``onnx`` / ``onnxruntime`` packages (extra ``export``).
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {sorted(FORMATS)}, got {fmt!r}")
    ckpt = Path(ckpt)
    model, raw = _load_module(ckpt)
    dest = Path(out) if out else ckpt.with_suffix(FORMATS[fmt])
    dest.parent.mkdir(parents=True, exist_ok=True)
    wrapper = _Forward(model).eval()
    example = _examples(model, 2)
    check = _examples(model, 3)
    with torch.no_grad():
        reference = wrapper(*check)
    in_names = [f"input{i}" if len(example) > 1 else "input" for i in range(len(example))]
    out_names = [f"output{i}" if len(reference) > 1 else "output" for i in range(len(reference))]
    tmp = dest.with_name(dest.name + ".part")
    with warnings.catch_warnings():  # tracing warns about shape checks that are constant for a fixed layout
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            try:
                import onnxruntime as ort  # noqa: F401
            except ImportError as exc:
                raise ImportError("ONNX export needs onnx and onnxruntime: pip install 'medlearn[export]'") from exc
            axes = {n: {0: "batch"} for n in in_names + out_names}
            try:
                torch.onnx.export(wrapper, example, str(tmp), input_names=in_names, output_names=out_names,
                                  dynamic_axes=axes, opset_version=opset, dynamo=False)
            except torch.onnx.errors.OnnxExporterError as exc:
                tmp.unlink(missing_ok=True)
                raise ValueError(f"{type(model).__name__} cannot be written as ONNX by the TorchScript-based "
                                 f"exporter ({str(exc).splitlines()[0][:200]}); use --format torchscript") from exc
        else:
            traced = model.to_torchscript(method="trace", example_inputs=example)  # Lightning: no trainer needed
            torch.jit.save(traced, str(tmp))
    tmp.replace(dest)
    runner, _ = _runner(dest, fmt)
    got = runner(*check)
    diff = max(float((a - torch.as_tensor(b)).abs().max()) for a, b in zip(reference, got))
    if not diff <= tolerance:
        dest.unlink(missing_ok=True)
        raise ValueError(f"{dest.name}: exported model differs from PyTorch by {diff:.3g} (> {tolerance}); not kept")
    info = {
        "format": fmt, "file": dest.name, "module": f"{type(model).__module__}.{type(model).__qualname__}",
        "checkpoint": str(ckpt), "opset": opset if fmt == "onnx" else None,
        "inputs": [{"name": n, "shape": ["batch", *t.shape[1:]], "dtype": str(t.dtype).replace("torch.", "")}
                   for n, t in zip(in_names, example)],
        "outputs": [{"name": n, "shape": ["batch", *t.shape[1:]]} for n, t in zip(out_names, reference)],
        "hyper_parameters": _jsonable({k: v for k, v in (raw.get("hyper_parameters") or {}).items()
                                       if not str(k).startswith("_")}),
        "preprocessing": _jsonable(raw.get("datamodule_hyper_parameters") or {}),
        "parity": {"batch": 3, "max_abs_diff": diff, "tolerance": tolerance},
        "medlearn_version": (raw.get("medlearn") or {}).get("version"),
    }
    info_path = dest.with_suffix(dest.suffix + ".json")
    atomic_write_text(info_path, json.dumps(info, indent=1))
    return dest, info_path


def _runner(path: Path, fmt: str) -> tuple[Any, Any]:
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]

        def run(*xs: torch.Tensor) -> list[Any]:
            return [torch.as_tensor(o) for o in session.run(None, {n: x.numpy() for n, x in zip(names, xs)})]

        return run, session
    with warnings.catch_warnings():  # TorchScript is deprecated in favour of torch.export, still what deployers run
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(path), map_location="cpu").eval()

    def run_ts(*xs: torch.Tensor) -> list[Any]:
        with torch.no_grad():
            out = module(*xs)
        return list(out) if isinstance(out, (tuple, list)) else [out]

    return run_ts, module


def load_exported(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """An exported model and its info: ``(run, info)`` where ``run(*tensors)`` returns the outputs as tensors."""
    path = Path(path)
    info_path = path.with_suffix(path.suffix + ".json")
    if not info_path.is_file():
        raise FileNotFoundError(f"{info_path}: the export's info file is missing")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    run, _ = _runner(path, str(info["format"]))
    return run, info
