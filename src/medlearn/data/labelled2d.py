"""Labelled 2D images (one class per image): the ``image,label`` table layout, a cached dataset, a DataModule.

The single-label 2D classification path shared by the methods that classify photographs, scans or
patches: CCL-Net on ISIC 2018 skin lesions first, later fundus, AS-OCT and endoscopy classifiers.
Sources (``layout`` of :class:`LabelledImageDataModule`) are the layouts of kind ``labelled2d`` in
:mod:`medlearn.data.layouts`, reached through the registry (this module imports no dataset
reader). Built in:

- ``"csv"`` (registered here): a table ``image,label[,group][,split]`` and an image folder.
  ``image`` is a file name or a path relative to the image folder, with or without its suffix;
  ``label`` a class name or a 0-based class index; an optional grouping column (``lesion_id``,
  ``patient_id``, ``case``, ``group`` ...) keeps images of one lesion / patient on one side of
  every split; an optional ``split`` column (``train`` / ``val`` / ``test``) fixes the split.
  :func:`read_image_table`.
- ``"isic2018"``: the ISIC 2018 Task 3 layout (one-hot ground-truth CSV, lesion groupings),
  :mod:`medlearn.data.isic2018`.
- ``"auto"``: the first layout that recognises the root (ISIC 2018 when its ground-truth CSV is
  there), else ``csv``.

Splits (:func:`~medlearn.data.sampling.stratified_group_split`): held-out validation and test
parts drawn by group, stratified by class (each class contributes its share of groups),
deterministic from a seed. An official test / validation set (ISIC's released Test and Validation
ground truth, or a ``split`` column) is used instead of a drawn one when present.

Images are decoded through :func:`medlearn.io.read_image`, kept as RGB (``channels=3``; gray
files are repeated) or turned gray (``channels=1``; mean over colour), scaled to [0, 1] by their
bit depth and resized to a square (:func:`~medlearn.data.decode.load_image2d`), once, into a
uint8 in-memory cache (:class:`LabelledImageDataset`). Class imbalance: ``sampler="balanced"``
draws every epoch's batches with probability inversely proportional to the class frequency
(:class:`~medlearn.data.sampling.EpochBalancedSampler`); the DataModule's ``class_counts`` feeds a
weighted loss in the model instead.

Validation reports every bad row at once: a :class:`~medlearn.io.errors.DataError` whose
``problems`` lists each (missing columns, unknown class names, empty or repeated names, images
absent from the folder, unknown split names).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from medlearn.data.datamodule import SplitDataModule
from medlearn.data.decode import load_image2d
from medlearn.data.info import DataInfo
from medlearn.data.layouts import RecordSet, check_layout_name, detect_layout, get_layout, register_layout
from medlearn.data.records import LabelledImage, index_images, resolve_image
from medlearn.data.sampling import EpochBalancedSampler, stratified_group_split, subsample
from medlearn.data.tables import SPLIT_NAMES, read_columns, table_path
from medlearn.io.errors import DataError, name_issues

__all__ = ["LabelledImageDataModule", "LabelledImageDataset", "read_image_table"]

_SPLITS = {**SPLIT_NAMES, "": ""}
KIND = "labelled2d"
#: Integer labels are class indices ``0..K-1``; a table whose labels would make more classes is refused.
MAX_INDEX_CLASSES = 100_000
#: The layout "auto" falls back to when none recognises the root (its reader says what is missing).
FALLBACK_LAYOUT = "csv"


# --- the "csv" layout ------------------------------------------------------------------------------
def read_image_table(
    csv: str | Path,
    image_dir: str | Path | None = None,
    classes: Sequence[str] | None = None,
    image_col: str = "image",
    label_col: str = "label",
    group_col: str | None = "auto",
    split_col: str | None = "split",
    check_files: bool = True,
) -> tuple[list[LabelledImage], list[str]]:
    """Read a generic ``image,label`` table.

    Args:
        csv: the table.
        image_dir: folder the ``image`` entries are relative to (default: the table's folder).
        classes: class names in index order. ``label`` may then be a name or an index. ``None``:
            integer labels ``0..K-1`` give classes ``"0".."K-1"``; names give their sorted set.
        image_col: column of image names / relative paths (case-insensitive).
        label_col: column of labels.
        group_col: grouping column; ``"auto"`` takes the first of :data:`~medlearn.data.tables.GROUP_COLUMNS`
            present;
            ``None``: every image is its own group.
        split_col: optional column of fixed splits (``train``, ``val``, ``test``; empty = unassigned).
        check_files: check that every image exists.

    Returns:
        ``(records in table order, class names)``.

    Raises:
        DataError: missing table or columns; ``classes`` empty or repeated; any row with an empty
            or repeated image name, an empty or unknown label, an unknown split, or an image that
            is not in the folder (every bad row listed, with everything wrong with it).
    """
    csv = Path(csv)
    folder = Path(image_dir) if image_dir is not None else csv.parent
    cols = read_columns(csv, {"image": image_col, "label": label_col}, group_col, {"split": split_col})
    names, labels = cols["image"], cols["label"]

    if classes is not None:
        class_names = [str(c) for c in classes]
        dup = sorted({c for c in class_names if class_names.count(c) > 1})
        if not class_names or dup:
            raise DataError(csv, "invalid classes", [f"class {c!r} given more than once" for c in dup]
                            or ["no classes given"])
    elif labels and all(s.isdecimal() for s in labels):
        top = max(int(s) for s in labels)
        if top >= MAX_INDEX_CLASSES:
            line = next(n for n, s in zip(cols.lines, labels) if int(s) == top)
            raise DataError(csv, f"line {line}: label {top} taken as a class index means {top + 1} classes "
                                 f"(at most {MAX_INDEX_CLASSES}); pass classes= to name the classes")
        class_names = [str(i) for i in range(top + 1)]
    else:
        class_names = sorted({s for s in labels if s})
    index_of = {c: i for i, c in enumerate(class_names)}

    file_index = index_images(folder) if check_files else {}
    records: list[LabelledImage] = []
    problems: list[str] = []
    first: dict[str, int] = {}
    groups = cols["group"]
    splits = [s.lower() for s in cols["split"]]
    for line, name, lab, grp, spl in zip(cols.lines, names, labels, groups, splits):
        issues: list[str] = []
        issues += name_issues(name, line, first, duplicate="duplicate image")
        if not lab:
            issues.append("empty label")
            k = -1
        elif lab in index_of:
            k = index_of[lab]
        elif lab.isdecimal() and int(lab) < len(class_names):
            k = int(lab)
        else:
            issues.append(f"unknown class {lab!r} (known: {', '.join(class_names)})")
            k = -1
        if spl not in _SPLITS:
            issues.append(f"unknown split {spl!r} (train, val, test or empty)")
        path: Path | None = folder / name
        escape = table_path(folder, name)[1] if name else None
        if escape:
            issues.append(escape)
        elif check_files and name:
            path = resolve_image(name, folder, file_index)
            if path is None:
                issues.append(f"image not found in {folder}")
        if issues:
            problems.append(f"line {line} ({name or '<empty name>'}): {'; '.join(issues)}")
            continue
        assert path is not None
        records.append(LabelledImage(path, k, grp or name, name, _SPLITS[spl]))
    if problems:
        raise DataError(csv, f"{len(problems)} invalid rows", problems, partial=records)
    if not records:
        raise DataError(csv, "the table has no rows")
    return records, class_names


def _under(root: Path, path: str | Path) -> Path:
    return Path(path) if Path(path).is_absolute() else root / path


def _detect_table(root: Path, table: str = "labels.csv", **_: Any) -> bool:
    return _under(Path(root), table).is_file()


def _read_table(root: Path, table: str = "labels.csv", image_dir: str | None = None,
                classes: Sequence[str] | None = None, image_col: str = "image", label_col: str = "label",
                group_col: str | None = "auto", check_files: bool = True, **_: Any) -> RecordSet[LabelledImage]:
    """The ``csv`` layout: ``table`` and ``image_dir`` relative to ``root`` (or absolute)."""
    root = Path(root)
    records, class_names = read_image_table(_under(root, table), None if image_dir is None else _under(root, image_dir),
                                            classes, image_col, label_col, group_col, check_files=check_files)
    return RecordSet(records, class_names)


register_layout(
    "csv", _detect_table, _read_table, kind=KIND, priority=0,
    description="a table image,label[,group][,split] (table=, default labels.csv) and an image folder",
    tasks=("classification",),
)


# --- dataset --------------------------------------------------------------------------------------
class LabelledImageDataset(Dataset):
    """Labelled 2D images, decoded once into a uint8 in-memory cache.

    Items: ``{"image": (C, S, S) float32 in [0, 1], "label": () int64, "name": str}``. The cache is
    one preallocated ``(N, C, S, S)`` uint8 block filled on first access (ISIC 2018 at S=224, RGB:
    10,015 x 150 kB = 1.5 GB); values are quantised to 1/255.

    Args:
        records: :class:`~medlearn.data.records.LabelledImage` records.
        image_size: side S.
        channels: 3 (RGB) or 1 (gray).
        cache: keep decoded images in memory.
        dihedral: training augmentation on the CPU: a random one of the 8 flips / 90-degree rotations
            per item (orientation-free images such as dermoscopy, histology, patches), drawn from
            torch's global generator (seeded by Lightning, restored on resume).
    """

    def __init__(self, records: Sequence[LabelledImage], image_size: int, channels: int = 3, cache: bool = True,
                 dihedral: bool = False) -> None:
        if not records:
            raise ValueError("LabelledImageDataset needs at least one record")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.records = list(records)
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.dihedral = bool(dihedral)
        self.labels = torch.tensor([r.label for r in self.records], dtype=torch.long)
        self._store = (torch.empty((len(self.records), channels, image_size, image_size), dtype=torch.uint8)
                       if cache else None)
        self._filled = torch.zeros(len(self.records), dtype=torch.bool) if cache else None

    def __len__(self) -> int:
        return len(self.records)

    def _image(self, i: int) -> torch.Tensor:
        if self._store is None or self._filled is None:
            return load_image2d(self.records[i].path, self.image_size, self.channels)
        if not bool(self._filled[i]):
            x = load_image2d(self.records[i].path, self.image_size, self.channels)
            self._store[i] = torch.round(x * 255.0).to(torch.uint8)
            self._filled[i] = True
        return self._store[i].to(torch.float32) / 255.0

    def fill_cache(self) -> None:
        """Decode every image not cached yet."""
        if self._filled is not None:
            for i in range(len(self)):
                if not bool(self._filled[i]):
                    self._image(i)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = range(len(self))[index]
        x = self._image(index)
        if self.dihedral:
            k, flip = torch.randint(0, 4, ()).item(), torch.rand(()).item() < 0.5
            x = torch.rot90(x, int(k), dims=(1, 2))
            if flip:
                x = x.flip(2)
        return {"image": x, "label": self.labels[index].clone(), "name": self.records[index].name}

    def class_counts(self, num_classes: int) -> torch.Tensor:
        """Images per class ``(K,)``."""
        return torch.bincount(self.labels, minlength=num_classes)


# --- DataModule ------------------------------------------------------------------------------------
class LabelledImageDataModule(SplitDataModule[LabelledImageDataset]):
    """Single-label 2D classification data: a generic table or the ISIC 2018 Task 3 layout.

    Args:
        root: dataset folder.
        layout: ``"auto"`` or a ``labelled2d`` layout (``"isic2018"``, ``"csv"``).
        table: the table of ``layout="csv"``, relative to ``root`` (or absolute).
        image_dir: image folder of ``layout="csv"`` (default: the table's folder).
        classes: class names in index order (``csv``: default inferred; ISIC: the 7 in column order).
        image_col: ``csv``: image column.
        label_col: ``csv``: label column.
        group_col: ``csv``: grouping column, ``"auto"`` (first of
            :data:`~medlearn.data.tables.GROUP_COLUMNS`) or ``None``.
        image_size: side the images are resized to when decoded (and cached).
        channels: 3 (RGB) or 1 (gray).
        batch_size: per-process batch size.
        num_workers: data-loader workers (with ``cache``, the cache is filled before they start).
        val_fraction: fraction of groups held out for validation when no official validation set.
        test_fraction: fraction of groups held out for testing when no official test set.
        split_seed: seed of the grouped, class-stratified split.
        num_train: size of a random training subset (``None``: all).
        label_seed: seed of that subset.
        cache: decode once, keep in memory.
        sampler: ``"shuffle"`` (a permutation per epoch) or ``"balanced"`` (class-balanced draws
            with replacement, epoch length = training set size).
        dihedral: random flips / 90-degree rotations of training images (orientation-free data).
        drop_last: drop the last incomplete training batch.

    Loaders: :class:`~medlearn.data.datamodule.SplitDataModule`'s, seeded with
    ``split_seed + 7919 * label_seed``; ``sampler="balanced"`` replaces the training shuffle
    (:meth:`train_sampler`).
    """

    layout_kind = "labelled2d"

    no_test_reason = "set test_fraction > 0 or provide a test set"

    def __init__(
        self,
        root: str,
        layout: str = "auto",
        table: str = "labels.csv",
        image_dir: str | None = None,
        classes: list[str] | None = None,
        image_col: str = "image",
        label_col: str = "label",
        group_col: str | None = "auto",
        image_size: int = 224,
        channels: int = 3,
        batch_size: int = 32,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        num_train: int | None = None,
        label_seed: int = 0,
        cache: bool = True,
        sampler: str = "shuffle",
        dihedral: bool = False,
        drop_last: bool = False,
    ) -> None:
        super().__init__(root)
        check_layout_name(layout, KIND)
        if sampler not in ("shuffle", "balanced"):
            raise ValueError(f"sampler must be 'shuffle' or 'balanced', got {sampler!r}")
        self.save_hyperparameters()
        self.root: Path = Path(root)
        self.class_names: list[str] = list(classes) if classes else []
        self.splits: dict[str, list[LabelledImage]] = {}

    @property
    def resolved_layout(self) -> str:
        """The layout ``"auto"`` resolves to (or the one given)."""
        if self.hparams.layout != "auto":
            return self.hparams.layout
        return detect_layout(self.root, KIND, default=FALLBACK_LAYOUT, table=self.hparams.table).name

    @property
    def num_classes(self) -> int:
        """Number of classes (reads the table when ``classes`` was not given)."""
        if not self.class_names:
            self.setup("fit")
        return len(self.class_names)

    @property
    def class_counts(self) -> torch.Tensor:
        """Training images per class (after subsetting)."""
        if self.train_set is None:
            self.setup("fit")
        assert self.train_set is not None
        return self.train_set.class_counts(len(self.class_names))

    def data_info(self) -> DataInfo:
        """What a model needs to know about this data (reads and splits it if needed).

        Returns:
            ``n_train``, the training images per class, the class names and their number,
            ``input_size = (S, S)`` and ``in_channels``.
        """
        counts = self.class_counts.tolist()
        assert self.train_set is not None
        h = self.hparams
        return DataInfo(n_train=len(self.train_set), class_counts=counts, num_classes=len(self.class_names),
                        class_names=list(self.class_names), input_size=(h.image_size, h.image_size),
                        in_channels=h.channels)

    def _read(self) -> tuple[list[LabelledImage], dict[str, list[LabelledImage]]]:
        """The pool to split and any fixed parts (official validation / test sets, split column)."""
        h = self.hparams
        found = get_layout(self.resolved_layout, KIND).read(
            self.root, table=h.table, image_dir=h.image_dir, classes=h.classes, image_col=h.image_col,
            label_col=h.label_col, group_col=h.group_col)
        self.class_names = list(found.class_names or [])
        records = found.records
        fixed: dict[str, list[LabelledImage]] = {}
        for part in ("val", "test"):
            if any(r.split == part for r in records):
                fixed[part] = [r for r in records if r.split == part]
        return [r for r in records if r.split in ("", "train")], fixed

    def setup(self, stage: str | None = None) -> None:
        """Read, split and build the datasets, once."""
        if self.train_set is not None:
            return
        h = self.hparams
        if not self.root.exists():
            raise DataError(self.root, "dataset root does not exist")
        pool, fixed = self._read()
        wanted = [p for p in ("val", "test") if p not in fixed]
        fracs = {"val": h.val_fraction, "test": h.test_fraction}
        parts = stratified_group_split(pool, [fracs[p] for p in wanted], h.split_seed)
        splits = {"train": parts[0], **dict(zip(wanted, parts[1:])), **fixed}
        if h.num_train:
            splits["train"] = subsample(splits["train"], h.num_train, h.label_seed)
        if not splits["train"]:
            raise DataError(self.root, "no training images after splitting")
        self.splits = splits
        mk = lambda recs, train: LabelledImageDataset(  # noqa: E731
            recs, h.image_size, h.channels, cache=h.cache, dihedral=train and h.dihedral) if recs else None
        self.train_set = mk(splits["train"], True)
        self.val_set = mk(splits.get("val", []), False)
        self.test_set = mk(splits.get("test", []), False)

    def train_sampler(self, dataset: LabelledImageDataset) -> Sampler[int] | None:
        """With ``sampler="balanced"``, class-balanced draws (:class:`~medlearn.data.sampling.EpochBalancedSampler`)."""
        if self.hparams.sampler != "balanced":
            return None
        return EpochBalancedSampler(dataset.labels, seed=self.loader_seed())
