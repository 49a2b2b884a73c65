"""ISIC 2018 Task 3 reader on phantoms written in the layout, and on malformed tables."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from medlearn.data import ISIC2018_CLASSES, LabelledImageDataModule, find_isic2018, read_isic2018
from medlearn.io.errors import DataError
from medlearn.synth.isic import write_isic2018

GT = "ISIC2018_Task3_Training_GroundTruth/ISIC2018_Task3_Training_GroundTruth.csv"


@pytest.fixture(scope="module")
def isic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_isic2018(tmp_path_factory.mktemp("isic") / "ds", counts="8,20,6,6,8,4,4", n_test_per_class=2,
                          size=16, seed=2)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_reads_labels_in_column_order_and_lesion_groups(isic: Path) -> None:
    recs = read_isic2018(isic)
    df = pd.read_csv(isic / GT)
    assert list(df.columns) == ["image", *ISIC2018_CLASSES] and len(recs) == len(df) == 56
    for r, (_, row) in zip(recs, df.iterrows()):
        assert r.name == row["image"] and r.path.name == f"{r.name}.jpg"
        assert r.label == int(row[list(ISIC2018_CLASSES)].to_numpy().argmax())
    counts = [sum(r.label == k for r in recs) for k in range(7)]
    assert counts == [8, 20, 6, 6, 8, 4, 4]
    lesions = pd.read_csv(isic / "ISIC2018_Task3_Training_LesionGroupings.csv")
    assert {r.group for r in recs} == set(lesions["lesion_id"]) and len(set(lesions["lesion_id"])) < len(recs)
    test = read_isic2018(isic, "Test")
    assert len(test) == 14 and all(r.group == r.name for r in test)
    assert find_isic2018(isic, "Validation") is None


def test_datamodule_uses_official_test_and_splits_training_by_lesion(isic: Path) -> None:
    dm = LabelledImageDataModule(str(isic), image_size=16, channels=3, batch_size=8, val_fraction=0.2)
    dm.setup("fit")
    assert dm.resolved_layout == "isic2018" and dm.class_names == list(ISIC2018_CLASSES)
    assert len(dm.splits["test"]) == 14 and len(dm.splits["train"]) + len(dm.splits["val"]) == 56
    assert not ({r.group for r in dm.splits["train"]} & {r.group for r in dm.splits["val"]})
    assert next(iter(dm.train_dataloader()))["image"].shape == (8, 3, 16, 16)


def test_malformed_ground_truth_lists_every_bad_row(isic: Path, tmp_path: Path) -> None:
    root = _copy(isic, tmp_path / "bad")
    csv = root / GT
    lines = csv.read_text().splitlines()
    name1 = lines[1].split(",")[0]
    lines[2] = lines[2].split(",")[0] + ",1.0,1.0,0.0,0.0,0.0,0.0,0.0"  # two ones
    lines[3] = lines[3].split(",")[0] + ",0.0,0.0,0.0,0.0,0.0,0.0,0.0"  # all zero
    lines[4] = lines[4].split(",")[0] + ",x,1.0,0.0,0.0,0.0,0.0,0.0"  # not a number
    lines[5] = "ISIC_9999999,0.0,1.0,0.0,0.0,0.0,0.0,0.0"  # absent image
    lines.append(lines[1])  # duplicate
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as e:
        read_isic2018(root)
    p = e.value.problems
    assert len(p) == 5, p
    assert "line 3" in p[0] and "not one-hot" in p[0]
    assert "line 4" in p[1] and "not one-hot" in p[1]
    assert "MEL='x' is not a number" in p[2]
    assert "ISIC_9999999" in p[3] and "not found" in p[3]
    assert f"({name1}): duplicate image, first on line 2" in p[4]


def test_missing_and_unknown_class_columns(isic: Path, tmp_path: Path) -> None:
    root = _copy(isic, tmp_path / "cols")
    df = pd.read_csv(root / GT)
    df.drop(columns=["DF"]).rename(columns={"VASC": "SCC"}).to_csv(root / GT, index=False)
    with pytest.raises(DataError) as e:
        read_isic2018(root)
    assert e.value.problems == ["missing column 'DF'", "missing column 'VASC'",
                                "unknown class column 'SCC' (ISIC 2018 classes: MEL, NV, BCC, AKIEC, BKL, DF, VASC)"]


def test_bad_groupings_and_missing_layout(isic: Path, tmp_path: Path) -> None:
    root = _copy(isic, tmp_path / "grp")
    g = root / "ISIC2018_Task3_Training_LesionGroupings.csv"
    g.write_text(g.read_text() + "ISIC_7777777,HAM_1,histo\n")
    with pytest.raises(DataError, match="1 invalid rows") as e:
        read_isic2018(root)
    assert "ISIC_7777777" in e.value.problems[0]
    with pytest.raises(DataError, match="ground truth not found"):
        read_isic2018(tmp_path)
