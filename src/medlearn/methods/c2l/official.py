"""Read checkpoints of the official C2L code (github.com/funnyzhou/C2L_MICCAI2020) into medlearn.

The official training scripts (``train_C2L_res18.py``, ``train_C2L_dense121.py``) save
``{"opt": argparse.Namespace, "model": student, "model_ema": teacher, "contrast": queue,
"optimizer": ..., "epoch": N[, "amp": ...]}`` as ``ckpt_epoch_N.pth`` / ``current.pth``; the
released ResNet-18 weights are such a file, and the authors' fine-tuning helper takes the student
(``"model"``). The student's keys are those of a torchvision-style network inside
``nn.DataParallel``:

- ResNet-18 (``InsResNet18``): ``encoder.module.conv1.weight``, ``encoder.module.bn1.*``,
  ``encoder.module.layer1.0.conv1.weight`` ... ``encoder.module.layer2.0.downsample.0.weight``,
  ``encoder.module.fc.{weight,bias}`` (512 -> 128).
- DenseNet-121: ``densenet121.module.features.conv0.weight``,
  ``densenet121.module.features.denseblock1.denselayer1.norm1.*`` ...,
  ``densenet121.module.classifier.{weight,bias}`` (1024 -> 128).

How they map onto medlearn's :class:`~medlearn.methods.c2l.module.C2L` (``student.`` = a
:class:`~medlearn.methods.c2l.model.C2LEncoder`: ``backbone.body`` is MONAI's network, ``head`` the
linear layer to the embedding):

- ResNet: MONAI's ResNet uses torchvision's names (``conv1``, ``bn1``, ``layerN.M.conv1/bn1/conv2/bn2``,
  ``layerN.0.downsample.0`` (1x1 conv) / ``.1`` (BatchNorm)); ``fc`` -> ``head``. MONAI's shortcut
  convolution has a bias (its default ``bias_downsample=True``) that torchvision's lacks: it is set
  to zero, which computes the same function.
- DenseNet: MONAI wraps each dense layer's modules in ``layers``
  (``denselayerM.layers.norm1``); ``classifier`` -> ``head``.
- The first convolution (``conv1`` / ``features.conv0``) was trained on grey radiographs repeated
  on three channels. For medlearn's one-channel radiograph models its filters are summed over the
  input channels (:func:`~medlearn.engine.checkpoint.grey_from_rgb`): a grey image then gives
  exactly the output the official network gives the grey image repeated three times. (The
  official pipeline normalised each of the three copies with ImageNet's per-channel statistics;
  medlearn normalises grey with their mean, 0.449 / 0.226, a difference of a few percent per
  channel that fine-tuning absorbs.)

Every key must find its place and every encoder weight must be filled: a checkpoint of another
architecture (ResNet-50, a wider ResNet) or a truncated one is refused with the missing and
unexpected keys listed. The mapping is written here because no library reads this layout.

Examples:
    >>> from medlearn.methods.c2l.official import import_official
    >>> sd = import_official("c2l_resnet18.pth")  # doctest: +SKIP
    >>> sorted(sd)[0]  # doctest: +SKIP
    'student.backbone.body.bn1.bias'
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from medlearn.engine.checkpoint import CheckpointError, CheckpointImporter, grey_from_rgb, safe_load
from medlearn.methods.c2l.model import C2LEncoder

__all__ = ["import_official", "convert_official", "is_official", "OFFICIAL_IMPORTER"]

#: prefix of the student / teacher keys -> (medlearn backbone name, first conv, head) per script
_LAYOUTS: dict[str, tuple[str, str, str]] = {
    "encoder.module.": ("resnet18", "conv1.weight", "fc."),
    "densenet121.module.": ("densenet121", "features.conv0.weight", "classifier."),
}
_DENSE_LAYER = re.compile(r"^(features\.denseblock\d+\.denselayer\d+\.)")
_SHORTCUT_CONV = re.compile(r"^layer\d+\.\d+\.downsample\.0\.weight$")


def _weights_of(ckpt: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    if name in ckpt and isinstance(ckpt[name], Mapping):
        return ckpt[name]
    if name == "model":  # a bare state dict, or one under "state_dict"
        inner = ckpt.get("state_dict", ckpt)
        return inner if isinstance(inner, Mapping) else None
    return None


def _layout_of(sd: Mapping[str, Any]) -> str | None:
    for prefix in _LAYOUTS:
        if any(isinstance(k, str) and k.startswith(prefix) for k in sd):
            return prefix
    return None


def is_official(ckpt: Mapping[str, Any]) -> bool:
    """Whether a loaded checkpoint has the official C2L layout.

    Student keys ``encoder.module.*`` (ResNet-18) or ``densenet121.module.*`` (DenseNet-121), at the
    top, under ``"model"`` or under ``"state_dict"``.
    """
    sd = _weights_of(ckpt, "model")
    return sd is not None and _layout_of(sd) is not None


def _rename(name: str, backbone: str, head: str) -> str:
    if name.startswith(head):
        return "head." + name[len(head):]
    if backbone == "densenet121":
        name = _DENSE_LAYER.sub(r"\1layers.", name)
    return "backbone.body." + name


def _convert_encoder(sd: Mapping[str, Any], where: str, which: str) -> tuple[dict[str, torch.Tensor], str, str]:
    """One official network -> a :class:`C2LEncoder` state dict (3 input channels), its backbone and first conv."""
    prefix = _layout_of(sd)
    if prefix is None:
        raise CheckpointError(where, f"{which!r} holds no keys starting with {' or '.join(_LAYOUTS)}")
    backbone, first_conv, head = _LAYOUTS[prefix]
    out: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for k, v in sd.items():
        if not isinstance(k, str) or not k.startswith(prefix) or not isinstance(v, torch.Tensor):
            unexpected.append(str(k))
            continue
        name = k[len(prefix):]
        out[_rename(name, backbone, head)] = v
        if backbone.startswith("resnet") and _SHORTCUT_CONV.match(name):
            # MONAI's 1x1 shortcut convolution carries a bias, torchvision's does not: zero = same function
            out[_rename(name[: -len("weight")] + "bias", backbone, head)] = torch.zeros(v.shape[0], dtype=v.dtype)
    fc = out.get("head.weight")
    if fc is None:
        raise CheckpointError(where, f"{which!r} has no linear head ({prefix}{head}weight); is it truncated?")
    ref = C2LEncoder(backbone, 2, 3, int(fc.shape[0])).state_dict()
    missing = sorted(k for k in ref if k not in out)
    unexpected += sorted(k for k in out if k not in ref)
    shapes = [f"{k}: checkpoint {tuple(out[k].shape)} != {backbone} {tuple(ref[k].shape)}"
              for k in ref if k in out and out[k].shape != ref[k].shape]
    if missing or unexpected or shapes:
        raise CheckpointError(where, f"{which!r} does not fit medlearn's C2L {backbone} encoder (the official "
                                     "code's ResNet-18 and DenseNet-121 are supported)",
                              [f"missing: {k}" for k in missing] + [f"unexpected: {k}" for k in unexpected] + shapes)
    return out, backbone, "backbone.body." + first_conv


def convert_official(ckpt: Mapping[str, Any], where: str = "<checkpoint>") -> dict[str, Any]:
    """An official C2L checkpoint (loaded) as a medlearn C2L checkpoint.

    The student (``"model"``) goes to ``student.*`` and, when present, the teacher
    (``"model_ema"``) to ``teacher.*``; the first convolutions keep their three input channels and
    are declared in ``medlearn["rgb_inputs"]``, so :func:`~medlearn.engine.checkpoint.load_pretrained`
    sums them for a one-channel model. This is the importer registered for ``load_pretrained``,
    ``load_encoder`` and ``pretrained: <file>`` in configs.

    Args:
        ckpt: the loaded checkpoint.
        where: its file name, for messages.

    Returns:
        ``{"state_dict": ..., "medlearn": {"module", "encoder_prefix": "student.backbone.",
        "backbone", "rgb_inputs", "epoch"}}``.

    Raises:
        CheckpointError: a weight without its place in medlearn's encoder, or an encoder weight
            without a source (missing and unexpected keys listed).
    """
    state: dict[str, torch.Tensor] = {}
    rgb: list[str] = []
    backbone = ""
    for name, dst in (("model", "student."), ("model_ema", "teacher.")):
        sd = _weights_of(ckpt, name)
        if sd is None:
            continue
        enc, backbone, first = _convert_encoder(sd, where, name)
        state.update({dst + k: v for k, v in enc.items()})
        rgb.append(dst + first)
    epoch = ckpt.get("epoch")
    return {"state_dict": state, "medlearn": {
        "module": "medlearn.methods.c2l.module.C2L", "encoder_prefix": "student.backbone.", "backbone": backbone,
        "rgb_inputs": rgb, "epoch": epoch if isinstance(epoch, int) else None}}


def import_official(checkpoint: str | Path | Mapping[str, Any], weights: str = "model",
                    in_channels: int = 1) -> dict[str, torch.Tensor]:
    """The weights of an official C2L checkpoint as a medlearn C2L state dict.

    Args:
        checkpoint: the official file (``ckpt_epoch_N.pth``, the released ResNet-18 weights) or
            its loaded dict.
        weights: ``"model"`` (the student, as the authors' fine-tuning helper loads) or
            ``"model_ema"`` (the teacher).
        in_channels: 1 (grey: the first convolution's RGB filters summed) or 3 (as saved).

    Returns:
        Keys ``student.backbone.body.*`` and ``student.head.*`` (``teacher.*`` for
        ``weights="model_ema"``): load it with ``load_pretrained(model, sd,
        {"student.backbone.": "backbone."})`` or into a :class:`C2LEncoder` after stripping
        ``student.``.

    Raises:
        CheckpointError: not the official layout, no such weights, or weights that do not fit.
        ValueError: ``weights`` or ``in_channels`` not one of the values above.
    """
    if weights not in ("model", "model_ema"):
        raise ValueError(f"weights must be 'model' or 'model_ema', got {weights!r}")
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
    if isinstance(checkpoint, (str, Path)):
        ckpt, where = safe_load(checkpoint), str(checkpoint)
    else:
        ckpt, where = dict(checkpoint), "<checkpoint>"
    if not is_official(ckpt):
        raise CheckpointError(where, "not an official C2L checkpoint: no keys starting with "
                                     f"{' or '.join(_LAYOUTS)} (at the top, under 'model' or 'state_dict')")
    sd = _weights_of(ckpt, weights)
    if sd is None:
        raise CheckpointError(where, f"no {weights!r} weights in the checkpoint (it holds {sorted(map(str, ckpt))})")
    enc, _, first = _convert_encoder(sd, where, weights)
    if in_channels == 1:
        enc[first] = grey_from_rgb(enc[first])
    dst = "student." if weights == "model" else "teacher."
    return {dst + k: v for k, v in enc.items()}


OFFICIAL_IMPORTER = CheckpointImporter(
    name="C2L official (funnyzhou/C2L_MICCAI2020)",
    detect=is_official,
    convert=convert_official,
    safe_globals=(argparse.Namespace,),  # the saved command-line options ("opt"), plain data
)
