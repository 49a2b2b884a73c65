"""Shared plumbing for the medlearn readers and writers.

This module holds what every format needs and no format owns: checking that a path is a readable,
non-empty file; recognising a format from the first bytes of a file (its *magic number*); turning a
decoded array into the medlearn contract (float32, finite, no zero-size axis); and writing a file
atomically. Nothing here decodes pixels: that is left to Pillow, tifffile, pydicom and nibabel.
"""

from __future__ import annotations

import functools
import gzip
import os
import struct
import tempfile
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from medlearn.io.errors import DataError

__all__ = [
    "FormatMismatchWarning",
    "NonFiniteReplacedWarning",
    "PrecisionLossWarning",
    "EXTENSION_FORMATS",
    "detect_format",
    "extension_format",
    "check_readable",
    "finalize_array",
    "base_meta",
    "atomic_write",
    "cast_for_writing",
    "describe_unknown_content",
    "guard_reader",
    "wrap_library_error",
]

#: File name endings and the format they promise (compared in lower case; longest first).
EXTENSION_FORMATS: dict[str, str] = {
    ".nii.gz": "nifti",
    ".nii": "nifti",
    ".mgz": "mgh",
    ".mgh": "mgh",
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".bmp": "bmp",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".dcm": "dicom",
    ".dicom": "dicom",
}

#: Human names of the formats, for messages.
FORMAT_NAMES: dict[str, str] = {
    "png": "PNG",
    "jpeg": "JPEG",
    "bmp": "BMP",
    "tiff": "TIFF",
    "dicom": "DICOM",
    "nifti": "NIfTI",
    "mgh": "MGH/MGZ",
}

# DICOM value representations, to recognise a raw (preamble-less) explicit-VR data set.
_DICOM_VRS = {
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"OB",
    b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM",
    b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"UV",
}


class FormatMismatchWarning(UserWarning):
    """The file's content is a different supported format than its extension promises.

    :func:`medlearn.io.read_image` reads such a file by its content (so a PNG saved as ``x.dcm`` is
    read as the PNG it is) and emits this warning, so the mix-up is never silent.
    """


class PrecisionLossWarning(UserWarning):
    """The underlying library can only return fewer bits than the file stores.

    Raised as a warning, e.g., for 16-bit colour PNG files, which Pillow reduces to 8 bits per channel.
    """


def extension_format(path: str | Path) -> str | None:
    """The format that the file name's extension promises.

    Args:
        path: a file path.

    Returns:
        One of ``"png", "jpeg", "bmp", "tiff", "dicom", "nifti", "mgh"`` (FreeSurfer ``.mgh`` and
        ``.mgz``), or ``None`` for an unknown or missing extension.
    """
    name = Path(path).name.lower()
    for ext, fmt in EXTENSION_FORMATS.items():
        if name.endswith(ext):
            return fmt
    return None


def _is_nifti_header(head: bytes) -> bool:
    """True if ``head`` starts with a NIfTI-1 or NIfTI-2 header (either byte order)."""
    if len(head) >= 348:
        size_le, size_be = struct.unpack("<i", head[:4])[0], struct.unpack(">i", head[:4])[0]
        if 348 in (size_le, size_be) and head[344:348] in (b"n+1\x00", b"ni1\x00"):
            return True
    if len(head) >= 12:
        size_le, size_be = struct.unpack("<i", head[:4])[0], struct.unpack(">i", head[:4])[0]
        if 540 in (size_le, size_be) and head[4:8] in (b"n+2\x00", b"ni2\x00"):
            return True
    return False


#: MGH voxel type codes nibabel reads (uchar, int, float, short, ushort).
_MGH_TYPES = (0, 1, 3, 4, 10)


def _is_mgh_header(head: bytes) -> bool:
    """True if ``head`` starts with a FreeSurfer MGH header (big-endian; version 1, sane sizes).

    The header has no magic string, so everything cheap is checked: version 1, four positive
    dimensions below 2**16 (frames below 2**20), a known voxel type, a 0/1 "good RAS" flag and
    positive finite voxel sizes.
    """
    if len(head) < 42:
        return False
    version, w, h, d, frames, vtype, _dof = struct.unpack(">7i", head[:28])
    (good_ras,) = struct.unpack(">h", head[28:30])
    zooms = struct.unpack(">3f", head[30:42])
    if version != 1 or vtype not in _MGH_TYPES or good_ras not in (0, 1):
        return False
    if not all(0 < n < 2**16 for n in (w, h, d)) or not 0 < frames < 2**20:
        return False
    return not good_ras or all(0.0 < z < 1e6 for z in zooms)


def _looks_like_raw_dicom(head: bytes) -> bool:
    """True if ``head`` looks like a DICOM data set written without the 128-byte preamble.

    Such files (old ACR-NEMA style exports) start directly with a group 0x0002 or 0x0008 element.
    """
    if len(head) < 8:
        return False
    group, element = struct.unpack("<HH", head[:4])
    if group not in (0x0002, 0x0008) or element > 0x0100:
        return False
    if head[4:6] in _DICOM_VRS:  # explicit VR
        return True
    (length,) = struct.unpack("<I", head[4:8])  # implicit VR: a plausible element length
    return length < 1024


def detect_format(path: str | Path, head: bytes | None = None) -> list[str]:
    """Recognise a file's format from its content (magic numbers), never from its name.

    Args:
        path: the file to inspect.
        head: the first bytes of the file, if already read (at least 352 are used).

    Returns:
        Every supported format the content matches, most specific first (a file can be both DICOM
        and TIFF). An empty list when nothing matches. ``"nifti"`` (``"mgh"``) is returned for a
        gzip file only when the decompressed start is a NIfTI (FreeSurfer MGH) header; ``"gzip"``
        for any other gzip stream.
    """
    if head is None:
        with open(path, "rb") as f:
            head = f.read(1024)
    found: list[str] = []
    if len(head) >= 132 and head[128:132] == b"DICM":
        found.append("dicom")
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        found.append("png")
    if head.startswith(b"\xff\xd8\xff"):
        found.append("jpeg")
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        found.append("tiff")
    if head.startswith(b"BM") and len(head) >= 26:
        found.append("bmp")
    if _is_nifti_header(head):
        found.append("nifti")
    elif _is_mgh_header(head):
        found.append("mgh")
    if head.startswith(b"\x1f\x8b"):
        try:
            with gzip.open(path, "rb") as g:
                inner = g.read(540)
        except (OSError, EOFError, zlib.error):
            inner = b""
        found.append("nifti" if _is_nifti_header(inner) else "mgh" if _is_mgh_header(inner) else "gzip")
    if not found and _looks_like_raw_dicom(head):
        found.append("dicom-raw")
    return found


def check_readable(path: str | Path) -> tuple[Path, bytes]:
    """Check that ``path`` is an existing, non-empty, readable file and return its first bytes.

    Args:
        path: the file to check.

    Returns:
        The path as :class:`~pathlib.Path` and its first 1024 bytes.

    Raises:
        DataError: the file is missing, a directory, empty or unreadable.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(p, "file not found")
    if p.is_dir():
        raise DataError(p, "is a directory, not an image file (read DICOM series file by file)")
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(1024)
    except OSError as exc:
        raise DataError(p, f"cannot read file ({exc.strerror or exc})") from exc
    if size == 0:
        raise DataError(p, "file is empty (0 bytes)")
    return p, head


class NonFiniteReplacedWarning(UserWarning):
    """NaN / Inf voxels were replaced by the value the caller chose (``nonfinite=<value>``)."""


def finalize_array(array: np.ndarray, path: str | Path, nonfinite: str | float = "refuse") -> np.ndarray:
    """Convert a decoded array to the medlearn contract: float32, no zero-size axis, finite.

    Args:
        array: the decoded pixels, already channel-first.
        path: the source file, for messages.
        nonfinite: the policy for NaN / Inf values: ``"refuse"`` (default: a :class:`DataError`
            counting them) or a number that replaces them, with a
            :class:`NonFiniteReplacedWarning` that counts them (e.g. 0 for NaN outside the brain
            after resampling).

    Returns:
        A C-contiguous float32 array (a copy unless ``array`` already was one).

    Raises:
        DataError: an axis has size 0, or a value is NaN or infinite under ``"refuse"``.
    """
    if array.size == 0 or 0 in array.shape:
        raise DataError(path, f"zero-size dimension in image shape {tuple(array.shape)}")
    if isinstance(nonfinite, str) and nonfinite != "refuse":
        raise ValueError(f"nonfinite must be 'refuse' or a number, got {nonfinite!r}")
    out = np.ascontiguousarray(array, dtype=np.float32)
    finite = np.isfinite(out)
    if not finite.all():
        n_nan = int(np.isnan(out).sum())
        n_inf = int(out.size - finite.sum()) - n_nan
        counts = (f"{n_nan} NaN and {n_inf} Inf (of {out.size} values; Inf includes values beyond the float32 "
                  "range)")
        if nonfinite == "refuse":
            raise DataError(path, f"pixel data contains non-finite values: {counts}; pass nonfinite=<value> to "
                                  "replace them")
        out = out.copy() if out is array else out
        out[~finite] = float(nonfinite)
        warnings.warn(f"{path}: replaced {counts} by {float(nonfinite):g}", NonFiniteReplacedWarning, stacklevel=3)
    return out


def base_meta(fmt: str, path: str | Path, array: np.ndarray, channel_axis: bool = True) -> dict[str, Any]:
    """The metadata keys every reader returns, filled with defaults from the final array.

    Args:
        fmt: the format name (``"png"``, ``"dicom"``...).
        path: the source file.
        array: the final channel-first array.
        channel_axis: whether ``array`` has a leading channel axis (always true for readers).

    Returns:
        A dict with ``format, path, spatial_shape, spacing, affine, orientation, channels,
        bit_depth`` (``spacing``, ``affine``, ``orientation`` and ``bit_depth`` set to ``None``).
    """
    spatial = tuple(int(s) for s in (array.shape[1:] if channel_axis else array.shape))
    return {
        "format": fmt,
        "path": str(path),
        "spatial_shape": spatial,
        "spacing": None,
        "affine": None,
        "orientation": None,
        "channels": int(array.shape[0]) if channel_axis else 1,
        "bit_depth": None,
    }


def wrap_library_error(path: str | Path, what: str, exc: BaseException) -> DataError:
    """A :class:`DataError` for an exception raised inside a decoding library.

    Messages that mean the file ends too early are reported as *truncated*, everything else as
    *corrupt or unreadable*; the library's own message is kept in parentheses.

    Args:
        path: the file being read.
        what: the format name for the message, e.g. ``"PNG"``.
        exc: the library exception.

    Returns:
        The error to raise (``raise wrap_library_error(...) from exc``).
    """
    msg = str(exc) or type(exc).__name__
    low = msg.lower()
    truncated_markers = (
        "truncated", "end of file", "end-of-stream", "eof", "ended before", "less than expected",
        "failed to read", "expected", "premature", "incomplete",
    )
    if isinstance(exc, EOFError) or any(m in low for m in truncated_markers):
        return DataError(path, f"{what} file is truncated or corrupt ({type(exc).__name__}: {msg})")
    return DataError(path, f"{what} file is corrupt or unreadable ({type(exc).__name__}: {msg})")


def guard_reader(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a ``read_*(path, ...)`` so that it raises only :class:`DataError` for bad input.

    Any exception other than :class:`DataError` (and :class:`MemoryError`) escaping the reader
    becomes a :class:`DataError` naming the file.

    The readers catch the expected library errors themselves with precise reasons; this is the
    safety net for the unexpected ones (a malformed header value, an odd library corner case), so
    that callers only ever need ``except DataError``.

    Args:
        what: the format name for the message, e.g. ``"DICOM"``.

    Returns:
        The decorator.
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(path: str | Path, *args: Any, **kwargs: Any) -> Any:
            try:
                return func(path, *args, **kwargs)
            except (DataError, MemoryError):
                raise
            except Exception as exc:
                raise wrap_library_error(path, what, exc) from exc

        return wrapper

    return decorate


def describe_unknown_content(head: bytes) -> str:
    """A short, actionable description of content that is no supported format.

    Args:
        head: the first bytes of the file.

    Returns:
        E.g. ``"a Git LFS pointer, not the image itself (run `git lfs pull`)"``.
    """
    if head.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer, not the image itself (run `git lfs pull`)"
    low = head[:64].lstrip().lower()
    if low.startswith((b"<!doctype html", b"<html")):
        return "an HTML page, not an image (a failed download?)"
    return (
        "unrecognised content, not any supported format (PNG, JPEG, BMP, TIFF, DICOM, NIfTI, MGH/MGZ); "
        f"file starts with {head[:12]!r}"
    )


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(
    path: str | Path,
    write: Callable[[str], None],
    *,
    overwrite: bool = False,
    suffix: str = "",
) -> Path:
    """Write a file atomically: into a temp file in the same folder, then rename it into place.

    A crash or an exception while writing never leaves a half-written file at ``path``. Without
    ``overwrite`` the final step is a hard link, which fails if ``path`` appeared meanwhile.

    Args:
        path: the destination.
        write: called with the temp file's path; writes the complete file there.
        overwrite: replace an existing file at ``path``.
        suffix: the temp file's ending, for libraries that choose the format by name
            (e.g. ``".nii.gz"``).

    Returns:
        ``path`` as :class:`~pathlib.Path`.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: file exists (pass overwrite=True to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise FileExistsError(f"{path}: file exists (pass overwrite=True to replace it)") from None
            except OSError:  # no hard links on this file system
                if path.exists():
                    raise FileExistsError(f"{path}: file exists (pass overwrite=True to replace it)") from None
                os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    r"""Write UTF-8 text (``\n`` line ends) atomically, replacing ``path`` if it exists."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)

    return atomic_write(path, write, overwrite=True)


def cast_for_writing(array: np.ndarray, dtype: np.dtype, path: str | Path) -> np.ndarray:
    """Cast ``array`` to ``dtype`` for writing, refusing anything that would change values silently.

    Floats are rounded to the nearest integer for an integer ``dtype``; values outside the
    ``dtype``'s range and NaN/Inf are refused, never clipped or rescaled.

    Args:
        array: the data to write.
        dtype: the dtype to store.
        path: the destination, for messages.

    Returns:
        The cast array.

    Raises:
        DataError: non-finite values, or values out of range for ``dtype``.
    """
    dtype = np.dtype(dtype)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        n_bad = int((~np.isfinite(array)).sum())
        raise DataError(path, f"cannot write {n_bad} NaN/Inf value(s)")
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        data = np.rint(array) if array.dtype.kind == "f" else array
        if data.size:
            lo, hi = data.min(), data.max()
            if lo < info.min or hi > info.max:
                raise DataError(
                    path,
                    f"values in [{lo}, {hi}] do not fit {dtype.name} [{info.min}, {info.max}]; "
                    "scale or clip the array first (write_image never rescales)",
                )
        return data.astype(dtype)
    if dtype.kind == "b":
        return array.astype(bool)
    return array.astype(dtype)
