"""PyTorch datasets over radiograph files (labeled records or plain image folders).

Used by C2L (Zhou et al., "Comparing to Learn", MICCAI 2020) for pretraining on unlabeled
radiographs and fine-tuning on NIH ChestX-ray14 (Wang et al., "ChestX-ray8", CVPR 2017); records
come from :func:`medlearn.data.chestxray14.read_chestxray14` or
:func:`medlearn.data.chestxray14.list_image_files`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from medlearn.data.chestxray14 import ImageRecord
from medlearn.io.errors import DataError

__all__ = ["ImageCache", "RadiographDataset", "load_gray", "load_image", "load_radiograph", "resize_square",
           "to_unit_range"]

_DTYPE_BITS = {"uint8": 8, "int8": 8, "uint16": 16, "int16": 16, "uint32": 32, "int32": 32}


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
    from medlearn.io import read_image  # io is a sibling package; imported late on purpose

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    try:
        array, meta = read_image(path)
    except DataError:
        raise
    except Exception as exc:  # any decoder failure becomes a DataError naming the file
        raise DataError(path, f"cannot read image: {type(exc).__name__}: {exc}") from exc
    array = np.asarray(array)
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
    """``(C, H, W)`` -> ``(C, size, size)`` in [0, 1] (aspect ratio not kept): ``area`` interpolation
    when shrinking both sides, else bilinear with antialiasing."""
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


class RadiographDataset(Dataset):
    """Gray radiographs resized to a square, with optional multi-hot labels.

    Each item is ``{"image": (1, S, S) float32 in [0, 1], "label": (n_classes,) float32, "name":
    str}``; ``"label"`` is absent when the records carry no labels (plain paths or records with
    ``labels=None``). See :func:`load_radiograph` for decoding, scaling and resizing.

    Caching: with ``cache=True`` each image is decoded and resized once, on first access, and kept
    in one preallocated in-memory tensor of ``N * S * S`` bytes (``uint8``, i.e. quantised to
    1/255 — at most 0.5/255 from the uncached value) or twice that with ``cache_dtype=float16``;
    ChestX-ray14 at S=224 takes 112,120 x 224^2 B = 5.6 GB in uint8. This is a simple in-memory
    cache, not :class:`monai.data.CacheDataset`: that one decodes everything up front and keeps a
    Python object per item, where a lazily filled single block keeps the memory bound exact.
    DataLoader worker processes each fill their own copy; call :meth:`fill_cache` before creating
    the loader (forked workers then share the filled block copy-on-write), or use
    ``persistent_workers=True``.

    Args:
        records: :class:`~medlearn.data.chestxray14.ImageRecord` s, or image paths (unlabeled).
        image_size: output side S in pixels.
        cache: keep decoded images in memory.
        cache_dtype: ``torch.uint8`` (default) or ``torch.float16`` (keeps 16-bit sources' depth).

    Raises:
        ValueError: on an empty record list, a bad size or dtype, or records mixing labeled and
            unlabeled items or label lengths.

    Examples:
        >>> recs = read_chestxray14("cxr14", split="train_val")  # doctest: +SKIP
        >>> ds = RadiographDataset(recs, image_size=64)  # doctest: +SKIP
        >>> ds[0]["image"].shape, ds[0]["label"].shape  # doctest: +SKIP
        (torch.Size([1, 64, 64]), torch.Size([14]))
    """

    def __init__(
        self,
        records: Sequence[ImageRecord] | Sequence[Path] | Sequence[str],
        image_size: int,
        cache: bool = True,
        cache_dtype: torch.dtype = torch.uint8,
    ) -> None:
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        ImageCache.check_dtype(cache_dtype)
        if len(records) == 0:
            raise ValueError("RadiographDataset needs at least one record")
        self.image_size = int(image_size)
        self.paths: list[Path] = []
        self.names: list[str] = []
        labels: list[np.ndarray | None] = []
        for r in records:
            if isinstance(r, ImageRecord):
                self.paths.append(Path(r.path))
                self.names.append(r.name)
                labels.append(r.labels)
            else:
                self.paths.append(Path(r))
                self.names.append(Path(r).name)
                labels.append(None)
        labeled = {lab is not None for lab in labels}
        if len(labeled) > 1:
            raise ValueError("records mix labeled and unlabeled items")
        self.labels: torch.Tensor | None = None
        if labeled == {True}:
            lengths = {len(lab) for lab in labels if lab is not None}
            if len(lengths) > 1:
                raise ValueError(f"records have labels of different lengths {sorted(lengths)}")
            self.labels = torch.from_numpy(np.stack([np.asarray(lab, dtype=np.float32) for lab in labels]))
        self.cache = bool(cache)
        self._cache = ImageCache(len(self.paths), (1, self.image_size, self.image_size), cache_dtype) if cache else None

    @property
    def n_classes(self) -> int:
        """Number of label entries (0 when unlabeled)."""
        return 0 if self.labels is None else int(self.labels.shape[1])

    @property
    def cache_bytes(self) -> int:
        """Memory the cache block takes when full (0 without cache)."""
        return 0 if self._cache is None else self._cache.nbytes

    def __len__(self) -> int:
        return len(self.paths)

    def _image(self, index: int) -> torch.Tensor:
        if self._cache is None:
            return load_radiograph(self.paths[index], self.image_size)
        if not self._cache.has(index):
            self._cache.put(index, load_radiograph(self.paths[index], self.image_size))
        return self._cache.get(index)

    def fill_cache(self) -> None:
        """Decode every image not cached yet (no-op without cache)."""
        if self._cache is not None:
            for i in range(len(self)):
                if not self._cache.has(i):
                    self._image(i)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = range(len(self))[index]  # bounds check, negative indices
        item: dict[str, Any] = {"image": self._image(index), "name": self.names[index]}
        if self.labels is not None:
            item["label"] = self.labels[index].clone()
        return item

    def __repr__(self) -> str:
        mb = self.cache_bytes / 2**20
        return (
            f"{type(self).__name__}(n={len(self)}, image_size={self.image_size}, n_classes={self.n_classes}, "
            f"cache={'%.1f MiB' % mb if self.cache else 'off'})"
        )

