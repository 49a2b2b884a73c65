"""Reader for the BraTS layout (multi-modal brain tumour MR with segmentations), and its regions.

The BraTS challenge layout (Menze et al., "The Multimodal Brain Tumor Image Segmentation Benchmark
(BRATS)", IEEE TMI 2015; Bakas et al., Scientific Data 2017; Bakas et al., arXiv:1811.02629,
2018)::

    root/<case>/<case>_t1.nii.gz, <case>_t1ce.nii.gz, <case>_t2.nii.gz, <case>_flair.nii.gz
    root/<case>/<case>_seg.nii.gz      labels 0 / 1 necrotic core / 2 oedema / 4 enhancing

four co-registered, skull-stripped contrasts per case. :func:`read_brats` finds the case folders,
checks every file from its header (shape, affine, truncation; no voxels decoded) and, by
default, the segmentation's label values; :func:`brats_regions` turns label maps into the three
evaluated regions (WT, TC, ET). :func:`medlearn.synth.brats.write_brats` writes phantoms in this
layout.

Validation reports every bad case at once (a :class:`~medlearn.io.errors.DataError` whose
``problems`` lists each). Records are :class:`~medlearn.data.records.VolumeRecord`. The layout is
registered as ``"brats"`` (kind ``volume``, :mod:`medlearn.data.layouts`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medlearn.data.layouts import RecordSet, register_layout
from medlearn.data.records import VolumeRecord, is_nifti, nifti_stem
from medlearn.io import nifti_geometry, read_image
from medlearn.io.errors import DataError
from medlearn.metrics.segmentation import BRATS

__all__ = [
    "BRATS_LABELS",
    "BRATS_LABEL_NAMES",
    "BRATS_MODALITIES",
    "BRATS_REGIONS",
    "brats_regions",
    "read_brats",
]

#: The four BraTS MR contrasts, in the usual channel order.
BRATS_MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")
#: BraTS 2012-2021 label values (from the evaluation's region set, :data:`medlearn.metrics.segmentation.BRATS`).
BRATS_LABELS: tuple[int, ...] = tuple(v for v, _ in BRATS.label_names)
#: Names of :data:`BRATS_LABELS`.
BRATS_LABEL_NAMES: tuple[str, ...] = tuple(n for _, n in BRATS.label_names)
#: The evaluated BraTS regions, in the channel order of :func:`brats_regions`.
BRATS_REGIONS: tuple[str, ...] = tuple(BRATS.names)


def _find_case_file(index: Mapping[str, Path], case: str, key: str) -> list[Path]:
    """Files named ``<case>_<key>.nii[.gz]`` (or with ``-``; any case) in a case folder's index."""
    stems = {f"{case}_{key}".lower(), f"{case}-{key}".lower()}
    return sorted(p for name, p in index.items() if nifti_stem(name).lower() in stems and is_nifti(name))


def _brats_case_dirs(root: Path) -> list[Path]:
    dirs = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        try:
            if any(is_nifti(n) for n in os.listdir(entry.path)):
                dirs.append(Path(entry.path))
        except OSError:
            dirs.append(Path(entry.path))
    return dirs


def read_brats(
    root: str | Path,
    modalities: Sequence[str] = BRATS_MODALITIES,
    require_seg: bool = True,
    check_labels: bool = True,
    check_images: bool = False,
    seg_labels: Sequence[int] = BRATS_LABELS,
    atol: float = 1e-3,
) -> list[VolumeRecord]:
    """Read and validate a BraTS folder: ``root/<case>/<case>_<modality>.nii.gz`` per case.

    A case is every non-hidden sub-folder that holds NIfTI files; ``-`` is accepted instead of
    ``_`` before the modality (BraTS 2023 writes ``<case>-t1n.nii.gz``: pass
    ``modalities=("t1n", "t1c", "t2w", "t2f")`` and ``seg_labels=(0, 1, 2, 3)`` for it).

    Checks, per case, each reported (one entry of ``problems`` per bad case listing everything
    wrong with it): a modality (or, with ``require_seg``, the ``seg``) file is missing or present
    twice; a file is not readable NIfTI or is truncated (from the header and the file-size or gzip
    length footer: cheap, no voxels decoded); a volume is not 3D; a modality or the seg has a
    shape or an affine (tolerance ``atol``) different from the case's first modality. Label values
    need the voxels, so they are checked only with ``check_labels`` (default on: decodes each seg
    once, about 0.1 s per real BraTS case); ``check_images`` also decodes every image (NaN / Inf
    voxels, corrupt data inside an intact-looking file).

    Args:
        root: the folder holding the case folders.
        modalities: the image files per case, in channel order.
        require_seg: a missing ``<case>_seg`` file is an error (else such cases get ``seg=None``).
        check_labels: decode each seg and check its values are in ``seg_labels``.
        check_images: decode each image too.
        seg_labels: the allowed label values.
        atol: tolerance on affine entries between the files of a case.

    Returns:
        One :class:`~medlearn.data.records.VolumeRecord` per case (``paths`` in ``modalities``
        order, ``seg``, ``case`` = folder name), sorted by case.

    Raises:
        DataError: ``root`` is not a folder or holds no case; or any case is invalid (all listed).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "BraTS root folder not found")
    modalities = [str(m) for m in modalities]
    if not modalities:
        raise ValueError("modalities must name at least one modality")
    allowed = {int(v) for v in seg_labels}
    case_dirs = _brats_case_dirs(root)
    if not case_dirs:
        raise DataError(root, f"no BraTS case folders found (expected <case>/<case>_{modalities[0]}.nii.gz ...)")
    records: list[VolumeRecord] = []
    problems: list[str] = []
    for case_dir in case_dirs:
        case = case_dir.name
        try:
            index = {n: case_dir / n for n in os.listdir(case_dir)}
        except OSError as exc:
            problems.append(f"{case}: cannot list the folder ({exc})")
            continue
        issues: list[str] = []
        files: dict[str, Path] = {}
        for key in [*modalities, "seg"]:
            found = _find_case_file(index, case, key)
            if len(found) > 1:
                issues.append(f"{key} given twice ({', '.join(p.name for p in found)})")
            elif found:
                files[key] = found[0]
            elif key != "seg" or require_seg:
                issues.append(f"missing {key} ({case}_{key}.nii.gz)")
        geometry: dict[str, tuple[tuple[int, ...], np.ndarray]] = {}
        for key, path in files.items():
            try:
                geometry[key] = nifti_geometry(path)
            except DataError as exc:
                issues.append(f"{path.name}: {exc.reason}")
        ref = next((k for k in [*modalities, "seg"] if k in geometry), None)
        for key, (shape, affine) in geometry.items():
            if len(shape) != 3:
                issues.append(f"{files[key].name}: a 3D volume is expected, the header says shape {shape}")
                continue
            if ref is None or key == ref or len(geometry[ref][0]) != 3:
                continue
            ref_shape, ref_affine = geometry[ref]
            if shape != ref_shape:
                issues.append(f"{files[key].name}: shape {shape} differs from {ref} {ref_shape}")
            elif not np.allclose(affine, ref_affine, rtol=0.0, atol=atol):
                diff = float(np.abs(affine - ref_affine).max())
                issues.append(f"{files[key].name}: affine differs from {ref} (max difference {diff:.4g} > {atol:g})")
        if check_images:
            for key in modalities:
                if key in geometry:
                    try:
                        read_image(files[key])
                    except DataError as exc:
                        issues.append(f"{files[key].name}: {exc.reason}")
        if check_labels and "seg" in geometry:
            issue = _check_seg_labels(files["seg"], allowed)
            if issue:
                issues.append(issue)
        if issues:
            problems.append(f"{case}: {'; '.join(issues)}")
            continue
        records.append(VolumeRecord(paths={m: files[m] for m in modalities}, seg=files.get("seg"), case=case))
    if problems:
        raise DataError(root, f"{len(problems)} of {len(case_dirs)} BraTS cases are invalid", problems)
    return records


def _check_seg_labels(path: Path, allowed: set[int]) -> str | None:
    """A problem string if the seg at ``path`` is unreadable or holds values outside ``allowed``."""
    try:
        arr, _ = read_image(path)
    except DataError as exc:
        return f"{path.name}: {exc.reason}"
    flat = arr.ravel()
    as_int = flat.astype(np.int64)
    if (as_int != flat).any():
        bad = np.unique(flat[as_int != flat])[:5]
        return f"{path.name}: non-integer label values {[float(b) for b in bad]}"
    lo, hi = int(as_int.min()), int(as_int.max())
    if lo >= 0 and hi < 4096:
        counts = np.bincount(as_int, minlength=hi + 1)
        values = {int(v): int(counts[v]) for v in np.flatnonzero(counts)}
    else:
        vals, cnt = np.unique(as_int, return_counts=True)
        values = {int(v): int(c) for v, c in zip(vals, cnt)}
    bad_values = {v: c for v, c in values.items() if v not in allowed}
    if bad_values:
        shown = ", ".join(f"{v} ({c} voxels)" for v, c in sorted(bad_values.items()))
        return f"{path.name}: labels outside {sorted(allowed)}: {shown}"
    return None


def _looks_like_brats(root: Path, first_modality: str) -> bool:
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return False
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        try:
            names = os.listdir(entry.path)
        except OSError:
            continue
        index = {n: Path(entry.path) / n for n in names}
        if _find_case_file(index, entry.name, first_modality):
            return True
    return False


def brats_regions(seg: torch.Tensor) -> torch.Tensor:
    """BraTS label map (0/1/2/4) -> the three evaluated regions as channels (WT, TC, ET).

    WT (whole tumour) = {1, 2, 4}, TC (tumour core) = {1, 4}, ET (enhancing tumour) = {4}.
    (MONAI's per-sample ``ConvertToMultiChannelBasedOnBratsClasses`` gives the same masks in the
    order TC, WT, ET.)

    Args:
        seg: ``(B, 1, ...)`` integer labels.

    Returns:
        ``(B, 3, ...)`` float32 masks, channels in :data:`BRATS_REGIONS` order.

    Raises:
        ValueError: ``seg`` has no singleton channel axis.
    """
    if seg.ndim < 3 or seg.shape[1] != 1:
        raise ValueError(f"brats_regions needs (B, 1, ...) labels, got shape {tuple(seg.shape)}")
    return BRATS.masks(seg)


# --- the registered layout -------------------------------------------------------------------------
def _detect(root: Path, modalities: Sequence[str] = BRATS_MODALITIES, **_: Any) -> bool:
    root = Path(root)
    return root.is_dir() and _looks_like_brats(root, modalities[0])


def _read(root: Path, modalities: Sequence[str] = BRATS_MODALITIES, require_seg: bool = True,
          check_labels: bool = True, **_: Any) -> RecordSet[VolumeRecord]:
    return RecordSet(read_brats(root, modalities, require_seg=require_seg, check_labels=check_labels))


register_layout(
    "brats", _detect, _read, kind="volume", synth="brats", priority=10,
    description="BraTS: <case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz, labels 0/1/2/4",
    tasks=("unlabeled", "segmentation"), label_values=BRATS_LABELS, label_names=BRATS_LABEL_NAMES,
)
