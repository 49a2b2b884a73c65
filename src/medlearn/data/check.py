"""Dataset integrity check: every problem of a dataset in any registered layout, listed at once.

``medlearn check-data ROOT`` (and the cheap part of it before training: ``medlearn fit``, the recipes) runs
:func:`check_dataset`. It knows no dataset: it reads the root through the layout registry
(:mod:`medlearn.data.layouts`) and checks the records the layout's reader returns, so a layout
registered later is checked the same way. What a layout knows beyond its records (its label set,
CT intensities, the options that list every file) it says in :class:`~medlearn.data.layouts.CheckHints`.

Two parts:

- **Cheap** (no pixel read; what ``fit`` runs): the reader's own row checks (every bad row of
  its tables: missing files, unknown labels, repeated names), files the records name that are
  missing, duplicated ids (two records with one name, or one image file), the same patient /
  group in two splits, and files in the image folders that no record names.
- **Pixels** (``medlearn check-data`` by default): every image and mask read through
  :func:`medlearn.io.read_image` (a file it cannot read is listed, not raised), non-finite or
  constant images, CT intensities that are not in Hounsfield units, a mask of another shape,
  spacing or affine than its image (and modalities of one case on different grids), mask values
  outside the layout's label set, empty masks. When the reader gives no records at all (a table
  without a required column, folders it cannot pair), the pixel checks that need no pairing still
  run on every image file under the root, one by one (unreadable, non-finite, constant, CT range;
  at most :data:`FILE_LEVEL_LIMIT` files), so one run lists the table's problem and the broken
  images together; the report says so (:attr:`CheckReport.files_read`).

Each :class:`Problem` names the file (and the table row where there is one), its kind and its
severity; :class:`CheckReport` groups and counts them (:meth:`CheckReport.format` for a person,
:meth:`CheckReport.to_dict` for a machine). A reader refuses a table with bad rows (listing every
one); the checker lists those rows and goes on with the records of the good rows when the reader
gives them (:attr:`~medlearn.io.errors.DataError.partial`), else reads again without the file
checks (``check_files=False``, an option every reader accepts or ignores) to check the rest. This is written by hand: no
library checks records of medlearn's layouts (nnU-Net's ``--verify_dataset_integrity`` is the
same idea for its own folder format).

Examples:
    >>> from medlearn.data.check import check_dataset
    >>> report = check_dataset("data/isic-synth")  # doctest: +SKIP
    >>> report.ok(), report.n_errors  # doctest: +SKIP
    (True, 0)
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import re
import sys
import warnings
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from medlearn.console import track
from medlearn.data.layouts import Layout, get_layout, list_layouts
from medlearn.data.records import IMAGE_SUFFIXES, MaskSource
from medlearn.io import read_image
from medlearn.io.errors import DataError

__all__ = [
    "ERROR",
    "FILE_LEVEL_LIMIT",
    "PROBLEM_KINDS",
    "WARNING",
    "CheckReport",
    "Problem",
    "check_before_fit",
    "check_datamodule",
    "check_dataset",
    "dataset_roots",
    "detect_any_layout",
]

ERROR = "error"
WARNING = "warning"

#: Problem kinds in listing order -> their severity.
PROBLEM_KINDS: dict[str, str] = {
    "layout": ERROR,
    "missing file": ERROR,
    "unreadable file": ERROR,
    "table": ERROR,
    "duplicated id": ERROR,
    "split leakage": ERROR,
    "shape mismatch": ERROR,
    "geometry mismatch": ERROR,
    "label values": ERROR,
    "non-finite image": ERROR,
    "constant image": WARNING,
    "intensity range": WARNING,
    "empty mask": WARNING,
    "stray file": WARNING,
    "reader warning": WARNING,
}

#: Suffixes of files :func:`~medlearn.io.read_image` decodes (lower case; 2D images and volumes).
_READABLE = (*IMAGE_SUFFIXES, ".nii", ".nii.gz", ".mgz", ".mgh")
#: Image files the file-level checks read at most (when the reader gives no records): a root that
#: is not a dataset folder (a home directory) stays bounded.
FILE_LEVEL_LIMIT = 20_000
#: At most this many distinct non-negative integer values: a file that looks like a label map (a
#: mask), which the file-level checks, pairing nothing, do not judge as a CT image.
_LABEL_LIKE_VALUES = 32
#: Record fields that hold a label mask (the other path fields are images, or files of other kinds).
_MASK_FIELDS = ("mask", "seg", "atlas_labels")
#: Record fields naming the group whose records must stay in one split, first match.
_GROUP_FIELDS = ("patient", "group", "case", "video")
_ROW = re.compile(r"^(?:line|row)\s+(\d+)\b[:,]?\s*")
_NAMED = re.compile(r"^\((.*?)\):\s*(.*)$", re.DOTALL)


@dataclass(frozen=True)
class Problem:
    """One problem of a dataset.

    Attributes:
        kind: one of :data:`PROBLEM_KINDS`.
        file: the file at fault (or the dataset root).
        message: what is wrong, in words a user can act on.
        row: the table row (line number, header = 1) when the problem is a table row's.
        severity: ``"error"`` or ``"warning"`` (by default the kind's).
    """

    kind: str
    file: str
    message: str
    row: int | None = None
    severity: str = ""

    def __post_init__(self) -> None:
        if self.kind not in PROBLEM_KINDS:
            raise ValueError(f"unknown problem kind {self.kind!r}")
        if not self.severity:
            object.__setattr__(self, "severity", PROBLEM_KINDS[self.kind])


@dataclass
class CheckReport:
    """The problems of one dataset, grouped by kind.

    Attributes:
        root: the dataset root.
        layout: the layout checked (``None`` when none was recognised).
        problems: every problem found, in the order found.
        n_records: records the layout's reader returned (``None``: it refused the dataset).
        pixels: whether the pixel checks ran.
        files_read: image files the file-level checks read, when the reader gave no records to
            check (``None``: the pixel checks went through the records, or did not run).
        files_limit_reached: the file-level checks stopped at their limit (more files were left).
    """

    root: Path
    layout: Layout | None
    problems: list[Problem] = field(default_factory=list)
    n_records: int | None = None
    pixels: bool = True
    files_read: int | None = None
    files_limit_reached: bool = False

    @property
    def n_errors(self) -> int:
        """Number of error problems."""
        return sum(p.severity == ERROR for p in self.problems)

    @property
    def n_warnings(self) -> int:
        """Number of warning problems."""
        return sum(p.severity == WARNING for p in self.problems)

    def ok(self, strict: bool = False) -> bool:
        """Whether the dataset passes: no errors (and, with ``strict``, no warnings)."""
        return self.n_errors == 0 and (not strict or self.n_warnings == 0)

    def grouped(self) -> list[tuple[str, str, list[Problem]]]:
        """``(severity, kind, problems)`` per kind present, errors first, kinds in :data:`PROBLEM_KINDS` order."""
        by_kind: dict[tuple[str, str], list[Problem]] = defaultdict(list)
        for p in self.problems:
            by_kind[(p.severity, p.kind)].append(p)
        order = {k: i for i, k in enumerate(PROBLEM_KINDS)}
        keys = sorted(by_kind, key=lambda sk: (sk[0] != ERROR, order[sk[1]]))
        return [(sev, kind, by_kind[(sev, kind)]) for sev, kind in keys]

    def _name(self, file: str) -> str:
        try:
            rel = str(Path(file).relative_to(self.root))
        except ValueError:
            return file
        return file if rel == "." else rel

    def format(self, limit: int | None = 20) -> str:
        """The listing for a person: a header, each kind with its count and problems, a total line.

        Args:
            limit: problems shown per kind (the rest are counted); ``None``: all.
        """
        where = f"{self.layout.kind}/{self.layout.name}" if self.layout else "no layout recognised"
        records = "reader refused the dataset" if self.n_records is None else f"{self.n_records} records"
        checks = "cheap and pixel checks" if self.pixels else "cheap checks (no pixel reads)"
        if self.files_read is not None:
            checks = f"file-level pixel checks only ({self._file_level_reason()})"
        lines = [f"check-data {self.root}: layout {where}, {records}, {checks}"]
        for severity, kind, problems in self.grouped():
            lines.append(f"{severity.upper()} {kind} ({len(problems)})")
            shown = problems if limit is None else problems[:limit]
            for p in shown:
                at = self._name(p.file) + (f" line {p.row}" if p.row is not None else "")
                lines.append(f"  {at}: {p.message}")
            if len(problems) > len(shown):
                lines.append(f"  ... and {len(problems) - len(shown)} more")
        if not self.problems:
            lines.append("no problems found")
        else:
            n_kinds = len({p.kind for p in self.problems})
            lines.append(f"{_plural(self.n_errors, 'error')}, {_plural(self.n_warnings, 'warning')} "
                         f"in {_plural(n_kinds, 'kind')} of problem")
        return "\n".join(lines)

    def _file_level_reason(self) -> str:
        why = "the reader refused the dataset" if self.n_records is None else "the reader gave no records"
        limit = f", stopped at the limit of {FILE_LEVEL_LIMIT}" if self.files_limit_reached else ""
        return (f"{_plural(self.files_read or 0, 'image file')} under the root read one by one{limit}, none paired "
                f"with its mask or record, because {why}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary: root, layout, counts and every problem, grouped by kind.

        ``file_level`` is ``None`` when the pixel checks went through the records (or did not run),
        else why they read the image files one by one, how many, and whether they stopped at
        :data:`FILE_LEVEL_LIMIT`.
        """
        return {
            "root": str(self.root),
            "layout": None if self.layout is None else {"kind": self.layout.kind, "name": self.layout.name},
            "records": self.n_records,
            "pixels": self.pixels,
            "file_level": None if self.files_read is None else {
                "reason": self._file_level_reason(), "files": self.files_read,
                "limit_reached": self.files_limit_reached},
            "errors": self.n_errors,
            "warnings": self.n_warnings,
            "groups": [{"kind": kind, "severity": sev, "count": len(ps),
                        "problems": [{"file": p.file, "row": p.row, "message": p.message} for p in ps]}
                       for sev, kind, ps in self.grouped()],
        }


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# --- which layout ----------------------------------------------------------------------------------
def detect_any_layout(root: str | Path, kind: str | None = None, **options: Any) -> Layout:
    """The layout of ``root`` among every kind: specific layouts first, generic ones last.

    Layouts with a phantom writer are tried first (in decreasing ``priority``), then the other
    layouts of positive priority, then the generic ones (a table, then a folder of images), each
    group in :func:`~medlearn.data.layouts.list_layouts` order. With ``kind``: that kind's layouts
    in :func:`~medlearn.data.layouts.detect_layout`'s order.

    Args:
        root: the dataset root.
        kind: only layouts of this kind.
        **options: passed to every ``detect`` that takes them.

    Returns:
        The first layout whose ``detect`` accepts ``root``.

    Raises:
        DataError: none does; it names ``root`` and every layout tried.
    """
    if kind is not None:
        ranked = list_layouts(kind)
    else:
        ranked = sorted(list_layouts(), key=lambda e: (0 if e.synth else 1 if e.priority > 0 else 2, -e.priority))
    for layout in ranked:
        try:
            if layout.detect(Path(root), **_accepted(layout.detect, options)):
                return layout
        except OSError:
            continue
    raise DataError(root, f"not a recognised {kind or 'dataset'} layout (tried "
                          f"{', '.join(f'{e.kind}/{e.name}' for e in ranked)})",
                    [f"{e.kind}/{e.name}: {e.description}" for e in ranked])


#: A folder with more sub-folders than this is one dataset's case or class folders, not a holder of datasets.
MAX_DATASETS_PER_FOLDER = 16


def _specific(layout: Layout) -> bool:
    """A layout with its own structure (not the generic table or folder of images any tree matches)."""
    return bool(layout.synth) or layout.priority > 0


def dataset_roots(root: str | Path, **options: Any) -> list[tuple[Path, Layout]]:
    """The datasets a folder holds: itself, or the sub-folders that are datasets of their own.

    A user often points at the folder that holds several datasets (VideoGAN's two endoscopy
    domains, cross-denoising's source and target cameras). Such a folder matches only a generic
    layout (every image in the tree as one unlabelled set), whose listing would be noise; when its
    sub-folders (one level down, at most :data:`MAX_DATASETS_PER_FOLDER` of them) are datasets of
    a specific layout, each of those is returned instead.

    Args:
        root: the folder.
        **options: the reader options, passed to every ``detect`` that takes them (as
            :func:`check_dataset` detects).

    Returns:
        ``[(root, its layout)]`` when ``root`` is a specific layout or no sub-folder is one; else
        ``[(sub-folder, its layout), ...]`` in name order. Empty when nothing is recognised.
    """
    root = Path(root)
    try:
        own: Layout | None = detect_any_layout(root, **options)
    except DataError:
        own = None
    if own is not None and _specific(own):
        return [(root, own)]
    found: list[tuple[Path, Layout]] = []
    subs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")) if root.is_dir() else []
    if len(subs) > MAX_DATASETS_PER_FOLDER:  # case or class folders of one dataset, not several datasets
        subs = []
    for sub in subs:
        try:
            layout = detect_any_layout(sub, **options)
        except DataError:
            continue
        if _specific(layout):
            found.append((sub, layout))
    if found:
        return found
    return [(root, own)] if own is not None else []


def _resolve_layout(root: Path, layout: str | None, kind: str | None, options: Mapping[str, Any]) -> Layout:
    if layout in (None, "auto"):
        return detect_any_layout(root, kind, **options)
    if kind is None and layout is not None and "/" in layout:
        kind, layout = layout.split("/", 1)
    assert layout is not None
    return get_layout(layout, kind)


# --- reading the records ---------------------------------------------------------------------------
def _classify(message: str) -> str:
    low = message.lower()
    if any(w in low for w in ("nan", "non-finite", "infinite", " inf ")):
        return "non-finite image"
    if any(w in low for w in ("duplicate", "listed again", "more than once", "repeated")):
        return "duplicated id"
    if "overlap" in low or ("patient" in low and "split" in low):
        return "split leakage"
    if any(w in low for w in ("not found", "missing", "does not exist", "no such file", "absent", "no mask",
                              "no image")) and "column" not in low:
        return "missing file"
    if "column" in low:  # the table's header (a missing, repeated or unknown column), not a row's values
        return "table"
    if any(w in low for w in ("truncated", "corrupt", "cannot read", "cannot decode", "empty file", "not a ")):
        return "unreadable file"
    if any(w in low for w in ("label", "class", "finding")):
        return "label values"
    if any(w in low for w in ("shape", "size")):
        return "shape mismatch"
    if any(w in low for w in ("affine", "spacing", "grid", "orientation")):
        return "geometry mismatch"
    return "table"


def _file_prefix(where: str, entry: str) -> tuple[str, str]:
    """``(file, rest)`` of a problem entry that starts with a file (``AllDICOMs/x.dcm: reason``)."""
    head, sep, rest = entry.partition(": ")
    if sep and head and " " not in head.strip() and ("/" in head or Path(head).suffix):
        path = Path(head) if Path(head).exists() or not Path(where).is_dir() else Path(where) / head
        return str(path), rest
    return where, entry


def _problems_of(exc: DataError) -> list[Problem]:
    """One problem per issue of a reader's :class:`DataError` (its reason when it lists none).

    A table reader lists one entry per bad row, ``line N (name): issue; issue``: each issue becomes
    a problem of its own kind, with the row and the name.
    """
    if not exc.problems:
        return [Problem(_classify(exc.reason), exc.path, exc.reason)]
    out = []
    for entry in exc.problems:
        m = _ROW.match(entry)
        if m is None:
            file, text = _file_prefix(exc.path, entry)
            out.append(Problem(_classify(text), file, text))
            continue
        row, text = int(m.group(1)), entry[m.end():]
        named = _NAMED.match(text)
        name, issues = (named.group(1), named.group(2)) if named else ("", text)
        for issue in issues.split("; "):
            out.append(Problem(_classify(issue), exc.path, f"{name}: {issue}" if name else issue, row))
    return out


def _read(layout: Layout, root: Path, options: Mapping[str, Any],
          problems: list[Problem]) -> list[Any] | None:
    """The records (tagged with their split when the layout's splits are options), or ``None``."""
    parts = layout.check.splits or {"": {}}
    records: list[Any] = []
    for split, split_options in parts.items():
        opts = {**options, **layout.check.options, **split_options}
        found = _read_one(layout, root, opts, problems)
        if found is None:
            return None
        if split:
            found = [_Tagged(r, split) for r in found]
        records += found
    return records


def _accepted(read: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options a reader takes (all of them when it takes ``**options``, as layouts should)."""
    try:
        params = inspect.signature(read).parameters.values()
    except (TypeError, ValueError):
        return dict(options)
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return dict(options)
    names = {p.name for p in params}
    return {k: v for k, v in options.items() if k in names}


def _read_one(layout: Layout, root: Path, options: Mapping[str, Any], problems: list[Problem]) -> list[Any] | None:
    options = _accepted(layout.read, options)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            found = list(layout.read(root, **options))
        except DataError as exc:
            problems += [p for p in _problems_of(exc) if p not in problems]
            if exc.partial is not None:  # the records of the rows without problems
                return list(exc.partial)
            if options.get("check_files") is False or "check_files" not in _accepted(layout.read, {"check_files": 0}):
                return None
            # the reader refused the table for its files: read again without its file checks
            # (missing files are listed already) to check what the rest of the records hold
            return _read_one(layout, root, {**options, "check_files": False}, [])
    for w in caught:
        text = str(w.message)
        if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning)):
            problem = Problem("reader warning", str(root), f"{w.category.__name__}: {text}")
            if problem not in problems:
                problems.append(problem)
    return found


@dataclass
class _Tagged:
    """A record and the split its layout's options put it in."""

    record: Any
    split: str


# --- what a record names ---------------------------------------------------------------------------
@dataclass
class _Item:
    """Files checked together: images (modalities) of one grid and the mask drawn on it."""

    images: list[Path]
    mask: Path | MaskSource | None = None
    pair: Any = None  # a record that decodes its pair itself (DecodedMaskedImage), when its files are not images


def _readable(path: Path) -> bool:
    return path.name.lower().endswith(_READABLE)


def _fields(record: Any) -> Iterator[tuple[str, Any]]:
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        for f in dataclasses.fields(record):
            yield f.name, getattr(record, f.name)


def _paths(record: Any) -> list[Path]:
    """Every file a record names (images, masks, tracings ...)."""
    out: list[Path] = []
    for _, value in _fields(record):
        if isinstance(value, Path):
            out.append(value)
        elif isinstance(value, Mapping):
            for k, v in value.items():
                out += [p for p in (k, v) if isinstance(p, Path)]
        elif isinstance(value, (list, tuple)):
            out += [v for v in value if isinstance(v, Path)]
    return out


def _items(record: Any) -> list[_Item]:
    """The record's images and masks, grouped by grid, from its fields (generic introspection).

    Single path fields (``path``, ``image``) and a ``{modality: path}`` field are one case's
    images, paired with its mask field (``mask``, ``seg``, ``atlas_labels``); a list of paths is
    that many separate images; a ``{image: mask}`` field is that many pairs.
    """
    main = _Item([])
    extra: list[_Item] = []
    for name, value in _fields(record):
        if name in _MASK_FIELDS and isinstance(value, (Path, MaskSource)):
            main.mask = value
        elif isinstance(value, Path):
            if _readable(value):
                main.images.append(value)
        elif isinstance(value, Mapping):
            for k, v in value.items():
                if isinstance(k, Path) and isinstance(v, Path):
                    extra.append(_Item([k], v))
                elif isinstance(v, Path) and _readable(v):
                    main.images.append(v)
        elif isinstance(value, (list, tuple)):
            extra += [_Item([v]) for v in value if isinstance(v, Path) and _readable(v)]
    if callable(getattr(record, "read_pair", None)) and isinstance(main.mask, Path) and not _readable(main.mask):
        main.pair = record  # e.g. a mask rasterised from contours
    if getattr(record, "container", False):  # a video file: decoded by its own reader, not read_image
        main.images = []
    return ([main] if main.images else []) + extra


def _record_id(record: Any) -> str | None:
    name = getattr(record, "name", None)
    return name if isinstance(name, str) and name else None


def _group(record: Any) -> str:
    for name in _GROUP_FIELDS:
        value = getattr(record, name, None)
        if isinstance(value, str) and value:
            return value
    return ""


# --- the checks ------------------------------------------------------------------------------------
def check_dataset(root: str | Path, layout: str | None = None, kind: str | None = None, pixels: bool = True,
                  options: Mapping[str, Any] | None = None) -> CheckReport:
    """Check a dataset and list every problem found.

    Args:
        root: the dataset root.
        layout: the layout's name (``"brats"``, or ``"kind/name"`` for a name several kinds use,
            e.g. ``"volume/folder"``); ``None`` or ``"auto"``: detected.
        kind: the layout's kind (needed with a name several kinds use; limits detection).
        pixels: also read every image and mask (else only the cheap checks); when the reader
            gives no records, every image file under the root on its own.
        options: the layout reader's options (e.g. ``{"table": "train.csv"}``).

    Returns:
        The :class:`CheckReport`; an unrecognised root or unknown layout is a ``layout`` problem
        in it, never an exception.
    """
    root = Path(root)
    options = dict(options or {})
    report = CheckReport(root, None, pixels=pixels)
    if not root.exists():
        report.problems.append(Problem("layout", str(root), "dataset root does not exist"))
        return report
    try:
        found = _resolve_layout(root, layout, kind, options)
    except DataError as exc:
        report.problems.append(Problem("layout", exc.path, exc.reason))
        return report
    except KeyError as exc:
        report.problems.append(Problem("layout", str(root), str(exc.args[0])))
        return report
    report.layout = found
    reader_problems: list[Problem] = []
    records = _read(found, root, options, reader_problems)
    report.problems += reader_problems
    if records is not None:
        report.n_records = len(records)
    if not records:  # nothing to pair images with masks: each image file on its own
        if pixels:
            listed = {(p.kind, os.path.abspath(p.file)) for p in reader_problems}
            found_files, report.files_limit_reached = _image_files(root, FILE_LEVEL_LIMIT)
            report.files_read = len(found_files)
            report.problems += [p for p in _file_level(found, found_files)
                                if (p.kind, os.path.abspath(p.file)) not in listed]
        return report
    listed_missing = any(p.kind == "missing file" for p in reader_problems)
    cheap = _cheap(found, root, records, skip_missing=listed_missing)
    # a file named by a row the reader refused is that row's problem, not a stray file
    refused = " ".join(f"{q.file} {q.message}" for q in reader_problems)
    report.problems += [q for q in cheap if q.kind != "stray file" or Path(q.file).name not in refused]
    if pixels:
        report.problems += _pixels(found, records, options)
    report.problems = _once(report.problems)
    return report


def _once(problems: list[Problem]) -> list[Problem]:
    """Problems without repeats: a file the reader already listed as missing is not listed again."""
    kept: list[Problem] = []
    for p in problems:
        if p.kind == "missing file" and p.row is None and any(
                q.kind == "missing file" and (q.file == p.file or Path(p.file).name in q.message) for q in kept):
            continue
        kept.append(p)
    return kept

def _rel(path: Path | None, root: Path) -> str:
    if path is None:
        return "?"
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _cheap(layout: Layout, root: Path, tagged: list[Any], skip_missing: bool) -> list[Problem]:
    problems: list[Problem] = []
    splits = [t.split if isinstance(t, _Tagged) else (getattr(t, "split", "") or "") for t in tagged]
    records = [t.record if isinstance(t, _Tagged) else t for t in tagged]
    keys = _FolderKeys()
    named: set[tuple[str, str]] = set()  # (folder, file name) of every file a record names
    folders: set[str] = set()  # the folders of the images and masks
    by_name: dict[str, Path | None] = {}
    by_file: dict[tuple[str, str], str] = {}
    for rec in records:
        paths = _paths(rec)
        first = paths[0] if paths else None
        for p in paths:
            key = keys(p)
            named.add(key)
            if _readable(p):
                folders.add(key[0])
            if not skip_missing and not p.exists():
                problems.append(Problem("missing file", str(p), f"named by record {_record_id(rec) or first} "
                                                                 "but not on disk"))
        rid = _record_id(rec)
        if rid is not None:
            if rid not in by_name:
                by_name[rid] = first
            elif by_name[rid] == first:
                problems.append(Problem("duplicated id", str(first), f"id {rid!r} is listed twice"))
            else:  # two files, one name: outputs named by it (predictions) would collide
                problems.append(Problem("duplicated id", str(first), f"id {rid!r} also names "
                                                                     f"{_rel(by_name[rid], root)}", severity=WARNING))
        if first is not None and not callable(getattr(rec, "read_pair", None)) and not getattr(rec, "container", False):
            image = keys(first)
            if image in by_file and by_file[image] != rid:
                problems.append(Problem("duplicated id", str(first),
                                        f"the same file as record {by_file[image]!r} (here {rid!r})"))
            else:
                by_file.setdefault(image, rid or str(first))
    problems += _leakage(records, splits)
    if layout.check.stray:
        problems += _stray(folders, named)
    return problems


class _FolderKeys:
    """``path -> (absolute folder, file name)``, each folder normalised once (fast on 100,000s of files)."""

    def __init__(self) -> None:
        self._folders: dict[str, str] = {}

    def __call__(self, path: Path) -> tuple[str, str]:
        folder, name = os.path.split(os.fspath(path))
        key = self._folders.get(folder)
        if key is None:
            key = self._folders[folder] = os.path.normcase(os.path.abspath(folder))
        return key, os.path.normcase(name)


def _leakage(records: list[Any], splits: list[str]) -> list[Problem]:
    seen: dict[str, dict[str, Any]] = defaultdict(dict)
    for rec, split in zip(records, splits):
        group = _group(rec)
        if group and split:
            seen[group].setdefault(split, rec)
    problems = []
    for group, parts in seen.items():
        if len(parts) > 1:
            names = [f"{s} ({_record_id(r) or _paths(r)[0].name})" for s, r in sorted(parts.items())]
            first = next(iter(parts.values()))
            paths = _paths(first)
            problems.append(Problem("split leakage", str(paths[0]) if paths else group,
                                    f"group {group!r} is in {len(parts)} splits: {', '.join(names)}"))
    return problems


def _stray(folders: set[str], named: set[tuple[str, str]]) -> list[Problem]:
    problems = []
    for folder in sorted(folders):
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        for e in entries:
            if e.name.startswith(".") or not e.name.lower().endswith(_READABLE) or not e.is_file():
                continue
            if (folder, os.path.normcase(e.name)) not in named:
                problems.append(Problem("stray file", e.path, "in an image folder but no record names it"))
    return problems


# --- pixel checks ----------------------------------------------------------------------------------
def _allowed(layout: Layout, options: Mapping[str, Any], stored: bool) -> tuple[int, ...] | None:
    """The mask values allowed: in the files (``stored``) or after the layout's own decoding.

    A DataModule's ``value_map`` (its keys are the stored values) and ``label_values`` come first,
    then the layout's :class:`~medlearn.data.layouts.CheckHints` ``mask_values`` and ``label_values``.
    """
    value_map, labels = options.get("value_map"), options.get("label_values")
    if stored and value_map:
        return tuple(int(k) for k in value_map)
    if labels is not None and not (stored and layout.check.mask_values is not None):
        return tuple(int(v) for v in labels)
    if stored and layout.check.mask_values is not None:
        return layout.check.mask_values
    return layout.label_values


def _pixels(layout: Layout, tagged: list[Any], options: Mapping[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    done: set[tuple[str, ...]] = set()
    keys = _FolderKeys()
    for t in track(tagged, description="check-data: reading the records' pixels"):
        rec = t.record if isinstance(t, _Tagged) else t
        for item in _items(rec):
            key = (*("/".join(keys(p)) for p in item.images), str(item.mask))
            if key in done:
                continue
            done.add(key)
            problems += _check_item(layout, item, options)
    return problems


def _load(path: Path, problems: list[Problem]) -> tuple[np.ndarray, dict[str, Any]] | None:
    if not path.exists():
        return None  # listed by the cheap checks
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return read_image(path)
    except DataError as exc:
        kind = "non-finite image" if _classify(exc.reason) == "non-finite image" else "unreadable file"
        problems.append(Problem(kind, exc.path, exc.reason))
        return None


def _check_item(layout: Layout, item: _Item, options: Mapping[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    loaded: list[tuple[Path, np.ndarray, dict[str, Any]]] = []
    for path in item.images:
        got = _load(path, problems)
        if got is None:
            continue
        arr, meta = got
        loaded.append((path, arr, meta))
        problems += _image_problems(layout, path, arr)
    for (p0, _, m0), (p, _, m) in zip(loaded[:1] * len(loaded), loaded[1:]):
        problems += _geometry(p, m, p0, m0, "image")
    mask_values: np.ndarray | None = None
    if item.pair is not None:
        try:
            _, mask_values = item.pair.read_pair()
        except DataError as exc:
            problems.append(Problem(_classify(exc.reason), exc.path, exc.reason))
        where = str(item.mask)
    elif isinstance(item.mask, MaskSource):
        try:
            mask_values = np.asarray(item.mask.load())
        except DataError as exc:
            problems.append(Problem(_classify(exc.reason), exc.path, exc.reason))
        where = str(item.mask)
        if mask_values is not None and loaded and tuple(mask_values.shape) != tuple(loaded[0][2]["spatial_shape"]):
            problems.append(Problem("shape mismatch", where, f"mask shape {tuple(mask_values.shape)} differs from "
                                                             f"image shape {tuple(loaded[0][2]['spatial_shape'])} "
                                                             f"({loaded[0][0].name})"))
    elif isinstance(item.mask, Path):
        where = str(item.mask)
        got = _load(item.mask, problems)
        if got is not None:
            arr, meta = got
            mask_values = arr
            if loaded:
                problems += _geometry(item.mask, meta, loaded[0][0], loaded[0][2], "mask")
    else:
        return problems
    if mask_values is not None:
        problems += _mask_problems(where, mask_values, _allowed(layout, options, stored=isinstance(item.mask, Path)
                                                                 and item.pair is None))
    return problems


def _image_files(root: Path, limit: int) -> tuple[list[Path], bool]:
    """The readable image files under ``root`` (its folder when it is a table), at most ``limit``.

    The stray-file check's rules over the whole tree: files with a :data:`_READABLE` suffix,
    hidden files and folders skipped; symbolic links to folders are followed, each real folder
    (and file) once, so a link loop ends. Sorted, so a limited walk is the same every time.

    Returns:
        The files, and whether more were left when the limit was reached.
    """
    top = root if root.is_dir() else root.parent
    seen_dirs = {os.path.realpath(top)}
    seen_files: set[str] = set()
    found: list[Path] = []
    for folder, dirnames, filenames in os.walk(top, followlinks=True):
        kept = []
        for d in sorted(dirnames):
            real = os.path.realpath(os.path.join(folder, d))
            if not d.startswith(".") and real not in seen_dirs:
                seen_dirs.add(real)
                kept.append(d)
        dirnames[:] = kept
        for name in sorted(filenames):
            path = os.path.join(folder, name)
            if name.startswith(".") or not name.lower().endswith(_READABLE) or not os.path.isfile(path):
                continue
            real = os.path.realpath(path)
            if real in seen_files:
                continue
            if len(found) == limit:
                return found, True
            seen_files.add(real)
            found.append(Path(path))
    return found, False


def _file_level(layout: Layout, files: list[Path]) -> list[Problem]:
    """The pixel checks that need no pairing, on each file: unreadable, non-finite, constant, CT range.

    A file that looks like a label map (few non-negative integer values) is not judged as a CT
    image: nothing says here whether it is a mask.
    """
    problems: list[Problem] = []
    for path in track(files, description="check-data: reading the image files"):
        got = _load(path, problems)
        if got is None:
            continue
        arr = got[0]
        found = _image_problems(layout, path, arr)
        if found and found[0].kind == "intensity range" and _label_like(arr):
            continue
        problems += found
    return problems


def _label_like(arr: np.ndarray) -> bool:
    if float(arr.min()) < 0 or not np.array_equal(arr, np.round(arr)):
        return False
    return np.unique(arr).size <= _LABEL_LIKE_VALUES


def _image_problems(layout: Layout, path: Path, arr: np.ndarray) -> list[Problem]:
    finite = np.isfinite(arr)
    if not finite.all():  # read_image refuses NaN; a reader with another policy may not
        return [Problem("non-finite image", str(path), f"{int((~finite).sum())} non-finite values")]
    lo, hi = float(arr.min()), float(arr.max())
    if lo == hi:
        return [Problem("constant image", str(path), f"every value is {lo:g}")]
    if (layout.check.modality or "").upper() == "CT" and lo >= 0.0:
        scale = "0..1" if hi <= 1.0 else "0..255" if hi <= 255.0 else None
        if scale is not None:
            return [Problem("intensity range", str(path), f"CT values in [{lo:g}, {hi:g}] look like {scale}, "
                                                          "not Hounsfield units (air is about -1000)")]
    return []


def _geometry(path: Path, meta: dict[str, Any], ref: Path, ref_meta: dict[str, Any], what: str) -> list[Problem]:
    shape, ref_shape = tuple(meta["spatial_shape"]), tuple(ref_meta["spatial_shape"])
    if shape != ref_shape:
        return [Problem("shape mismatch", str(path), f"{what} shape {shape} differs from {ref.name}'s {ref_shape}")]
    sp, ref_sp = meta.get("spacing"), ref_meta.get("spacing")
    if sp is not None and ref_sp is not None and not np.allclose(sp, ref_sp, rtol=1e-3, atol=1e-4):
        return [Problem("geometry mismatch", str(path), f"{what} spacing {tuple(round(float(s), 4) for s in sp)} "
                                                        f"differs from {ref.name}'s "
                                                        f"{tuple(round(float(s), 4) for s in ref_sp)}")]
    aff, ref_aff = meta.get("affine"), ref_meta.get("affine")
    if aff is not None and ref_aff is not None and not np.allclose(aff, ref_aff, atol=1e-3):
        return [Problem("geometry mismatch", str(path), f"{what} affine differs from {ref.name}'s (largest difference "
                                                        f"{float(np.abs(np.asarray(aff) - ref_aff).max()):.3g})")]
    return []


def _mask_problems(where: str, values: np.ndarray, allowed: tuple[int, ...] | None) -> list[Problem]:
    flat = np.asarray(values).ravel()
    if not np.isfinite(flat).all():
        return [Problem("non-finite image", where, "mask holds non-finite values")]
    if (flat != np.round(flat)).any():
        return [Problem("label values", where, "mask holds non-integer values")]
    present = np.unique(flat.astype(np.int64))
    problems = []
    if allowed is not None:
        bad = [int(v) for v in present if int(v) not in allowed]
        if bad:
            shown = f"{list(allowed)}" if len(allowed) <= 20 else f"{min(allowed)}..{max(allowed)}"
            problems.append(Problem("label values", where, f"values {bad[:10]} outside the label set {shown}"))
    if present.size == 1 and present[0] == 0:
        problems.append(Problem("empty mask", where, "the mask is all background (0)"))
    return problems



def check_datamodule(datamodule: Any, pixels: bool = False) -> list[CheckReport]:
    """Check every dataset root a DataModule reads (its ``layout_sources()``), cheaply by default.

    :func:`check_before_fit` runs this before training: the records' tables and files, no pixel read, so a
    clean dataset costs about one more read of its tables and a listing of its image folders.

    Args:
        datamodule: a DataModule; one without ``layout_sources`` (not a medlearn one) has nothing
            to check.
        pixels: also run the pixel checks.

    Returns:
        One :class:`CheckReport` per source.
    """
    sources = getattr(datamodule, "layout_sources", None)
    if not callable(sources):
        return []
    return [check_dataset(s.root, s.layout, s.kind, pixels=pixels, options=s.options) for s in sources()]


def check_before_fit(datamodule: Any, stream: TextIO | None = None) -> list[CheckReport]:
    """The cheap checks of a DataModule's data before training; stop when they find errors.

    ``medlearn fit`` and :func:`medlearn.engine.run.fit_from_config` (the recipes: ``medlearn demo``,
    ``medlearn reproduce``) both call this after building the DataModule and before training. A
    root with errors gets its listing (:meth:`CheckReport.format`) and a :class:`DataError`; a
    root with warnings only, one line saying how many.

    Args:
        datamodule: a DataModule (see :func:`check_datamodule`).
        stream: where the listing and the warning line go (default: standard error).

    Returns:
        The reports, one per data source.

    Raises:
        DataError: a root has errors; it names the root and says training did not start.
    """
    out = sys.stderr if stream is None else stream
    log = logging.getLogger("medlearn")
    level = log.level
    log.setLevel(max(level, logging.WARNING))  # the readers' information lines come when the data is read for training
    try:
        reports = check_datamodule(datamodule, pixels=False)
    finally:
        log.setLevel(level)
    for report in reports:
        if not report.ok():
            print(report.format(), file=out, flush=True)
            raise DataError(report.root, f"the dataset has {report.n_errors} error(s), listed above; training "
                                         f"did not start (`medlearn check-data {report.root}` also reads the pixels)")
        if report.n_warnings:
            print(f"medlearn: check-data found {report.n_warnings} warning(s) in {report.root} "
                  f"(`medlearn check-data {report.root}` lists them)", file=out, flush=True)
    return reports
