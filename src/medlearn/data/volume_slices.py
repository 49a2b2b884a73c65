"""2D slices of labelled volumes as image / mask pairs: the record, its decoding, slice and ROI choice.

Several public segmentation data sets are volumes (KiTS19 kidney-tumour CT, ACDC cardiac MR) that 2D
methods (Crossover-Net, Crossbar-Net) read slice by slice. This module owns what those layouts share
and knows no data set:

* :class:`VolumeSlice`, a :class:`~medlearn.data.records.DecodedMaskedImage`: one slice of an image
  volume and of its label volume, with its intensity scaling (a fixed window such as a CT HU window,
  or the volume's own percentiles for MR) and an optional region of interest; ``read_pair`` decodes it.
  :class:`~medlearn.data.segmentation2d.ImageMaskDataModule` then treats it as any 2D pair (resizing,
  label checks, cache, splits by ``group`` = case, so slices of a case never straddle a split).
* :func:`load_volume`: a volume through :func:`medlearn.io.read_image` (NIfTI in stored voxel order,
  scaling applied: CT in HU), with a small least-recently-used cache, because consecutive slices come
  from the same volume (``ImageMaskDataset`` decodes its pairs in record order when it checks them).
* :func:`label_value_problem`, :func:`select_slices`, :func:`roi_around`: the checks and choices a
  layout reader makes once per case.

Written by hand: MONAI's 2D-slice transforms work on loaded volumes one at a time, not on records.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medlearn.data.records import DecodedMaskedImage
from medlearn.io.errors import DataError

__all__ = ["VolumeSlice", "load_volume", "take_slice", "scale_intensity", "label_value_problem", "select_slices",
           "roi_around", "crop_padded", "SCALINGS"]

#: Intensity scalings of :class:`VolumeSlice`.
SCALINGS = ("window", "percentile")


@functools.lru_cache(maxsize=2)
def _cached_volume(path: str, mtime_ns: int, size: int) -> np.ndarray:
    from medlearn.io import read_image

    array, _ = read_image(path)
    if array.ndim != 4 or array.shape[0] != 1:
        raise DataError(path, f"a single 3D volume is expected, got an array of shape {tuple(array.shape)}")
    out = array[0]
    out.setflags(write=False)
    return out


def load_volume(path: str | Path) -> np.ndarray:
    """A 3D volume ``(X, Y, Z)`` float32 in stored voxel order and units (read-only; the last 2 are cached: a
    case's image and labels, as records of one case follow each other).

    Raises:
        DataError: naming the file when it cannot be read or is not one 3D volume.
    """
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise DataError(p, f"volume not found ({exc.strerror or exc})") from exc
    return _cached_volume(str(p), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4)
def _cached_percentiles(path: str, mtime_ns: int, lo: float, hi: float) -> tuple[float, float]:
    v = load_volume(path)
    a, b = np.percentile(v, [lo, hi])
    return float(a), float(b)


def scale_intensity(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``clip((x - lo) / (hi - lo), 0, 1)`` as float32 (``hi <= lo``: all zeros)."""
    if hi <= lo:
        return np.zeros(x.shape, dtype=np.float32)
    return np.clip((np.asarray(x, dtype=np.float32) - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def take_slice(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """The 2D slice ``index`` along ``axis`` of a 3D array (the other two axes keep their stored order)."""
    return np.take(volume, index, axis=axis)


def crop_padded(x: np.ndarray, box: tuple[int, int, int, int] | None, fill: float = 0.0) -> np.ndarray:
    """Rows ``box[0]:box[1]``, columns ``box[2]:box[3]`` of a 2D array; parts outside it take ``fill``."""
    if box is None:
        return x
    r0, r1, c0, c1 = box
    out = np.full((r1 - r0, c1 - c0), fill, dtype=x.dtype)
    h, w = x.shape
    a0, a1, b0, b1 = max(r0, 0), min(r1, h), max(c0, 0), min(c1, w)
    if a0 < a1 and b0 < b1:
        out[a0 - r0:a1 - r0, b0 - c0:b1 - c0] = x[a0:a1, b0:b1]
    return out


@dataclass
class VolumeSlice(DecodedMaskedImage):
    """One slice of an image volume and its label volume.

    Attributes (beyond :class:`~medlearn.data.records.MaskedImage`'s: ``path`` the image volume,
    ``mask`` the label volume, ``group`` the case, ``name`` e.g. ``case_00000/slice_0123``):
        index: the slice index along ``axis``.
        axis: the stored array axis the slices are taken along (KiTS19: 0; ACDC: 2).
        scaling: ``"window"`` (``window`` in stored units, e.g. a CT HU window) or ``"percentile"``
            (``window`` holds two percentiles of the whole volume, e.g. ``(1, 99)`` for MR).
        window: the two bounds mapped to 0 and 1 (clipped outside).
        roi: ``(row0, row1, col0, col1)`` crop of the slice (may extend beyond it: padded with 0 in
            the image and the background in the mask), or ``None``: the whole slice.
    """

    index: int = 0
    axis: int = 0
    scaling: str = "window"
    window: tuple[float, float] = (0.0, 1.0)
    roi: tuple[int, int, int, int] | None = None

    def read_pair(self) -> tuple[np.ndarray, np.ndarray]:
        """``(image (1, H, W) float32 in [0, 1], mask (H, W) int64)`` of the slice (and ROI).

        Raises:
            DataError: a volume cannot be read, the two volumes differ in shape, the slice index is out of
                range, or the mask holds non-integer values.
        """
        vol, seg = load_volume(self.path), load_volume(self.mask)
        if vol.shape != seg.shape:
            raise DataError(self.mask, f"label volume shape {seg.shape} differs from the image's {vol.shape} "
                                       f"({self.path})")
        if not 0 <= self.index < vol.shape[self.axis]:
            raise DataError(self.path, f"slice {self.index} is outside axis {self.axis} of shape {vol.shape}")
        if self.scaling == "percentile":
            st = Path(self.path).stat()
            lo, hi = _cached_percentiles(str(self.path), st.st_mtime_ns, float(self.window[0]),
                                         float(self.window[1]))
        elif self.scaling == "window":
            lo, hi = float(self.window[0]), float(self.window[1])
        else:
            raise ValueError(f"scaling must be one of {SCALINGS}, got {self.scaling!r}")
        image = scale_intensity(take_slice(vol, self.axis, self.index), lo, hi)
        raw = take_slice(seg, self.axis, self.index)
        mask = np.rint(raw).astype(np.int64)
        if (mask != raw).any():
            raise DataError(self.mask, f"{self.name}: non-integer label values "
                                       f"{[float(v) for v in np.unique(raw[mask != raw])[:5]]}")
        return crop_padded(image, self.roi)[None], crop_padded(mask, self.roi)


def label_value_problem(labels: np.ndarray, allowed: Collection[int], name: str) -> str | None:
    """A problem line when a label volume holds non-integer values or values outside ``allowed``, else ``None``."""
    as_int = np.rint(labels).astype(np.int64)
    if (as_int != labels).any():
        bad = np.unique(labels[as_int != labels])[:5]
        return f"{name}: non-integer label values {[float(b) for b in bad]}"
    values, counts = np.unique(as_int, return_counts=True)
    outside = [(int(v), int(c)) for v, c in zip(values, counts) if int(v) not in set(allowed)]
    if outside:
        shown = ", ".join(f"{v} ({c} voxels)" for v, c in outside[:10])
        return f"{name}: label values outside {sorted(allowed)}: {shown}"
    return None


def select_slices(labels: np.ndarray, axis: int, which: str | int | Sequence[int], min_pixels: int = 1) -> list[int]:
    """Indices of the slices along ``axis`` to keep.

    Args:
        labels: the label volume.
        axis: the slice axis.
        which: ``"all"``; ``"labelled"`` (any non-zero label); a label value or a list of them (slices
            holding at least ``min_pixels`` pixels of those labels).
        min_pixels: pixels needed for ``"labelled"`` or labels.

    Returns:
        Sorted slice indices.
    """
    n = labels.shape[axis]
    if which == "all":
        return list(range(n))
    others = tuple(a for a in range(labels.ndim) if a != axis)
    if which == "labelled":
        hit = labels != 0
    else:
        values = [int(which)] if isinstance(which, (int, np.integer)) else [int(v) for v in which]
        hit = np.isin(labels, values)
    counts = hit.sum(axis=others)
    return [int(i) for i in np.flatnonzero(counts >= max(1, int(min_pixels)))]


def roi_around(labels2d: np.ndarray, anchor: Collection[int], region: Collection[int], size: int,
               margin: int = 16) -> tuple[int, int, int, int] | None:
    """A square region of interest around the structure that holds the ``anchor`` labels.

    The structure is every 8-connected component of ``region`` labels that touches an ``anchor`` pixel
    (KiTS19: the kidney + tumour component holding the tumour, i.e. the tumour-bearing kidney). The
    box is ``size x size`` centred on the structure's bounding box, or the bounding box plus ``margin``
    on each side made square when that is larger.

    Returns:
        ``(row0, row1, col0, col1)`` (may extend beyond the slice), or ``None`` when no anchor pixel.
    """
    from scipy import ndimage

    anchor_mask = np.isin(labels2d, list(anchor))
    if not anchor_mask.any():
        return None
    cc, _ = ndimage.label(np.isin(labels2d, list(region)) | anchor_mask, structure=np.ones((3, 3)))
    keep = np.setdiff1d(np.unique(cc[anchor_mask]), [0])
    rows, cols = np.nonzero(np.isin(cc, keep))
    r0, r1, c0, c1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    side = max(int(size), r1 - r0 + 2 * margin, c1 - c0 + 2 * margin)
    cr, cc_ = (r0 + r1) // 2, (c0 + c1) // 2
    return cr - side // 2, cr - side // 2 + side, cc_ - side // 2, cc_ - side // 2 + side
