"""Tests for the ChestX-ray14 reader (Wang et al., "ChestX-ray8", CVPR 2017) and RadiographDataset."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import medlearn.io
from medlearn.data.chestxray14 import CHESTXRAY14_LABELS, read_chestxray14
from medlearn.data.datasets import RadiographDataset
from medlearn.data.records import ImageRecord, list_image_files
from medlearn.data.sampling import patient_split, subsample
from medlearn.io.errors import DataError
from medlearn.synth.chestxray import write_chestxray14

CSV = "Data_Entry_2017.csv"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_chestxray14(tmp_path_factory.mktemp("cxr") / "ds", n_images=40, size=32, seed=11)


@pytest.fixture
def root(source: Path, tmp_path: Path) -> Path:
    """A private copy to corrupt."""
    return Path(shutil.copytree(source, tmp_path / "ds"))


def _edit_csv(root: Path, edit: Any) -> None:
    lines = (root / CSV).read_text().splitlines()
    (root / CSV).write_text("\n".join(edit(lines)) + "\n")


def _problems(exc: pytest.ExceptionInfo[DataError]) -> list[str]:
    return exc.value.problems


# --------------------------------------------------------------------------------- happy paths


def test_round_trips_the_labels_synth_wrote(source: Path) -> None:
    df = pd.read_csv(source / CSV)
    records = read_chestxray14(source, split="all")
    assert [r.name for r in records] == list(df["Image Index"])
    for rec, (_, row) in zip(records, df.iterrows()):
        names = set(row["Finding Labels"].split("|")) - {"No Finding"}
        expected = np.array([c in names for c in CHESTXRAY14_LABELS], dtype=np.float32)
        assert rec.labels is not None and rec.labels.dtype == np.float32
        np.testing.assert_array_equal(rec.labels, expected)
        assert rec.patient == str(row["Patient ID"]) and rec.path.is_file()
    assert sum(r.labels.sum() for r in records) > 0  # type: ignore[union-attr]


def test_official_splits_partition_the_table_by_patient(source: Path) -> None:
    train = read_chestxray14(source, split="train_val")
    test = read_chestxray14(source, split="test")
    assert len(train) + len(test) == 40 and len(test) == 10
    assert not {r.patient for r in train} & {r.patient for r in test}
    assert {r.name for r in train} == set((source / "train_val_list.txt").read_text().split())


def test_class_subset_in_the_given_order(source: Path) -> None:
    full = read_chestxray14(source, split="all")
    sub = read_chestxray14(source, split="all", classes=["Nodule", "Cardiomegaly"])
    i, j = CHESTXRAY14_LABELS.index("Nodule"), CHESTXRAY14_LABELS.index("Cardiomegaly")
    for a, b in zip(full, sub):
        assert b.labels is not None and b.labels.shape == (2,)
        np.testing.assert_array_equal(b.labels, a.labels[[i, j]])  # type: ignore[index]


def test_finds_images_in_the_official_subfolders(root: Path) -> None:
    names = sorted(p.name for p in (root / "images").iterdir())
    for k, name in enumerate(names):
        folder = root / f"images_{1 + k % 2:03d}" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.move(root / "images" / name, folder / name)
    (root / "images").rmdir()
    records = read_chestxray14(root, split="all")
    assert len(records) == 40 and all(r.path.is_file() for r in records)
    assert {r.path.parent.parent.name for r in records} == {"images_001", "images_002"}


def test_v2020_table_name_is_accepted(root: Path) -> None:
    (root / CSV).rename(root / "Data_Entry_2017_v2020.csv")
    assert len(read_chestxray14(root, split="all")) == 40


# ------------------------------------------------------------------------------ malformed input


def test_missing_table(root: Path) -> None:
    (root / CSV).unlink()
    with pytest.raises(DataError, match=CSV):
        read_chestxray14(root)


def test_missing_columns(root: Path) -> None:
    df = pd.read_csv(root / CSV).drop(columns=["Finding Labels", "Patient ID"])
    df.to_csv(root / CSV, index=False)
    with pytest.raises(DataError, match="missing required columns") as exc:
        read_chestxray14(root)
    assert len(_problems(exc)) == 2 and "Patient ID" in str(exc.value)


def test_unknown_finding_names_every_row(root: Path) -> None:
    bad_rows = [3, 10, 25]  # line numbers (header is line 1)

    def edit(lines: list[str]) -> list[str]:
        for n in bad_rows:
            cells = lines[n - 1].split(",")
            cells[1] = "Nodule|Bronchitis|Croup" if n == 3 else "Flu"  # line 3: two unknowns, one bad row
            lines[n - 1] = ",".join(cells)
        return lines

    _edit_csv(root, edit)
    with pytest.raises(DataError) as exc:
        read_chestxray14(root)
    assert len(_problems(exc)) == 3
    assert all(f"line {n} " in p for n, p in zip(bad_rows, _problems(exc)))
    assert all(word in str(exc.value) for word in ("Bronchitis", "Croup", "Flu"))


def test_unknown_class_selection(source: Path) -> None:
    with pytest.raises(DataError) as exc:
        read_chestxray14(source, classes=["Nodule", "Covid", "Flu"])
    assert len(_problems(exc)) == 2


def test_duplicated_names_every_row(root: Path) -> None:
    _edit_csv(root, lambda lines: lines + [lines[1], lines[5]])
    with pytest.raises(DataError, match="invalid rows") as exc:
        read_chestxray14(root, split="all")
    assert len(_problems(exc)) == 2 and all("duplicate" in p for p in _problems(exc))


def test_rows_naming_absent_images_every_row(root: Path) -> None:
    names = sorted(p.name for p in (root / "images").iterdir())
    for name in names[::10]:
        (root / "images" / name).unlink()
    with pytest.raises(DataError, match="missing") as exc:
        read_chestxray14(root, split="all")
    assert len(_problems(exc)) == 4
    assert all(n in str(exc.value) for n in names[::10])
    assert len(read_chestxray14(root, split="all", check_files=False)) == 40


def test_split_names_absent_from_the_table_every_line(root: Path) -> None:
    with (root / "test_list.txt").open("a") as f:
        f.write("99999999_000.png\n99999998_000.png\n99999997_001.png\n")
    with pytest.raises(DataError) as exc:
        read_chestxray14(root, split="test")
    assert exc.value.path == str(root / "test_list.txt")
    assert len(_problems(exc)) == 3
    read_chestxray14(root, split="train_val")  # the other list is fine


def test_patient_in_both_lists_warns(root: Path) -> None:
    moved = (root / "train_val_list.txt").read_text().split()[0]
    with (root / "test_list.txt").open("a") as f:
        f.write(moved + "\n")
    with pytest.warns(UserWarning, match="both"):
        read_chestxray14(root, split="test")


# -------------------------------------------------------------------------- folders and splits


def test_list_image_files(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    for rel in ["x.png", "a/y.JPG", "a/b/z.dcm", "a/b/w.tiff", "notes.txt", "._x.png", ".hidden/q.png"]:
        (tmp_path / rel).write_bytes(b"")
    got = [p.relative_to(tmp_path).as_posix() for p in list_image_files(tmp_path)]
    assert got == ["a/b/w.tiff", "a/b/z.dcm", "a/y.JPG", "x.png"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        list_image_files(tmp_path / "empty")
    with pytest.raises(DataError):
        list_image_files(tmp_path / "absent")


def test_patient_split_is_deterministic_and_disjoint(source: Path) -> None:
    records = read_chestxray14(source, split="all")
    train, val = patient_split(records, val_fraction=0.25, seed=0)
    assert len(train) + len(val) == len(records) and val
    assert not {r.patient for r in train} & {r.patient for r in val}
    n_patients = len({r.patient for r in records})
    assert len({r.patient for r in val}) == round(0.25 * n_patients)
    again = patient_split(records, val_fraction=0.25, seed=0)
    assert [r.name for r in again[1]] == [r.name for r in val]
    assert [r.name for r in patient_split(records, 0.25, seed=1)[1]] != [r.name for r in val]
    assert patient_split(records, 0.0, seed=0)[1] == []
    with pytest.raises(ValueError):
        patient_split(records, 1.0, seed=0)


def test_subsample(source: Path) -> None:
    records = read_chestxray14(source, split="all")
    a, b = subsample(records, 7, seed=3), subsample(records, 7, seed=3)
    assert [r.name for r in a] == [r.name for r in b] and len(a) == 7
    assert [r.name for r in a] == sorted(r.name for r in a)  # input order kept
    assert len({r.name for r in a}) == 7
    with pytest.raises(DataError, match="only 40"):
        subsample(records, 41, seed=0)


# ---------------------------------------------------------------------------------- the dataset


def _pillow_read_image(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Stand-in for medlearn.io.read_image while that module is not there yet."""
    with Image.open(path) as im:
        arr = np.asarray(im)
    bits = 16 if arr.dtype == np.uint16 or im.mode.startswith("I;16") else 8
    arr = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
    return arr.astype(np.float32), {"format": "png", "bit_depth": bits}


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Count read_image calls (real reader if present, else a Pillow stand-in)."""
    real = getattr(medlearn.io, "read_image", None) or _pillow_read_image
    seen: list[Path] = []

    def counting(path: str | Path, *args: Any, **kwargs: Any) -> Any:
        seen.append(Path(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(medlearn.io, "read_image", counting, raising=False)
    return seen


def test_dataset_items(source: Path, calls: list[Path]) -> None:
    records = read_chestxray14(source, split="all")
    ds = RadiographDataset(records, image_size=16, cache=False)
    assert len(ds) == 40 and ds.n_classes == 14
    item = ds[0]
    assert set(item) == {"image", "label", "name"}
    assert item["image"].shape == (1, 16, 16) and item["image"].dtype == torch.float32
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0 and item["image"].max() > 0.3
    assert item["label"].shape == (14,) and item["label"].dtype == torch.float32
    np.testing.assert_array_equal(item["label"].numpy(), records[0].labels)
    assert item["name"] == records[0].name
    # 32 -> 16 is an exact 2x2 area mean of the PNG / 255
    with Image.open(records[0].path) as im:
        png = np.asarray(im).astype(np.float32) / 255.0
    np.testing.assert_allclose(item["image"][0].numpy(), png.reshape(16, 2, 16, 2).mean(axis=(1, 3)), atol=1e-6)
    up = RadiographDataset(records[:2], image_size=48, cache=False)[1]["image"]
    assert up.shape == (1, 48, 48) and 0.0 <= up.min() and up.max() <= 1.0


def test_unlabeled_folder(source: Path, calls: list[Path]) -> None:
    ds = RadiographDataset(list_image_files(source / "images"), image_size=32)
    item = ds[-1]
    assert "label" not in item and ds.n_classes == 0 and item["image"].shape == (1, 32, 32)


def test_cache_decodes_each_file_once(source: Path, calls: list[Path]) -> None:
    records = read_chestxray14(source, split="all")[:6]
    ds = RadiographDataset(records, image_size=16, cache=True)
    assert ds.cache_bytes == 6 * 16 * 16
    first = [ds[i]["image"] for i in range(6)]
    second = [ds[i]["image"] for i in range(6)] + [ds[i]["image"] for i in range(6)]
    assert sorted(calls) == sorted(r.path for r in records)
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    plain = RadiographDataset(records, image_size=16, cache=False)
    for i in range(6):  # uint8 cache: within half a grey level of the uncached value
        assert torch.allclose(plain[i]["image"], first[i], atol=0.5 / 255 + 1e-6)
    ds.fill_cache()
    assert len(calls) == 6 + 6


def test_colour_and_16bit_images(tmp_path: Path, calls: list[Path]) -> None:
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    rgb[..., 0] = 255  # mean over channels -> 1/3
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16)).save(tmp_path / "w16.png")
    ds = RadiographDataset([tmp_path / "rgb.png", tmp_path / "w16.png"], image_size=4, cache=False)
    assert torch.allclose(ds[0]["image"], torch.full((1, 4, 4), 1 / 3), atol=1e-4)
    assert torch.allclose(ds[1]["image"], torch.ones(1, 4, 4), atol=1e-4)


def test_unreadable_file_is_a_data_error_naming_it(tmp_path: Path, calls: list[Path]) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not a png")
    ds = RadiographDataset([bad], image_size=8)
    with pytest.raises(DataError, match="broken.png"):
        ds[0]


def test_records_must_agree(tmp_path: Path) -> None:
    a = ImageRecord(tmp_path / "a.png", np.zeros(2, np.float32), "1", "a.png")
    b = ImageRecord(tmp_path / "b.png", None, "2", "b.png")
    with pytest.raises(ValueError, match="mix"):
        RadiographDataset([a, b], image_size=8)
    with pytest.raises(ValueError):
        RadiographDataset([], image_size=8)


def test_to_unit_range_per_bit_depth() -> None:
    from medlearn.data.decode import to_unit_range

    x = np.array([[0.0, 255.0]], dtype=np.float32)
    np.testing.assert_allclose(to_unit_range(x, {"bit_depth": 8}, "a.png"), [[0.0, 1.0]])
    np.testing.assert_allclose(to_unit_range(x, {"bit_depth": 16}, "a.png"), [[0.0, 255 / 65535]], rtol=1e-6)
    np.testing.assert_allclose(to_unit_range(x * 16, {"bit_depth": 12}, "a.tif"), [[0.0, 4080 / 4095]], rtol=1e-6)
    dcm = np.array([[100.0, 300.0, 200.0]], dtype=np.float32)  # DICOM: min-max over the image
    np.testing.assert_allclose(to_unit_range(dcm, {"format": "dicom", "bit_depth": 16}, "x.dcm"), [[0, 1, 0.5]])
    np.testing.assert_allclose(to_unit_range(dcm - 500, {"bit_depth": 32}, "f.tif"), [[0, 1, 0.5]])
    np.testing.assert_allclose(to_unit_range(x, {}, "a.png"), [[0.0, 1.0]])  # no depth given: 8-bit by value
    with pytest.raises(DataError, match="NaN"):
        to_unit_range(np.array([np.nan], dtype=np.float32), {}, "n.png")
