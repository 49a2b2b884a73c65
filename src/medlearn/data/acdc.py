"""Reader for the ACDC layout (cardiac cine MR, short axis), served as 2D slices of the labelled frames.

The Automated Cardiac Diagnosis Challenge data (Bernard et al., "Deep Learning Techniques for Automatic
MRI Cardiac Multi-Structures Segmentation and Diagnosis: Is the Problem Solved?", IEEE TMI 37(11),
2018)::

    root/patient001/Info.cfg                     ED: 1 / ES: 12 / Group: DCM / Height / NbFrame / Weight
    root/patient001/patient001_frame01.nii.gz    a short-axis stack (X, Y, slices)
    root/patient001/patient001_frame01_gt.nii.gz 0 background, 1 right ventricle, 2 myocardium, 3 LV cavity
    root/patient001/patient001_4d.nii.gz         the whole cine (not read)

or ``root/training/patientXXX`` + ``root/testing/patientXXX`` (the second marked ``split: test``).

:func:`read_acdc` validates every patient (each problem listed) and returns one
:class:`~medlearn.data.volume_slices.VolumeSlice` per chosen slice of every frame that has a ground
truth (ED and ES), for :class:`~medlearn.data.segmentation2d.ImageMaskDataModule` (``layout: acdc``,
options through ``layout_options``):

- **slices**: along stored axis 2 (the short-axis stack); ``"labelled"`` (default: any structure),
  ``"all"``, or a label value (Crossover-Net's cardiac task is the LV cavity: ``slices: 3``);
- **intensity**: MR has no absolute scale: each frame volume's ``percentiles`` (default 1st and 99th)
  map to 0 and 1 [I];
- **no ROI**: whole slices (about 200-260 px), resized by the DataModule; rows = stored X, columns = Y.

Masks keep 0-3; the LV-cavity-vs-rest target is ``value_map: {0: 0, 1: 0, 2: 0, 3: 1}``. ``domain``
is the patient's diagnostic group from ``Info.cfg`` (NOR, MINF, DCM, HCM, RV); ``group`` the patient,
so the slices and frames of a patient stay on one side of every split.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medlearn.data.layouts import CheckHints, RecordSet, register_layout
from medlearn.data.records import is_nifti, nifti_stem
from medlearn.data.volume_slices import VolumeSlice, label_value_problem, load_volume, select_slices
from medlearn.io import nifti_geometry
from medlearn.io.errors import DataError

__all__ = ["ACDC_LABELS", "ACDC_LABEL_NAMES", "read_acdc", "read_info_cfg"]

#: ACDC label values and their names.
ACDC_LABELS: tuple[int, ...] = (0, 1, 2, 3)
ACDC_LABEL_NAMES: tuple[str, ...] = ("background", "right_ventricle", "myocardium", "lv_cavity")
_PATIENT = re.compile(r"^patient\d{3}$")
_FRAME = re.compile(r"^(patient\d{3})_frame(\d+)_gt$")


def _patient_dirs(root: Path) -> list[tuple[Path, str]]:
    """``(folder, split)`` of every patient: in ``root`` itself, or in ``training`` / ``testing`` under it."""
    found: list[tuple[Path, str]] = []
    for sub, split in (("", ""), ("training", ""), ("testing", "test")):
        folder = root / sub if sub else root
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        found += [(Path(e.path), split) for e in entries if _PATIENT.match(e.name) and e.is_dir()]
    return found


def read_info_cfg(path: str | Path) -> dict[str, str]:
    """``Info.cfg`` as ``{key: value}`` (``ED``, ``ES``, ``Group``, ``Height``, ``NbFrame``, ``Weight``).

    Raises:
        DataError: the file cannot be read or a line is not ``key: value``.
    """
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DataError(path, f"cannot read Info.cfg ({exc.strerror or exc})") from exc
    out: dict[str, str] = {}
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise DataError(path, f"line {i} is not 'key: value': {line!r}")
        out[key.strip()] = value.strip()
    return out


def read_acdc(root: str | Path, slices: str | int = "labelled", percentiles: Sequence[float] = (1.0, 99.0),
              min_pixels: int = 1) -> list[VolumeSlice]:
    """Read and validate an ACDC folder; one record per chosen slice of each labelled frame.

    Checks, per patient (every bad patient listed, with everything wrong with it): no ``_gt`` frame; a
    ``_gt`` file without its image; a NIfTI file unreadable or truncated; not 3D; a ground truth whose
    shape or affine differs from its image; label values other than 0-3; an unreadable ``Info.cfg``.

    Args:
        root: the folder of ``patientXXX`` folders (or of ``training`` / ``testing``).
        slices: ``"labelled"``, ``"all"`` or a label value.
        percentiles: the frame volume's percentiles mapped to 0 and 1.
        min_pixels: pixels a slice needs for ``"labelled"`` or a label value.

    Returns:
        Records by patient, frame and slice; ``name`` = ``patientXXX/frameYY_slice_NN``.

    Raises:
        DataError: ``root`` holds no patient; any patient is invalid (all listed); or nothing is chosen.
        ValueError: a bad ``slices`` or ``percentiles``.
    """
    root = Path(root)
    if not (slices in ("labelled", "all") or isinstance(slices, (int, np.integer))):
        raise ValueError(f"slices must be 'labelled', 'all' or a label value, got {slices!r}")
    lo, hi = (float(v) for v in percentiles)
    if not 0.0 <= lo < hi <= 100.0:
        raise ValueError(f"percentiles must be [low, high] with 0 <= low < high <= 100, got {list(percentiles)}")
    patients = _patient_dirs(root)
    if not patients:
        raise DataError(root, "no ACDC patient folders found (expected patient001/patient001_frame01_gt.nii.gz ...)")
    records: list[VolumeSlice] = []
    problems: list[str] = []
    for folder, split in patients:
        patient = folder.name
        issues: list[str] = []
        try:
            names = sorted(os.listdir(folder))
        except OSError as exc:
            problems.append(f"{patient}: cannot list the folder ({exc})")
            continue
        group = ""
        if "Info.cfg" in names:
            try:
                group = read_info_cfg(folder / "Info.cfg").get("Group", "")
            except DataError as exc:
                issues.append(f"Info.cfg: {exc.reason}")
        frames = sorted((m.group(2), folder / n) for n in names if is_nifti(n) and (m := _FRAME.match(nifti_stem(n))))
        if not frames:
            issues.append(f"no labelled frame ({patient}_frameYY_gt.nii.gz)")
        chosen: list[tuple[str, Path, Path, np.ndarray]] = []
        for frame, gt in frames:
            image = next((folder / n for n in names if is_nifti(n) and nifti_stem(n) == f"{patient}_frame{frame}"),
                         None)
            if image is None:
                issues.append(f"{gt.name}: its image {patient}_frame{frame}.nii.gz is missing")
                continue
            try:
                (ishape, iaff), (gshape, gaff) = nifti_geometry(image), nifti_geometry(gt)
            except DataError as exc:
                issues.append(f"{Path(exc.path).name}: {exc.reason}")
                continue
            if len(ishape) != 3 or len(gshape) != 3:
                issues.append(f"frame {frame}: 3D volumes are expected, shapes {ishape} and {gshape}")
            elif ishape != gshape:
                issues.append(f"{gt.name}: shape {gshape} does not match its image {ishape}")
            elif not np.allclose(iaff, gaff, rtol=0.0, atol=1e-3):
                issues.append(f"{gt.name}: affine differs from its image")
            else:
                try:
                    labels = load_volume(gt)
                except DataError as exc:
                    issues.append(f"{gt.name}: {exc.reason}")
                    continue
                issue = label_value_problem(labels, ACDC_LABELS, gt.name)
                if issue:
                    issues.append(issue)
                else:
                    chosen.append((frame, image, gt, labels))
        if issues:
            problems.append(f"{patient}: {'; '.join(issues)}")
            continue
        for frame, image, gt, labels in chosen:
            which: str | int = slices if isinstance(slices, str) else int(slices)
            for k in select_slices(labels, 2, which, min_pixels):
                records.append(VolumeSlice(image, gt, patient, f"{patient}/frame{frame}_slice_{k:02d}", split=split,
                                           domain=group, index=k, axis=2, scaling="percentile", window=(lo, hi)))
    if problems:
        raise DataError(root, f"{len(problems)} of {len(patients)} ACDC patients are invalid", problems)
    if not records:
        raise DataError(root, f"no {slices} slices in the ACDC ground truths")
    return records


def _detect(root: Path, **_: Any) -> bool:
    for folder, _split in _patient_dirs(Path(root))[:5]:
        try:
            if any(_FRAME.match(nifti_stem(n)) for n in os.listdir(folder) if is_nifti(n)):
                return True
        except OSError:
            continue
    return False


def _read(root: Path, slices: str | int = "labelled", percentiles: Sequence[float] = (1.0, 99.0), min_pixels: int = 1,
          **_: Any) -> RecordSet[VolumeSlice]:
    return RecordSet(read_acdc(root, slices, percentiles, min_pixels))


register_layout(
    "acdc", _detect, _read, kind="segmentation2d", synth="acdc", priority=10,
    description="ACDC: patientXXX/patientXXX_frameYY[_gt].nii.gz (cine MR, labels 0/1 RV/2 myocardium/3 LV cavity) "
                "as 2D short-axis slices of the ED/ES frames (layout_options: slices, percentiles)",
    tasks=("segmentation",), label_values=ACDC_LABELS, label_names=ACDC_LABEL_NAMES,
    check=CheckHints(stray=False),  # the 4D cine volumes sit beside the ED / ES frames
)
