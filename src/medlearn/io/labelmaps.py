"""Label maps on a volume's own grid: the integer type that holds the labels, and the atomic writer.

A label map written by ``medlearn predict`` (a segmenter's, LT-Net's) is a volume of label values
on the grid of the image it labels: that image's stored shape and affine, the label values as the
dataset stores them (never re-indexed), in the smallest integer type that holds them. This
module writes one, as NIfTI (``.nii`` / ``.nii.gz``, through :func:`~medlearn.io.api.write_image`)
or FreeSurfer MGH/MGZ (``.mgh`` / ``.mgz``, through nibabel), atomically.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from medlearn.io._common import atomic_write
from medlearn.io.api import write_image

__all__ = ["label_map_dtype", "write_label_map"]


def label_map_dtype(values: Iterable[int]) -> np.dtype:
    """The smallest integer type holding every label value: ``uint8``, else ``int16``, else ``int32``.

    Examples:
        >>> label_map_dtype([0, 1, 2, 4]), label_map_dtype([0, 41, 300]), label_map_dtype([-1, 70000])
        (dtype('uint8'), dtype('int16'), dtype('int32'))
    """
    v = np.asarray(list(values) or [0])
    if v.min() >= 0 and v.max() <= 255:
        return np.dtype(np.uint8)
    if v.min() >= -32768 and v.max() <= 32767:
        return np.dtype(np.int16)
    return np.dtype(np.int32)


def write_label_map(path: str | Path, labels: np.ndarray, affine: np.ndarray, stored_shape: Sequence[int],
                    dtype: np.dtype) -> Path:
    """Write a label map on an image's grid: ``labels`` with ``affine``, shaped as the image is stored.

    Args:
        path: the destination, ``.nii`` / ``.nii.gz`` (NIfTI-1) or ``.mgz`` / ``.mgh`` (MGH has no
            16-bit type: ``int16`` is stored as ``int32``); replaced if it exists.
        labels: the label values on the image's voxels (its spatial shape; a 2D image's ``(X, Y)``).
        affine: the image's 4x4 voxel-to-world affine.
        stored_shape: the image's stored spatial shape (``(X, Y)``, ``(X, Y, 1)`` or ``(X, Y, Z)``).
        dtype: the integer type to store (:func:`label_map_dtype` of the label values).

    Returns:
        The written path.

    Raises:
        DataError: values that do not fit ``dtype``, or a bad affine (see
            :func:`~medlearn.io.nifti.write_nifti`).
    """
    path = Path(path)
    arr = np.asarray(labels).astype(dtype).reshape(tuple(int(s) for s in stored_shape))
    name = path.name.lower()
    if name.endswith((".mgz", ".mgh")):
        import nibabel as nib

        img = nib.MGHImage(arr.astype(np.int32 if dtype == np.dtype(np.int16) else dtype), np.asarray(affine))
        return atomic_write(path, lambda tmp: nib.save(img, tmp), overwrite=True, suffix=path.suffix)
    while arr.ndim < 3:
        arr = arr[..., None]
    return write_image(path, arr[None], {"affine": np.asarray(affine)}, overwrite=True)
