"""Reader for the INbreast layout (full-field digital mammograms with lesion contours in OsiriX XML).

INbreast (Moreira et al., "INbreast: Toward a Full-field Digital Mammographic Database", Academic
Radiology 19(2), 2012): 115 cases, 410 mammograms::

    root/AllDICOMs/<id>_<patient>_MG_<L|R>_<CC|ML>_ANON.dcm   e.g. 20586908_6c613a14b80a8591_MG_R_CC_ANON.dcm
    root/AllXML/<id>.xml                                     OsiriX plist: Images > ROIs > Name, Point_px
    root/INbreast.csv                                        (optional) per-image table, ';'-separated

Each ROI of an XML file is a contour: ``Point_px`` holds its vertices as ``"(x, y)"`` strings in
pixels of the image (x = column, y = row) and ``Name`` the lesion type ("Mass", "Calcification",
"Cluster", "Spiculated Region", "Distortion", "Asymmetry" ...). :func:`read_inbreast` parses every XML
file with :mod:`plistlib`, checks every contour against its image's size (from the DICOM header, no
pixels decoded), and returns one :class:`InbreastImage` per mammogram; its ``read_pair`` decodes the
DICOM (min-max scaled to [0, 1], as every DICOM in medlearn) and rasterises the chosen lesion types'
contours (scikit-image ``polygon``; a contour of one or two points, a calcification, marks its pixels)
to a 0 / 1 mask. For :class:`~medlearn.data.segmentation2d.ImageMaskDataModule` (``layout: inbreast``,
options through ``layout_options``):

- ``lesions``: the ROI names that count (default ``["Mass"]``, Crossover-Net's breast-mass task; case
  insensitive);
- ``only_annotated``: keep only images with at least one such lesion (default: the papers segment
  masses on images that have one);
- ``roi``: ``"lesion"`` crops a ``roi_size`` square (default 1024 px of the ~3300 x 4100 image)
  centred on the lesions' bounding box (larger when they are, with a margin): an oracle localisation,
  as patch-based mass segmentation papers use; ``None``: the whole mammogram.

``group`` is the patient (the second field of the DICOM name), so the views of a patient never
straddle a split; ``domain`` the laterality and view (``R_CC``).
"""

from __future__ import annotations

import os
import plistlib
import re
import xml.parsers.expat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medlearn.data.layouts import CheckHints, RecordSet, register_layout
from medlearn.data.records import DecodedMaskedImage
from medlearn.io.errors import DataError

__all__ = ["InbreastImage", "read_inbreast", "read_inbreast_xml", "rasterise_contours"]

_DICOM = re.compile(r"^(\d+)_([0-9A-Za-z]+)_MG_([LR])_([A-Z]+)_ANON\.dcm$", re.IGNORECASE)
_POINT = re.compile(r"^\s*\(\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*\)\s*$")

Contour = tuple[str, tuple[tuple[float, float], ...]]


def read_inbreast_xml(path: str | Path) -> list[Contour]:
    """The contours of an INbreast XML file: ``[(name, ((x, y), ...)), ...]`` in file order.

    Raises:
        DataError: naming the file: unreadable, not a plist, no ``Images`` list, or a point that is not
            ``"(x, y)"`` (every bad point listed).
    """
    try:
        with open(path, "rb") as f:
            doc = plistlib.load(f)
    except (OSError, plistlib.InvalidFileException, xml.parsers.expat.ExpatError, ValueError) as exc:
        raise DataError(path, f"not a readable OsiriX XML plist ({type(exc).__name__}: {exc})") from exc
    images = doc.get("Images") if isinstance(doc, dict) else None
    if not isinstance(images, list):
        raise DataError(path, "the plist has no 'Images' list")
    out: list[Contour] = []
    bad: list[str] = []
    for im in images:
        for k, roi in enumerate((im or {}).get("ROIs", []) if isinstance(im, dict) else []):
            name = str(roi.get("Name", "")).strip()
            pts: list[tuple[float, float]] = []
            for s in roi.get("Point_px", []) or []:
                m = _POINT.match(str(s))
                if m is None:
                    bad.append(f"ROI {k} ({name}): point {s!r} is not '(x, y)'")
                    continue
                pts.append((float(m.group(1)), float(m.group(2))))
            out.append((name, tuple(pts)))
    if bad:
        raise DataError(path, f"{len(bad)} unreadable points", bad)
    return out


def rasterise_contours(contours: Sequence[Contour], shape: tuple[int, int], lesions: Sequence[str]) -> np.ndarray:
    """A ``(H, W)`` uint8 mask: 1 inside every contour whose name is one of ``lesions`` (case insensitive).

    Contours of three or more points are filled polygons (scikit-image ``polygon``: the pixels whose
    centres lie inside or on the polygon through the vertices, x = column, y = row); one or two points
    mark their own pixels.
    """
    from skimage.draw import polygon

    wanted = {s.lower() for s in lesions}
    mask = np.zeros(shape, dtype=np.uint8)
    for name, pts in contours:
        if name.lower() not in wanted or not pts:
            continue
        xy = np.asarray(pts, dtype=np.float64)
        if len(xy) >= 3:
            rr, cc = polygon(xy[:, 1], xy[:, 0], shape=shape)
        else:
            rr = np.clip(np.rint(xy[:, 1]).astype(int), 0, shape[0] - 1)
            cc = np.clip(np.rint(xy[:, 0]).astype(int), 0, shape[1] - 1)
        mask[rr, cc] = 1
    return mask


@dataclass
class InbreastImage(DecodedMaskedImage):
    """One INbreast mammogram (``path``: the DICOM; ``mask``: its XML, which may not exist).

    Attributes:
        contours: the XML's contours (all types), parsed at read time.
        lesions: the contour names rasterised to 1.
        shape: the image's ``(rows, columns)`` from its header.
        roi: ``(row0, row1, col0, col1)`` crop (may extend beyond the image: padded with 0), or ``None``.
    """

    contours: tuple[Contour, ...] = ()
    lesions: tuple[str, ...] = ("Mass",)
    shape: tuple[int, int] = (0, 0)
    roi: tuple[int, int, int, int] | None = field(default=None)

    def read_pair(self) -> tuple[np.ndarray, np.ndarray]:
        """``(image (1, H, W) float32 in [0, 1], mask (H, W) int64 0 / 1)``, cropped to the ROI."""
        from medlearn.data.decode import load_image
        from medlearn.data.volume_slices import crop_padded

        image = load_image(self.path, 1)[0].numpy()
        if tuple(image.shape) != tuple(self.shape):
            raise DataError(self.path, f"image is {image.shape[1]} x {image.shape[0]} but its header said "
                                       f"{self.shape[1]} x {self.shape[0]} (width x height)")
        mask = rasterise_contours(self.contours, image.shape, self.lesions).astype(np.int64)
        return crop_padded(image, self.roi)[None], crop_padded(mask, self.roi)


def _dicom_shape(path: Path) -> tuple[int, int]:
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return int(ds.Rows), int(ds.Columns)
    except Exception as exc:  # InvalidDicomError, missing Rows / Columns, OSError
        raise DataError(path, f"cannot read the DICOM header ({type(exc).__name__}: {exc})") from exc


def _lesion_box(contours: Sequence[Contour], lesions: Sequence[str], size: int,
                margin: int = 32) -> tuple[int, int, int, int] | None:
    wanted = {s.lower() for s in lesions}
    pts = [p for name, ps in contours if name.lower() in wanted for p in ps]
    if not pts:
        return None
    xy = np.asarray(pts)
    c0, c1, r0, r1 = int(np.floor(xy[:, 0].min())), int(np.ceil(xy[:, 0].max())) + 1, \
        int(np.floor(xy[:, 1].min())), int(np.ceil(xy[:, 1].max())) + 1
    side = max(int(size), r1 - r0 + 2 * margin, c1 - c0 + 2 * margin)
    cr, cc = (r0 + r1) // 2, (c0 + c1) // 2
    return cr - side // 2, cr - side // 2 + side, cc - side // 2, cc - side // 2 + side


def read_inbreast(root: str | Path, lesions: Sequence[str] = ("Mass",), only_annotated: bool = True,
                  roi: str | None = "lesion", roi_size: int = 1024, roi_margin: int = 32) -> list[InbreastImage]:
    """Read and validate an INbreast folder (see the module docstring).

    Checks (every problem listed): ``AllDICOMs`` missing or without DICOM files; a DICOM name not of the
    INbreast form; an unreadable DICOM header; an XML file that is unreadable, has unreadable points, or
    has contour points outside its image (each ROI listed with the offending points); an XML file whose
    id matches no DICOM.

    Args:
        root: the INbreast folder.
        lesions: ROI names rasterised to 1.
        only_annotated: keep only images with at least one such contour.
        roi: ``"lesion"`` or ``None`` (whole images).
        roi_size: the lesion ROI side in stored pixels.
        roi_margin: margin around lesions larger than the ROI.

    Returns:
        One :class:`InbreastImage` per kept mammogram, sorted by file name.

    Raises:
        DataError: as above, or no image kept.
        ValueError: an unknown ``roi`` or no ``lesions``.
    """
    root = Path(root)
    if roi not in ("lesion", None):
        raise ValueError(f"roi must be 'lesion' or None, got {roi!r}")
    lesions = tuple(str(s) for s in lesions)
    if not lesions:
        raise ValueError("lesions must name at least one ROI type (e.g. ['Mass'])")
    dicom_dir, xml_dir = root / "AllDICOMs", root / "AllXML"
    if not dicom_dir.is_dir():
        raise DataError(root, "INbreast folder without AllDICOMs/")
    dicoms = sorted(n for n in os.listdir(dicom_dir) if n.lower().endswith(".dcm") and not n.startswith("."))
    if not dicoms:
        raise DataError(dicom_dir, "no DICOM files")
    xmls = {Path(n).stem: xml_dir / n for n in os.listdir(xml_dir) if n.lower().endswith(".xml")} \
        if xml_dir.is_dir() else {}
    problems: list[str] = []
    records: list[InbreastImage] = []
    seen: set[str] = set()
    for name in dicoms:
        m = _DICOM.match(name)
        if m is None:
            problems.append(f"AllDICOMs/{name}: not an INbreast name (<id>_<patient>_MG_<L|R>_<view>_ANON.dcm)")
            continue
        image_id, patient, side, view = m.groups()
        seen.add(image_id)
        try:
            shape = _dicom_shape(dicom_dir / name)
        except DataError as exc:
            problems.append(f"AllDICOMs/{name}: {exc.reason}")
            continue
        contours: list[Contour] = []
        xml = xmls.get(image_id, xml_dir / f"{image_id}.xml")
        if image_id in xmls:
            try:
                contours = read_inbreast_xml(xml)
            except DataError as exc:
                problems.append(f"AllXML/{xml.name}: {exc.reason}" + "".join(f"; {p}" for p in exc.problems))
                continue
            outside = []
            for k, (roi_name, pts) in enumerate(contours):
                off = [(x, y) for x, y in pts if not (-0.5 <= x <= shape[1] - 0.5 and -0.5 <= y <= shape[0] - 0.5)]
                if off:
                    shown = ", ".join(f"({x:.1f}, {y:.1f})" for x, y in off[:3])
                    outside.append(f"ROI {k} ({roi_name}): {len(off)} of {len(pts)} points outside the "
                                   f"{shape[1]} x {shape[0]} image, e.g. {shown}")
            if outside:
                problems.append(f"AllXML/{xml.name} (image {name}): " + "; ".join(outside))
                continue
        wanted = {s.lower() for s in lesions}
        if only_annotated and not any(n.lower() in wanted and pts for n, pts in contours):
            continue
        box = _lesion_box(contours, lesions, roi_size, roi_margin) if roi == "lesion" else None
        records.append(InbreastImage(dicom_dir / name, xml, patient, name, domain=f"{side.upper()}_{view.upper()}",
                                     contours=tuple(contours), lesions=lesions, shape=shape, roi=box))
    for image_id, xml in sorted(xmls.items()):
        if image_id not in seen:
            problems.append(f"AllXML/{xml.name}: no DICOM in AllDICOMs/ has the id {image_id}")
    if problems:
        raise DataError(root, f"{len(problems)} INbreast problems", problems)
    if not records:
        raise DataError(root, f"no INbreast image with a {' / '.join(lesions)} contour"
                        if only_annotated else "no INbreast image")
    return records


def _detect(root: Path, **_: Any) -> bool:
    d = Path(root) / "AllDICOMs"
    try:
        return d.is_dir() and any(_DICOM.match(n) for n in os.listdir(d))
    except OSError:
        return False


def _read(root: Path, lesions: Sequence[str] = ("Mass",), only_annotated: bool = True, roi: str | None = "lesion",
          roi_size: int = 1024, roi_margin: int = 32, **_: Any) -> RecordSet[InbreastImage]:
    return RecordSet(read_inbreast(root, lesions, only_annotated, roi, roi_size, roi_margin))


register_layout(
    "inbreast", _detect, _read, kind="segmentation2d", synth="inbreast", priority=10,
    description="INbreast: AllDICOMs/<id>_<patient>_MG_<side>_<view>_ANON.dcm + AllXML/<id>.xml lesion contours, "
                "rasterised to 0/1 masks (layout_options: lesions, only_annotated, roi, roi_size)",
    tasks=("segmentation",), label_values=(0, 1), label_names=("background", "lesion"),
    check=CheckHints(stray=False),  # images without the chosen lesions are not records, by design
)
