"""DICOM reader (pydicom), single- and multi-frame, with display-convention values.

A thin, hand-written wrapper: pydicom parses the file and its decoding plugins decode the pixels
(uncompressed, deflated, RLE, JPEG baseline via Pillow, JPEG 2000 via pylibjpeg-openjpeg; whatever
:func:`pydicom.pixels.get_decoder` reports as available). This module only checks the input,
applies the standard pixel transforms and fills the metadata dict.

What happens to the pixels, in order:

1. Decoding; pydicom converts ``YBR_FULL``/``YBR_FULL_422`` (and JPEG 2000 YBR_ICT/RCT) to RGB,
   the photometric interpretation is checked after decoding and ``PALETTE COLOR`` is expanded to
   RGB with the palette LUT.
2. Monochrome only: the Modality LUT -- ``RescaleSlope``/``RescaleIntercept`` (also from the
   enhanced multi-frame functional groups, per frame) or a ``ModalityLUTSequence``
   (:func:`pydicom.pixels.apply_modality_lut`). CT therefore comes out in HU.
3. ``MONOCHROME1`` (low = white) is inverted so that higher = brighter, as a radiologist sees it:
   ``v' = f(lo) + f(hi) - v`` where ``[lo, hi]`` is the stored value range (from ``BitsStored``
   and ``PixelRepresentation``) and ``f`` the modality transform, so the output stays in the same
   range and units. ``meta["inverted"]`` is then ``True``.

Array layout (float32): single frame ``(C, H, W)``; multi-frame (``NumberOfFrames > 1``)
``(C, F, H, W)``; C = 1 (monochrome) or 3 (RGB). The frame axis may be slices or time.

Metadata: ``spacing`` is ``(row, column)`` spacing in mm from ``PixelSpacing`` (else
``ImagerPixelSpacing``, else the functional groups) for one frame; for several frames
``(slice, row, column)`` using ``SpacingBetweenSlices`` (else ``SliceThickness``), or ``None`` when
a value is missing or not positive (e.g. a ``PixelSpacing`` of ``0``). Extras: ``modality``,
``photometric`` (as stored), ``output_photometric``, ``n_frames``, ``transfer_syntax``,
``transfer_syntax_name``, ``bits_stored``, ``pixel_representation``, ``rescale_slope``,
``rescale_intercept``, ``modality_lut`` (``"rescale"``, ``"lut"`` or ``None``), ``inverted``,
``pixel_spacing``, ``slice_thickness``, ``spacing_between_slices``, ``image_position``,
``image_orientation``, ``frame_time``, ``sop_class``. Patient and study identifiers (names, IDs,
dates, UIDs, accession numbers) are never copied into the metadata.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, convert_color_space, get_decoder
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

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

__all__ = ["read_dicom"]

_UNDEFINED = 0xFFFFFFFF
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
#: Media Storage Directory Storage: a DICOMDIR file.
_DICOMDIR_UID = "1.2.840.10008.1.3.10"


def _truncation_reason(ds: Dataset, size: int, caught: list[warnings.WarningMessage]) -> str | None:
    """Why the just-parsed ``ds`` looks cut short, or ``None``.

    pydicom stops silently at the end of a truncated file; the evidence is: its "End of file"
    warning, an element whose value is shorter than its declared length, or a few stray bytes (a
    partial element header) after the last complete element.
    """
    for w in caught:
        if "end of file" in str(w.message).lower():
            return "file is truncated (the file ends inside an element)"
    if len(ds) == 0:
        return "file is truncated: no data elements after the file meta information"
    last_end: int | None = None
    for tag in list(ds.keys()):
        elem = ds.get_item(tag)
        if not isinstance(elem, RawDataElement) or elem.value_tell is None:
            last_end = None
            continue
        if elem.length == _UNDEFINED:
            last_end = None
            continue
        if elem.value is not None and len(elem.value) < elem.length:
            return (
                f"file is truncated: element {tag} declares {elem.length} bytes "
                f"but only {len(elem.value)} are present"
            )
        last_end = elem.value_tell + elem.length
    deflated = ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian
    if last_end is not None and not deflated and 0 < size - last_end < 12:
        return f"file is truncated: {size - last_end} stray byte(s) after the last complete element"
    return None


def _first(ds: Dataset, keyword: str, group: str) -> Any:
    """``keyword`` from the data set, else from the shared / first per-frame functional group."""
    if keyword in ds:
        return ds[keyword].value
    for fg_keyword in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        fg = ds.get(fg_keyword)
        if fg:
            seq = fg[0].get(group)
            if seq and keyword in seq[0]:
                return seq[0][keyword].value
    return None


def _positive_floats(value: Any, n: int) -> tuple[float, ...] | None:
    """``value`` as ``n`` positive finite floats, or ``None``."""
    if value is None:
        return None
    items = [value] if isinstance(value, (str, bytes, int, float)) else value
    try:
        vals = [float(v) for v in items]
    except (TypeError, ValueError):
        return None
    if len(vals) != n or not all(math.isfinite(v) and v > 0 for v in vals):
        return None
    return tuple(vals)


def _floats(value: Any) -> tuple[float, ...] | None:
    try:
        return tuple(float(v) for v in value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _linear_rescale(ds: Dataset, n_frames: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-frame ``(slopes, intercepts)`` from the data set or its functional groups, or None."""
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        return np.full(n_frames, slope), np.full(n_frames, intercept)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    keyword = "PixelValueTransformationSequence"
    if per_frame and len(per_frame) == n_frames and all(keyword in f for f in per_frame):
        items = [f.PixelValueTransformationSequence[0] for f in per_frame]
    else:
        shared = ds.get("SharedFunctionalGroupsSequence")
        seq = shared[0].get("PixelValueTransformationSequence") if shared else None
        if not seq:
            return None
        items = [seq[0]] * n_frames
    slopes = np.array([float(i.get("RescaleSlope", 1.0) or 1.0) for i in items])
    intercepts = np.array([float(i.get("RescaleIntercept", 0.0) or 0.0) for i in items])
    return slopes, intercepts


def _monochrome(
    arr: np.ndarray, ds: Dataset, props: dict[str, Any], n_frames: int, invert: bool, path: Path
) -> tuple[np.ndarray, dict[str, Any]]:
    """Apply the Modality LUT and, for MONOCHROME1, the inversion to ``arr`` (F, H, W)."""
    info: dict[str, Any] = {"modality_lut": None, "rescale_slope": None, "rescale_intercept": None}
    bits = int(props.get("bits_stored") or ds.get("BitsStored") or arr.dtype.itemsize * 8)
    signed = int(props.get("pixel_representation") or 0) == 1
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    work = np.float64 if arr.dtype.itemsize >= 4 else np.float32
    is_float = arr.dtype.kind == "f"

    if "ModalityLUTSequence" in ds and not is_float:
        try:
            out = apply_modality_lut(arr, ds).astype(work)
            rng = apply_modality_lut(np.arange(lo, hi + 1), ds) if bits <= 16 else apply_modality_lut(
                np.array([lo, hi]), ds
            )
        except Exception as exc:
            raise DataError(path, f"invalid Modality LUT Sequence ({exc})") from exc
        info["modality_lut"] = "lut"
        offsets = np.full(n_frames, float(rng.min()) + float(rng.max()))
    else:
        rescale = _linear_rescale(ds, n_frames)
        out = arr.astype(work)
        if rescale is not None:
            slopes, intercepts = rescale
            out *= slopes.astype(work)[:, None, None]
            out += intercepts.astype(work)[:, None, None]
            info["modality_lut"] = "rescale"
            uniform = bool(np.all(slopes == slopes[0]) and np.all(intercepts == intercepts[0]))
            info["rescale_slope"] = float(slopes[0]) if uniform else tuple(map(float, slopes))
            info["rescale_intercept"] = float(intercepts[0]) if uniform else tuple(map(float, intercepts))
            if "RescaleType" in ds:
                info["rescale_type"] = str(ds.RescaleType)
        else:
            slopes, intercepts = np.ones(n_frames), np.zeros(n_frames)
        offsets = slopes * (lo + hi) + 2 * intercepts
    if invert:
        if is_float:
            out = -out
        else:
            out = offsets.astype(work)[:, None, None] - out
    return out, info


@guard_reader("DICOM")
def read_dicom(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Read one DICOM file (single- or multi-frame) with pydicom.

    Args:
        path: the DICOM file. It is recognised by the ``DICM`` marker at byte 128, whatever its
            name; a raw data set without the preamble (old ACR-NEMA style) is also accepted.

    Returns:
        ``(array, meta)``: float32 ``(C, H, W)`` or ``(C, F, H, W)`` in display convention and
        modality units (HU for CT), and the metadata dict described in the module docstring.

    Raises:
        DataError: missing, empty or truncated file; not DICOM; no pixel data; an unsupported
            transfer syntax (no installed decoder); undecodable pixel data; zero rows, columns or
            frames; an unsupported photometric interpretation; NaN or Inf pixels.
    """
    path, head = check_readable(path)
    found = detect_format(path, head)
    if "dicom" in found:
        force = False
    elif "dicom-raw" in found:
        force = True
    else:
        other = f" (content looks like {FORMAT_NAMES.get(found[0], found[0])})" if found else ""
        raise DataError(path, f"not a DICOM file: no 'DICM' marker at byte 128{other}")

    size = path.stat().st_size
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(path, force=force)
        except Exception as exc:  # InvalidDicomError, EOFError, struct.error, ValueError...
            raise wrap_library_error(path, "DICOM", exc) from exc
        reason = _truncation_reason(ds, size, caught)
    for w in caught:  # hand on pydicom's other warnings
        if "end of file" not in str(w.message).lower():
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if reason is not None:
        raise DataError(path, reason)

    if "DirectoryRecordSequence" in ds or str(ds.file_meta.get("MediaStorageSOPClassUID", "")) == _DICOMDIR_UID:
        raise DataError(path, "a DICOMDIR (the index of a DICOM medium), not an image: read the image files it "
                              "lists, or the folder that holds them")
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        if "Rows" in ds and "Columns" in ds:
            raise DataError(
                path,
                f"no pixel data: the header describes a {ds.Rows}x{ds.Columns} image but the Pixel Data "
                "element is missing (stripped or truncated file)",
            )
        sop = getattr(ds.get("SOPClassUID"), "name", None) or "unknown SOP class"
        raise DataError(path, f"no pixel data: not an image object ({sop})")

    absent = [k for k in ("Rows", "Columns") if ds.get(k) in (None, "")]
    if absent:
        raise DataError(path, f"the header lacks {' and '.join(absent)}: the pixel data cannot be shaped")
    rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    nf_value = ds.get("NumberOfFrames")
    n_frames = 1 if nf_value in (None, "") else int(nf_value)
    if rows == 0 or cols == 0 or n_frames == 0:
        raise DataError(path, f"zero-size dimension: Rows={rows}, Columns={cols}, NumberOfFrames={n_frames}")

    tsyntax = ds.file_meta.get("TransferSyntaxUID")
    if tsyntax is None:
        implicit, little = getattr(ds, "original_encoding", (True, True))
        if implicit is None or implicit:
            tsyntax = ImplicitVRLittleEndian
        else:
            tsyntax = ExplicitVRLittleEndian if little in (None, True) else ExplicitVRBigEndian
        ds.file_meta.TransferSyntaxUID = tsyntax
    tsyntax = UID(str(tsyntax))
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError as exc:
        raise DataError(
            path, f"unsupported transfer syntax {tsyntax.name} ({tsyntax}): pydicom has no decoder"
        ) from exc
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "no plugin"
        raise DataError(
            path, f"unsupported transfer syntax {tsyntax.name} ({tsyntax}): no installed decoder ({missing})"
        )
    try:
        arr, props = decoder.as_array(ds, raw=False)
    except Exception as exc:
        msg = str(exc)
        if "all available plugins" in msg and ("does not support" in msg or "not supported" in msg):
            detail = " ".join(msg.split(":", 1)[-1].split())
            raise DataError(path, f"{tsyntax.name} pixel data that no installed decoder supports "
                                  f"({detail}); install one, e.g. pip install pylibjpeg pylibjpeg-libjpeg") from exc
        raise wrap_library_error(path, f"DICOM ({tsyntax.name})", exc) from exc

    stored_pi = str(ds.get("PhotometricInterpretation", "") or props.get("photometric_interpretation", ""))
    pi = str(props.get("photometric_interpretation") or stored_pi)
    samples = int(props.get("samples_per_pixel") or ds.get("SamplesPerPixel") or 1)
    if n_frames == 1:
        arr = arr[None]
    if samples == 1:
        arr = arr[..., None] if arr.ndim == 3 else arr
    if arr.ndim != 4 or arr.shape[:3] != (n_frames, rows, cols):
        expected = (n_frames, rows, cols, samples)
        raise DataError(path, f"decoded pixel array has shape {arr.shape}, expected {expected}")

    bit_depth = int(props.get("bits_stored") or ds.get("BitsStored") or arr.dtype.itemsize * 8)
    info: dict[str, Any] = {"modality_lut": None, "rescale_slope": None, "rescale_intercept": None}
    inverted = False
    if pi == "PALETTE COLOR":
        try:
            arr = apply_color_lut(arr[..., 0], ds)
        except Exception as exc:
            raise DataError(path, f"invalid palette colour lookup table ({exc})") from exc
        bit_depth = arr.dtype.itemsize * 8
        pi = "RGB"
    elif pi in ("YBR_FULL", "YBR_FULL_422"):
        arr = convert_color_space(arr, pi, "RGB", per_frame=True)
        pi = "RGB"
    if pi in ("MONOCHROME1", "MONOCHROME2") and samples == 1:
        inverted = pi == "MONOCHROME1"
        mono, info = _monochrome(arr[..., 0], ds, props, n_frames, inverted, path)
        chw = mono[None]  # (1, F, H, W)
        out_pi = "MONOCHROME2"
    elif pi == "RGB" and arr.shape[-1] == 3:
        chw = np.moveaxis(arr, -1, 0)  # (3, F, H, W)
        out_pi = "RGB"
    else:
        raise DataError(
            path, f"unsupported photometric interpretation {stored_pi!r} with {samples} sample(s) per pixel"
        )
    if n_frames == 1:
        chw = chw[:, 0]
    out = finalize_array(chw, path)

    pixel_spacing = _positive_floats(_first(ds, "PixelSpacing", "PixelMeasuresSequence"), 2)
    spacing_source = "PixelSpacing" if pixel_spacing else None
    if pixel_spacing is None:
        pixel_spacing = _positive_floats(ds.get("ImagerPixelSpacing"), 2)
        spacing_source = "ImagerPixelSpacing" if pixel_spacing else None
    thickness = _positive_floats(_first(ds, "SliceThickness", "PixelMeasuresSequence"), 1)
    between = _positive_floats(_first(ds, "SpacingBetweenSlices", "PixelMeasuresSequence"), 1)
    if n_frames == 1:
        spacing = pixel_spacing
    else:
        step = between or thickness
        spacing = (step[0], *pixel_spacing) if (step and pixel_spacing) else None

    meta = base_meta("dicom", path, out)
    meta.update(info)
    sop = ds.get("SOPClassUID")
    meta.update(
        spacing=spacing,
        bit_depth=bit_depth,
        modality=str(ds.get("Modality", "")) or None,
        photometric=stored_pi,
        output_photometric=out_pi,
        inverted=inverted,
        n_frames=n_frames,
        transfer_syntax=str(tsyntax),
        transfer_syntax_name=tsyntax.name,
        bits_stored=int(ds.get("BitsStored") or bit_depth),
        pixel_representation=int(ds.get("PixelRepresentation") or 0),
        pixel_spacing=pixel_spacing,
        spacing_source=spacing_source,
        slice_thickness=thickness[0] if thickness else None,
        spacing_between_slices=between[0] if between else None,
        image_position=_floats(_first(ds, "ImagePositionPatient", "PlanePositionSequence")),
        image_orientation=_floats(_first(ds, "ImageOrientationPatient", "PlaneOrientationSequence")),
        frame_time=float(ds.FrameTime) if ds.get("FrameTime") not in (None, "") else None,
        sop_class=getattr(sop, "name", None),
    )
    return out, meta
