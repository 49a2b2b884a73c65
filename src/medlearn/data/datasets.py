"""A PyTorch dataset over radiograph files (labeled records or plain image folders).

Decoding, scaling, resizing and the cache block are :mod:`medlearn.data.decode`'s. Used by C2L
(Zhou et al., "Comparing to Learn", MICCAI 2020) for pretraining on unlabeled radiographs and
fine-tuning on NIH ChestX-ray14 (Wang et al., "ChestX-ray8", CVPR 2017); records come from
:func:`medlearn.data.chestxray14.read_chestxray14` or :func:`medlearn.data.records.list_image_files`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medlearn.data.decode import ImageCache, load_radiograph
from medlearn.data.records import ImageRecord

__all__ = ["RadiographDataset"]


class RadiographDataset(Dataset):
    """Gray radiographs resized to a square, with optional multi-hot labels.

    Each item is ``{"image": (1, S, S) float32 in [0, 1], "label": (n_classes,) float32, "name":
    str}``; ``"label"`` is absent when the records carry no labels (plain paths or records with
    ``labels=None``). See :func:`~medlearn.data.decode.load_radiograph` for decoding, scaling and resizing.

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
        records: :class:`~medlearn.data.records.ImageRecord` s, or image paths (unlabeled).
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

