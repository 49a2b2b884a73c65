"""Reader for the AGE challenge layout (AS-OCT angle closure + scleral spur), angle views, a DataModule.

AGE, the Angle closure Glaucoma Evaluation challenge of MICCAI 2019 (Fu et al., "AGE Challenge:
Angle Closure Glaucoma Evaluation in Anterior Segment Optical Coherence Tomography", Medical Image
Analysis 66:101798, 2020, arXiv:2005.02258), released AS-OCT B-scans (CASIA SS-1000, 2130 x 998 px,
8-bit JPG) in this layout::

    Training100/ASOCT_Image/T0056-10.jpg ...      images, named T<patient>-<index>
    Training100/Training100_Location.xlsx          one row per image:
        ASOCT_Name, Left_Label, X1, Y1, Right_Label, X2, Y2
        T0056-10.jpg, 1, 228.83, 466.96, 1, 1870.80, 451.59

A label is 1 for angle closure and 0 otherwise (open); ``(X1, Y1)`` is the left scleral spur and
``(X2, Y2)`` the right one, in pixels of the full image (x = column, y = row); ``-1`` in both
coordinates means the spur could not be determined: that angle still counts for classification but
is left out of localisation training and evaluation. The table may also be a CSV with the same
columns. :func:`medlearn.synth.asoct.write_age` writes phantoms in this layout.

Every B-scan shows two anterior chamber angles. :func:`angle_view` cuts a scan into the left half,
``x in [0, W // 2)``, and the right half, ``x in [W // 2, W)`` mirrored (``x' = (W - 1) - x``), so
that both angles share one orientation, and resizes each half to the network input; the
:class:`~medlearn.data.image_view.ImageView` maps points into and back out of the view exactly.
The image size is read from every file (never assumed); ``expected_size`` can insist on one.

Validation reports every bad row at once (a :class:`~medlearn.io.errors.DataError` whose
``problems`` lists each): missing columns, empty or repeated names, labels other than 0 / 1,
coordinates that are missing, not numbers, ``-1`` in only one of the two, outside the image or
outside their own half, and rows naming images that are not there. The layout is registered as
``"age"`` (kind ``asoct``, :mod:`medlearn.data.layouts`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medlearn.data.datamodule import LayoutSource, SplitDataModule
from medlearn.data.decode import ImageCache, load_gray
from medlearn.data.decode import image_size as _image_size  # its own image_size arguments are view sides
from medlearn.data.image_view import ImageView
from medlearn.data.info import DataInfo
from medlearn.data.layouts import RecordSet, register_layout
from medlearn.data.records import IMAGE_SUFFIXES
from medlearn.data.sampling import group_split
from medlearn.data.tables import read_table, table_lines
from medlearn.data.tables import table_path as entry_path
from medlearn.io.errors import DataError, name_issues

__all__ = [
    "AGE_COLUMNS",
    "AGE_CLASSES",
    "IMAGE_FOLDER",
    "SIDES",
    "ASOCTRecord",
    "ASOCTAngleDataset",
    "ASOCTDataModule",
    "angle_view",
    "find_age_table",
    "list_asoct_images",
    "patient_of",
    "read_age",
]

#: The columns of the AGE annotation table, in the released order.
AGE_COLUMNS: tuple[str, ...] = ("ASOCT_Name", "Left_Label", "X1", "Y1", "Right_Label", "X2", "Y2")
#: Class names by label value: 0 = open (AGE: "other"), 1 = angle closure.
AGE_CLASSES: tuple[str, ...] = ("open", "closed")
#: The two angles of a scan, in the order of the table's columns.
SIDES: tuple[str, ...] = ("left", "right")
#: Where the AGE release keeps its images, inside the dataset folder.
IMAGE_FOLDER = "ASOCT_Image"

_SIDE_COLUMNS = {"left": ("Left_Label", "X1", "Y1"), "right": ("Right_Label", "X2", "Y2")}
_PATIENT_RE = re.compile(r"^([A-Za-z]*\d+)[-_]\d+$")


@dataclass
class ASOCTRecord:
    """One AS-OCT scan and its two angles.

    Attributes:
        path: the image file.
        name: the file name as the table writes it (``T0056-10.jpg``).
        patient: patient identifier (``T0056``); splits group by it.
        width: image width in pixels (read from the file).
        height: image height in pixels.
        labels: ``(left, right)`` closure labels (1 closed, 0 open), or ``None`` when unlabeled.
        points: ``(left, right)`` spur points ``(x, y)`` in full-image pixels; an entry is ``None``
            when the spur could not be determined (``-1``); ``None`` as a whole when unlabeled.
    """

    path: Path
    name: str
    patient: str
    width: int
    height: int
    labels: tuple[int, int] | None = None
    points: tuple[tuple[float, float] | None, tuple[float, float] | None] | None = None


def patient_of(name: str) -> str:
    """Patient of an AGE file name: ``T0056-10.jpg`` -> ``T0056``; names without the pattern are their own patient."""
    stem = Path(name).stem
    m = _PATIENT_RE.match(stem)
    return m.group(1) if m else stem


def find_age_table(root: str | Path) -> Path:
    """The annotation table of an AGE folder: the one ``*_Location.xlsx`` / ``*_Location.csv`` in it.

    Raises:
        DataError: none, or more than one.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "dataset folder does not exist")
    found = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith((".", "~$"))
                   and p.suffix.lower() in (".xlsx", ".csv") and p.stem.endswith("_Location"))
    if not found:
        raise DataError(root, "no AGE annotation table (*_Location.xlsx or *_Location.csv) in this folder; "
                              "pass table=... to name it")
    if len(found) > 1:
        raise DataError(root, "more than one annotation table; pass table=... to choose", [p.name for p in found])
    return found[0]


def _image_folder(root: Path) -> Path:
    return root / IMAGE_FOLDER if (root / IMAGE_FOLDER).is_dir() else root


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def _number(value: Any) -> float | None:
    text = _text(value)
    try:
        x = float(text)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def _label(value: Any, column: str, issues: list[str]) -> int:
    x = _number(value)
    if x is None or x not in (0.0, 1.0):
        issues.append(f"unknown {column} {_text(value)!r} (expected 0 = open or 1 = closed)")
        return -1
    return int(x)


def _point(row: Any, side: str, size: tuple[int, int] | None, issues: list[str]) -> tuple[float, float] | None:
    _, cx, cy = _SIDE_COLUMNS[side]
    x, y = _number(row[cx]), _number(row[cy])
    for col, v in ((cx, x), (cy, y)):
        if v is None:
            issues.append(f"{col} {_text(row[col])!r} is not a number")
    if x is None or y is None:
        return None
    if x == -1 and y == -1:
        return None
    if x == -1 or y == -1:
        issues.append(f"({cx}, {cy}) = ({x:g}, {y:g}): -1 marks an undetermined spur in both coordinates")
        return None
    if size is not None:
        w, h = size
        split = w // 2
        lo, hi = (-0.5, split - 0.5) if side == "left" else (split - 0.5, w - 0.5)
        if not (-0.5 <= x <= w - 0.5 and -0.5 <= y <= h - 0.5):
            issues.append(f"({cx}, {cy}) = ({x:g}, {y:g}) is outside the {w} x {h} image")
        elif not lo <= x <= hi:
            issues.append(f"{cx} = {x:g} is not in the {side} half of the image (x in [{lo:g}, {hi:g}])")
    return (x, y)


def read_age(
    root: str | Path,
    table: str | Path | None = None,
    image_dir: str | Path | None = None,
    expected_size: Sequence[int] | None = None,
) -> list[ASOCTRecord]:
    """Read an AGE folder (images + annotation table) into scan records.

    Args:
        root: the dataset folder (``Training100``).
        table: the annotation table (xlsx or csv; relative to ``root``); default: the one
            ``*_Location.xlsx`` / ``*_Location.csv`` in ``root`` (:func:`find_age_table`).
        image_dir: the image folder (relative to ``root``); default ``root/ASOCT_Image`` if it
            exists, else ``root``.
        expected_size: ``(width, height)`` every image must have (e.g. ``(2130, 998)``); default:
            any size, read per file.

    Returns:
        One :class:`ASOCTRecord` per row, in table order.

    Raises:
        DataError: the table is missing or unreadable, or columns are missing (every one listed);
            or rows are bad (every one listed: empty or repeated name, image absent or unreadable,
            wrong image size, a label other than 0 / 1, a coordinate that is missing, not a number,
            ``-1`` in one coordinate only, outside the image or outside its half).
    """
    root = Path(root)
    table_path = find_age_table(root) if table is None else (root / table if not Path(table).is_absolute()
                                                             else Path(table))
    if not table_path.is_file():
        raise DataError(table_path, "annotation table not found")
    folder = _image_folder(root) if image_dir is None else root / image_dir
    df = read_table(table_path, AGE_COLUMNS)
    missing = [c for c in AGE_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(table_path, f"missing required columns (found: {', '.join(df.columns) or 'none'})",
                        [f"missing column {c!r}" for c in missing])
    expected = tuple(int(v) for v in expected_size) if expected_size is not None else None
    problems: list[str] = []
    records: list[ASOCTRecord] = []
    first_row: dict[str, int] = {}
    for line, row in zip(table_lines(df), df.to_dict("records")):
        issues: list[str] = []
        name = _text(row["ASOCT_Name"])
        path, escape = entry_path(folder, name)
        size: tuple[int, int] | None = None
        issues += name_issues(name, line, first_row, empty="empty ASOCT_Name")
        if name and escape:
            issues.append(f"ASOCT_Name {escape}")
        elif name and not path.is_file():
            issues.append(f"image {name} not found in {folder}")
        elif name:
            try:
                size = _image_size(path)
            except DataError as exc:
                issues.append(f"unreadable image: {exc.reason}")
            if size is not None and expected is not None and size != expected:
                issues.append(f"image is {size[0]} x {size[1]}, expected {expected[0]} x {expected[1]}")
        labels = tuple(_label(row[_SIDE_COLUMNS[s][0]], _SIDE_COLUMNS[s][0], issues) for s in SIDES)
        points = tuple(_point(row, s, size, issues) for s in SIDES)
        if issues:
            problems.append(f"line {line} ({name or '<empty name>'}): {'; '.join(issues)}")
            continue
        assert size is not None
        records.append(ASOCTRecord(path, name, patient_of(name), size[0], size[1],
                                   (labels[0], labels[1]), (points[0], points[1])))
    if problems:
        raise DataError(table_path, f"{len(problems)} invalid rows", problems)
    if not records:
        raise DataError(table_path, "the table has no rows")
    return records


def list_asoct_images(root: str | Path, expected_size: Sequence[int] | None = None) -> list[ASOCTRecord]:
    """Unlabeled scans: every image file in ``root/ASOCT_Image`` (if present) or ``root`` (not recursive).

    Args:
        root: the folder.
        expected_size: ``(width, height)`` every image must have (``None``: any).

    Raises:
        DataError: no such folder, no image in it, or unreadable or wrongly sized images (all listed).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "image folder not found")
    folder = _image_folder(root)
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                   and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(folder, f"no image files found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    expected = tuple(int(v) for v in expected_size) if expected_size is not None else None
    records, problems = [], []
    for p in files:
        try:
            w, h = _image_size(p)
        except DataError as exc:
            problems.append(f"{p.name}: {exc.reason}")
            continue
        if expected is not None and (w, h) != expected:
            problems.append(f"{p.name}: image is {w} x {h}, expected {expected[0]} x {expected[1]}")
            continue
        records.append(ASOCTRecord(p, p.name, patient_of(p.name), w, h))
    if problems:
        raise DataError(folder, f"{len(problems)} unusable images", problems)
    return records


def _detect(root: Path, **_: Any) -> bool:
    try:
        find_age_table(root)
    except DataError:
        return False
    return True


def _read(root: Path, table: str | Path | None = None, image_dir: str | Path | None = None,
          expected_size: Sequence[int] | None = None, **_: Any) -> RecordSet[ASOCTRecord]:
    return RecordSet(read_age(root, table, image_dir, expected_size), list(AGE_CLASSES))


register_layout(
    "age", _detect, _read, kind="asoct", synth="asoct", priority=10,
    description="AGE challenge AS-OCT: *_Location.xlsx / .csv (closure labels, scleral spurs), ASOCT_Image/",
    tasks=("classification", "localisation"), classes=AGE_CLASSES,
)


def angle_view(side: str, width: int, height: int, out_size: int | Sequence[int]) -> ImageView:
    """The view of one angle of a ``width x height`` scan, resized to ``out_size`` (side or ``(h, w)``).

    Left: columns ``[0, width // 2)``. Right: columns ``[width // 2, width)``, mirrored
    (``x' = (width - 1) - x``), i.e. columns ``[0, width - width // 2)`` of the mirrored scan.
    """
    if side not in SIDES:
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    out_h, out_w = (int(out_size), int(out_size)) if isinstance(out_size, int) else (int(v) for v in out_size)
    half = width // 2 if side == "left" else width - width // 2
    return ImageView(width, height, side == "right", 0, 0, half, height, out_w, out_h)


class ASOCTAngleDataset(Dataset):
    """The angles of AS-OCT scans, two items per scan (left, then right mirrored), resized to a square.

    Item ``2 * i + s`` is angle ``s`` (0 left, 1 right) of scan ``i``::

        image        (1, S, S) float32 in [0, 1]
        label        long: 1 closed, 0 open (-1 when unlabeled)
        point        (2,) float64: the spur in view pixels (x, y); NaN when undetermined or unlabeled
        has_point    bool
        point_image  (2,) float64: the spur in full-image pixels (NaN when absent)
        view         (6,) float64: :meth:`ImageView.as_tensor`, for mapping predictions back
        name, side, path

    A scan is decoded once (both views cut from it) and, with ``cache``, both views are kept in a
    preallocated uint8 block (:class:`~medlearn.data.decode.ImageCache`).

    Args:
        records: scans from :func:`read_age` or :func:`list_asoct_images`.
        image_size: view side S.
        cache: keep the decoded views in memory.

    Raises:
        ValueError: no records, or a bad size.
    """

    def __init__(self, records: Sequence[ASOCTRecord], image_size: int, cache: bool = True) -> None:
        if not records:
            raise ValueError("ASOCTAngleDataset needs at least one record")
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        self.records = list(records)
        self.image_size = int(image_size)
        self._cache = ImageCache(2 * len(self.records), (1, self.image_size, self.image_size)) if cache else None

    def __len__(self) -> int:
        return 2 * len(self.records)

    def view(self, index: int) -> ImageView:
        """The view of item ``index``: the left half of its scan, or the right half mirrored."""
        rec = self.records[index // 2]
        return angle_view(SIDES[index % 2], rec.width, rec.height, self.image_size)

    def _decode(self, scan: int) -> list[torch.Tensor]:
        rec = self.records[scan]
        image = load_gray(rec.path)
        if tuple(image.shape[1:]) != (rec.height, rec.width):
            raise DataError(rec.path, f"image is {image.shape[2]} x {image.shape[1]}, its header said "
                                      f"{rec.width} x {rec.height}")
        return [self.view(2 * scan + s).apply(image).clamp_(0.0, 1.0) for s in range(2)]

    def image(self, index: int) -> torch.Tensor:
        """The angle image of item ``index``, ``(1, S, S)`` float32 in [0, 1].

        The scan is decoded once for both of its angles; with ``cache`` both views are kept.
        """
        scan, side = divmod(index, 2)
        if self._cache is None:
            return self._decode(scan)[side]
        if not self._cache.has(index):
            for s, v in enumerate(self._decode(scan)):
                self._cache.put(2 * scan + s, v)
        return self._cache.get(index)

    def fill_cache(self) -> None:
        """Decode every scan not cached yet (no-op without cache)."""
        if self._cache is not None:
            for i in range(0, len(self), 2):
                if not self._cache.has(i):
                    self.image(i)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = range(len(self))[index]
        rec = self.records[index // 2]
        side = index % 2
        view = self.view(index)
        point_image = np.full(2, np.nan)
        label = -1
        if rec.labels is not None and rec.points is not None:
            label = rec.labels[side]
            if rec.points[side] is not None:
                point_image = np.asarray(rec.points[side], dtype=np.float64)
        has = bool(np.isfinite(point_image).all())
        point = view.to_view(point_image) if has else np.full(2, np.nan)
        return {"image": self.image(index), "label": torch.tensor(label, dtype=torch.long),
                "point": torch.from_numpy(point), "has_point": torch.tensor(has),
                "point_image": torch.from_numpy(point_image), "view": view.as_tensor(), "name": rec.name,
                "side": side, "path": str(rec.path)}


class ASOCTDataModule(SplitDataModule[ASOCTAngleDataset]):
    """AGE AS-OCT angles for closure classification, spur localisation, or prediction on new scans.

    Both angles of every scan are items (:class:`ASOCTAngleDataset`). The scans of ``root`` are
    split by patient (the ``T<patient>`` prefix; near-identical B-scans of one eye must not leak
    across splits) into train / validation / test; ``test_root`` (another AGE folder, e.g. the
    official validation set with its table) replaces the test split. Prediction runs on
    ``predict_root`` (a folder of scans, no table needed), else on the test split.

    Args:
        root: AGE folder with the annotation table (``None`` for prediction-only use).
        table: annotation table name (default: the one ``*_Location.xlsx`` / ``.csv`` in ``root``).
        image_size: side of the angle view (each half is resized to ``image_size`` squared).
        batch_size: per-process batch size.
        num_workers: data-loader worker processes.
        val_fraction: fraction of patients for validation.
        test_fraction: fraction of patients for testing (ignored with ``test_root``).
        split_seed: seed of the patient split.
        num_train: keep only this many training scans (drawn with ``split_seed``; ``None``: all).
        test_root: separate AGE folder for testing.
        predict_root: folder of new scans for ``predict`` (``root/ASOCT_Image`` layout or flat).
        expected_size: ``(width, height)`` every image must have (``None``: any).
        cache: keep decoded views in memory (with ``num_workers > 0`` filled before the loader's
            workers start, so that they share one block instead of filling a copy each).

    Loaders: :class:`~medlearn.data.datamodule.SplitDataModule`'s, seeded with ``split_seed``
    (:meth:`loader_seed`); training always drops the last incomplete batch
    (:meth:`train_drop_last`); prediction runs on ``predict_set`` (``predict_root``) when given.
    """

    layout_kind = "asoct"

    no_test_reason = "test_fraction is 0 and no test_root"

    def __init__(
        self,
        root: str | None = None,
        table: str | None = None,
        image_size: int = 64,
        batch_size: int = 32,
        num_workers: int = 0,
        val_fraction: float = 0.15,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        num_train: int | None = None,
        test_root: str | None = None,
        predict_root: str | None = None,
        expected_size: tuple[int, int] | None = None,
        cache: bool = True,
    ) -> None:
        super().__init__(root)
        if root is None and predict_root is None:
            raise ValueError("give root (an AGE folder with its table) or predict_root (a folder of scans)")
        self.save_hyperparameters()
        self.class_names = list(AGE_CLASSES)
        self.splits: dict[str, list[ASOCTRecord]] = {}

    def _read(self, root: str) -> list[ASOCTRecord]:
        return read_age(root, self.hparams.table if root == self.hparams.root else None,
                        expected_size=self.hparams.expected_size)

    def layout_sources(self) -> list[LayoutSource]:
        """``root`` in the AGE layout and, with ``test_root``, that folder too (its own table found)."""
        sources = super().layout_sources()
        h = self.hparams
        if h.test_root is not None:
            sources.append(LayoutSource(Path(h.test_root), "asoct", "age",
                                        {"expected_size": h.expected_size}))
        return sources

    def _dataset(self, records: list[ASOCTRecord]) -> ASOCTAngleDataset | None:
        return ASOCTAngleDataset(records, self.hparams.image_size, cache=self.hparams.cache) if records else None

    def setup(self, stage: str | None = None) -> None:
        """Read and split once; the prediction folder is read when predicting."""
        h = self.hparams
        if stage == "predict" and h.predict_root is not None:
            if self.predict_set is None:
                self.predict_set = self._dataset(list_asoct_images(h.predict_root, h.expected_size))
            return
        if self.splits:
            return
        if h.root is None:
            raise DataError("<none>", "no training data: set data.init_args.root to an AGE folder")
        pool = self._read(h.root)
        if h.test_root is not None:
            rest, test = pool, self._read(h.test_root)
        else:
            rest, test = group_split(pool, h.test_fraction, h.split_seed, key=lambda r: r.patient,
                                     name="test_fraction")
        train, val = group_split(rest, h.val_fraction, h.split_seed + 1, key=lambda r: r.patient,
                                 name="val_fraction")
        if h.num_train is not None and h.num_train < len(train):
            keep = np.sort(np.random.default_rng(h.split_seed).choice(len(train), size=h.num_train, replace=False))
            train = [train[int(i)] for i in keep]
        self.splits = {"train": train, "val": val, "test": test}
        self.train_set, self.val_set, self.test_set = (self._dataset(self.splits[k]) for k in ("train", "val", "test"))
        if self.train_set is None:
            raise DataError(h.root, "no training scans left after the patient split")

    def data_info(self) -> DataInfo:
        """What a model needs to know about this data (reads and splits it if needed).

        Returns:
            ``n_train`` (training *angles*, two per scan), the training angles per class (open,
            closed), the class names and their number, ``input_size = (S, S)``, ``in_channels = 1``.
        """
        if self.train_set is None:
            self.setup("fit")
        assert self.train_set is not None
        counts = [0] * len(self.class_names)
        for rec in self.train_set.records:
            for label in rec.labels or ():
                counts[label] += 1
        s = self.hparams.image_size
        return DataInfo(n_train=len(self.train_set), class_counts=counts, num_classes=len(self.class_names),
                        class_names=list(self.class_names), input_size=(s, s), in_channels=1)

    def loader_seed(self) -> int:
        """``split_seed`` (the AGE module has no ``label_seed``: ``num_train`` draws with ``split_seed``)."""
        return self.hparams.split_seed

    def train_drop_last(self) -> bool:
        """Always: BatchNorm in the pyramid pooling's 1x1 bin cannot take a training batch of one."""
        return True
