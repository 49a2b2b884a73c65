"""Volume manifests and plain NIfTI folders: the generic 3D layouts, and the head CT phantom's.

Layouts (read by :class:`~medlearn.data.volumes.VolumeDataModule`):

- **manifest**: a CSV table ``path[,label][,split][,seg][,case]``, paths relative to the CSV's
  folder; :func:`read_volume_manifest`.
- **headct**: a manifest whose default class order is :data:`HEADCT_CLASSES`, as
  :func:`medlearn.synth.headct.write_headct` writes it (``labels.csv``). The lesion classes mirror
  the subtypes of the RSNA Intracranial Hemorrhage Detection challenge (Flanders et al.,
  Radiology: AI 2020) and CQ500 (Chilamkurthy et al., Lancet 2018).
- **folder**: any folder of NIfTI files (``.nii``/``.nii.gz``, recursively): unlabeled volumes;
  :func:`list_volumes`.

Validation reports every bad row at once (a :class:`~medlearn.io.errors.DataError` whose
``problems`` lists each). Records are :class:`~medlearn.data.records.VolumeRecord`. The three are
registered as layouts ``"manifest"``, ``"headct"`` and ``"folder"`` of kind ``volume``
(:mod:`medlearn.data.layouts`); ``"auto"`` never picks ``"headct"`` (a head CT table is a manifest
too, with the labels' sorted order).
"""

from __future__ import annotations

import csv as _csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medlearn.data.layouts import CheckHints, RecordSet, register_layout
from medlearn.data.records import VolumeRecord, is_nifti, nifti_stem
from medlearn.data.tables import SPLIT_NAMES, read_csv_table, table_lines, table_path
from medlearn.io.errors import DataError

__all__ = ["HEADCT_CLASSES", "list_volumes", "read_volume_manifest"]

#: Lesion classes of the head CT phantom (:mod:`medlearn.synth.headct`), in label-index order.
HEADCT_CLASSES: tuple[str, ...] = ("none", "intraparenchymal", "intraventricular", "subdural")


def list_volumes(folder: str | Path) -> list[Path]:
    """List the NIfTI volumes of a folder, recursively.

    Hidden files and folders (names starting with ``.``) are skipped.

    Args:
        folder: the folder.

    Returns:
        Sorted paths of every ``.nii`` / ``.nii.gz`` file (any case).

    Raises:
        DataError: ``folder`` is not a folder or holds no NIfTI file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "volume folder not found")
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(Path(dirpath) / f for f in filenames if is_nifti(f))
    if not found:
        raise DataError(folder, "no NIfTI volumes found (looked for .nii and .nii.gz, recursively)")
    return sorted(found)


def read_volume_manifest(
    csv: str | Path,
    classes: Sequence[str] | None = None,
    check_files: bool = True,
) -> list[VolumeRecord]:
    """Read a CSV manifest of volumes: ``path[,label][,split][,seg][,case]``.

    Paths (``path``, ``seg``) are relative to the CSV's folder (absolute paths are kept; a relative
    path leaving the folder through ``..`` is refused). With ``check_files`` a ``seg`` must lie on
    its volume's voxel grid (shape and affine, from the headers). ``split``
    is ``train``, ``val`` or ``test`` (also ``training``, ``valid``, ``validation``, ``testing``;
    any case) or empty; ``case`` groups several rows of one patient for splitting (default: the
    file name without ``.nii``/``.nii.gz``). An empty ``label`` means unlabeled.

    Args:
        csv: the CSV file.
        classes: the allowed label names; a label outside them is an error. ``None``: any label.
        check_files: check that every ``path`` and ``seg`` file exists, and that each ``seg`` has
            its volume's shape and affine.

    Returns:
        One :class:`~medlearn.data.records.VolumeRecord` per row, in table order.

    Raises:
        DataError: the table is missing or unreadable, has no ``path`` column, or ``classes`` is
            empty or repeats a name; or any row has an empty path, a path leaving the folder, a
            missing file, a mask on another grid, an unknown label, an unknown split or repeats an
            earlier path (one entry of ``problems`` per bad
            row, naming everything wrong with it).
    """
    csv = Path(csv)
    if not csv.is_file():
        raise DataError(csv, "manifest CSV not found")
    if classes is not None:
        classes = list(classes)
        dup = sorted({c for c in classes if classes.count(c) > 1})
        if not classes or dup:
            raise DataError(csv, "invalid classes", [f"class {c!r} given more than once" for c in dup] or
                            ["no classes given"])
    df = read_csv_table(csv, ["path"])
    df.columns = [str(c).strip().lower() for c in df.columns]
    if "path" not in df.columns:
        raise DataError(csv, f"manifest needs a 'path' column (found: {', '.join(df.columns) or 'none'})")
    base = csv.parent
    known = set(classes) if classes is not None else None

    def column(name: str) -> list[str]:
        return [s.strip() for s in df[name].tolist()] if name in df.columns else [""] * len(df)

    records: list[VolumeRecord] = []
    problems: list[str] = []
    first_line: dict[Path, int] = {}
    for line, p, label, split, seg, case in zip(
        table_lines(df), column("path"), column("label"), column("split"), column("seg"), column("case")
    ):
        issues: list[str] = []
        path, escape = table_path(base, p) if p else (None, None)
        seg_path, seg_escape = table_path(base, seg) if seg else (None, None)
        if path is None:
            issues.append("empty path")
        elif escape:
            issues.append(f"path {escape}")
        else:
            key = path.resolve() if path.exists() else path
            if key in first_line:
                issues.append(f"path listed again (first on line {first_line[key]})")
            else:
                first_line[key] = line
            if check_files and not path.is_file():
                issues.append(f"file not found: {path}")
        if seg_escape:
            issues.append(f"seg {seg_escape}")
        elif seg_path is not None and check_files:
            if not seg_path.is_file():
                issues.append(f"seg file not found: {seg_path}")
            elif path is not None and not escape and path.is_file():
                issues += _grid_issues(path, seg_path)
        if label and known is not None and label not in known:
            issues.append(f"unknown label {label!r} (classes: {', '.join(classes or [])})")
        split_name = SPLIT_NAMES.get(split.lower()) if split else None
        if split and split_name is None:
            issues.append(f"unknown split {split!r} (train, val or test)")
        if issues:
            problems.append(f"line {line} ({p or '<empty path>'}): {'; '.join(issues)}")
            continue
        assert path is not None
        records.append(VolumeRecord(path=path, label=label or None, case=case or nifti_stem(Path(p).name),
                                    seg=seg_path, split=split_name))
    if problems:
        raise DataError(csv, f"{len(problems)} invalid rows", problems, partial=records)
    if not records:
        raise DataError(csv, "the manifest lists no volumes")
    return records


def _grid_issues(image: Path, seg: Path, atol: float = 1e-3) -> list[str]:
    """What keeps a mask off its image's voxel grid, from the two headers (no voxels decoded)."""
    from medlearn.io import image_geometry  # io is a sibling package; headers only

    try:
        ishape, iaffine = image_geometry(image)
        sshape, saffine = image_geometry(seg)
    except DataError as exc:
        return [f"unreadable {Path(exc.path).name}: {exc.reason}"]
    if tuple(ishape[:3]) != tuple(sshape[:3]):
        return [f"seg {seg.name} has shape {tuple(sshape)}, its image {tuple(ishape)} (not on the image's grid)"]
    if not np.allclose(iaffine, saffine, rtol=0.0, atol=atol):
        diff = float(np.abs(np.asarray(iaffine) - np.asarray(saffine)).max())
        return [f"seg {seg.name} has another affine than its image (max difference {diff:.4g} > {atol:g}, "
                "not on the image's grid)"]
    return []


# --- the registered layouts ------------------------------------------------------------------------
def _manifest_csv(root: Path) -> Path | None:
    """The manifest of a root: the root itself when it is a CSV, else ``root/labels.csv`` if present."""
    if root.is_file() and root.suffix.lower() == ".csv":
        return root
    if (root / "labels.csv").is_file():
        return root / "labels.csv"
    return None


def _detect_manifest(root: Path, **_: Any) -> bool:
    """A CSV given as the root, or a ``root/labels.csv`` with a ``path`` column (not another layout's table)."""
    csv = _manifest_csv(Path(root))
    if csv is None:
        return False
    if csv == Path(root):
        return True
    try:
        with csv.open(newline="", encoding="utf-8-sig") as f:
            header = next(_csv.reader(f), [])
    except (OSError, UnicodeDecodeError, _csv.Error):
        return False
    return "path" in {c.strip().lower() for c in header}


def _read_manifest(root: Path, classes: Sequence[str] | None = None, check_files: bool = True,
                   **_: Any) -> RecordSet[VolumeRecord]:
    root = Path(root)
    csv = root if root.is_file() else root / "labels.csv"
    records = read_volume_manifest(csv, classes=classes or None, check_files=check_files)
    return RecordSet(records, list(classes) if classes else None)


def _detect_headct(root: Path, **_: Any) -> bool:
    csv = _manifest_csv(Path(root))
    if csv is None:
        return False
    try:
        df = read_csv_table(csv, ["path", "label"])
    except DataError:  # detect never raises: a table that cannot be parsed is not this layout
        return False
    columns = {str(c).strip().lower(): c for c in df.columns}
    if "path" not in columns or "label" not in columns:
        return False
    labels = {str(v).strip() for v in df[columns["label"]]} - {""}
    return bool(labels) and labels <= set(HEADCT_CLASSES)


def _read_headct(root: Path, classes: Sequence[str] | None = None, check_files: bool = True,
                 **_: Any) -> RecordSet[VolumeRecord]:
    return _read_manifest(root, classes or list(HEADCT_CLASSES), check_files)


def _detect_folder(root: Path, **_: Any) -> bool:
    root = Path(root)
    if not root.is_dir():
        return False
    for _dir, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if any(is_nifti(f) for f in filenames):
            return True
    return False


def _read_folder(root: Path, **_: Any) -> RecordSet[VolumeRecord]:
    root = Path(root)
    return RecordSet([VolumeRecord(path=p, case=nifti_stem(p.relative_to(root).as_posix()))
                      for p in list_volumes(root)])


register_layout(
    "manifest", _detect_manifest, _read_manifest, kind="volume", priority=30,
    description="a CSV path[,label][,split][,seg][,case] (the root itself, or root/labels.csv)",
    tasks=("unlabeled", "classification", "segmentation"),
)
register_layout(
    "headct", _detect_headct, _read_headct, kind="volume", synth="headct", priority=20,
    description="the head CT phantom's manifest (labels.csv), classes in HEADCT_CLASSES order",
    tasks=("unlabeled", "classification"), classes=HEADCT_CLASSES, check=CheckHints(modality="CT"),
)
register_layout(
    "folder", _detect_folder, _read_folder, kind="volume", priority=-5,
    description="any folder of NIfTI volumes (.nii, .nii.gz; recursively), unlabeled",
    tasks=("unlabeled",),
)
