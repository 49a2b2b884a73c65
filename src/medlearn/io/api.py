"""``read_image`` and ``write_image``: one entry point for every supported format.

See :mod:`medlearn.io` for the array and metadata contract. The format is chosen from the file's
content (magic numbers), not trusted from its name:

- content and extension agree (or the extension is unknown / missing, as for DICOM files named by
  UID) -> read as that format;
- content is another supported format than the extension promises (a PNG saved as ``.dcm``) ->
  read by content, with a :class:`~medlearn.io._common.FormatMismatchWarning` and
  ``meta["extension_mismatch"] = True``, so the mix-up is never silent;
- content is no supported format (a text file named ``.png``) -> :class:`DataError`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medlearn.io._common import (
    FORMAT_NAMES,
    FormatMismatchWarning,
    check_readable,
    describe_unknown_content,
    detect_format,
    extension_format,
)
from medlearn.io.dicom import read_dicom
from medlearn.io.errors import DataError
from medlearn.io.image2d import read_bmp, read_jpeg, read_png, read_tiff, write_png, write_tiff
from medlearn.io.mgh import mgh_geometry, read_mgh
from medlearn.io.nifti import nifti_geometry, read_nifti, write_nifti

__all__ = ["image_geometry", "read_image", "write_image"]

_READERS: dict[str, Callable[[str | Path], tuple[np.ndarray, dict[str, Any]]]] = {
    "png": read_png,
    "jpeg": read_jpeg,
    "bmp": read_bmp,
    "tiff": read_tiff,
    "dicom": read_dicom,
    "nifti": read_nifti,
    "mgh": read_mgh,
}


def read_image(path: str | Path, *, nonfinite: str | float = "refuse") -> tuple[np.ndarray, dict[str, Any]]:
    """Read a PNG, JPEG, BMP, TIFF, DICOM, NIfTI or FreeSurfer MGH/MGZ file into the medlearn array contract.

    Args:
        path: the image file (``.png .jpg .jpeg .bmp .tif .tiff .dcm .nii .nii.gz .mgh .mgz``, or
            a DICOM file with any or no extension).
        nonfinite: the policy for NaN / Inf voxels of NIfTI and MGH files: ``"refuse"`` (default: a
            :class:`DataError` that counts them) or a value that replaces them, with a
            ``NonFiniteReplacedWarning`` that counts them. Other formats always refuse them.

    Returns:
        ``(array, meta)``: a float32 channel-first array and the metadata dict, both as described
        in :mod:`medlearn.io`.

    Raises:
        DataError: a missing, empty, truncated, corrupt or unrecognised file, or any other bad
            input the format reader refuses (no pixel data, unsupported transfer syntax, NaN/Inf
            pixels, zero-size or more than 4 dimensions...).

    Warns:
        FormatMismatchWarning: the content is a different supported format than the extension.
    """
    path, head = check_readable(path)
    by_name = extension_format(path)
    found = [f for f in detect_format(path, head) if f in _READERS or f == "dicom-raw"]
    found = ["dicom" if f == "dicom-raw" else f for f in found]
    if by_name in found:
        fmt = by_name
    elif found:
        fmt = found[0]
    else:
        raw = detect_format(path, head)
        if "gzip" in raw:  # the precise reason (truncated stream / not NIfTI or MGH)
            return read_mgh(path, nonfinite) if by_name == "mgh" else read_nifti(path, nonfinite)
        expected = f"not a valid {FORMAT_NAMES[by_name]} file: " if by_name else ""
        raise DataError(path, f"{expected}{describe_unknown_content(head)}")
    mismatch = False
    if by_name is not None and fmt != by_name:
        mismatch = True
        warnings.warn(
            f"{path}: the extension says {FORMAT_NAMES[by_name]} but the content is "
            f"{FORMAT_NAMES[fmt]}; reading it as {FORMAT_NAMES[fmt]}",
            FormatMismatchWarning,
            stacklevel=2,
        )
    if fmt == "nifti":
        array, meta = read_nifti(path, nonfinite)
    elif fmt == "mgh":
        array, meta = read_mgh(path, nonfinite)
    else:
        array, meta = _READERS[fmt](path)
    meta["extension_mismatch"] = mismatch
    return array, meta


def image_geometry(path: str | Path) -> tuple[tuple[int, ...], np.ndarray]:
    """A volume file's shape and affine from its header, with the voxels checked to be all there.

    For NIfTI (:func:`~medlearn.io.nifti.nifti_geometry`) and FreeSurfer MGH/MGZ
    (:func:`~medlearn.io.mgh.mgh_geometry`); the format is recognised from the content, as in
    :func:`read_image`. Voxels are not converted, so checking many files is cheap.

    Args:
        path: a ``.nii``, ``.nii.gz``, ``.mgh`` or ``.mgz`` file.

    Returns:
        ``(shape, affine)``: the stored shape (``(X, Y, Z)`` or ``(X, Y, Z, T)``; a 2D NIfTI gives
        ``(X, Y)``) and the 4x4 voxel-to-world affine.

    Raises:
        DataError: a missing, empty, truncated or corrupt file, or one that is neither NIfTI nor
            MGH/MGZ.
    """
    path, head = check_readable(path)
    found = detect_format(path, head)
    if "nifti" in found:
        return nifti_geometry(path)
    if "mgh" in found:
        return mgh_geometry(path)
    if "gzip" in found:  # a broken or foreign gzip stream: the reader says which
        read_mgh(path) if extension_format(path) == "mgh" else read_nifti(path)
    what = ", ".join(FORMAT_NAMES.get(f, f) for f in found if f != "gzip") or describe_unknown_content(head)
    raise DataError(path, f"not a NIfTI or MGH/MGZ volume ({what})")


def write_image(
    path: str | Path,
    array: np.ndarray,
    meta: Mapping[str, Any] | None = None,
    *,
    dtype: str | np.dtype | None = None,
    overwrite: bool = False,
) -> Path:
    """Write an array in the medlearn contract as PNG, TIFF or NIfTI (chosen by extension).

    Writing is atomic (temp file in the same folder, then rename) and never rescales values.

    Args:
        path: the destination: ``.png``, ``.tif``/``.tiff``, ``.nii``/``.nii.gz``.
        array: channel-first ``(C, H, W)`` (or ``(H, W)``) for PNG; also ``(C, F, H, W)`` for TIFF;
            ``(C, X, Y, Z)`` for NIfTI.
        meta: optional metadata, e.g. from :func:`read_image`. NIfTI uses ``affine`` (else
            ``spacing``) and ``time_step``; PNG uses ``bit_depth`` (8 or 16) to choose the dtype
            of a float array when ``dtype`` is not given.
        dtype: the stored dtype. PNG: ``"uint8"`` or ``"uint16"``, required for float arrays
            unless ``meta["bit_depth"]`` is 8 or 16. TIFF/NIfTI: ``None`` keeps the array's dtype.
        overwrite: replace an existing file.

    Returns:
        The written path.

    Raises:
        DataError: an unsupported output format (DICOM and JPEG are read-only), or an array the
            format cannot store as asked (see :func:`write_png`, :func:`write_tiff`,
            :func:`write_nifti`).
        FileExistsError: ``path`` exists and ``overwrite`` is false.
    """
    meta = dict(meta or {})
    fmt = extension_format(path)
    array = np.asarray(array)
    if fmt == "png":
        if dtype is None and array.dtype.kind == "f" and meta.get("bit_depth") in (8, 16):
            dtype = np.dtype(np.uint8 if meta["bit_depth"] == 8 else np.uint16)
        return write_png(path, array, dtype=dtype, overwrite=overwrite)
    if fmt == "tiff":
        return write_tiff(path, array, dtype=dtype, overwrite=overwrite)
    if fmt == "nifti":
        return write_nifti(
            path,
            array,
            meta.get("affine"),
            spacing=meta.get("spacing"),
            time_step=meta.get("time_step"),
            dtype=dtype,
            overwrite=overwrite,
        )
    what = FORMAT_NAMES.get(fmt or "", Path(path).suffix or "no extension")
    raise DataError(
        path, f"cannot write {what}: write_image writes PNG, TIFF and NIfTI (DICOM/JPEG are read-only)"
    )
