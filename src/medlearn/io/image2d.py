"""Readers and writers for 2D raster images: PNG, JPEG, BMP (Pillow) and TIFF (tifffile).

The readers are thin, hand-written wrappers: Pillow and tifffile do all the decoding; this module
only checks the input, converts the result to the medlearn array contract (see
:mod:`medlearn.io`) and fills the metadata dict.

Array layout returned (float32, channel-first):

- gray (with or without alpha) -> ``(1, H, W)``; colour (RGB, RGBA, palette, CMYK, YCbCr) ->
  ``(3, H, W)``; alpha is dropped (``meta["had_alpha"]`` says it was there).
- a multi-page TIFF stack -> ``(C, F, H, W)``; every TIFF axis other than Y, X and the sample axis
  (pages, ImageJ Z/T/C axes...) is flattened into the frame axis F.

Values are the stored values (0..255 for 8-bit, 0..65535 for 16-bit, floats as stored) in display
convention: TIFF ``MINISWHITE`` is inverted (``(2**bits - 1) - v`` for integers, ``-v`` for floats).
Palette images are expanded to RGB. Raster formats carry no trustworthy physical spacing:
``spacing``, ``affine`` and ``orientation`` are ``None``.

Known limitation: Pillow decodes 16-bit colour PNG (RGB, RGBA, gray+alpha) to 8 bits per channel.
Such files are read at 8 bits with a :class:`~medlearn.io._common.PrecisionLossWarning`
(``meta["bit_depth"] == 8``, ``meta["stored_bit_depth"] == 16``). 16-bit gray PNG is exact.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from medlearn.io._common import (
    FORMAT_NAMES,
    PrecisionLossWarning,
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

__all__ = ["read_png", "read_jpeg", "read_bmp", "read_pillow", "read_tiff", "write_png", "write_tiff"]

_PILLOW_FORMATS = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg", "BMP": "bmp", "DIB": "bmp"}
_PNG_COLOUR_TYPES = {0: "gray", 2: "rgb", 3: "palette", 4: "gray+alpha", 6: "rgba"}


def _require_content(path: Path, head: bytes, fmt: str) -> None:
    """Raise unless the file's content is ``fmt`` (used by the strict per-format readers)."""
    found = detect_format(path, head)
    if fmt not in found:
        name = FORMAT_NAMES[fmt]
        other = f"content looks like {FORMAT_NAMES.get(found[0], found[0])}" if found else (
            f"content is not any supported image format (starts with {head[:8]!r})"
        )
        raise DataError(path, f"not a valid {name} file: {other}")


def _png_ihdr(head: bytes) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's IHDR chunk, or None if it is not where expected."""
    if len(head) >= 26 and head[12:16] == b"IHDR":
        return head[24], head[25]
    return None


@guard_reader("image")
def read_pillow(path: str | Path, expected: str | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a PNG, JPEG or BMP file with Pillow (a thin wrapper; Pillow decodes).

    Args:
        path: the image file.
        expected: ``"png"``, ``"jpeg"`` or ``"bmp"`` to insist on that format (checked on the
            content, not the name); ``None`` accepts any of the three.

    Returns:
        ``(array, meta)``: float32 ``(1, H, W)`` for gray or ``(3, H, W)`` for colour, and the
        metadata dict (see :mod:`medlearn.io`), with extras ``mode`` (Pillow's mode),
        ``had_alpha`` and, for JPEG with an EXIF orientation other than 1, ``exif_orientation``
        (not applied: pixels are kept in stored order).

    Raises:
        DataError: missing, empty, truncated or corrupt file, content of another format,
            an unsupported Pillow mode, or zero-size/NaN/Inf pixels.
    """
    path, head = check_readable(path)
    if expected is not None:
        _require_content(path, head, expected)
    name = FORMAT_NAMES.get(expected or "", "image")
    ihdr = _png_ihdr(head) if head.startswith(b"\x89PNG") else None
    try:
        with Image.open(path) as img:
            img.load()
            fmt = _PILLOW_FORMATS.get(img.format or "")
            if fmt is None or (expected is not None and fmt != expected):
                raise DataError(path, f"not a valid {name} file: Pillow reads it as {img.format}")
            mode = img.mode
            exif_orientation = img.getexif().get(0x0112) if fmt == "jpeg" else None
            had_alpha = "A" in mode or "a" in mode or (mode in ("P", "PA") and "transparency" in img.info)
            if mode in ("P", "PA"):
                # via RGBA: Pillow warns on P -> RGB when the palette carries transparency; alpha is dropped
                arr = np.asarray(img.convert("RGBA"))[..., :3]
                bit_depth = 8
            elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                arr = np.asarray(img.convert("RGB"))
                bit_depth = 8
            elif mode in ("RGB", "RGBA", "RGBa", "RGBX"):
                arr = np.asarray(img)[..., :3]
                bit_depth = 8
            elif mode in ("L", "LA", "La"):
                arr = np.asarray(img)
                arr = arr[..., 0] if arr.ndim == 3 else arr
                bit_depth = 8
            elif mode == "1":
                arr = np.asarray(img)
                bit_depth = 1
            elif mode.startswith("I;16"):
                arr = np.asarray(img)
                bit_depth = 16
            elif mode == "I":
                arr = np.asarray(img)
                bit_depth = ihdr[0] if ihdr is not None else 32
            elif mode == "F":
                arr = np.asarray(img)
                bit_depth = 32
            else:
                raise DataError(path, f"unsupported {name} pixel mode {mode!r}")
    except DataError:
        raise
    except UnidentifiedImageError as exc:
        raise DataError(path, f"not a valid {name} file: Pillow cannot identify it") from exc
    except MemoryError:
        raise
    except Exception as exc:  # OSError, SyntaxError, ValueError, DecompressionBombError, struct.error...
        raise wrap_library_error(path, name, exc) from exc

    stored_bit_depth = bit_depth
    if ihdr is not None:
        png_bits, colour_type = ihdr
        if png_bits == 16 and colour_type in (2, 4, 6):
            stored_bit_depth = 16
            warnings.warn(
                f"{path}: 16-bit {_PNG_COLOUR_TYPES[colour_type]} PNG; Pillow decodes it to 8 bits per "
                "channel (precision lost). Convert to 16-bit gray PNG or TIFF to keep all bits.",
                PrecisionLossWarning,
                stacklevel=3,
            )
        if colour_type == 4 and arr.ndim == 3:  # gray+alpha that Pillow widened to RGBA
            arr = arr[..., 0]

    arr = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
    out = finalize_array(arr, path)
    meta = base_meta(fmt, path, out)
    meta.update(bit_depth=bit_depth, mode=mode, had_alpha=bool(had_alpha))
    if stored_bit_depth != bit_depth:
        meta["stored_bit_depth"] = stored_bit_depth
    if exif_orientation not in (None, 1):
        meta["exif_orientation"] = int(exif_orientation)
    return out, meta


def read_png(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a PNG file (8/16-bit gray, gray+alpha, RGB, RGBA, palette) with Pillow.

    Args:
        path: the ``.png`` file; its content must be PNG.

    Returns:
        ``(array, meta)`` as :func:`read_pillow`.

    Raises:
        DataError: see :func:`read_pillow`.
    """
    return read_pillow(path, "png")


def read_jpeg(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a JPEG file with Pillow (YCbCr and CMYK are converted to RGB).

    Args:
        path: the ``.jpg``/``.jpeg`` file; its content must be JPEG.

    Returns:
        ``(array, meta)`` as :func:`read_pillow`.

    Raises:
        DataError: see :func:`read_pillow`.
    """
    return read_pillow(path, "jpeg")


def read_bmp(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a BMP file with Pillow.

    Args:
        path: the ``.bmp`` file; its content must be BMP.

    Returns:
        ``(array, meta)`` as :func:`read_pillow`.

    Raises:
        DataError: see :func:`read_pillow`.
    """
    return read_pillow(path, "bmp")


@guard_reader("TIFF")
def read_tiff(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Read the first image series of a TIFF file with tifffile (a thin wrapper; tifffile decodes).

    Args:
        path: the TIFF file (classic or BigTIFF, single image or multi-page stack).

    Returns:
        ``(array, meta)``: float32 ``(C, H, W)`` for one image, ``(C, F, H, W)`` for a stack of
        F > 1 images, C = 1 (gray) or 3 (RGB, palette). Extras: ``photometric``, ``axes`` (the
        tifffile axes of the series), ``n_frames``, ``had_alpha``, ``inverted`` (MINISWHITE).

    Raises:
        DataError: missing, empty, truncated or corrupt file; a compression tifffile cannot decode
            without the optional ``imagecodecs`` package; an unsupported photometric
            interpretation (e.g. CMYK); zero-size dimensions; NaN or Inf pixels.
    """
    path, head = check_readable(path)
    _require_content(path, head, "tiff")
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise DataError(path, "TIFF file contains no image")
            series = tif.series[0]
            page = series.keyframe
            axes = series.axes
            photometric = page.photometric
            bits = int(page.bitspersample)
            extrasamples = len(page.extrasamples or ())
            colormap = page.colormap
            if 0 in series.shape:
                raise DataError(path, f"zero-size dimension in image shape {tuple(series.shape)}")
            arr = series.asarray()
    except DataError:
        raise
    except Exception as exc:  # tifffile raises ValueError, OSError, struct.error, zlib.error...
        raise wrap_library_error(path, "TIFF", exc) from exc

    ph = tifffile.PHOTOMETRIC
    inverted = False
    had_alpha = False
    if "Y" not in axes or "X" not in axes:
        raise DataError(path, f"unsupported TIFF layout: axes {axes!r}, shape {arr.shape}")
    if photometric == ph.PALETTE:
        if colormap is None:
            raise DataError(path, "palette TIFF without a colour map")
        if "S" in axes:
            raise DataError(path, "palette TIFF with several samples per pixel is not supported")
        arr = np.moveaxis(np.asarray(colormap), 0, -1)[arr]  # (..., 3)
        axes += "S"
        bits = 16 if np.asarray(colormap).dtype.itemsize == 2 else 8
    elif photometric in (ph.MINISBLACK, ph.MINISWHITE, ph.RGB):
        if "S" in axes:
            s_ax = axes.index("S")
            n_colour = arr.shape[s_ax] - extrasamples
            keep = 3 if photometric == ph.RGB else 1
            if n_colour < keep:
                raise DataError(path, f"TIFF has {arr.shape[s_ax]} samples per pixel, expected {keep}")
            had_alpha = extrasamples > 0
            arr = np.take(arr, np.arange(keep), axis=s_ax)
        if photometric == ph.MINISWHITE:
            inverted = True
            if arr.dtype.kind in "ui":
                arr = (2**bits - 1) - arr.astype(np.int64)
            else:
                arr = -arr.astype(np.float64)
    else:
        raise DataError(path, f"unsupported TIFF photometric interpretation {photometric.name}")

    if "S" not in axes:
        arr = arr[..., None]
        axes += "S"
    order = [i for i, a in enumerate(axes) if a not in "YXS"] + [axes.index(a) for a in "YXS"]
    arr = np.transpose(arr, order)
    h, w, c = arr.shape[-3:]
    n_frames = int(np.prod(arr.shape[:-3], dtype=np.int64))
    arr = np.moveaxis(arr.reshape(n_frames, h, w, c), -1, 0)  # (C, F, H, W)
    if n_frames == 1:
        arr = arr[:, 0]
    out = finalize_array(arr, path)
    meta = base_meta("tiff", path, out)
    meta.update(
        channels=int(out.shape[0]),
        bit_depth=bits,
        photometric=photometric.name,
        axes=series.axes,
        n_frames=n_frames,
        had_alpha=had_alpha,
        inverted=inverted,
    )
    return out, meta


def _channels_last(array: np.ndarray, path: Path, allowed: tuple[int, ...], what: str) -> np.ndarray:
    """``(H, W)`` -> ``(H, W)``; ``(C, ...)`` channel-first -> channels-last, C in ``allowed``."""
    if array.ndim == 2:
        return array
    c = array.shape[0]
    if c not in allowed:
        raise DataError(path, f"cannot write a {c}-channel array as {what} (channels allowed: {allowed})")
    out = np.moveaxis(array, 0, -1)
    return out[..., 0] if c == 1 else out


def write_png(
    path: str | Path,
    array: np.ndarray,
    *,
    dtype: str | np.dtype | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a 2D image as PNG with Pillow, atomically.

    Args:
        path: the destination ``.png`` file.
        array: ``(H, W)`` or channel-first ``(C, H, W)``, C = 1 (gray), 2 (gray+alpha), 3 (RGB)
            or 4 (RGBA). Values are written as they are: floats are rounded, never rescaled.
        dtype: ``"uint8"`` or ``"uint16"`` (16-bit only for gray). Required for float or other
            integer arrays; ``None`` keeps a uint8/uint16 array's dtype.
        overwrite: replace an existing file.

    Returns:
        The written path.

    Raises:
        DataError: wrong shape or channel count, dtype missing or not uint8/uint16, 16-bit colour,
            values out of the dtype's range, NaN/Inf.
        FileExistsError: ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    array = np.asarray(array)
    if array.ndim not in (2, 3):
        raise DataError(path, f"PNG needs a (H, W) or (C, H, W) array, got shape {array.shape}")
    if 0 in array.shape:
        raise DataError(path, f"cannot write a zero-size array {array.shape}")
    if dtype is None:
        if array.dtype not in (np.uint8, np.uint16):
            raise DataError(
                path, f"array dtype is {array.dtype}: pass dtype='uint8' or dtype='uint16' to write PNG"
            )
        dtype = array.dtype
    dtype = np.dtype(dtype)
    if dtype not in (np.uint8, np.uint16):
        raise DataError(path, f"PNG stores uint8 or uint16, not {dtype}")
    data = _channels_last(cast_for_writing(array, dtype, path), path, (1, 2, 3, 4), "PNG")
    if dtype == np.uint16 and data.ndim == 3:
        raise DataError(path, "16-bit colour PNG is not supported by Pillow; write 16-bit TIFF instead")
    img = Image.fromarray(np.ascontiguousarray(data))  # uint8: L/LA/RGB/RGBA; uint16 2D: I;16
    return atomic_write(path, lambda tmp: img.save(tmp, format="PNG"), overwrite=overwrite, suffix=".png")


def write_tiff(
    path: str | Path,
    array: np.ndarray,
    *,
    dtype: str | np.dtype | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a 2D image or a stack as uncompressed TIFF with tifffile, atomically.

    Args:
        path: the destination ``.tif``/``.tiff`` file.
        array: ``(H, W)``, ``(C, H, W)`` or ``(C, F, H, W)`` with C = 1 (gray) or 3 (RGB); a
            stack is written as F pages.
        dtype: the stored dtype; ``None`` keeps the array's dtype (float32 arrays stay float32).
            Integer dtypes round floats and refuse out-of-range values.
        overwrite: replace an existing file.

    Returns:
        The written path.

    Raises:
        DataError: wrong shape or channel count, zero-size, NaN/Inf when casting to integers,
            values out of range.
        FileExistsError: ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    array = np.asarray(array)
    if array.ndim not in (2, 3, 4):
        raise DataError(path, f"TIFF needs (H, W), (C, H, W) or (C, F, H, W), got shape {array.shape}")
    if 0 in array.shape:
        raise DataError(path, f"cannot write a zero-size array {array.shape}")
    if dtype is not None:
        array = cast_for_writing(array, np.dtype(dtype), path)
    elif array.dtype == bool:
        array = array.astype(np.uint8)
    data = _channels_last(array, path, (1, 3), "TIFF")
    rgb = array.ndim >= 3 and array.shape[0] == 3
    photometric = "rgb" if rgb else "minisblack"

    def _write(tmp: str) -> None:
        tifffile.imwrite(tmp, data, photometric=photometric)

    return atomic_write(path, _write, overwrite=overwrite, suffix=path.suffix)
