"""Decoding 2D images and label masks to tensors, resizing them, and caching decoded images.

This module owns the path from a 2D image file to a float tensor: decoding through
:func:`medlearn.io.read_image` with channel handling (:func:`load_image`, :func:`load_gray`),
scaling by the file's own dynamic range (:func:`to_unit_range`), resizing to a square
(:func:`resize_square`; :func:`load_radiograph` and :func:`load_image2d` do both) or to any
``(H, W)`` (:func:`resize_image`), the size from the header (:func:`image_size`), and the
preallocated in-memory block the 2D datasets cache decoded images in (:class:`ImageCache`). For
segmentation it decodes label masks to their stored integer values (:func:`load_mask`), maps and
checks those values (:func:`relabel_mask`) and resizes masks by nearest neighbour
(:func:`resize_mask`). Every decoding failure is a :class:`~medlearn.io.errors.DataError` naming
the file. It knows no dataset layout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medlearn.io.errors import DataError

__all__ = ["ImageCache", "image_size", "load_gray", "load_image", "load_image2d", "load_mask", "load_radiograph",
           "relabel_mask", "resize_image", "resize_mask", "resize_square", "to_unit_range"]

_DTYPE_BITS = {"uint8": 8, "int8": 8, "uint16": 16, "int16": 16, "uint32": 32, "int32": 32}



def _read(path: str | Path, what: str) -> tuple[np.ndarray, dict[str, Any]]:
    """``read_image`` with any decoder failure turned into a DataError naming the file."""
    from medlearn.io import read_image  # io is a sibling package; imported late on purpose

    try:
        array, meta = read_image(path)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(path, f"cannot read {what}: {type(exc).__name__}: {exc}") from exc
    return np.asarray(array), dict(meta or {})

def _bit_depth(meta: Mapping[str, Any]) -> int | None:
    """Bit depth of the stored pixels, if the reader's metadata says it."""
    for key in ("bit_depth", "bits", "bits_stored", "BitsStored", "bits_allocated"):
        value = meta.get(key)
        if isinstance(value, (int, np.integer)) and value > 0:
            return int(value)
    for key in ("dtype", "original_dtype", "source_dtype", "stored_dtype"):
        value = meta.get(key)
        if value is None:
            continue
        try:
            bits = _DTYPE_BITS.get(np.dtype(value).name)
        except TypeError:
            bits = None
        if bits:
            return bits
    return None


def to_unit_range(array: np.ndarray, meta: Mapping[str, Any], path: str | Path) -> np.ndarray:
    """Scale decoded pixels to [0, 1] by the file's own dynamic range.

    DICOM files are min-max scaled over the image (their stored range varies: 10-16 bits,
    rescale slope/intercept). Other files are divided by the full scale of their bit depth
    (8-bit / 255, 12-bit / 4095, 16-bit / 65535), read from ``meta["bit_depth"]`` as
    :func:`medlearn.io.read_image` reports it; 32-bit and float samples are min-max scaled. If the
    reader gives no depth it is inferred from the values (max <= 1: already scaled; <= 255: 8-bit;
    else 16-bit).

    Args:
        array: decoded pixels, any shape.
        meta: the reader's metadata (``format``, ``bit_depth`` or ``dtype`` are looked at).
        path: the file, to decide DICOM by suffix and to name in errors.

    Returns:
        float32 array of the same shape in [0, 1].

    Raises:
        DataError: if the pixels are empty or not finite.
    """
    x = np.asarray(array, dtype=np.float32)
    if x.size == 0:
        raise DataError(path, "image has no pixels")
    if not np.isfinite(x).all():
        raise DataError(path, "image has NaN or infinite pixels")
    fmt = str(meta.get("format", "")).lower()
    if fmt in ("dicom", "dcm") or Path(path).suffix.lower() == ".dcm":
        return _min_max(x)
    bits = _bit_depth(meta)
    if bits is None:
        top = float(x.max())
        if top <= 1.0 and float(x.min()) >= 0.0:
            return x
        bits = 8 if top <= 255.0 else 16
    if bits >= 32:  # float or 32-bit samples have no natural full scale
        return _min_max(x)
    return np.clip(x / float(2**bits - 1), 0.0, 1.0)


def _min_max(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def load_image(path: str | Path, channels: int = 1) -> torch.Tensor:
    """Decode one 2D image to a ``(channels, H, W)`` float32 tensor in [0, 1], at its own size.

    Decoding goes through :func:`medlearn.io.read_image`; alpha is dropped; pixels are scaled by
    :func:`to_unit_range`. ``channels=1``: colour becomes gray (mean over the colour channels);
    ``channels=3``: colour stays RGB and gray is repeated.

    Raises:
        DataError: naming ``path`` if the file cannot be read or is not a single 2D image.
        ValueError: ``channels`` other than 1 or 3.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    array, meta = _read(path, "image")
    if array.ndim == 2:
        array = array[None]
    if array.ndim == 4 and array.shape[1] == 1:  # (C, F=1, H, W): a one-frame stack
        array = array[:, 0]
    if array.ndim != 3 or array.shape[0] not in (1, 2, 3, 4) or min(array.shape[1:]) < 1:
        raise DataError(path, f"expected one 2D image (C, H, W) with 1-4 channels, got shape {array.shape}")
    if array.shape[0] in (2, 4):  # gray+alpha or RGBA: drop alpha
        array = array[:-1]
    x = to_unit_range(array, meta or {}, path)
    if channels == 1:
        x = x.mean(axis=0, keepdims=True)
    elif x.shape[0] == 1:
        x = np.repeat(x, 3, axis=0)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def load_gray(path: str | Path) -> torch.Tensor:
    """:func:`load_image` with one channel: a gray ``(1, H, W)`` float32 tensor in [0, 1]."""
    return load_image(path, 1)


def resize_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``(C, H, W)`` to ``(C, size, size)`` in [0, 1] (the aspect ratio is not kept).

    ``area`` interpolation when shrinking both sides, else bilinear with antialiasing.
    """
    t = image[None]
    h, w = t.shape[-2:]
    if (h, w) != (size, size):
        if h >= size and w >= size:
            t = F.interpolate(t, size=(size, size), mode="area")
        else:
            t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return t[0].clamp_(0.0, 1.0)


def load_radiograph(path: str | Path, image_size: int) -> torch.Tensor:
    """Decode one radiograph to a gray ``(1, image_size, image_size)`` float32 tensor in [0, 1].

    Decoding and gray conversion as :func:`load_gray`, resizing as :func:`resize_square`.

    Raises:
        DataError: naming ``path`` if the file cannot be read or is not a single 2D image.
    """
    return resize_square(load_gray(path), image_size)


class ImageCache:
    """A preallocated in-memory block of ``n`` images ``shape = (C, H, W)`` in [0, 1], filled lazily.

    ``torch.uint8`` storage quantises to 1/255 (at most 0.5/255 from the stored value);
    ``torch.float16`` keeps 16-bit sources' depth at twice the memory. One block (not a Python
    object per item) keeps the memory bound exact; forked DataLoader workers share a block filled
    before they start copy-on-write.

    Args:
        n: number of images.
        shape: ``(C, H, W)`` of each image.
        dtype: ``torch.uint8`` or ``torch.float16``.

    Raises:
        ValueError: another dtype.
    """

    def __init__(self, n: int, shape: Sequence[int], dtype: torch.dtype = torch.uint8) -> None:
        self.check_dtype(dtype)
        self.store = torch.empty((n, *shape), dtype=dtype)
        self.filled = torch.zeros(n, dtype=torch.bool)

    @staticmethod
    def check_dtype(dtype: torch.dtype) -> None:
        """Raise ``ValueError`` unless ``dtype`` is ``torch.uint8`` or ``torch.float16``."""
        if dtype not in (torch.uint8, torch.float16):
            raise ValueError(f"cache_dtype must be torch.uint8 or torch.float16, got {dtype}")

    @property
    def nbytes(self) -> int:
        """Memory of the block."""
        return self.store.numel() * self.store.element_size()

    def has(self, index: int) -> bool:
        """Whether image ``index`` is stored."""
        return bool(self.filled[index])

    def put(self, index: int, image: torch.Tensor) -> None:
        """Store ``image`` (in [0, 1]) at ``index``."""
        if self.store.dtype == torch.uint8:
            self.store[index] = torch.round(image.clamp(0.0, 1.0) * 255.0).to(torch.uint8)
        else:
            self.store[index] = image.to(torch.float16)
        self.filled[index] = True

    def get(self, index: int) -> torch.Tensor:
        """The stored image as float32."""
        stored = self.store[index]
        if stored.dtype == torch.uint8:
            return stored.to(torch.float32) / 255.0
        return stored.to(torch.float32)


def load_image2d(path: str | Path, image_size: int, channels: int = 3) -> torch.Tensor:
    """Decode one 2D image to ``(channels, image_size, image_size)`` float32 in [0, 1].

    Colour images keep RGB (alpha dropped) for ``channels=3`` and become gray (mean over colour)
    for ``channels=1``; gray images are repeated for ``channels=3``. Pixels are scaled by
    :func:`to_unit_range`; the image is resized to a square (aspect ratio not kept) with ``area``
    interpolation when shrinking both sides, else bilinear + antialiasing.

    Raises:
        DataError: naming ``path`` if it cannot be read or is not one 2D image.
    """
    return resize_square(load_image(path, channels), image_size)


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of a 2D image from its header (Pillow), else by decoding it.

    Raises:
        DataError: naming ``path`` if it cannot be read.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError, ValueError):
        t = load_gray(path)  # other formats (DICOM ...), or the precise reason it is unreadable
        return int(t.shape[2]), int(t.shape[1])


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(C, H, W)`` in [0, 1] -> ``(C, *size)``: bilinear with antialiasing (aspect ratio not kept).

    Unlike :func:`resize_square` it never switches to ``area`` interpolation, so that an image and
    its mask (:func:`resize_mask`) are resampled on the same pixel-centre grid.
    """
    h, w = int(size[0]), int(size[1])
    if tuple(image.shape[-2:]) == (h, w):
        return image.clamp(0.0, 1.0)
    t = F.interpolate(image[None], size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return t[0].clamp_(0.0, 1.0)


def resize_mask(mask: np.ndarray | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(H, W)`` integer labels -> ``(1, *size)`` int64 by nearest neighbour; values are kept exactly.

    Pixel centres are matched (``nearest-exact``: output pixel ``i`` takes input pixel
    ``floor((i + 0.5) * H / size[0])``), the grid bilinear resizing of the image uses.
    """
    t = torch.as_tensor(np.asarray(mask)).to(torch.float64)[None, None]  # float64 holds any int32 exactly
    h, w = int(size[0]), int(size[1])
    if tuple(t.shape[-2:]) != (h, w):
        t = F.interpolate(t, size=(h, w), mode="nearest-exact")
    return t[0].to(torch.int64)


def load_mask(path: str | Path) -> np.ndarray:
    """Decode a 2D label mask to its stored integer values, ``(H, W)`` int64.

    Accepted: single-channel 8- or 16-bit PNG / BMP / TIFF (gray + alpha: alpha dropped); an RGB
    mask whose three channels are equal (its value is that of any channel); a 2D NIfTI file, or a
    3D one with one singleton axis (``(X, Y, 1)`` or ``(1, Y, Z)``), whose array is taken as
    stored (axis 0 = rows).

    Raises:
        DataError: naming ``path``: unreadable, more than one 2D image, colour channels that
            differ (a palette PNG's colours are not label values), or non-integer values.
    """
    array, meta = _read(path, "mask")
    if str((meta or {}).get("format", "")).lower() == "nifti":
        spatial = array.shape[1:]
        if array.shape[0] != 1:
            raise DataError(path, f"a label mask has one channel; the NIfTI file has {array.shape[0]} volumes")
        if spatial[2] == 1:
            mask = array[0, :, :, 0]
        elif spatial[0] == 1:
            mask = array[0, 0]
        else:
            raise DataError(path, f"a 2D mask is expected; the NIfTI file has shape {spatial}")
    elif array.ndim != 3 or array.shape[0] not in (1, 3):
        raise DataError(path, f"a 2D mask with one channel is expected, got shape {array.shape}")
    elif array.shape[0] == 3:
        differ = (array[0] != array[1]) | (array[0] != array[2])
        if differ.any():
            raise DataError(path, f"an RGB mask must have three equal channels; {int(differ.sum())} pixels differ "
                                  "(save label masks as single-channel 8- or 16-bit images; the colours of a "
                                  "palette PNG are not label values)")
        mask = array[0]
    else:
        mask = array[0]
    fractional = mask != np.floor(mask)
    if fractional.any():
        shown = [float(v) for v in np.unique(mask[fractional])[:5]]
        raise DataError(path, f"a label mask holds whole numbers; found {shown}")
    return mask.astype(np.int64)


def _describe_values(mask: np.ndarray, values: list[int]) -> str:
    return ", ".join(f"{v} ({int(np.count_nonzero(mask == v))} pixels)" for v in values[:10]) + (
        " ..." if len(values) > 10 else "")


def relabel_mask(mask: np.ndarray, path: str | Path, value_map: Mapping[int, int] | None = None,
                 label_values: Sequence[int] | None = None) -> np.ndarray:
    """Map a mask's stored values to labels and check them.

    Args:
        mask: ``(H, W)`` integer stored values, e.g. from :func:`load_mask`.
        path: the mask file, to name in errors.
        value_map: ``{stored: label}`` (e.g. REFUGE's ``{255: 0, 128: 1, 0: 2}``); every stored
            value must be a key. ``None``: values are kept.
        label_values: the allowed label values (after mapping); ``None``: any.

    Returns:
        ``(H, W)`` int64 labels.

    Raises:
        DataError: naming ``path`` and the offending values (with their pixel counts): a stored
            value missing from ``value_map``, or a label outside ``label_values`` (anti-aliased
            or resampled edges typically).
    """
    mask = np.asarray(mask, dtype=np.int64)
    values = [int(v) for v in np.unique(mask)]
    if value_map is not None:
        keys = {int(k): int(v) for k, v in value_map.items()}
        unknown = [v for v in values if v not in keys]
        if unknown:
            raise DataError(path, f"mask values {_describe_values(mask, unknown)} are not in value_map "
                                  f"(it maps {sorted(keys)})")
        out = np.empty_like(mask)
        for v in values:
            out[mask == v] = keys[v]
        mask = out
        values = sorted({keys[v] for v in values})
    if label_values is not None:
        allowed = {int(v) for v in label_values}
        bad = [v for v in values if v not in allowed]
        if bad:
            raise DataError(path, f"mask holds values outside label_values {sorted(allowed)}: "
                                  f"{_describe_values(mask, bad)} (anti-aliased or resampled edges?)")
    return mask
