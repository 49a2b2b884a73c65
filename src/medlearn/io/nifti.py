"""NIfTI-1/NIfTI-2 reader and writer (nibabel), plus a reorientation helper.

A thin, hand-written wrapper: nibabel parses the header, applies ``scl_slope``/``scl_inter`` and
reads the voxels; this module only checks the input, converts to the medlearn array contract and
fills the metadata dict.

Array layout (float32, channel-first, **voxel order as stored** -- the reader never reorients):

- 3D ``(X, Y, Z)`` -> ``(1, X, Y, Z)``; 2D ``(X, Y)`` -> ``(1, X, Y, 1)``;
- 4D ``(X, Y, Z, T)`` -> ``(T, X, Y, Z)`` (volumes of a time series or channels of a
  multi-contrast image become the channel axis);
- trailing singleton dimensions beyond the fourth are dropped; anything with more than four
  non-trivial dimensions (vector or tensor images) is refused.

Metadata: ``affine`` is nibabel's best affine (sform, else qform), ``spacing`` the first three
zooms in the file's spatial unit (``meta["spatial_unit"]``, ``"mm"`` for almost all files; the
values are not converted so they stay consistent with ``affine``), ``orientation`` the axis codes
of the affine (e.g. ``"LAS"``, via :func:`nibabel.aff2axcodes`). Extras: ``time_step``,
``spatial_unit``, ``time_unit``, ``datatype``, ``qform_code``, ``sform_code``, ``n_volumes``,
``nifti_version``.

Use :func:`reorient_to` to bring an array to a canonical orientation (e.g. RAS) explicitly.

Integrity without decoding: :func:`nifti_geometry` reads a file's shape and affine from its header
and checks, from the file size (``.nii``) or the gzip length footer (``.nii.gz``), that the voxels
the header promises are all there, so that a dataset reader can validate thousands of volumes
without decoding them.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.arrayproxy import ArrayProxy
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

from medlearn.io._common import (
    FORMAT_NAMES,
    atomic_write,
    base_meta,
    cast_for_writing,
    check_readable,
    detect_format,
    finalize_array,
    guard_reader,
    wrap_library_error,
)
from medlearn.io.errors import DataError

__all__ = ["read_nifti", "write_nifti", "reorient_to", "nifti_geometry"]


def _gzip_header(path: Path) -> bytes:
    """The first 540 decompressed bytes of a gzip file; DataError if the stream is broken."""
    try:
        with gzip.open(path, "rb") as g:
            return g.read(540)
    except (OSError, EOFError, zlib.error) as exc:
        raise wrap_library_error(path, "gzip", exc) from exc


@guard_reader("NIfTI")
def read_nifti(path: str | Path, nonfinite: str | float = "refuse") -> tuple[np.ndarray, dict[str, Any]]:
    """Read a ``.nii`` or ``.nii.gz`` file (NIfTI-1 or NIfTI-2) with nibabel.

    Args:
        path: the NIfTI file; recognised by its header, so a NIfTI file with another name is
            still read (from memory, as nibabel chooses the format by name).
        nonfinite: NaN / Inf voxels (common outside the brain after resampling): ``"refuse"``
            (default, a :class:`DataError`) or a value that replaces them with a warning.

    Returns:
        ``(array, meta)``: float32 ``(1, X, Y, Z)`` (3D) or ``(T, X, Y, Z)`` (4D) in stored voxel
        order with the header scaling applied, and the metadata dict (see the module docstring).

    Raises:
        DataError: missing, empty, truncated (also a truncated gzip stream) or corrupt file, not
            NIfTI, more than 4 dimensions, zero-size dimensions, an unsupported voxel type, NaN
            or Inf voxels.
    """
    path, head = check_readable(path)
    gz = head.startswith(b"\x1f\x8b")
    found = detect_format(path, head)
    if "nifti" not in found:
        if gz:
            _gzip_header(path)  # raises "truncated" for a broken stream
            raise DataError(path, "not a NIfTI file: the gzip stream does not start with a NIfTI header")
        other = f"content looks like {FORMAT_NAMES.get(found[0], found[0])}" if found else (
            f"no NIfTI-1/NIfTI-2 header (starts with {head[:8]!r})"
        )
        raise DataError(path, f"not a NIfTI file: {other}")

    hdr_bytes = _gzip_header(path) if gz else head
    size_le = struct.unpack("<i", hdr_bytes[:4])[0]
    version = 2 if 540 in (size_le, struct.unpack(">i", hdr_bytes[:4])[0]) else 1
    lower = path.name.lower()
    try:
        name_ok = lower.endswith((".nii.gz", ".hdr.gz", ".img.gz") if gz else (".nii", ".hdr", ".img"))
        if name_ok:  # nibabel picks format and compression from the name
            img = nib.load(path, mmap=False)
        else:  # right content, other name (or .nii that is really gzipped): parse from memory
            raw = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
            img = (nib.Nifti2Image if version == 2 else nib.Nifti1Image).from_bytes(raw)
    except Exception as exc:  # ImageFileError, HeaderDataError, EOFError, zlib.error, OSError...
        raise wrap_library_error(path, "NIfTI", exc) from exc
    if not isinstance(img, nib.Nifti1Pair):  # NIfTI-1 / NIfTI-2, single file or pair: the header said NIfTI
        kind = type(img).__name__
        if kind.startswith("Cifti2"):
            raise DataError(path, "CIFTI-2 file (surface / grayordinate data): not supported, medlearn reads "
                                  "volumetric NIfTI")
        raise DataError(path, f"not a NIfTI file: nibabel reads it as {kind}")

    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 4 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 4:
        raise DataError(
            path, f"NIfTI image has {len(shape)} dimensions {tuple(img.shape)}; at most 4 (x, y, z, t) are supported"
        )
    if len(shape) < 2:
        raise DataError(
            path, f"NIfTI image has {len(shape)} dimension(s) {tuple(img.shape)}; at least 2 are needed"
        )
    if 0 in shape:
        raise DataError(path, f"zero-size dimension in image shape {tuple(img.shape)}")
    try:
        data = img.get_fdata(dtype=np.float32, caching="unchanged")
    except Exception as exc:  # truncated voxel data, unsupported datatype...
        raise wrap_library_error(path, "NIfTI", exc) from exc
    data = data.reshape(shape)
    if data.ndim == 2:
        data = data[..., None]
    arr = data[None] if data.ndim == 3 else np.moveaxis(data, -1, 0)
    out = finalize_array(arr, path, nonfinite)

    hdr = img.header
    zooms = tuple(float(z) for z in hdr.get_zooms())
    spatial = (zooms + (1.0, 1.0, 1.0))[:3]
    affine = np.array(img.affine, dtype=np.float64)
    try:
        codes = nib.aff2axcodes(affine)
        orientation = "".join(codes) if all(c is not None for c in codes) else None
    except Exception:  # degenerate affine
        orientation = None
    space_unit, time_unit = hdr.get_xyzt_units()
    meta = base_meta("nifti", path, out)
    meta.update(
        spacing=spatial,
        affine=affine,
        orientation=orientation,
        bit_depth=int(img.get_data_dtype().itemsize * 8),
        datatype=str(img.get_data_dtype()),
        spatial_unit=space_unit,
        time_unit=time_unit,
        time_step=zooms[3] if len(shape) == 4 and len(zooms) > 3 else None,
        n_volumes=shape[3] if len(shape) == 4 else 1,
        qform_code=int(hdr["qform_code"]),
        sform_code=int(hdr["sform_code"]),
        nifti_version=version,
    )
    return out, meta


def write_nifti(
    path: str | Path,
    array: np.ndarray,
    affine: np.ndarray | None = None,
    *,
    spacing: Sequence[float] | None = None,
    time_step: float | None = None,
    dtype: str | np.dtype | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a channel-first volume as NIfTI-1 with nibabel, atomically.

    Args:
        path: the destination, ``.nii`` or ``.nii.gz``.
        array: ``(C, X, Y, Z)`` as returned by :func:`read_nifti`: C = 1 is written as a 3D image,
            C > 1 as 4D ``(X, Y, Z, C)``.
        affine: the 4x4 voxel-to-world affine. ``None``: a diagonal affine from ``spacing``
            (identity without it).
        spacing: voxel size, used only when ``affine`` is ``None``.
        time_step: the fourth zoom of a 4D image (e.g. the TR in seconds).
        dtype: the stored voxel type; ``None`` keeps the array's (float16 -> float32,
            bool -> uint8). Integer types round and refuse out-of-range values.
        overwrite: replace an existing file.

    Returns:
        The written path.

    Raises:
        DataError: not a 4D channel-first array, zero-size, a bad affine, an extension other than
            ``.nii``/``.nii.gz``, or values that do not fit ``dtype``.
        FileExistsError: ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    lower = path.name.lower()
    if not lower.endswith((".nii", ".nii.gz")):
        raise DataError(path, "NIfTI files must end in .nii or .nii.gz")
    array = np.asarray(array)
    if array.ndim != 4:
        raise DataError(
            path, f"write_nifti needs a channel-first (C, X, Y, Z) array, got shape {array.shape}"
        )
    if 0 in array.shape:
        raise DataError(path, f"cannot write a zero-size array {array.shape}")
    if affine is None:
        affine = np.eye(4)
        if spacing is not None:
            affine[:3, :3] = np.diag([float(s) for s in spacing][:3])
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise DataError(path, f"affine must be a finite 4x4 matrix, got shape {affine.shape}")
    if dtype is not None:
        array = cast_for_writing(array, np.dtype(dtype), path)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    elif array.dtype == bool:
        array = array.astype(np.uint8)
    data = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
    img = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    img.header.set_xyzt_units("mm", "sec")
    if data.ndim == 4 and time_step is not None:
        img.header.set_zooms(tuple(img.header.get_zooms()[:3]) + (float(time_step),))
    suffix = ".nii.gz" if lower.endswith(".nii.gz") else ".nii"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return atomic_write(path, lambda tmp: nib.save(img, tmp), overwrite=overwrite, suffix=suffix)


def reorient_to(
    array: np.ndarray, affine: np.ndarray, codes: str = "RAS"
) -> tuple[np.ndarray, np.ndarray]:
    """Flip/permute the spatial axes of a volume to the orientation ``codes``.

    The readers keep stored voxel order; call this explicitly when a canonical orientation is
    wanted. Works on ``(X, Y, Z)`` or channel-first ``(C, X, Y, Z)`` arrays (nibabel's
    orientation helpers do the work).

    Args:
        array: the volume, ``(X, Y, Z)`` or ``(C, X, Y, Z)``.
        affine: its 4x4 voxel-to-world affine.
        codes: the target axis codes, three letters from L/R, P/A, I/S (e.g. ``"RAS"``, ``"LPS"``).

    Returns:
        ``(array, affine)``: the reoriented array (same layout) and the affine that maps its voxel
        indices to the same world coordinates as before.

    Raises:
        ValueError: a bad array rank or bad axis codes.
    """
    if array.ndim not in (3, 4):
        raise ValueError(f"reorient_to needs (X, Y, Z) or (C, X, Y, Z), got shape {array.shape}")
    if len(codes) != 3:
        raise ValueError(f"codes must be three axis letters such as 'RAS', got {codes!r}")
    affine = np.asarray(affine, dtype=np.float64)
    transform = ornt_transform(io_orientation(affine), axcodes2ornt(tuple(codes.upper())))
    spatial_shape = array.shape[-3:]
    if array.ndim == 3:
        out = apply_orientation(array, transform)
    else:
        out = np.moveaxis(apply_orientation(np.moveaxis(array, 0, -1), transform), -1, 0)
    new_affine = affine @ inv_ornt_aff(transform, spatial_shape)
    return np.ascontiguousarray(out), new_affine


def _stored_size_ok(path: Path, expected: int) -> bool:
    """Cheap truncation check from the file size (``.nii``) or the gzip ISIZE footer (``.nii.gz``).

    A ``False`` means "maybe truncated": the caller decodes the file to find out.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            magic = f.read(2)
            if magic != b"\x1f\x8b":
                return size >= expected
            if size < 18:
                return False
            f.seek(-4, os.SEEK_END)
            (isize,) = struct.unpack("<I", f.read(4))
    except OSError:
        return False
    return isize == expected % 2**32


def _decode(path: Path) -> None:
    """Decode ``path`` with :func:`medlearn.io.read_image`, for the precise :class:`DataError` it raises."""
    from medlearn.io import api  # api imports this module: looked up when called

    api.read_image(path)


def nifti_geometry(path: str | Path) -> tuple[tuple[int, ...], np.ndarray]:
    """A NIfTI file's shape and affine from its header, without decoding the voxels.

    The file size (``.nii``) or the gzip length footer (``.nii.gz``) is compared with what the
    header promises; only when they disagree (a truncated file, or an unusual but valid gzip
    stream) is the file decoded with :func:`medlearn.io.read_image` to find out.

    Args:
        path: the NIfTI file.

    Returns:
        ``(shape, affine)``: the header's shape (trailing singleton dimensions beyond the third
        dropped) and nibabel's best 4x4 affine.

    Raises:
        DataError: naming the file, if it is missing, not NIfTI, has a corrupt header or is
            truncated (the reason comes from :func:`medlearn.io.read_image`).

    Examples:
        >>> shape, affine = nifti_geometry("case_0000.nii.gz")  # doctest: +SKIP
        >>> shape
        (40, 40, 40)
    """
    path = Path(path)
    try:
        img = nib.load(path)
        if not isinstance(img, nib.Nifti1Pair):  # NIfTI-1 / NIfTI-2 (their images and pairs)
            raise TypeError(f"nibabel reads it as {type(img).__name__}, not as NIfTI")
        shape = tuple(int(s) for s in img.shape)
        affine = np.asarray(img.affine, dtype=np.float64)
        proxy = img.dataobj  # a file-backed image's voxels: an ArrayProxy, which knows their offset
        if not isinstance(proxy, ArrayProxy):
            raise TypeError(f"nibabel holds the voxels as {type(proxy).__name__}, not as a file proxy")
        expected = int(proxy.offset) + math.prod(shape) * img.get_data_dtype().itemsize
    except Exception as exc:  # ImageFileError, HeaderDataError, OSError, EOFError...
        _decode(path)  # raises the DataError with the precise reason
        raise DataError(path, f"cannot read the NIfTI header ({type(exc).__name__}: {exc})") from exc
    if not _stored_size_ok(path, expected):
        _decode(path)  # decodes; raises if the file is really truncated
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape, affine
