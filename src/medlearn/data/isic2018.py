"""Reader for the ISIC 2018 Task 3 layout (skin-lesion diagnosis, 7 classes; = HAM10000).

ISIC 2018 Task 3 (Codella et al., "Skin Lesion Analysis Toward Melanoma Detection 2018",
arXiv:1902.03368; images from HAM10000, Tschandl et al., Scientific Data 2018) ships::

    root/ISIC2018_Task3_Training_Input/ISIC_0024306.jpg ...           10,015 dermoscopy JPEGs, 600x450
    root/ISIC2018_Task3_Training_GroundTruth/
        ISIC2018_Task3_Training_GroundTruth.csv                       image,MEL,NV,BCC,AKIEC,BKL,DF,VASC
    root/ISIC2018_Task3_Training_LesionGroupings.csv                  image,lesion_id,diagnosis_confirm_type
    root/ISIC2018_Task3_Validation_Input/ + _GroundTruth/ ...          193 images (GT released later)
    root/ISIC2018_Task3_Test_Input/ + _GroundTruth/ ...                1,512 images (GT released later)

Ground-truth rows are one-hot floats (``ISIC_0024306,0.0,1.0,0.0,0.0,0.0,0.0,0.0``); the class index
is the column order (MEL=0 ... VASC=6). The ground-truth CSV is also found directly in ``root`` or in
the input folder. Images of one lesion (``lesion_id``) are grouped so splits do not leak; images
without a grouping row form their own group. :func:`medlearn.synth.isic.write_isic2018` writes
phantoms in this layout.

Validation reports every bad row at once (a :class:`~medlearn.io.errors.DataError` whose
``problems`` lists each): missing or unknown class columns, values that are not numbers, rows that
are not one-hot, empty or repeated image names, images absent from the input folder, grouping rows
naming images that are not in the ground truth. The layout is registered as ``"isic2018"`` (kind
``labelled2d``, :mod:`medlearn.data.layouts`): its reader returns the Training records followed by
those of Validation (``split="val"``) and Test (``split="test"``) when their ground truth is there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from medlearn.data.layouts import RecordSet, register_layout
from medlearn.data.records import LabelledImage, index_images, resolve_image
from medlearn.data.tables import read_csv_table, table_lines, table_path
from medlearn.io.errors import DataError, name_issues

__all__ = ["ISIC2018_CLASSES", "ISIC2018_DIAGNOSES", "ISIC2018_SPLITS", "find_isic2018", "read_isic2018"]

#: The 7 diagnosis columns in the official order (= class indices 0..6).
ISIC2018_CLASSES: tuple[str, ...] = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
#: Their meaning.
ISIC2018_DIAGNOSES: dict[str, str] = {
    "MEL": "melanoma", "NV": "melanocytic nevus", "BCC": "basal cell carcinoma",
    "AKIEC": "actinic keratosis / intraepithelial carcinoma", "BKL": "benign keratosis", "DF": "dermatofibroma",
    "VASC": "vascular lesion",
}
ISIC2018_SPLITS = ("Training", "Validation", "Test")


def _gt_name(split: str) -> str:
    return f"ISIC2018_Task3_{split}_GroundTruth"


def find_isic2018(root: str | Path, split: str = "Training") -> tuple[Path, Path] | None:
    """``(ground-truth CSV, image folder)`` of one split under ``root``, or ``None`` if the CSV is absent."""
    if split not in ISIC2018_SPLITS:
        raise ValueError(f"split must be one of {ISIC2018_SPLITS}, got {split!r}")
    root = Path(root)
    inp = root / f"ISIC2018_Task3_{split}_Input"
    for csv in (root / _gt_name(split) / f"{_gt_name(split)}.csv", root / f"{_gt_name(split)}.csv",
                inp / f"{_gt_name(split)}.csv"):
        if csv.is_file():
            return csv, inp
    return None


def _groupings(root: Path, split: str, names: set[str]) -> dict[str, str]:
    """Map image -> lesion_id from ``ISIC2018_Task3_<split>_LesionGroupings.csv`` (if present)."""
    fname = f"ISIC2018_Task3_{split}_LesionGroupings.csv"
    path = next((p for p in (root / fname, root / _gt_name(split) / fname) if p.is_file()), None)
    if path is None:
        return {}
    df = read_csv_table(path, ["image", "lesion_id"])
    missing = [c for c in ("image", "lesion_id") if c not in df.columns]
    if missing:
        raise DataError(path, f"missing required columns (found: {', '.join(df.columns)})",
                        [f"missing column {c!r}" for c in missing])
    out: dict[str, str] = {}
    problems = []
    for line, img, lesion in zip(table_lines(df), df["image"].str.strip(), df["lesion_id"].str.strip()):
        issues = []
        if img not in names:
            issues.append("image not in the ground truth")
        if not lesion:
            issues.append("empty lesion_id")
        if img in out:
            issues.append("image listed again")
        if issues:
            problems.append(f"line {line} ({img or '<empty name>'}): {'; '.join(issues)}")
        else:
            out[img] = lesion
    if problems:
        raise DataError(path, f"{len(problems)} invalid rows", problems)
    return out


def read_isic2018(root: str | Path, split: str = "Training", check_files: bool = True) -> list[LabelledImage]:
    """Read one split of an ISIC 2018 Task 3 folder.

    Args:
        root: the dataset folder.
        split: ``"Training"``, ``"Validation"`` or ``"Test"``.
        check_files: check that every image is in ``ISIC2018_Task3_<split>_Input/``.

    Returns:
        One record per row, in table order: label = index of the column holding 1.0, group = the
        ``lesion_id`` (Training) or the image name.

    Raises:
        DataError: the ground truth is missing or unreadable; the ``image`` column or a class
            column is missing, or an unknown class column is present; any row has an empty or
            repeated name, a non-numeric value, is not one-hot (exactly one 1 and six 0), or names
            an absent image (every bad row listed); the lesion groupings are malformed.
    """
    root = Path(root)
    found = find_isic2018(root, split)
    if found is None:
        raise DataError(root / _gt_name(split) / f"{_gt_name(split)}.csv",
                        f"ISIC 2018 Task 3 {split} ground truth not found")
    csv, image_dir = found
    df = read_csv_table(csv, ["image", *ISIC2018_CLASSES])
    problems = [f"missing column {c!r}" for c in ("image", *ISIC2018_CLASSES) if c not in df.columns]
    problems += [f"unknown class column {c!r} (ISIC 2018 classes: {', '.join(ISIC2018_CLASSES)})"
                 for c in df.columns if c not in ("image", *ISIC2018_CLASSES) and not c.startswith("Unnamed")]
    if problems:
        raise DataError(csv, f"columns do not match image,{','.join(ISIC2018_CLASSES)} "
                             f"(found: {', '.join(df.columns)})", problems)
    index = index_images(image_dir) if check_files else {}
    names = [s.strip() for s in df["image"].tolist()]
    values = [[s.strip() for s in df[c].tolist()] for c in ISIC2018_CLASSES]
    rows: list[tuple[str, int, Path]] = []
    first: dict[str, int] = {}
    problems = []
    lines = table_lines(df)
    for i, name in enumerate(names):
        line = lines[i]
        issues: list[str] = []
        issues += name_issues(name, line, first, duplicate="duplicate image")
        vec: list[float] = []
        for c, col in zip(ISIC2018_CLASSES, values):
            try:
                v = float(col[i])
                if not math.isfinite(v):
                    raise ValueError
                vec.append(v)
            except ValueError:
                issues.append(f"{c}={col[i]!r} is not a number")
        label = -1
        if len(vec) == len(ISIC2018_CLASSES):
            ones = [k for k, v in enumerate(vec) if abs(v - 1.0) < 1e-6]
            zeros = sum(abs(v) < 1e-6 for v in vec)
            if len(ones) == 1 and zeros == len(vec) - 1:
                label = ones[0]
            else:
                issues.append("not one-hot (" + ",".join(f"{v:g}" for v in vec) + ")")
        path: Path | None = image_dir / f"{name}.jpg"
        escape = table_path(image_dir, name)[1] if name else None
        if escape:
            issues.append(f"image {escape}")
        elif check_files and name:
            path = resolve_image(name, image_dir, index)
            if path is None:
                issues.append(f"image not found in {image_dir.name}/")
        if issues:
            problems.append(f"line {line} ({name or '<empty name>'}): {'; '.join(issues)}")
        else:
            assert path is not None
            rows.append((name, label, path))
    if problems:
        raise DataError(csv, f"{len(problems)} invalid rows", problems,
                        partial=[LabelledImage(path, label, name, name) for name, label, path in rows])
    if not rows:
        raise DataError(csv, "the ground truth has no rows")
    lesion = _groupings(root, split, {n for n, _, _ in rows})
    return [LabelledImage(path, label, lesion.get(name, name), name) for name, label, path in rows]


# --- the registered layout -------------------------------------------------------------------------
def _detect(root: Path, **_: Any) -> bool:
    return find_isic2018(root, "Training") is not None


def _read(root: Path, classes: Sequence[str] | None = None, check_files: bool = True,
          **_: Any) -> RecordSet[LabelledImage]:
    if classes and list(classes) != list(ISIC2018_CLASSES):
        raise DataError(root, f"ISIC 2018 classes are fixed ({', '.join(ISIC2018_CLASSES)}); got {classes}")
    records = read_isic2018(root, "Training", check_files)
    for part, split in (("val", "Validation"), ("test", "Test")):
        if find_isic2018(root, split) is not None:
            records += [replace(r, split=part) for r in read_isic2018(root, split, check_files)]
    return RecordSet(records, list(ISIC2018_CLASSES))


register_layout(
    "isic2018", _detect, _read, kind="labelled2d", synth="isic", priority=10,
    description="ISIC 2018 Task 3: one-hot ground-truth CSV per split, lesion groupings, *_Input/ image folders",
    tasks=("classification",), classes=ISIC2018_CLASSES,
)
