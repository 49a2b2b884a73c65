"""The AGE reader (xlsx / csv), malformed tables, the angle dataset and the patient-grouped DataModule."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from medlearn.data.age_asoct import (
    AGE_COLUMNS,
    ASOCTAngleDataset,
    ASOCTDataModule,
    angle_view,
    find_age_table,
    list_asoct_images,
    patient_of,
    read_age,
)
from medlearn.data.image_view import views_to_source
from medlearn.io.errors import DataError
from medlearn.synth.asoct import write_age


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_age(tmp_path_factory.mktemp("age") / "Training100", n_scans=16, images_per_patient=4,
                     p_missing=0.15, seed=5)


@pytest.fixture
def root(source: Path, tmp_path: Path) -> Path:
    """A private copy to corrupt."""
    return Path(shutil.copytree(source, tmp_path / "Training100"))


def _table(root: Path) -> Path:
    return find_age_table(root)


def _edit(root: Path, edit) -> None:
    path = _table(root)
    df = pd.read_excel(path, dtype=object)
    df = edit(df)
    df.to_excel(path, index=False)


# ------------------------------------------------------------------------------------ happy paths


def test_reads_what_synth_wrote(source: Path) -> None:
    table = _table(source)
    assert table.name == "Training100_Location.xlsx"
    df = pd.read_excel(table)
    assert tuple(df.columns) == AGE_COLUMNS
    recs = read_age(source)
    assert [r.name for r in recs] == list(df["ASOCT_Name"])
    for r, (_, row) in zip(recs, df.iterrows()):
        assert (r.width, r.height) == (192, 96) and r.path.is_file()
        assert r.labels == (row.Left_Label, row.Right_Label)  # the right label is Right_Label, not a copy
        for k, (cx, cy) in enumerate((("X1", "Y1"), ("X2", "Y2"))):
            if row[cx] == -1:
                assert r.points[k] is None
            else:
                assert r.points[k] == (row[cx], row[cy])
    assert any(p is None for r in recs for p in r.points)  # some -1 spurs (p_missing)
    assert {r.labels[0] != r.labels[1] for r in recs} == {True, False}  # sides differ somewhere
    assert recs[0].patient == "T0001" and recs[4].patient == "T0002"


def test_csv_table_reads_the_same(source: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(source, tmp_path / "csv"))
    xlsx = _table(root)
    pd.read_excel(xlsx).to_csv(root / "AGE_Location.csv", index=False)
    xlsx.unlink()
    a, b = read_age(source), read_age(root)
    assert [(r.name, r.labels, r.points) for r in a] == [(r.name, r.labels, r.points) for r in b]


def test_patient_of() -> None:
    assert patient_of("T0056-10.jpg") == "T0056"
    assert patient_of("T0056_3.JPG") == "T0056"
    assert patient_of("scan.png") == "scan"


def test_table_discovery_errors(root: Path) -> None:
    shutil.copy(_table(root), root / "Other_Location.xlsx")
    with pytest.raises(DataError, match="more than one annotation table"):
        read_age(root)
    assert len(read_age(root, table="Other_Location.xlsx")) == 16
    empty = root / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no AGE annotation table"):
        read_age(empty)


def test_expected_size_is_checked_per_file(source: Path) -> None:
    assert len(read_age(source, expected_size=(192, 96))) == 16
    with pytest.raises(DataError) as e:
        read_age(source, expected_size=(2130, 998))
    assert len(e.value.problems) == 16 and "expected 2130 x 998" in e.value.problems[0]


# ------------------------------------------------------------------------------ malformed tables


def test_missing_columns_are_all_listed(root: Path) -> None:
    _edit(root, lambda df: df.drop(columns=["X2", "Right_Label"]))
    with pytest.raises(DataError, match="missing required columns") as e:
        read_age(root)
    assert e.value.problems == ["missing column 'Right_Label'", "missing column 'X2'"]


def test_every_bad_row_is_reported(root: Path) -> None:
    def corrupt(df: pd.DataFrame) -> pd.DataFrame:
        df.loc[1, "Left_Label"] = 2  # unknown label
        df.loc[2, "Right_Label"] = "closed"  # unknown label
        df.loc[3, "X1"] = 500.0  # outside the 192 x 96 image
        df.loc[4, "Y2"] = -1  # -1 in one coordinate only
        df.loc[4, "X2"] = 150.0
        df.loc[5, "ASOCT_Name"] = "T9999-01.jpg"  # absent image
        df.loc[6, "X1"] = 150.0  # the left spur in the right half
        df.loc[7, "ASOCT_Name"] = df.loc[0, "ASOCT_Name"]  # duplicate
        df.loc[8, "Y1"] = "abc"  # not a number
        return df

    _edit(root, corrupt)
    with pytest.raises(DataError, match="8 invalid rows") as e:
        read_age(root)
    probs = e.value.problems
    assert len(probs) == 8
    text = "\n".join(probs)
    for needle in ("line 3 ", "unknown Left_Label '2'", "unknown Right_Label 'closed'", "outside the 192 x 96 image",
                   "-1 marks an undetermined spur in both coordinates", "image T9999-01.jpg not found",
                   "not in the left half", "duplicate image name, first on line 2", "Y1 'abc' is not a number"):
        assert needle in text, needle
    assert str(_table(root)) in str(e.value)


def test_unreadable_image_is_a_row_problem(root: Path) -> None:
    name = read_age(root)[3].name
    (root / "ASOCT_Image" / name).write_bytes(b"not a jpeg")
    with pytest.raises(DataError) as e:
        read_age(root)
    assert len(e.value.problems) == 1 and name in e.value.problems[0] and "unreadable" in e.value.problems[0]


def test_empty_table_and_missing_folder(root: Path, tmp_path: Path) -> None:
    _edit(root, lambda df: df.iloc[:0])
    with pytest.raises(DataError, match="no rows"):
        read_age(root)
    with pytest.raises(DataError, match="does not exist"):
        read_age(tmp_path / "nope")


def test_list_images_without_a_table(source: Path, tmp_path: Path) -> None:
    recs = list_asoct_images(source)
    assert len(recs) == 16 and recs[0].labels is None and (recs[0].width, recs[0].height) == (192, 96)
    assert [r.name for r in list_asoct_images(source / "ASOCT_Image")] == [r.name for r in recs]
    assert len(list_asoct_images(source, expected_size=(192, 96))) == 16
    bad = Path(shutil.copytree(source / "ASOCT_Image", tmp_path / "imgs"))
    (bad / "T0001-01.jpg").write_bytes(b"xx")
    Image.new("L", (100, 96)).save(bad / "T0001-02.jpg")
    with pytest.raises(DataError, match="1 unusable"):
        list_asoct_images(bad)
    with pytest.raises(DataError, match="2 unusable") as e:
        list_asoct_images(bad, expected_size=(192, 96))
    assert "T0001-02.jpg: image is 100 x 96, expected 192 x 96" in e.value.problems


# -------------------------------------------------------------------------------- the dataset


def test_dataset_items_map_back_to_the_table_exactly(source: Path) -> None:
    recs = read_age(source)
    ds = ASOCTAngleDataset(recs, image_size=40)
    assert len(ds) == 32
    for i in range(len(ds)):
        item = ds[i]
        rec = recs[i // 2]
        assert item["image"].shape == (1, 40, 40) and 0 <= float(item["image"].min()) <= float(item["image"].max()) <= 1
        assert int(item["label"]) == rec.labels[i % 2]
        if rec.points[i % 2] is None:
            assert not item["has_point"] and torch.isnan(item["point"]).all()
            continue
        back = views_to_source(item["point"][None], item["view"][None])[0]
        assert back.tolist() == pytest.approx(list(rec.points[i % 2]), abs=1e-6)
        assert item["point_image"].tolist() == list(rec.points[i % 2])


def test_dataset_view_pixels_are_the_mirrored_half(source: Path) -> None:
    rec = read_age(source)[0]
    scan = torch.from_numpy(np.asarray(Image.open(rec.path), dtype=np.float32) / 255.0)
    ds = ASOCTAngleDataset([rec], image_size=96, cache=False)  # halves are 96 x 96: no resize
    assert torch.allclose(ds[0]["image"][0], scan[:, :96], atol=1e-6)
    assert torch.allclose(ds[1]["image"][0], scan[:, 96:].flip(-1), atol=1e-6)
    cached = ASOCTAngleDataset([rec], image_size=96, cache=True)
    assert (cached[1]["image"] - ds[1]["image"]).abs().max() <= 0.5 / 255 + 1e-6
    assert angle_view("right", 192, 96, 96).to_view(rec.points[1]).tolist() == ds[1]["point"].tolist()


def test_datamodule_splits_by_patient(source: Path, tmp_path: Path) -> None:
    dm = ASOCTDataModule(str(source), image_size=32, batch_size=4, val_fraction=0.25, test_fraction=0.25)
    dm.setup("fit")
    patients = {k: {r.patient for r in v} for k, v in dm.splits.items()}
    assert all(patients.values())
    assert not (patients["train"] & patients["val"]) and not (patients["train"] & patients["test"])
    assert not (patients["val"] & patients["test"])
    assert sum(len(v) for v in dm.splits.values()) == 16
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 1, 32, 32) and batch["view"].shape == (4, 6)
    # prediction on a folder of new scans, without a table
    pred = ASOCTDataModule(None, predict_root=str(source / "ASOCT_Image"), image_size=32, batch_size=8)
    pred.setup("predict")
    b = next(iter(pred.predict_dataloader()))
    assert b["image"].shape == (8, 1, 32, 32) and (b["label"] == -1).all() and not b["has_point"].any()
    with pytest.raises(ValueError, match="give root"):
        ASOCTDataModule(None)
