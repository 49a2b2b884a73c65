"""Reader for the NIH ChestX-ray14 layout.

NIH ChestX-ray14 (Wang et al., "ChestX-ray8: Hospital-scale Chest X-ray Database and Benchmarks
on Weakly-Supervised Classification and Localization of Common Thorax Diseases", CVPR 2017) ships
112,120 frontal 1024x1024 8-bit PNGs of 30,805 patients with this layout::

    root/Data_Entry_2017.csv          Image Index, Finding Labels ("A|B" or "No Finding"),
                                      Follow-up #, Patient ID, Patient Age, Patient Gender,
                                      View Position, OriginalImage[Width,Height],
                                      OriginalImagePixelSpacing[x,y]
    root/train_val_list.txt           86,524 image names (official patient-wise split)
    root/test_list.txt                25,596 image names
    root/images/*.png                 or, as unpacked from the 12 archives / Kaggle,
    root/images_001/images/*.png ... root/images_012/images/*.png

The 2020 re-release names the table ``Data_Entry_2017_v2020.csv``; it is used when the original
name is absent. :func:`medlearn.synth.chestxray.write_chestxray14` writes phantoms in this layout.

Validation reports every bad row at once (a :class:`~medlearn.io.errors.DataError` whose
``problems`` lists each), rather than stopping at the first. Records are
:class:`~medlearn.data.records.ImageRecord`; patient-wise splits are
:func:`medlearn.data.sampling.patient_split`. The layout is registered as ``"chestxray14"`` (kind
``radiograph``, :mod:`medlearn.data.layouts`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from medlearn.data.layouts import CheckHints, RecordSet, register_layout
from medlearn.data.records import ImageRecord
from medlearn.data.tables import read_csv_table, table_lines
from medlearn.io.errors import DataError, name_issues

__all__ = ["CHESTXRAY14_LABELS", "read_chestxray14"]

#: The 14 ChestX-ray14 labels in the official order (Wang et al., CVPR 2017; CheXNet lists).
CHESTXRAY14_LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
NO_FINDING = "No Finding"
TABLE_NAMES = ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv")
SPLIT_FILES = {"train_val": "train_val_list.txt", "test": "test_list.txt"}
REQUIRED_COLUMNS = ("Image Index", "Finding Labels", "Patient ID")


def _index_images(root: Path) -> dict[str, Path]:
    """Map image file name -> path over ``root/images`` and ``root/images_*/images`` (one scan each)."""
    folders = [root / "images"]
    try:
        subdirs = sorted(e.name for e in os.scandir(root) if e.is_dir() and e.name.startswith("images_"))
    except OSError:
        subdirs = []
    folders += [root / d / "images" for d in subdirs] + [root / d for d in subdirs]
    index: dict[str, Path] = {}
    for folder in folders:
        try:
            it = os.scandir(folder)
        except OSError:
            continue
        with it:
            for entry in it:
                if not entry.name.startswith(".") and entry.name not in index and entry.is_file():
                    index[entry.name] = folder / entry.name
    return index


def _find_table(root: Path) -> Path:
    for name in TABLE_NAMES:
        if (root / name).is_file():
            return root / name
    looked = " or ".join(TABLE_NAMES)
    raise DataError(root / TABLE_NAMES[0], f"ChestX-ray14 table not found (looked for {looked} in {root})")


def _read_split_list(path: Path) -> list[tuple[int, str]]:
    """(line number, image name) for every non-empty line of a split list."""
    if not path.is_file():
        raise DataError(path, "split list not found (split='all' reads every row of the table)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot read split list: {exc}") from exc
    return [(i, line.strip()) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _patient_key(value: str) -> str:
    value = value.strip()
    return str(int(value)) if value.isdecimal() else value


def read_chestxray14(
    root: str | Path,
    split: Literal["train_val", "test", "all"] = "train_val",
    classes: Sequence[str] | None = None,
    check_files: bool = True,
) -> list[ImageRecord]:
    """Read a ChestX-ray14 folder into image records with multi-hot labels.

    Args:
        root: the dataset folder (holding ``Data_Entry_2017.csv``).
        split: ``"train_val"`` or ``"test"`` (rows named in ``train_val_list.txt`` /
            ``test_list.txt``) or ``"all"`` (every row of the table; no list needed).
        classes: label names to encode, in this order; default all 14 in the official order.
        check_files: check that every selected image exists under ``root/images`` or
            ``root/images_NNN/images``.

    Returns:
        One :class:`~medlearn.data.records.ImageRecord` per selected row, in table order; ``labels`` has
        ``len(classes)`` entries (all zero for ``No Finding``).

    Raises:
        DataError: the table is missing or unreadable; required columns are missing; any row has
            an empty name or patient, an unknown finding name, ``No Finding`` mixed with findings,
            or repeats an earlier image name (one entry of ``problems`` per bad row); ``classes`` names an
            unknown label; the split list is missing, repeats names or names images absent from
            the table; selected images are missing on disk (with ``check_files``).
        ValueError: ``split`` is not one of the three values.

    Warns:
        UserWarning: if patients appear in both ``train_val_list.txt`` and ``test_list.txt`` (the
            official split is patient-wise, so this means the lists were edited).
    """
    if split not in ("train_val", "test", "all"):
        raise ValueError(f"split must be 'train_val', 'test' or 'all', got {split!r}")
    root = Path(root)
    table = _find_table(root)

    classes = tuple(CHESTXRAY14_LABELS if classes is None else classes)
    bad_classes = [f"unknown class {c!r}" for c in classes if c not in CHESTXRAY14_LABELS]
    bad_classes += [f"class {c!r} given more than once" for c in sorted(set(classes)) if classes.count(c) > 1]
    if not classes:
        bad_classes.append("no classes selected")
    if bad_classes:
        raise DataError(table, f"invalid classes (known: {', '.join(CHESTXRAY14_LABELS)})", bad_classes)
    column = {c: i for i, c in enumerate(classes)}

    df = read_csv_table(table, REQUIRED_COLUMNS)
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(
            table,
            f"missing required columns (found: {', '.join(df.columns)})",
            [f"missing column {c!r}" for c in missing],
        )

    # --- rows: names, patients, labels; every bad row reported ---
    names = [s.strip() for s in df["Image Index"].tolist()]
    patients = [_patient_key(s) for s in df["Patient ID"].tolist()]
    findings = df["Finding Labels"].tolist()
    known = set(CHESTXRAY14_LABELS)
    parsed: dict[str, tuple[np.ndarray, list[str]]] = {}  # ~800 distinct strings in the real table
    labels: list[np.ndarray] = []
    problems: list[str] = []
    first_row: dict[str, int] = {}
    lines = table_lines(df)
    for line, name, patient, text in zip(lines, names, patients, findings):
        issues: list[str] = []
        issues += name_issues(name, line, first_row, empty="empty Image Index")
        if not patient:
            issues.append("empty Patient ID")
        if text not in parsed:
            parts = [p.strip() for p in text.split("|")]
            vec = np.zeros(len(classes), dtype=np.float32)
            errs: list[str] = []
            if parts == [NO_FINDING]:
                pass
            elif parts == [""]:
                errs.append("empty Finding Labels")
            else:
                for p in parts:
                    if p == NO_FINDING:
                        errs.append(f"{NO_FINDING!r} mixed with findings in {text!r}")
                    elif p not in known:
                        errs.append(f"unknown finding {p!r}")
                    elif p in column:
                        vec[column[p]] = 1.0
            parsed[text] = (vec, errs)
        vec, errs = parsed[text]
        issues.extend(errs)
        if issues:  # one problem per bad row, naming all that is wrong with it
            problems.append(f"line {line} ({name or '<empty name>'}): {'; '.join(issues)}")
        labels.append(vec)
    if problems:
        raise DataError(table, f"{len(problems)} invalid rows", problems)

    # --- split lists ---
    if split == "all":
        selected = list(range(len(names)))
    else:
        list_path = root / SPLIT_FILES[split]
        entries = _read_split_list(list_path)
        problems = []
        seen: dict[str, int] = {}
        for line, name in entries:
            if name not in first_row:
                problems.append(f"line {line}: {name!r} is not in {table.name}")
            elif name in seen:
                problems.append(f"line {line}: {name!r} listed again (first on line {seen[name]})")
            else:
                seen[name] = line
        if problems:
            raise DataError(list_path, f"{len(problems)} bad entries", problems)
        row_at = {line: i for i, line in enumerate(lines)}
        selected = sorted(row_at[first_row[name]] for name in seen)
    _warn_patient_overlap(root, names, patients)

    # --- files on disk ---
    index = _index_images(root)
    if check_files:
        absent = [f"line {lines[i]}: {names[i]} not found" for i in selected if names[i] not in index]
        if absent:
            raise DataError(
                root,
                f"{len(absent)} images named in {table.name} are missing "
                f"(looked in images/ and images_*/images/)",
                absent,
            )
    return [
        ImageRecord(
            path=index.get(names[i], root / "images" / names[i]),
            labels=labels[i].copy(),
            patient=patients[i],
            name=names[i],
        )
        for i in selected
    ]


def _warn_patient_overlap(root: Path, names: list[str], patients: list[str]) -> None:
    """Warn if a patient has images in both official lists (when both lists are readable)."""
    paths = [root / SPLIT_FILES["train_val"], root / SPLIT_FILES["test"]]
    if not all(p.is_file() for p in paths):
        return
    patient_of = dict(zip(names, patients))
    groups = []
    for p in paths:
        try:
            groups.append({patient_of[n] for _, n in _read_split_list(p) if n in patient_of})
        except DataError:
            return
    both = sorted(groups[0] & groups[1])
    if both:
        shown = ", ".join(both[:10]) + (" ..." if len(both) > 10 else "")
        warnings.warn(
            f"{root}: {len(both)} patients appear in both {SPLIT_FILES['train_val']} and "
            f"{SPLIT_FILES['test']} (the official split is patient-wise): {shown}",
            UserWarning,
            stacklevel=3,
        )


# --- the registered layout -------------------------------------------------------------------------
def _detect(root: Path, **_: Any) -> bool:
    # the original table name only: "auto" has always resolved a v2020-only folder to a plain folder
    return (Path(root) / TABLE_NAMES[0]).is_file()


def _read(root: Path, split: Literal["train_val", "test", "all"] = "train_val", classes: Sequence[str] | None = None,
          check_files: bool = True, **_: Any) -> RecordSet[ImageRecord]:
    records = read_chestxray14(root, split, classes, check_files)
    return RecordSet(records, list(CHESTXRAY14_LABELS if classes is None else classes))


register_layout(
    "chestxray14", _detect, _read, kind="radiograph", synth="chestxray", priority=10,
    description="NIH ChestX-ray14: Data_Entry_2017.csv with the split lists, images/ or images_NNN/images/",
    tasks=("unlabeled", "multilabel"), classes=CHESTXRAY14_LABELS,
    check=CheckHints(splits={"train_val": {"split": "train_val"}, "test": {"split": "test"}}),
)
