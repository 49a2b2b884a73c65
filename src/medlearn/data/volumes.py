"""3D volumes as a DataModule: case-wise splits, cached MONAI preprocessing, batches.

This is the 3D data path shared by Rubik's cube pretraining (Zhuang et al., MICCAI 2019) and MR
modality synthesis (MGAN); one-shot atlas segmentation (LT-Net) pairs each image with an atlas and
has its own, :class:`~medlearn.data.oneshot.OneShotDataModule`. :class:`VolumeDataModule`
reads a layout of kind ``volume`` through the registry (:mod:`medlearn.data.layouts`; built in:
NIfTI folders, CSV manifests and the head CT phantom's, :mod:`medlearn.data.manifest`; BraTS,
:mod:`medlearn.data.brats`; this module imports none of them), splits by case, caches the
preprocessed volumes
(:func:`~medlearn.data.volume_preprocess.volume_transforms`) with
:class:`monai.data.CacheDataset` (:class:`VolumeDataset`) and serves batches
``{"image": (B, C, D, H, W) float32, "label": (B,) long, "seg": (B, 1, D, H, W) long, "name": [...]}``;
prediction batches also say where each volume came from (``source``, ``grid_affine``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import CacheDataset
from monai.data import Dataset as MonaiDataset
from monai.transforms import Compose
from torch.utils.data import Dataset

from medlearn.data.datamodule import LayoutSource, SplitDataModule
from medlearn.data.info import DataInfo
from medlearn.data.layouts import RecordSet, check_layout_name, detect_layout, get_layout
from medlearn.data.records import VolumeRecord
from medlearn.data.sampling import case_split
from medlearn.data.tables import natural_key
from medlearn.data.volume_preprocess import NORMALISATIONS, volume_transforms
from medlearn.io import nifti_geometry
from medlearn.io.errors import DataError

__all__ = ["VolumeDataModule", "VolumeDataset"]

_TASKS = ("unlabeled", "classification", "segmentation")
KIND = "volume"
#: The layout "auto" falls back to when none recognises the root (its reader says what is missing).
FALLBACK_LAYOUT = "folder"


# ------------------------------------------------------------------------------------ datasets


def _find_data_error(exc: BaseException) -> DataError | None:
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, DataError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


class VolumeDataset(Dataset):
    """Preprocessed volumes, cached in memory (:class:`monai.data.CacheDataset`) or not.

    With ``cache=True`` every item is decoded and preprocessed once, when the dataset is built
    (all transforms of :func:`~medlearn.data.volume_preprocess.volume_transforms` are
    deterministic, so the whole chain is cached); ``cache=False`` uses :class:`monai.data.Dataset`
    and decodes on every access. ``train_transform`` (random augmentation) runs on every access,
    after the cache. A :class:`~medlearn.io.errors.DataError` raised while loading reaches the
    caller as itself (MONAI wraps it in a ``RuntimeError``; it is unwrapped).

    Args:
        items: dicts such as ``{"image": file(s), "seg": file, "label": int, "name": str}``.
        transform: the deterministic chain, e.g. :func:`~medlearn.data.volume_preprocess.volume_transforms`.
        cache: keep preprocessed items in memory.
        train_transform: an optional callable applied to each item dict after loading.

    Raises:
        DataError: a file cannot be used (with ``cache=True`` already when building).
    """

    def __init__(
        self,
        items: Sequence[Mapping[str, Any]],
        transform: Callable[..., Any],
        cache: bool = True,
        train_transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.items = [dict(i) for i in items]
        self.train_transform = train_transform
        self.cache = bool(cache)
        try:
            if self.cache:
                self.inner: Dataset = CacheDataset(self.items, transform, progress=False, num_workers=1)
            else:
                self.inner = MonaiDataset(self.items, transform)
        except Exception as exc:
            err = _find_data_error(exc)
            if err is not None:
                raise err.with_traceback(err.__traceback__) from None
            raise

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            item = self.inner[index]
        except Exception as exc:
            err = _find_data_error(exc)
            if err is not None:
                raise err.with_traceback(err.__traceback__) from None
            raise
        if self.train_transform is not None:
            item = self.train_transform(item)
        return item


# ---------------------------------------------------------------------------------- DataModule


class VolumeDataModule(SplitDataModule[VolumeDataset]):
    """3D volumes for pretraining (``unlabeled``), ``classification`` or ``segmentation``.

    Sources (``layout``, the ``volume`` layouts of :mod:`medlearn.data.layouts`): ``"folder"``
    (NIfTI files, recursively; unlabeled), ``"manifest"`` (a CSV: ``root`` itself or
    ``root/labels.csv``), ``"headct"`` (a manifest with the class order
    :data:`~medlearn.data.manifest.HEADCT_CLASSES`, as :func:`medlearn.synth.headct.write_headct`
    writes), ``"brats"`` (:func:`~medlearn.data.brats.read_brats`); ``"auto"`` takes the first
    layout that recognises the root: manifest when ``root`` is a CSV or holds ``labels.csv``,
    brats when a sub-folder holds ``<case>_<modalities[0]>.nii[.gz]``, else folder.

    Splits are by case and deterministic: ``test`` is the rows with ``split == "test"`` when the
    source has a split column, else ``test_fraction`` of the cases (seed ``split_seed + 1``);
    ``val`` is the rows with ``split == "val"`` if any, else ``val_fraction`` of the remaining
    cases (seed ``split_seed``); ``num_train`` then draws a fixed-size training subset with
    ``label_seed``. The same root and seeds give the same test cases for every task, so
    pretraining (which never sees ``test``) and fine-tuning do not leak.

    Batches: ``{"image": (B, C, D, H, W) float32, "name": [...]}`` plus ``"label": (B,) int64``
    (classification, the index into :attr:`class_names`) or ``"seg": (B, 1, D, H, W) int64``
    (segmentation; BraTS values stay 0/1/2/4, see :func:`~medlearn.data.brats.brats_regions`).
    Preprocessing is :func:`~medlearn.data.volume_preprocess.volume_transforms`; with ``cache``
    each volume is decoded and preprocessed once. Prediction (``medlearn predict``) runs on the
    test cases, without masks, and its batches also carry ``"source": [...]`` (each case's first
    image file, whose grid the case is on) and ``"grid_affine": (B, 4, 4) float64`` (the
    preprocessed grid's voxel-to-world affine, :class:`~medlearn.data.volume_preprocess.RecordAffined`),
    so that a prediction on the preprocessed grid can be put back on the input's own grid.

    Args:
        root: dataset folder (or a manifest CSV).
        layout: ``"auto"`` or a ``volume`` layout (``"manifest"``, ``"headct"``, ``"brats"``,
            ``"folder"``).
        task: ``"unlabeled"``, ``"classification"`` or ``"segmentation"``.
        classes: label names in index order (classification); default: the layout's (the head CT
            classes for ``headct``), else the labels found, sorted (numbers numerically).
        spatial_size: output ``(D, H, W)``.
        target_spacing: resample to this voxel size in mm (``None``: keep).
        normalisation: ``"ct"``, ``"mr"`` or ``"none"``.
        window: CT window in HU for ``"ct"``.
        batch_size: per-process batch size.
        num_workers: data-loader worker processes.
        num_train: size of the training subset (``None``: all).
        val_fraction: fraction of cases for validation when the source has no ``val`` rows.
        split_seed: seed of the case splits.
        label_seed: seed of the ``num_train`` subset.
        cache: decode and preprocess each volume once (``monai.data.CacheDataset``).
        modalities: BraTS modalities (channels, in order); the default is
            :data:`~medlearn.data.brats.BRATS_MODALITIES`.
        test_fraction: fraction of cases held out as test when the source has no split column.
        foreground_threshold: crop threshold in normalised units (``None``: no crop).
        orientation: reorient to these axis codes (``None``: stored voxel order).
        fit: ``"pad_crop"`` or ``"resize"`` to ``spatial_size``.
        drop_last: drop the last incomplete training batch (default: for unlabeled pretraining).
        train_transform: optional callable on each training item dict (random augmentation),
            applied after the cache.

    Loaders: :class:`~medlearn.data.datamodule.SplitDataModule`'s, seeded with
    ``split_seed + 7919 * label_seed``.

    Raises:
        ValueError: an unknown ``task``, ``layout`` or ``normalisation``.
    """

    layout_kind = "volume"

    no_test_reason = "no 'test' rows and test_fraction is 0"

    def __init__(
        self,
        root: str,
        layout: str = "auto",
        task: str = "unlabeled",
        classes: list[str] | None = None,
        spatial_size: tuple[int, int, int] = (32, 32, 32),
        target_spacing: tuple[float, float, float] | None = None,
        normalisation: str = "ct",
        window: tuple[float, float] = (-100.0, 200.0),
        batch_size: int = 8,
        num_workers: int = 0,
        num_train: int | None = None,
        val_fraction: float = 0.15,
        split_seed: int = 0,
        label_seed: int = 0,
        cache: bool = True,
        modalities: tuple[str, ...] = ("t1", "t1ce", "t2", "flair"),
        test_fraction: float = 0.2,
        foreground_threshold: float | None = -0.9,
        orientation: str | None = None,
        fit: str = "pad_crop",
        drop_last: bool | None = None,
        train_transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(root)
        if task not in _TASKS:
            raise ValueError(f"task must be one of {_TASKS}, got {task!r}")
        check_layout_name(layout, KIND)
        if normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
        if not 0.0 <= test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
        self.save_hyperparameters(ignore=["train_transform"])
        self.root: Path = Path(root)
        self.train_transform = train_transform
        self._splits: dict[str, list[VolumeRecord]] | None = None
        self._class_names: list[str] | None = None

    # --- indexing ---

    @property
    def resolved_layout(self) -> str:
        """The layout ``"auto"`` resolves to (or the one given)."""
        if self.hparams.layout != "auto":
            return self.hparams.layout
        return detect_layout(self.root, KIND, default=FALLBACK_LAYOUT, modalities=self.hparams.modalities).name

    def _read_options(self) -> dict[str, Any]:
        h = self.hparams
        seg = h.task == "segmentation"  # masks required and their labels checked (BraTS)
        return {"classes": h.classes, "modalities": h.modalities, "require_seg": seg, "check_labels": seg}

    def _read_records(self) -> RecordSet[VolumeRecord]:
        if not self.root.exists():
            raise DataError(self.root, "dataset root does not exist")
        return get_layout(self.resolved_layout, KIND).read(self.root, **self._read_options())

    def layout_sources(self) -> list[LayoutSource]:
        """``root`` in its layout, with the options the reader gets (masks required only for segmentation)."""
        return [LayoutSource(self.root, KIND, self.resolved_layout, self._read_options())]

    def _index(self) -> dict[str, list[VolumeRecord]]:
        if self._splits is not None:
            return self._splits
        h = self.hparams
        found_set = self._read_records()
        records = found_set.records
        if h.task == "classification":
            missing = [f"{r.case}: no label" for r in records if r.label is None]
            if missing:
                raise DataError(self.root, f"classification needs a label for every volume; {len(missing)} have none",
                                missing)
            found = sorted({r.label for r in records if r.label is not None}, key=natural_key)
            names = list(h.classes) if h.classes else (list(found_set.class_names) if found_set.class_names else found)
            unknown = sorted(set(found) - set(names))
            if unknown:
                raise DataError(self.root, f"labels outside classes {names}", [f"unknown label {u!r}" for u in unknown])
            self._class_names = names
        elif h.task == "segmentation":
            missing = [f"{r.case}: no segmentation mask" for r in records if r.seg is None]
            if missing:
                raise DataError(self.root, f"segmentation needs a mask for every volume; {len(missing)} have none",
                                missing)
        has_split = any(r.split for r in records)
        test = [r for r in records if r.split == "test"]
        fixed_val = [r for r in records if r.split == "val"]
        pool = [r for r in records if r.split not in ("test", "val")]
        if not has_split and h.test_fraction > 0:
            pool, test = case_split(pool, h.test_fraction, h.split_seed + 1)
        if fixed_val:
            train, val = pool, fixed_val
        else:
            train, val = case_split(pool, h.val_fraction, h.split_seed)
        if h.num_train:
            train = _subsample(train, h.num_train, h.label_seed, self.root)
        if not train:
            raise DataError(self.root, "no training volumes after the split")
        self._splits = {"train": train, "val": val, "test": test}
        return self._splits

    @property
    def splits(self) -> dict[str, list[VolumeRecord]]:
        """``{"train", "val", "test"}`` -> records (indexes the data if needed; decodes nothing)."""
        return self._index()

    @property
    def class_names(self) -> list[str]:
        """Class names in label-index order (classification), else the label values' names.

        For segmentation on a layout that names its label values (BraTS); otherwise empty.
        """
        h = self.hparams
        if h.task == "classification":
            self._index()
            return list(self._class_names or [])
        if h.task == "segmentation":
            return list(get_layout(self.resolved_layout, KIND).label_names or [])
        return []

    @property
    def n_train(self) -> int:
        """Training volumes (after subsetting); indexes the data if needed (decodes nothing)."""
        return len(self._index()["train"])

    @property
    def n_channels(self) -> int:
        """Image channels, from the first training record (indexes the data if needed; decodes nothing).

        One per modality file of a multi-modal record (BraTS; the reader checks that each is 3D),
        else the fourth dimension of the volume's header (1 for a 3D volume).
        """
        record = self._index()["train"][0]
        if record.paths is not None:
            return len(record.paths)
        shape, _ = nifti_geometry(record.files[0])
        return shape[3] if len(shape) == 4 else 1

    def data_info(self) -> DataInfo:
        """What a model needs to know about this data (indexes it if needed; decodes no voxels).

        Returns:
            ``n_train``, ``input_size = spatial_size`` (``(D, H, W)``), ``in_channels``; for
            ``classification`` the class names, their number and the training volumes per class;
            for ``segmentation`` the layout's label values and names (BraTS: 0/1/2/4), when it
            defines them.
        """
        h = self.hparams
        train = self._index()["train"]
        common = DataInfo(n_train=len(train), input_size=tuple(int(v) for v in h.spatial_size),
                          in_channels=self.n_channels)
        if h.task == "classification":
            names = self.class_names
            index = {c: i for i, c in enumerate(names)}
            counts = [0] * len(names)
            for r in train:
                counts[index[str(r.label)]] += 1
            return replace(common, class_counts=counts, num_classes=len(names), class_names=names)
        if h.task == "segmentation":
            layout = get_layout(self.resolved_layout, KIND)
            values = list(layout.label_values) if layout.label_values is not None else None
            return replace(common, num_classes=len(values) if values is not None else None,
                           class_names=list(layout.label_names) if layout.label_names is not None else None,
                           label_values=values)
        return common

    # --- datasets ---

    def _transform(self, predict: bool = False) -> Compose:
        h = self.hparams
        return volume_transforms(
            seg_key="seg" if h.task == "segmentation" and not predict else None,
            normalisation=h.normalisation,
            window=h.window,
            target_spacing=h.target_spacing,
            orientation=h.orientation,
            spatial_size=h.spatial_size,
            foreground_threshold=h.foreground_threshold,
            fit=h.fit,
            affine_key="grid_affine" if predict else None,
        )

    def _items(self, records: Sequence[VolumeRecord], predict: bool = False) -> list[dict[str, Any]]:
        h = self.hparams
        index = {c: i for i, c in enumerate(self._class_names or [])}
        items = []
        for r in records:
            files = [str(p) for p in r.files]
            item: dict[str, Any] = {"image": files[0] if r.path is not None else files, "name": r.case}
            if predict:
                item["source"] = files[0]
            elif h.task == "classification":
                item["label"] = index[str(r.label)]
            elif h.task == "segmentation":
                item["seg"] = str(r.seg)
            items.append(item)
        return items

    def _dataset(self, records: Sequence[VolumeRecord], train: bool) -> VolumeDataset:
        return VolumeDataset(self._items(records), self._transform(), cache=self.hparams.cache,
                             train_transform=self.train_transform if train else None)

    def setup(self, stage: str | None = None) -> None:
        """Index the data once and build (and cache) the sets a stage needs; later calls reuse them.

        Fitting and validating build the train and validation sets, testing the test set,
        predicting the prediction set: the test cases without masks, with their source file and
        the preprocessed grid's affine (see the class docstring).
        """
        splits = self._index()
        if stage in (None, "fit", "validate") and self.train_set is None:
            self.train_set = self._dataset(splits["train"], train=True)
            self.val_set = self._dataset(splits["val"], train=False) if splits["val"] else None
        if stage in (None, "test") and self.test_set is None and splits["test"]:
            self.test_set = self._dataset(splits["test"], train=False)
        if stage == "predict" and self.predict_set is None and splits["test"]:
            self.predict_set = VolumeDataset(self._items(splits["test"], predict=True), self._transform(predict=True),
                                             cache=self.hparams.cache)


def _subsample(records: Sequence[VolumeRecord], n: int, seed: int, root: Path) -> list[VolumeRecord]:
    if n < 0:
        raise ValueError(f"num_train must be >= 0, got {n}")
    if n > len(records):
        raise DataError(root, f"asked for {n} training volumes but only {len(records)} are available")
    keep = np.sort(np.random.default_rng(seed).choice(len(records), size=n, replace=False))
    return [records[int(i)] for i in keep]
