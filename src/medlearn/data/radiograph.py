"""DataModule for 2D radiographs: unlabeled pretraining pools and multi-label classification.

Sources (``layout``):

- ``"chestxray14"``: a NIH ChestX-ray14 root (``Data_Entry_2017.csv``, ``train_val_list.txt``,
  ``test_list.txt``, ``images/`` or ``images_NNN/images/``). Pretraining uses the ``train_val``
  images only, never ``test``; classification splits ``train_val`` by patient into train and
  validation and evaluates on the official ``test`` list.
- ``"folder"``: any folder of images (PNG, JPEG, TIFF, DICOM), recursively; unlabeled only.
- ``"auto"``: ChestX-ray14 when the table is present, otherwise a folder.

``num_train`` draws a fixed-size labelled subset (few-label experiments) from the training
patients with ``label_seed``, so different seeds give disjoint-ish, reproducible subsets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from medlearn.data.chestxray14 import CHESTXRAY14_LABELS, read_chestxray14
from medlearn.data.datasets import RadiographDataset
from medlearn.data.records import list_image_files
from medlearn.data.sampling import patient_split, seeded_loader, subsample
from medlearn.io.errors import DataError

__all__ = ["RadiographDataModule"]


class RadiographDataModule(LightningDataModule):
    """Radiographs for pretraining (``task="unlabeled"``) or multi-label classification.

    Args:
        root: dataset folder.
        layout: ``"auto"``, ``"chestxray14"`` or ``"folder"``.
        task: ``"unlabeled"`` (batches have ``image`` only) or ``"multilabel"``.
        classes: label names to use (ChestX-ray14: default all 14).
        image_size: side the images are resized to when decoded (and cached).
        batch_size: per-process batch size.
        num_workers: data-loader worker processes (keep threads x workers <= cores).
        num_train: size of the labelled training subset (``None``: all training images).
        val_fraction: fraction of training patients held out for validation (classification).
        split_seed: seed of the patient split.
        label_seed: seed of the ``num_train`` subset.
        cache: decode each image once and keep it in memory (see :class:`RadiographDataset`).
        drop_last: drop the last incomplete training batch (default: for unlabeled pretraining,
            where BatchNorm and the cross-rank shuffle want equal batches).
    """

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
        super().__init__()
        if task not in ("unlabeled", "multilabel"):
            raise ValueError(f"task must be 'unlabeled' or 'multilabel', got {task!r}")
        if layout not in ("auto", "chestxray14", "folder"):
            raise ValueError(f"layout must be 'auto', 'chestxray14' or 'folder', got {layout!r}")
        self.save_hyperparameters()
        self.root = Path(root)
        self.class_names = list(classes) if classes else list(CHESTXRAY14_LABELS)
        self.train_set: RadiographDataset | None = None
        self.val_set: RadiographDataset | None = None
        self.test_set: RadiographDataset | None = None

    @property
    def resolved_layout(self) -> str:
        layout = self.hparams.layout
        if layout == "auto":
            layout = "chestxray14" if (self.root / "Data_Entry_2017.csv").is_file() else "folder"
        return layout

    @property
    def n_train(self) -> int:
        """Training images (after subsetting); builds the training set if needed."""
        if self.train_set is None:
            self.setup("fit")
        assert self.train_set is not None
        return len(self.train_set)

    def setup(self, stage: str | None = None) -> None:
        """Index the data and build the datasets, once (later stages reuse them and their caches)."""
        if self.train_set is not None:
            return
        h = self.hparams
        if not self.root.exists():
            raise DataError(self.root, "dataset root does not exist")
        layout = self.resolved_layout
        if h.task == "multilabel" and layout != "chestxray14":
            raise DataError(self.root, "multi-label classification needs a ChestX-ray14 layout "
                                       "(Data_Entry_2017.csv with the split lists)")
        if h.task == "unlabeled":
            if layout == "chestxray14":
                items: list[Any] = [r.path for r in read_chestxray14(self.root, "train_val", self.class_names)]
            else:
                items = list_image_files(self.root)
            if h.num_train:
                items = subsample(items, h.num_train, h.label_seed)
            self.train_set = RadiographDataset(items, h.image_size, cache=h.cache)
            return
        pool = read_chestxray14(self.root, "train_val", self.class_names)
        train, val = patient_split(pool, h.val_fraction, h.split_seed)
        if h.num_train:
            train = subsample(train, h.num_train, h.label_seed)
        self.train_set = RadiographDataset(train, h.image_size, cache=h.cache)
        self.val_set = RadiographDataset(val, h.image_size, cache=h.cache) if val else None
        self.test_set = RadiographDataset(read_chestxray14(self.root, "test", self.class_names),
                                          h.image_size, cache=h.cache)

    def _loader(self, ds: RadiographDataset, train: bool) -> DataLoader:
        h = self.hparams
        drop = h.drop_last if h.drop_last is not None else (h.task == "unlabeled")
        return seeded_loader(ds, h.batch_size, train, drop, h.num_workers, seed=h.split_seed + 7919 * h.label_seed)

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None
        return self._loader(self.train_set, True)

    def val_dataloader(self) -> Any:
        return [] if self.val_set is None else self._loader(self.val_set, False)

    def test_dataloader(self) -> DataLoader:
        if self.test_set is None:
            raise DataError(self.root, "no test split: the test list is needed for testing")
        return self._loader(self.test_set, False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
