"""Label maps of big images and volumes by sliding-window inference, within a stated memory bound.

:func:`sliding_window_labels` runs MONAI's :class:`~monai.inferers.SlidingWindowInferer` over an
image or volume and returns its label map in the smallest integer type that holds the labels;
:func:`sliding_window_memory` is the bound it keeps, as a number the tests measure against.

What takes the memory on a large input is not the network (one batch of windows at a time) but
what MONAI accumulates over the whole input: the blended class scores ``(B, C, *spatial)`` and a
count map ``(1, 1, *spatial)``, both in the input's dtype. Here they are kept compact:

- the scores are blended class *probabilities* (softmax per window, as nnU-Net does), bounded in
  [0, 1], so they can be accumulated in ``float16`` (half of ``float32``); the input is handed to
  MONAI as a ``float16`` copy for that, and each window goes to the network in ``float32``;
- the arg-max over classes is taken in slabs along the first spatial axis, into the compact
  label map, so no full-size ``int64`` index map (8 bytes per voxel) is ever made.

With ``V`` voxels per item, ``B`` items, ``C_in`` input channels, ``C`` classes, ``a`` bytes per
accumulated value (2 for ``float16``, 4 for ``float32``) and ``l`` bytes per label (1 for
``uint8``), the memory added to the caller's input is at most::

    B * V * (a * C_in  [input copy, when its dtype differs]  + a * C  [scores]  + l  [labels])
    + V * a  [count map]  + B * slab  [arg-max of one slab: 16 bytes per voxel of 2**20 voxels]
    + 2 * windows  [sw_batch_size windows: input, scores and the network's own activations;
                    twice, for the allocator keeping the previous batch's buffers]

For a 512 x 512 x 400 volume (one ``float32`` channel, 4 classes, 64^3 windows, 4 at a time) that
is 13 bytes per voxel plus 118 MB, 1.48 GB (1.36 GB measured), where MONAI's defaults followed by a
plain ``argmax`` and label lookup (``float32`` scores and count map, ``int64`` maps) were measured
at 2.58 GB. Measured in ``tests/tasks/test_segmentation_memory.py``
and stated in ``docs/reliability.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from monai.inferers import SlidingWindowInferer

__all__ = ["SLAB_VOXELS", "argmax_labels", "label_dtype", "sliding_window_labels", "sliding_window_memory"]

#: Voxels per slab of the arg-max (bounds its temporaries to 16 MiB per item).
SLAB_VOXELS = 2**20

_ACCUMULATE = {"float16": torch.float16, "float32": torch.float32}


def label_dtype(label_values: Sequence[int]) -> torch.dtype:
    """The smallest integer type holding every label value (``uint8`` up to 255, then ``int16``, ``int32``).

    Raises:
        ValueError: a negative label value.
    """
    lo, hi = min(label_values), max(label_values)
    if lo < 0:
        raise ValueError(f"label values must be >= 0, got {lo}")
    return torch.uint8 if hi <= 255 else torch.int16 if hi <= 32767 else torch.int32


def argmax_labels(scores: torch.Tensor, label_values: Sequence[int], slab_voxels: int = SLAB_VOXELS) -> torch.Tensor:
    """Stored label values of the arg-max class: ``(B, C, *spatial)`` -> ``(B, 1, *spatial)``.

    Computed in slabs along the first spatial axis of about ``slab_voxels`` voxels, so that the
    ``int64`` indices of :func:`torch.argmax` exist for one slab at a time; the result has
    :func:`label_dtype`. Ties go to the lower class index, as with :func:`torch.argmax`.
    """
    lut = torch.as_tensor(list(label_values), dtype=label_dtype(label_values), device=scores.device)
    if scores.shape[1] != len(lut):
        raise ValueError(f"{scores.shape[1]} score channels for {len(lut)} label values")
    out = torch.empty((scores.shape[0], 1, *scores.shape[2:]), dtype=lut.dtype, device=scores.device)
    per_slice = max(1, math.prod(scores.shape[3:]))
    step = max(1, slab_voxels // per_slice)
    for z in range(0, scores.shape[2], step):
        out[:, 0, z:z + step] = lut[scores[:, :, z:z + step].argmax(1)]
    return out


def sliding_window_labels(
    inputs: torch.Tensor,
    network: Callable[[torch.Tensor], torch.Tensor],
    roi_size: Sequence[int],
    label_values: Sequence[int],
    sw_batch_size: int = 4,
    overlap: float = 0.25,
    mode: str = "constant",
    cval: float = 0.0,
    accumulate: str = "float16",
) -> torch.Tensor:
    """Label map of ``inputs`` from windows of ``network``, blended as class probabilities.

    MONAI's :class:`~monai.inferers.SlidingWindowInferer` runs ``network`` on windows of
    ``roi_size`` (``sw_batch_size`` at a time, ``overlap`` between neighbours, blended with
    ``mode`` weights, padded with ``cval`` where the input is smaller than a window) and
    accumulates the softmax of each window's logits in ``accumulate`` precision; the label of a
    voxel is the class of highest blended probability (:func:`argmax_labels`). Memory: at most
    :func:`sliding_window_memory` above the caller's input (the formula is in the module
    docstring; 13 bytes per voxel for one input channel and 4 classes in ``float16``).
    ``float16`` blends differ from ``float32`` ones by at most about 0.004 (its resolution at 8),
    so only voxels whose two best classes are that close can get the other label.

    Args:
        inputs: ``(B, C_in, *spatial)`` images or volumes.
        network: window logits ``(n, C_in, *roi_size)`` -> ``(n, C, *roi_size)`` (called without
            gradients by the caller's context; windows arrive as ``float32``).
        roi_size: window size per spatial axis.
        label_values: the stored label value of each class, in class order.
        sw_batch_size: windows per network call.
        overlap: fraction of a window shared with its neighbour, in [0, 1).
        mode: ``"constant"`` or ``"gaussian"`` window weights (MONAI ``BlendMode``).
        cval: padding value of the input where it is smaller than a window.
        accumulate: ``"float16"`` (default) or ``"float32"``, the precision of the blended
            probabilities and of the input copy MONAI slices windows from.

    Returns:
        ``(B, 1, *spatial)`` label values in :func:`label_dtype` of ``label_values``.

    Raises:
        ValueError: an unknown ``accumulate`` or a ``roi_size`` of the wrong length.
    """
    if accumulate not in _ACCUMULATE:
        raise ValueError(f"accumulate must be one of {sorted(_ACCUMULATE)}, got {accumulate!r}")
    if len(roi_size) != inputs.ndim - 2:
        raise ValueError(f"roi_size {tuple(roi_size)} does not match inputs of shape {tuple(inputs.shape)}")
    dtype = _ACCUMULATE[accumulate]

    def probabilities(window: torch.Tensor) -> torch.Tensor:
        return torch.softmax(network(window.float()).float(), 1).to(dtype)

    inferer = SlidingWindowInferer(tuple(int(s) for s in roi_size), int(sw_batch_size), float(overlap), mode=mode,
                                   cval=float(cval))
    blended = inferer(inputs.to(dtype), probabilities)
    assert isinstance(blended, torch.Tensor)
    return argmax_labels(blended, label_values)


def sliding_window_memory(shape: Sequence[int], num_classes: int, roi_size: Sequence[int], sw_batch_size: int = 4,
                          accumulate: str = "float16", input_dtype: torch.dtype = torch.float32,
                          label_values: Sequence[int] | None = None, window_bytes_per_voxel: int = 0) -> int:
    """Bytes :func:`sliding_window_labels` adds at most to the caller's input of ``shape``.

    Args:
        shape: the input's shape ``(B, C_in, *spatial)``.
        num_classes: ``C``, the network's output channels.
        roi_size: window size per spatial axis.
        sw_batch_size: windows per network call.
        accumulate: as in :func:`sliding_window_labels`.
        input_dtype: the input's dtype (no copy when it is already the accumulation dtype).
        label_values: the label values (their :func:`label_dtype` sizes the label map);
            default ``0..C-1``.
        window_bytes_per_voxel: the network's own peak activation bytes per window voxel (its
            weights are not counted); ``0``: the windows' inputs and scores only.

    Returns:
        The bound in bytes (the formula of the module docstring).
    """
    b, c_in, *spatial = (int(s) for s in shape)
    voxels = math.prod(spatial)
    a = _ACCUMULATE[accumulate].itemsize
    lab = label_dtype(label_values if label_values is not None else range(num_classes)).itemsize
    copy = a * c_in if input_dtype != _ACCUMULATE[accumulate] else 0
    full = b * voxels * (copy + a * num_classes + lab) + voxels * a
    slab = b * min(voxels, SLAB_VOXELS + math.prod(spatial[1:])) * 16
    roi = math.prod(int(s) for s in roi_size)
    window = sw_batch_size * roi * ((a + 4) * c_in + (4 + 4 + a) * num_classes + window_bytes_per_voxel) + roi * a
    window *= 2  # the allocator may still hold the previous batch of windows' buffers
    return full + slab + window
