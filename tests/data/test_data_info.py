"""``data_info()`` of every DataModule: what a model needs from the data, declared in one place."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medlearn.data import (
    ASOCTDataModule,
    DataInfo,
    LabelledImageDataModule,
    RadiographDataModule,
    VolumeDataModule,
)
from medlearn.data.manifest import HEADCT_CLASSES
from medlearn.synth.asoct import write_age
from medlearn.synth.brats import write_brats
from medlearn.synth.chestxray import write_chestxray14
from medlearn.synth.headct import write_headct
from medlearn.synth.isic import write_isic2018


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("info")


def test_data_info_checks_lengths() -> None:
    DataInfo(num_classes=2, class_counts=[3, 4], class_names=["a", "b"])
    with pytest.raises(ValueError, match="class_names has 1 entries for num_classes=2"):
        DataInfo(num_classes=2, class_names=["a"])
    info = DataInfo(n_train=3)
    assert info.num_classes is None and info.label_values is None
    with pytest.raises(AttributeError):
        info.n_train = 4  # type: ignore[misc]


def test_radiograph(root: Path) -> None:
    cxr = write_chestxray14(root / "cxr", n_images=30, size=16, seed=1)
    dm = RadiographDataModule(str(cxr), image_size=12, num_train=10)
    assert dm.data_info() == DataInfo(n_train=10, input_size=(12, 12), in_channels=1)
    assert dm.n_train == 10
    dm = RadiographDataModule(str(cxr), task="multilabel", classes=["Effusion", "Mass"], image_size=12)
    dm.setup("fit")
    info = dm.data_info()
    assert dm.train_set is not None and dm.train_set.labels is not None
    assert info.n_train == dm.n_train == len(dm.train_set)
    assert info.class_names == ["Effusion", "Mass"] and info.num_classes == 2
    assert info.class_counts == dm.train_set.labels.sum(0).to(torch.int64).tolist()
    assert info.input_size == (12, 12) and info.in_channels == 1 and info.label_values is None


def test_labelled2d(root: Path) -> None:
    isic = write_isic2018(root / "isic", counts="4,8,3,3,4,3,3", n_test_per_class=1, size=12, seed=1)
    dm = LabelledImageDataModule(str(isic), image_size=10, channels=1)
    dm.setup("fit")
    info = dm.data_info()
    assert info.n_train == len(dm.splits["train"]) and info.class_counts == dm.class_counts.tolist()
    assert sum(info.class_counts or []) == info.n_train and info.num_classes == dm.num_classes == 7
    assert info.class_names == dm.class_names and info.input_size == (10, 10) and info.in_channels == 1


def test_volumes(root: Path) -> None:
    hct = write_headct(root / "hct", n_volumes=12, size=16, seed=1)
    dm = VolumeDataModule(str(hct), layout="headct", task="classification", spatial_size=(8, 10, 12))
    info = dm.data_info()
    train = dm.splits["train"]
    assert info.n_train == len(train) == dm.n_train and info.class_names == list(HEADCT_CLASSES)
    assert info.class_counts == [sum(r.label == c for r in train) for c in HEADCT_CLASSES]
    assert info.input_size == (8, 10, 12) and info.in_channels == 1 and info.label_values is None
    assert VolumeDataModule(str(hct)).data_info().num_classes is None

    brats = write_brats(root / "brats", n_cases=4, size=16, seed=1)
    dm = VolumeDataModule(str(brats), task="segmentation", spatial_size=(8, 8, 8), test_fraction=0.0)
    info = dm.data_info()
    assert info.label_values == [0, 1, 2, 4] and info.num_classes == 4 and info.in_channels == 4
    assert info.class_names == ["background", "necrotic_core", "oedema", "enhancing"] and info.class_counts is None
    assert info.n_train == len(dm.splits["train"]) and dm.n_channels == 4


def test_asoct(root: Path) -> None:
    age = write_age(root / "age", n_scans=12, width=64, height=32, images_per_patient=2, table_format="csv", seed=1)
    dm = ASOCTDataModule(str(age), image_size=16, val_fraction=0.2, test_fraction=0.2)
    info = dm.data_info()
    assert dm.train_set is not None and info.n_train == len(dm.train_set) == 2 * len(dm.splits["train"])
    labels = [int(dm.train_set[i]["label"]) for i in range(len(dm.train_set))]
    assert info.class_counts == [labels.count(0), labels.count(1)] and info.class_names == ["open", "closed"]
    assert info.input_size == (16, 16) and info.in_channels == 1
