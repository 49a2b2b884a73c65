"""Reader for the KiTS19 layout (kidney and kidney-tumour CT), served as 2D tumour-bearing slices.

The KiTS19 challenge data (Heller et al., "The KiTS19 Challenge Data: 300 Kidney Tumor Cases with
Clinical Context, CT Semantic Segmentations, and Surgical Outcomes", arXiv:1904.00445, 2019)::

    root/case_00000/imaging.nii.gz        CT in HU, stored (slices, 512, 512): axial axis first
    root/case_00000/segmentation.nii.gz   0 background, 1 kidney, 2 tumour (cases 0-209)
    ...
    root/case_00299/imaging.nii.gz        cases 210-299: no segmentation (the hidden test set)

:func:`read_kits19` validates every case (each problem listed) and returns one
:class:`~medlearn.data.volume_slices.VolumeSlice` per chosen slice, for
:class:`~medlearn.data.segmentation2d.ImageMaskDataModule` (``layout: kits19``, options through
``layout_options``). How slices become 2D pairs (the Crossbar-Net / Crossover-Net kidney-tumour
protocol, Yu et al. IEEE TIP 2019 and arXiv:2004.01397, on this public stand-in):

- **slices**: along stored axis 0, those holding at least ``min_pixels`` tumour pixels (``slices="tumour"``,
  default: the papers segment tumours on tumour-bearing slices); ``"kidney"`` (any label) or ``"all"``;
- **intensity**: the HU window ``hu_window`` (default ``[-200, 300]``, the spec's) mapped to [0, 1];
- **ROI**: a ``roi_size`` square (default 192 px at the stored resolution, inside the 170-260 px range
  of Crossbar-Net's ROI images) centred on the tumour-bearing kidney (the kidney + tumour component
  holding the tumour in that slice; larger when the kidney is, with a 16 px margin). The ROI comes from
  the ground truth, as the papers' ROI images did: an oracle localisation, not a detection step.
  ``roi=None``: whole slices.

Masks keep the stored labels 0 / 1 / 2; the tumour-vs-rest target of the papers is the DataModule's
``value_map: {0: 0, 1: 0, 2: 1}``. Cases without a segmentation are skipped (the challenge's test
cases) unless ``require_seg``. Splits: by case (``group``), so slices of one patient never straddle
train and test.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medlearn.data.layouts import CheckHints, RecordSet, register_layout
from medlearn.data.volume_slices import VolumeSlice, label_value_problem, load_volume, roi_around, select_slices
from medlearn.io import nifti_geometry
from medlearn.io.errors import DataError

__all__ = ["KITS19_LABELS", "KITS19_LABEL_NAMES", "read_kits19"]

#: KiTS19 label values and their names.
KITS19_LABELS: tuple[int, ...] = (0, 1, 2)
KITS19_LABEL_NAMES: tuple[str, ...] = ("background", "kidney", "tumour")
_CASE = re.compile(r"^case_\d{5}$")
_SLICE_CHOICES: dict[str, str | int] = {"tumour": 2, "kidney": "labelled", "all": "all"}


def _case_dirs(root: Path) -> list[Path]:
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return []
    return [Path(e.path) for e in entries if _CASE.match(e.name) and e.is_dir()]


def read_kits19(root: str | Path, slices: str = "tumour", hu_window: Sequence[float] = (-200.0, 300.0),
                roi: str | None = "kidney", roi_size: int = 192, roi_margin: int = 16, min_pixels: int = 1,
                require_seg: bool = False, axis: int = 0) -> list[VolumeSlice]:
    """Read and validate a KiTS19 folder; one record per chosen slice (see the module docstring).

    Checks, per case (every bad case listed, with everything wrong with it): ``imaging.nii.gz`` missing;
    a NIfTI file unreadable or truncated (from its header); not 3D; the segmentation's shape or affine
    differing from the image's (a mask not matching its image); label values other than 0 / 1 / 2;
    with ``require_seg``, a missing segmentation.

    Args:
        root: the folder holding ``case_XXXXX`` folders.
        slices: ``"tumour"``, ``"kidney"`` or ``"all"``.
        hu_window: HU bounds mapped to 0 and 1.
        roi: ``"kidney"`` (the tumour-bearing kidney's ROI) or ``None`` (whole slices).
        roi_size: ROI side in stored pixels.
        roi_margin: margin around a kidney larger than the ROI.
        min_pixels: pixels of the chosen label a slice needs.
        require_seg: a case without a segmentation is an error (else skipped).
        axis: the stored axis of the slices (KiTS19: 0, axial).

    Returns:
        :class:`~medlearn.data.volume_slices.VolumeSlice` records, by case then slice; ``name`` =
        ``case_XXXXX/slice_NNNN``, ``group`` = the case.

    Raises:
        DataError: ``root`` is not a folder or holds no case; any case is invalid (all listed); or no
            slice is chosen at all.
        ValueError: an unknown ``slices`` or ``roi`` option, or a bad window.
    """
    root = Path(root)
    if slices not in _SLICE_CHOICES:
        raise ValueError(f"slices must be one of {sorted(_SLICE_CHOICES)}, got {slices!r}")
    if roi not in ("kidney", None):
        raise ValueError(f"roi must be 'kidney' or None, got {roi!r}")
    lo, hi = (float(v) for v in hu_window)
    if not hi > lo:
        raise ValueError(f"hu_window must be [low, high] with high > low, got {list(hu_window)}")
    if not root.is_dir():
        raise DataError(root, "KiTS19 root folder not found")
    cases = _case_dirs(root)
    if not cases:
        raise DataError(root, "no KiTS19 case folders found (expected case_00000/imaging.nii.gz ...)")
    records: list[VolumeSlice] = []
    problems: list[str] = []
    for case_dir in cases:
        case = case_dir.name
        img, seg = case_dir / "imaging.nii.gz", case_dir / "segmentation.nii.gz"
        issues: list[str] = []
        if not img.is_file():
            issues.append("missing imaging.nii.gz")
        if not seg.is_file():
            if require_seg or not img.is_file():
                issues.append("missing segmentation.nii.gz")
            if not issues:
                continue  # a test case of the challenge: no labels
        geometry: dict[str, tuple[tuple[int, ...], np.ndarray]] = {}
        for path in (img, seg):
            if path.is_file():
                try:
                    geometry[path.name] = nifti_geometry(path)
                except DataError as exc:
                    issues.append(f"{path.name}: {exc.reason}")
        for name, (shape, _) in geometry.items():
            if len(shape) != 3:
                issues.append(f"{name}: a 3D volume is expected, the header says shape {shape}")
        if len(geometry) == 2 and not issues:
            (ishape, iaff), (sshape, saff) = geometry[img.name], geometry[seg.name]
            if ishape != sshape:
                issues.append(f"segmentation.nii.gz: shape {sshape} does not match imaging.nii.gz {ishape}")
            elif not np.allclose(iaff, saff, rtol=0.0, atol=1e-3):
                issues.append("segmentation.nii.gz: affine differs from imaging.nii.gz")
        labels: np.ndarray | None = None
        if not issues:
            try:
                labels = load_volume(seg)
            except DataError as exc:
                issues.append(f"segmentation.nii.gz: {exc.reason}")
            else:
                issue = label_value_problem(labels, KITS19_LABELS, "segmentation.nii.gz")
                if issue:
                    issues.append(issue)
        if issues:
            problems.append(f"{case}: {'; '.join(issues)}")
            continue
        assert labels is not None
        for k in select_slices(labels, axis, _SLICE_CHOICES[slices], min_pixels):
            lab2d = np.take(labels, k, axis=axis)
            box = roi_around(lab2d, (2,) if (lab2d == 2).any() else (1, 2), (1, 2), roi_size, roi_margin) \
                if roi == "kidney" else None
            records.append(VolumeSlice(img, seg, case, f"{case}/slice_{k:04d}", index=k, axis=axis,
                                       scaling="window", window=(lo, hi), roi=box))
    if problems:
        raise DataError(root, f"{len(problems)} of {len(cases)} KiTS19 cases are invalid", problems)
    if not records:
        raise DataError(root, f"no {slices} slices in the labelled KiTS19 cases")
    return records


def _detect(root: Path, **_: Any) -> bool:
    return any((d / "imaging.nii.gz").is_file() for d in _case_dirs(Path(root))[:5])


def _read(root: Path, slices: str = "tumour", hu_window: Sequence[float] = (-200.0, 300.0), roi: str | None = "kidney",
          roi_size: int = 192, roi_margin: int = 16, min_pixels: int = 1, require_seg: bool = False,
          **_: Any) -> RecordSet[VolumeSlice]:
    return RecordSet(read_kits19(root, slices, hu_window, roi, roi_size, roi_margin, min_pixels, require_seg))


register_layout(
    "kits19", _detect, _read, kind="segmentation2d", synth="kits19", priority=10,
    description="KiTS19: case_XXXXX/{imaging,segmentation}.nii.gz (CT, labels 0/1 kidney/2 tumour) as 2D "
                "tumour-bearing slices, HU window, kidney ROI (layout_options: slices, hu_window, roi, roi_size)",
    tasks=("segmentation",), label_values=KITS19_LABELS, label_names=KITS19_LABEL_NAMES,
    check=CheckHints(modality="CT"),
)
