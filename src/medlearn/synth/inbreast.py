"""Mammography phantoms with mass contours written in the INbreast layout (small test fixtures and smoke runs).

``AllDICOMs/<id>_<patient>_MG_<L|R>_<CC|ML>_ANON.dcm`` (16-bit monochrome DICOM, 14 bits stored) and
``AllXML/<id>.xml`` (OsiriX plist: ``Images > ROIs``, each ROI a ``Name`` and its ``Point_px`` vertices
``"(x, y)"``), read back by :func:`medlearn.data.inbreast.read_inbreast`. Each image: a breast (a half
ellipse from the chest wall side) over a dark background, smooth texture, and with probability
``p_mass`` one or two bright masses whose outlines (scikit-image ``find_contours``) are the XML contours;
every third XML also carries a one-point "Calcification". Not realistic mammography: a fixture for
readers and pipelines.
"""

from __future__ import annotations

import plistlib
from pathlib import Path

import numpy as np

from medlearn.console import track
from medlearn.synth import prepare_out_dir, register_synth

__all__ = ["write_inbreast", "write_mammogram_dicom"]


def write_mammogram_dicom(path: str | Path, pixels: np.ndarray, laterality: str = "L") -> Path:
    """Write a ``(H, W)`` uint16 array as a minimal monochrome MG DICOM file (pydicom)."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.1.2")  # digital mammography X-ray, for presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.ImageLaterality = "MG", laterality
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 14, 13, 0
    ds.PixelSpacing = [0.07, 0.07]
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint16).tobytes()
    pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
    return Path(path)


def _mammogram(rng: np.random.Generator, h: int, w: int, side: str, n_masses: int) -> tuple[np.ndarray, list]:
    from scipy.ndimage import gaussian_filter
    from skimage.measure import find_contours

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    wall = 0 if side == "L" else w - 1
    breast = ((xx - wall) / (0.8 * w)) ** 2 + ((yy - h / 2) / (0.45 * h)) ** 2 < 1
    img = np.where(breast, 4000.0, 300.0) + breast * 1500 * gaussian_filter(rng.normal(size=(h, w)), 6)
    contours = []
    for _ in range(n_masses):
        for _try in range(100):
            cy, cx, r = rng.uniform(0.3 * h, 0.7 * h), rng.uniform(0.1 * w, 0.9 * w), rng.uniform(0.06, 0.1) * h
            field = np.exp(-(((yy - cy) / r) ** 2 + ((xx - cx) / (r * rng.uniform(0.7, 1.3))) ** 2))
            m = field > 0.5
            if (m & ~breast).any():
                continue
            img += 3000 * m
            c = max(find_contours(field, 0.5), key=len)  # (row, col) vertices
            contours.append([(float(col), float(row)) for row, col in c[::2]])
            break
    img += rng.normal(0, 80, img.shape)
    return np.clip(np.rint(img), 0, 2**14 - 1).astype(np.uint16), contours


@register_synth("inbreast", help="mammography phantoms with mass contours in the INbreast layout (DICOM + XML)")
def write_inbreast(out: str | Path, n_images: int = 8, height: int = 200, width: int = 160, p_mass: float = 0.75,
                   seed: int = 0, overwrite: bool = False) -> Path:
    """Write mammography phantoms in the INbreast layout (two views per patient).

    Args:
        out: output folder.
        n_images: images (patients = half of them, rounded up).
        height: rows.
        width: columns.
        p_mass: probability that an image has masses (and an XML file).
        seed: random seed; output depends only on the arguments.
        overwrite: allow a non-empty ``out``.

    Returns:
        ``out``.
    """
    if n_images < 1 or min(height, width) < 64 or not 0.0 <= p_mass <= 1.0:
        raise ValueError("need n_images >= 1, height and width >= 64, p_mass in [0, 1]")
    out = prepare_out_dir(out, overwrite)
    (out / "AllDICOMs").mkdir(parents=True, exist_ok=True)
    (out / "AllXML").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 2012])
    rows = ["Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads"]
    patient = ""
    for i in track(range(n_images), description="INbreast mammograms"):
        image_id = str(20586908 + 17 * i)
        if i % 2 == 0:  # two views per patient
            patient = f"{int(rng.integers(0, 2**63)):016x}"
        side, view = ("L", "R")[(i // 2) % 2], ("CC", "MLO")[i % 2]
        n_masses = int(rng.integers(1, 3)) if rng.random() < p_mass else 0
        pixels, contours = _mammogram(rng, height, width, side, n_masses)
        write_mammogram_dicom(out / "AllDICOMs" / f"{image_id}_{patient}_MG_{side}_{view[:2]}_ANON.dcm", pixels, side)
        rois = [{"Name": "Mass", "NumberOfPoints": len(c), "Point_px": [f"({x:.3f}, {y:.3f})" for x, y in c]}
                for c in contours]
        if rois and i % 3 == 0:
            centre = f"({width / 2:.1f}, {height / 2:.1f})"
            rois.append({"Name": "Calcification", "NumberOfPoints": 1, "Point_px": [centre]})
        if rois:
            doc = {"Images": [{"ImageIndex": 0, "NumberOfROIs": len(rois), "ROIs": rois}]}
            (out / "AllXML" / f"{image_id}.xml").write_bytes(plistlib.dumps(doc, fmt=plistlib.FMT_XML))
        rows.append(f"removed;50;{side};{view[:2]};201001;{image_id};2;{4 if n_masses else 1}")
    (out / "INbreast.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (out / "README.txt").write_text("Synthetic mammography phantoms (medlearn.synth.inbreast). NOT patient data. "
                                    f"INbreast layout. n_images={n_images} size={height}x{width} seed={seed}\n",
                                    encoding="utf-8")
    return out
