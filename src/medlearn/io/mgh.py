"""FreeSurfer MGH / MGZ reader (nibabel), with the same array and metadata contract as NIfTI.

FreeSurfer stores volumes as ``.mgh`` (a 284-byte big-endian header, the voxels, an optional
footer) or ``.mgz`` (the same, gzip-compressed): ``orig.mgz``, ``aseg.mgz``, ``aparc+aseg.mgz``...
nibabel (:class:`nibabel.MGHImage`) parses the header and reads the voxels; this module checks the
input, converts to the medlearn array contract and fills the metadata dict exactly like
:func:`medlearn.io.nifti.read_nifti`:

- 3D ``(X, Y, Z)`` -> ``(1, X, Y, Z)``; a 2D image (MGH always stores three axes, ``(X, Y, 1)``)
  -> ``(1, X, Y, 1)``; several frames ``(X, Y, Z, T)`` -> ``(T, X, Y, Z)``;
- ``affine`` (nibabel's vox2ras from the direction cosines, zooms and centre), ``spacing`` (the
  three zooms, mm), ``orientation`` (axis codes of the affine), ``bit_depth``, ``datatype``,
  ``spatial_unit`` (``"mm"``), ``time_unit`` (``"msec"``: the header's TR is in milliseconds),
  ``time_step`` (the TR of a multi-frame file, else ``None``), ``n_volumes``.

Integrity without converting voxels: :func:`mgh_geometry` reads shape and affine from the header and
checks from the file size (``.mgh``) or the length of the decompressed stream (``.mgz``: its footer
has no fixed length, so the gzip length field cannot be trusted alone) that all the voxels are there.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.freesurfer.mghformat import MGHHeader

from medlearn.io._common import (
    FORMAT_NAMES,
    base_meta,
    check_readable,
    detect_format,
    finalize_array,
    guard_reader,
    wrap_library_error,
)
from medlearn.io.errors import DataError

__all__ = ["mgh_geometry", "read_mgh"]

_HEADER_BYTES = 284  # nibabel.freesurfer.mghformat.DATA_OFFSET


def _load(path: Path, gz: bool) -> nib.MGHImage:
    """The nibabel image of an MGH/MGZ file (from memory when the name does not say which it is)."""
    lower = path.name.lower()
    if lower.endswith(".mgz" if gz else ".mgh"):
        img = nib.load(path, mmap=False)
    else:  # MGH content under another name (or a gzipped .mgh): nibabel picks the format by name
        raw = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
        img = nib.MGHImage.from_bytes(raw)
    if not isinstance(img, nib.MGHImage):
        raise DataError(path, f"not an MGH/MGZ file: nibabel reads it as {type(img).__name__}")
    return img


@guard_reader("MGH")
def read_mgh(path: str | Path, nonfinite: str | float = "refuse") -> tuple[np.ndarray, dict[str, Any]]:
    """Read a FreeSurfer ``.mgh`` or ``.mgz`` file with nibabel.

    Args:
        path: the file; recognised by its header (a gzip stream is decompressed first), so MGH
            content with another name is still read.
        nonfinite: NaN / Inf voxels: ``"refuse"`` (default, a :class:`DataError`) or a value that
            replaces them with a warning.

    Returns:
        ``(array, meta)``: float32 ``(1, X, Y, Z)`` (``(T, X, Y, Z)`` for several frames) in stored
        voxel order, and the metadata dict (see the module docstring; the keys of
        :func:`~medlearn.io.nifti.read_nifti`).

    Raises:
        DataError: missing, empty, truncated (also a truncated gzip stream) or corrupt file, not
            MGH, zero-size dimensions, NaN or Inf voxels.
    """
    path, head = check_readable(path)
    gz = head.startswith(b"\x1f\x8b")
    found = detect_format(path, head)
    if "mgh" not in found:
        if gz:
            try:
                with gzip.open(path, "rb") as g:
                    g.read(_HEADER_BYTES)
            except (OSError, EOFError, zlib.error) as exc:
                raise wrap_library_error(path, "MGZ (gzip)", exc) from exc
            raise DataError(path, "not an MGH/MGZ file: the gzip stream does not start with an MGH header")
        other = f"content looks like {FORMAT_NAMES.get(found[0], found[0])}" if found else (
            f"no MGH header (starts with {head[:8]!r})"
        )
        raise DataError(path, f"not an MGH/MGZ file: {other}")
    try:
        img = _load(path, gz)
        shape = tuple(int(s) for s in img.shape)
        data = np.asarray(img.get_fdata(dtype=np.float32, caching="unchanged"))
    except DataError:
        raise
    except Exception as exc:  # EOFError (truncated .mgz), OSError (truncated .mgh), HeaderDataError...
        raise wrap_library_error(path, "MGH", exc) from exc
    if 0 in shape:
        raise DataError(path, f"zero-size dimension in image shape {shape}")
    data = data.reshape(shape)
    arr = data[None] if data.ndim == 3 else np.moveaxis(data, -1, 0)
    out = finalize_array(arr, path, nonfinite)

    hdr = img.header
    zooms = tuple(float(z) for z in hdr.get_zooms())
    affine = np.array(img.affine, dtype=np.float64)
    try:
        codes = nib.aff2axcodes(affine)
        orientation = "".join(codes) if all(c is not None for c in codes) else None
    except Exception:  # degenerate affine
        orientation = None
    meta = base_meta("mgh", path, out)
    meta.update(
        spacing=zooms[:3],
        affine=affine,
        orientation=orientation,
        bit_depth=int(img.get_data_dtype().itemsize * 8),
        datatype=str(np.dtype(img.get_data_dtype()).newbyteorder("=")),
        spatial_unit="mm",
        time_unit="msec",
        time_step=zooms[3] if len(shape) == 4 and len(zooms) > 3 else None,
        n_volumes=shape[3] if len(shape) == 4 else 1,
        compressed=gz,
    )
    return out, meta


def _decode(path: Path) -> None:
    """Decode ``path`` with :func:`read_mgh`, for the precise :class:`DataError` it raises."""
    read_mgh(path)


def mgh_geometry(path: str | Path) -> tuple[tuple[int, ...], np.ndarray]:
    """An MGH/MGZ file's shape and affine from its header, without decoding the voxels.

    The file size (``.mgh``) or the decompressed stream (``.mgz``, counted, not kept) must hold at
    least the header and the voxels the header promises; otherwise the file is decoded for the
    precise reason (a truncated file raises).

    Args:
        path: the ``.mgh`` / ``.mgz`` file.

    Returns:
        ``(shape, affine)``: the header's shape (``(X, Y, Z)``, or ``(X, Y, Z, T)`` for several
        frames) and the 4x4 vox2ras affine.

    Raises:
        DataError: naming the file, if it is missing, not MGH, has a corrupt header or is truncated.
    """
    path, head = check_readable(path)
    gz = head.startswith(b"\x1f\x8b")
    try:
        if "mgh" not in detect_format(path, head):
            raise ValueError("no MGH header")
        if gz:
            with gzip.open(path, "rb") as g:
                raw = g.read(_HEADER_BYTES)
        else:
            raw = head[:_HEADER_BYTES]
        if len(raw) < _HEADER_BYTES:
            raise EOFError(f"header has {len(raw)} of {_HEADER_BYTES} bytes")
        hdr = MGHHeader(raw + bytes(MGHHeader._ftrdtype.itemsize), check=True)
        shape = tuple(int(s) for s in hdr.get_data_shape())
        affine = np.asarray(hdr.get_affine(), dtype=np.float64)
        expected = _HEADER_BYTES + math.prod(shape) * int(np.dtype(hdr.get_data_dtype()).itemsize)
    except Exception as exc:
        _decode(path)  # raises the DataError with the precise reason
        raise DataError(path, f"cannot read the MGH header ({type(exc).__name__}: {exc})") from exc
    if not _stored_size_ok(path, gz, expected):
        _decode(path)
    return shape, affine


def _stored_size_ok(path: Path, gz: bool, expected: int) -> bool:
    """Whether the file holds at least ``expected`` bytes (of decompressed stream, for ``.mgz``).

    An ``.mgz`` ends in a footer of variable length (scan parameters, FreeSurfer tags), so the
    gzip length field cannot be compared with an exact size: the stream is decompressed in chunks
    and counted instead (nothing is kept), which also finds a stream cut short.
    """
    try:
        if not gz:
            return path.stat().st_size >= expected
        total = 0
        with gzip.open(path, "rb") as g:
            while chunk := g.read(1 << 20):
                total += len(chunk)
    except (OSError, EOFError, zlib.error):
        return False
    return total >= expected
