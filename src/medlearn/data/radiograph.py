"""DataModule for 2D radiographs: unlabeled pretraining pools and multi-label classification.

Sources (``layout``): the layouts of kind ``radiograph`` in :mod:`medlearn.data.layouts`, reached
through the registry (this module imports no dataset reader). Built in:

- ``"chestxray14"`` (:mod:`medlearn.data.chestxray14`): a NIH ChestX-ray14 root
  (``Data_Entry_2017.csv``, ``train_val_list.txt``, ``test_list.txt``, ``images/`` or
  ``images_NNN/images/``). Pretraining uses the ``train_val`` images only, never ``test``;
  classification splits ``train_val`` by patient into train and validation and evaluates on the
  official ``test`` list.
- ``"folder"`` (registered here): any folder of images (PNG, JPEG, TIFF, DICOM), recursively;
  unlabeled only.
- ``"auto"``: the first layout that recognises the root (ChestX-ray14 when its table is
  present), otherwise a folder.

``num_train`` draws a fixed-size labelled subset (few-label experiments) from the training
patients with ``label_seed``, so different seeds give disjoint-ish, reproducible subsets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medlearn.data.datamodule import SplitDataModule
from medlearn.data.datasets import RadiographDataset
from medlearn.data.info import DataInfo
from medlearn.data.layouts import RecordSet, check_layout_name, detect_layout, get_layout, list_layouts, register_layout
from medlearn.data.records import ImageRecord, has_image_files, list_image_files
from medlearn.data.sampling import patient_split, subsample
from medlearn.io.errors import DataError

__all__ = ["RadiographDataModule"]

KIND = "radiograph"
#: The layout "auto" falls back to when none recognises the root (its reader says what is missing).
FALLBACK_LAYOUT = "folder"
#: The layout whose classes are the default class names.
CLASSES_LAYOUT = "chestxray14"


def _detect_folder(root: Path, **_: Any) -> bool:
    return has_image_files(root)


def _read_folder(root: Path, **_: Any) -> RecordSet[ImageRecord]:
    """Every image of the folder, unlabeled, each its own patient (a plain folder has no splits)."""
    root = Path(root)
    return RecordSet([ImageRecord(p, None, p.relative_to(root).as_posix(), p.name) for p in list_image_files(root)])


register_layout(
    "folder", _detect_folder, _read_folder, kind=KIND, priority=-5,
    description="any folder of images (PNG, JPEG, TIFF, BMP, DICOM; recursively), unlabeled",
    tasks=("unlabeled",),
)


class RadiographDataModule(SplitDataModule[RadiographDataset]):
    """Radiographs for pretraining (``task="unlabeled"``) or multi-label classification.

    Args:
        root: dataset folder.
        layout: ``"auto"`` or a ``radiograph`` layout (``"chestxray14"``, ``"folder"``).
        task: ``"unlabeled"`` (batches have ``image`` only) or ``"multilabel"``.
        classes: label names to use (default: the ChestX-ray14 layout's, all 14).
        image_size: side the images are resized to when decoded (and cached).
        batch_size: per-process batch size.
        num_workers: data-loader worker processes (keep threads x workers <= cores).
        num_train: size of the labelled training subset (``None``: all training images).
        val_fraction: fraction of training patients held out for validation (classification).
        split_seed: seed of the patient split.
        label_seed: seed of the ``num_train`` subset.
        cache: decode each image once and keep it in memory (see :class:`~medlearn.data.datasets.RadiographDataset`).
        drop_last: drop the last incomplete training batch (default: for unlabeled pretraining,
            where BatchNorm and the cross-rank shuffle want equal batches).

    Loaders: :class:`~medlearn.data.datamodule.SplitDataModule`'s, seeded with
    ``split_seed + 7919 * label_seed``. Unlabeled pretraining has no validation or test part (it
    never reads the test list).
    """

    layout_kind = "radiograph"

    no_test_reason = "unlabeled pretraining reads no test list; test with task='multilabel' on a labelled layout"

    def __init__(
        self,
        root: str,
        layout: str = "auto",
        task: str = "unlabeled",
        classes: list[str] | None = None,
        image_size: int = 256,
        batch_size: int = 64,
        num_workers: int = 0,
        num_train: int | None = None,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        label_seed: int = 0,
        cache: bool = True,
        drop_last: bool | None = None,
    ) -> None:
        super().__init__(root)
        if task not in ("unlabeled", "multilabel"):
            raise ValueError(f"task must be 'unlabeled' or 'multilabel', got {task!r}")
        check_layout_name(layout, KIND)
        # Not sent to the loggers: Lightning refuses to merge a module's and a datamodule's logged
        # hyper-parameters that share a name with different values, and a classifier's image_size
        # (network input, 224) differs from the data's (decode size, 256) in the paper-scale
        # configs. They still go into checkpoints; the run folder's config.yaml records both.
        self.save_hyperparameters(logger=False)
        self.root: Path = Path(root)
        self.class_names = list(classes) if classes else list(get_layout(CLASSES_LAYOUT, KIND).classes or ())

    @property
    def resolved_layout(self) -> str:
        """The layout ``"auto"`` resolves to (or the one given)."""
        if self.hparams.layout != "auto":
            return self.hparams.layout
        return detect_layout(self.root, KIND, default=FALLBACK_LAYOUT).name

    @property
    def n_train(self) -> int:
        """Training images (after subsetting); builds the training set if needed."""
        if self.train_set is None:
            self.setup("fit")
        assert self.train_set is not None
        return len(self.train_set)

    def data_info(self) -> DataInfo:
        """What a model needs to know about this data (builds the training set if needed).

        Returns:
            ``n_train``, ``input_size = (S, S)``, ``in_channels = 1``; for ``multilabel`` also the
            class names, their number and the positives per class in the training split.
        """
        n = self.n_train
        assert self.train_set is not None
        h = self.hparams
        labels = self.train_set.labels
        if h.task != "multilabel" or labels is None:
            return DataInfo(n_train=n, input_size=(h.image_size, h.image_size), in_channels=1)
        counts = labels.sum(dim=0).round().to(torch.int64).tolist()
        return DataInfo(n_train=n, class_counts=counts, num_classes=len(self.class_names),
                        class_names=list(self.class_names), input_size=(h.image_size, h.image_size), in_channels=1)

    def setup(self, stage: str | None = None) -> None:
        """Index the data and build the datasets, once (later stages reuse them and their caches)."""
        if self.train_set is not None:
            return
        h = self.hparams
        if not self.root.exists():
            raise DataError(self.root, "dataset root does not exist")
        layout = get_layout(self.resolved_layout, KIND)
        if h.task not in layout.tasks:  # only "multilabel" can be missing: every layout serves "unlabeled"
            labelled = "; ".join(f"{e.name} ({e.description})" for e in list_layouts(KIND) if h.task in e.tasks)
            raise DataError(self.root, f"multi-label classification needs a layout with labels: "
                                       f"{labelled or '(none)'}; the {layout.name!r} layout has none")
        if h.task == "unlabeled":
            items: list[Any] = [r.path for r in layout.read(self.root, split="train_val", classes=self.class_names)]
            if h.num_train:
                items = subsample(items, h.num_train, h.label_seed)
            self.train_set = RadiographDataset(items, h.image_size, cache=h.cache)
            return
        pool = layout.read(self.root, split="train_val", classes=self.class_names).records
        train, val = patient_split(pool, h.val_fraction, h.split_seed)
        if h.num_train:
            train = subsample(train, h.num_train, h.label_seed)
        self.train_set = RadiographDataset(train, h.image_size, cache=h.cache)
        self.val_set = RadiographDataset(val, h.image_size, cache=h.cache) if val else None
        self.test_set = RadiographDataset(layout.read(self.root, split="test", classes=self.class_names).records,
                                          h.image_size, cache=h.cache)
