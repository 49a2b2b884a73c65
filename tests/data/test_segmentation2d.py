"""2D image + mask segmentation data: the mask table, mask decoding, resizing, splits, batches."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from medlearn.data import ImageMaskDataModule, read_mask_table
from medlearn.data.decode import load_mask, relabel_mask, resize_mask
from medlearn.data.layouts import detect_layout
from medlearn.io.errors import DataError

H, W = 10, 12


def _mask_array(i: int) -> np.ndarray:
    """Labels 0 / 1 / 2 in blocks whose position depends on i."""
    m = np.zeros((H, W), dtype=np.uint8)
    m[2:7, 1 + i % 4:8 + i % 4] = 1
    m[4:6, 3 + i % 4:5 + i % 4] = 2
    return m


def _write_pair(root: Path, i: int, image_dir: str = "img", mask_dir: str = "msk") -> tuple[str, str]:
    rng = np.random.default_rng(i)
    (root / image_dir).mkdir(parents=True, exist_ok=True)
    (root / mask_dir).mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(root / image_dir / f"im{i}.png")
    Image.fromarray(_mask_array(i)).save(root / mask_dir / f"im{i}.png")
    return f"{image_dir}/im{i}.png", f"{mask_dir}/im{i}.png"


@pytest.fixture
def table(tmp_path: Path) -> Path:
    """20 pairs of 10 patients, two domains, one test row fixed by the split column."""
    rows = []
    for i in range(20):
        image, mask = _write_pair(tmp_path, i)
        split = "test" if i in (0, 1) else ""
        rows.append(f"{image},{mask},p{i // 2},{split},{'A' if i % 4 < 2 else 'B'}")
    (tmp_path / "masks.csv").write_text("image,mask,patient_id,split,domain\n" + "\n".join(rows) + "\n")
    return tmp_path


def _dm(root: Path, **kwargs: object) -> ImageMaskDataModule:
    opts: dict[str, object] = dict(image_size=8, batch_size=4, val_fraction=0.25, test_fraction=0.0)
    opts.update(kwargs)
    return ImageMaskDataModule(str(root), **opts)  # type: ignore[arg-type]


def test_read_mask_table(table: Path) -> None:
    recs = read_mask_table(table / "masks.csv")
    assert len(recs) == 20 and recs[0].path == table / "img" / "im0.png" and recs[0].mask == table / "msk" / "im0.png"
    assert recs[3].group == "p1" and recs[0].split == "test" and recs[2].split == ""
    assert [r.domain for r in recs[:5]] == ["A", "A", "B", "B", "A"]
    # absolute paths are kept; without a group column every image is its own group
    (table / "abs.csv").write_text(f"image,mask\n{table / 'img' / 'im3.png'},msk/im3.png\n")
    (rec,) = read_mask_table(table / "abs.csv")
    assert rec.path == table / "img" / "im3.png" and rec.group == str(table / "img" / "im3.png") and rec.domain == ""


def test_table_errors_list_every_bad_row(table: Path) -> None:
    (table / "bad.csv").write_text("image,mask,split\nimg/im0.png,msk/im0.png,\nimg/nope.png,msk/im1.png,\n"
                                   "img/im2.png,msk/nope.png,\nimg/im0.png,msk/im0.png,\nimg/im3.png,,\n"
                                   "img/im4.png,msk/im4.png,later\n")
    with pytest.raises(DataError) as exc:
        read_mask_table(table / "bad.csv")
    probs = exc.value.problems
    assert exc.value.path == str(table / "bad.csv") and len(probs) == 5
    assert "line 3" in probs[0] and "image not found" in probs[0] and "nope.png" in probs[0]
    assert "line 4" in probs[1] and "mask not found" in probs[1]
    assert "duplicate image, first on line 2" in probs[2]
    assert "empty mask" in probs[3] and "unknown split 'later'" in probs[4]
    (table / "cols.csv").write_text("file,label\nimg/im0.png,msk/im0.png\n")
    with pytest.raises(DataError, match="missing required columns") as exc:
        read_mask_table(table / "cols.csv")
    assert exc.value.problems == ["missing column 'image'", "missing column 'mask'"]


def test_batches_keys_types_and_values(table: Path) -> None:
    dm = _dm(table, label_values=[0, 1, 2])
    dm.setup("fit")
    assert dm.resolved_layout == "mask-table"
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"image", "seg", "name", "domain", "orig_hw"}
    assert batch["orig_hw"].tolist() == [[H, W]] * 4  # the stored size, before resizing to 8 x 8
    assert batch["image"].shape == (4, 3, 8, 8) and batch["image"].dtype == torch.float32
    assert 0.0 <= float(batch["image"].min()) and float(batch["image"].max()) <= 1.0
    assert batch["seg"].shape == (4, 1, 8, 8) and batch["seg"].dtype == torch.int64
    assert set(batch["seg"].unique().tolist()) <= {0, 1, 2}
    assert isinstance(batch["name"], list) and isinstance(batch["domain"], list)
    assert set(batch["domain"]) <= {"A", "B"} and all(n.startswith("img/im") for n in batch["name"])
    assert dm.num_classes == 3 and dm.label_values == [0, 1, 2] and dm.class_names == ["0", "1", "2"]


@pytest.mark.parametrize("size", [(5, 7), (10, 12), (23, 31)])
def test_resizing_keeps_mask_values_exactly(table: Path, size: tuple[int, int]) -> None:
    dm = _dm(table, image_size=list(size), label_values=[0, 1, 2], test_fraction=0.0, val_fraction=0.0)
    dm.setup("fit")
    ds = dm.train_set
    assert ds is not None
    for k, rec in enumerate(ds.records[:4]):
        i = int(rec.name[len("img/im"):-len(".png")])
        item = ds[k]
        rows = np.floor((np.arange(size[0]) + 0.5) * H / size[0]).astype(int)
        cols = np.floor((np.arange(size[1]) + 0.5) * W / size[1]).astype(int)
        np.testing.assert_array_equal(item["seg"][0].numpy(), _mask_array(i)[np.ix_(rows, cols)])
        assert item["image"].shape == (3, *size)


def test_mask_resize_is_exact_for_large_values() -> None:
    mask = np.array([[0, 65535], [1000, 70000]], dtype=np.int64)
    out = resize_mask(mask, (4, 4))
    assert out.dtype == torch.int64 and set(out.unique().tolist()) == {0, 1000, 65535, 70000}


def test_splits_by_group_fixed_rows_and_seeds(table: Path) -> None:
    dm = _dm(table, test_fraction=0.2)
    dm.setup("fit")
    groups = {k: {r.group for r in v} for k, v in dm.splits.items()}
    assert [r.name for r in dm.splits["test"]] == ["img/im0.png", "img/im1.png"]  # the split column wins
    assert not (groups["train"] & groups["val"]) and not (groups["train"] & groups["test"])
    assert len(dm.splits["train"]) + len(dm.splits["val"]) == 18
    again = _dm(table, test_fraction=0.2)
    again.setup("fit")
    assert [r.name for r in again.splits["val"]] == [r.name for r in dm.splits["val"]]
    other = _dm(table, split_seed=5)
    other.setup("fit")
    assert [r.name for r in other.splits["val"]] != [r.name for r in dm.splits["val"]]
    sub = _dm(table, num_train=5, label_seed=1)
    sub.setup("fit")
    assert len(sub.splits["train"]) == 5 and {r.name for r in sub.splits["train"]} <= {
        r.name for r in dm.splits["train"]}


def test_deterministic_batches_for_a_seed(table: Path) -> None:
    def epochs(**kwargs: object) -> list[list[list[str]]]:
        dm = _dm(table, label_values=[0, 1, 2], **kwargs)
        dm.setup("fit")
        loader = dm.train_dataloader()
        out = []
        for epoch in range(2):
            loader.sampler.set_epoch(epoch)  # type: ignore[union-attr]
            out.append([b["name"] for b in loader])
        return out

    first = epochs()
    assert first == epochs() and first[0] != first[1]
    assert epochs(label_seed=3) != first
    dm1, dm2 = _dm(table, cache=True), _dm(table, cache=False)
    dm1.setup("fit")
    dm2.setup("fit")
    b1, b2 = next(iter(dm1.train_dataloader())), next(iter(dm2.train_dataloader()))
    assert b1["name"] == b2["name"] and torch.equal(b1["seg"], b2["seg"])
    assert float((b1["image"] - b2["image"]).abs().max()) <= 0.5 / 255 + 1e-6  # the uint8 cache


def test_label_value_errors_name_the_file_and_values(table: Path) -> None:
    m = _mask_array(5)
    m[0, :3] = 128  # anti-aliased edge
    Image.fromarray(m).save(table / "msk" / "im5.png")
    with pytest.raises(DataError) as exc:
        _dm(table, label_values=[0, 1, 2]).setup("fit")
    text = str(exc.value)
    assert "1 unusable image / mask pair" in text and "im5.png" in text and "128 (3 pixels)" in text
    dm = _dm(table, label_values=[0, 1, 2], check_masks=False, val_fraction=0.0)
    dm.setup("fit")  # not read yet
    ds = dm.train_set
    assert ds is not None
    k = next(k for k, r in enumerate(ds.records) if r.name == "img/im5.png")
    with pytest.raises(DataError, match=r"outside label_values \[0, 1, 2\]: 128 \(3 pixels\)") as exc:
        ds[k]
    assert exc.value.path == str(table / "msk" / "im5.png")
    with pytest.raises(DataError, match="value_map"):
        relabel_mask(m, "x.png", value_map={0: 0, 1: 1, 2: 2})


def test_value_map_refuge_style(tmp_path: Path) -> None:
    rows = []
    for i in range(6):
        image, mask = _write_pair(tmp_path, i)
        stored = np.choose(_mask_array(i), [255, 128, 0]).astype(np.uint8)  # REFUGE: 255 bg, 128 rim, 0 cup
        Image.fromarray(stored).save(tmp_path / mask)
        rows.append(f"{image},{mask}")
    (tmp_path / "masks.csv").write_text("image,mask\n" + "\n".join(rows) + "\n")
    dm = _dm(tmp_path, image_size=[H, W], value_map={255: 0, 128: 1, 0: 2}, val_fraction=0.0,
             class_names=["background", "disc", "cup"])
    dm.setup("fit")
    assert dm.label_values == [0, 1, 2] and dm.class_names == ["background", "disc", "cup"]
    ds = dm.train_set
    assert ds is not None
    for k, rec in enumerate(ds.records):
        i = int(rec.name[len("img/im"):-len(".png")])
        np.testing.assert_array_equal(ds[k]["seg"][0].numpy(), _mask_array(i))
    with pytest.raises(ValueError, match="outside label_values"):
        ImageMaskDataModule(str(tmp_path), value_map={255: 0, 128: 1, 0: 2}, label_values=[0, 1])
    with pytest.raises(DataError, match="not in value_map"):
        _dm(tmp_path, value_map={255: 0, 128: 1}).setup("fit")


def test_rgb_masks(tmp_path: Path) -> None:
    m = _mask_array(1)
    Image.fromarray(np.stack([m] * 3, axis=-1)).save(tmp_path / "equal.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "equal.png"), m)
    colour = np.stack([m, m, m], axis=-1)
    colour[0, 0] = (255, 0, 0)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(DataError, match="three equal channels; 1 pixels differ") as exc:
        load_mask(tmp_path / "colour.png")
    assert exc.value.path == str(tmp_path / "colour.png")


def test_sixteen_bit_and_nifti_masks(tmp_path: Path) -> None:
    m = _mask_array(2).astype(np.uint16) * 1000
    Image.fromarray(m).save(tmp_path / "m16.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "m16.png"), m)
    nib.save(nib.Nifti1Image(_mask_array(3).astype(np.int16), np.eye(4)), tmp_path / "m.nii.gz")
    np.testing.assert_array_equal(load_mask(tmp_path / "m.nii.gz"), _mask_array(3))
    nib.save(nib.Nifti1Image(_mask_array(3).astype(np.int16)[None], np.eye(4)), tmp_path / "m1.nii.gz")
    np.testing.assert_array_equal(load_mask(tmp_path / "m1.nii.gz"), _mask_array(3))
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3), np.int16), np.eye(4)), tmp_path / "vol.nii.gz")
    with pytest.raises(DataError, match="a 2D mask is expected"):
        load_mask(tmp_path / "vol.nii.gz")
    nib.save(nib.Nifti1Image(np.full((H, W), 0.5, np.float32), np.eye(4)), tmp_path / "frac.nii.gz")
    with pytest.raises(DataError, match="whole numbers"):
        load_mask(tmp_path / "frac.nii.gz")
    # a table of NIfTI masks with 16-bit values: found in the masks, kept exactly
    rows = []
    for i in range(4):
        image, _ = _write_pair(tmp_path / "ds", i)
        nib.save(nib.Nifti1Image(_mask_array(i).astype(np.int32) * 300, np.eye(4)), tmp_path / "ds" / f"m{i}.nii.gz")
        rows.append(f"{image},m{i}.nii.gz")
    (tmp_path / "ds" / "masks.csv").write_text("image,mask\n" + "\n".join(rows) + "\n")
    dm = _dm(tmp_path / "ds" / "masks.csv", image_size=[H, W], val_fraction=0.0)
    info = dm.data_info()
    assert info.label_values == [0, 300, 600] and info.num_classes == 3
    batch = next(iter(dm.train_dataloader()))
    assert set(batch["seg"].unique().tolist()) == {0, 300, 600}


def test_size_mismatch_names_both_files(table: Path) -> None:
    Image.fromarray(np.zeros((H + 1, W), np.uint8)).save(table / "msk" / "im7.png")
    with pytest.raises(DataError) as exc:
        _dm(table).setup("fit")
    text = str(exc.value)
    assert "img/im7.png: image is 12 x 10 but its mask" in text and "msk/im7.png is 12 x 11" in text
    dm = _dm(table, label_values=[0, 1, 2], check_masks=False, val_fraction=0.0)
    dm.setup("fit")
    ds = dm.train_set
    assert ds is not None
    k = next(k for k, r in enumerate(ds.records) if r.name == "img/im7.png")
    with pytest.raises(DataError, match="im7.png is 12 x 11") as exc:
        ds[k]
    assert exc.value.path == str(table / "img" / "im7.png")


def test_missing_files_and_root(table: Path) -> None:
    (table / "msk" / "im9.png").unlink()
    with pytest.raises(DataError, match="mask not found") as exc:
        _dm(table).setup("fit")
    assert "im9.png" in str(exc.value)
    with pytest.raises(DataError, match="does not exist"):
        _dm(table / "nowhere").setup("fit")


def test_domains_filter_and_gray(table: Path) -> None:
    dm = _dm(table, domains=["A"], channels=1, val_fraction=0.0)
    dm.setup("fit")
    assert {r.domain for r in dm.splits["train"]} == {"A"} and len(dm.splits["train"]) == 8  # 2 A rows are test
    batch = next(iter(dm.train_dataloader()))
    assert batch["domain"] == ["A"] * 4 and batch["image"].shape == (4, 1, 8, 8)
    with pytest.raises(DataError, match="no images of the domains"):
        _dm(table, domains=["C"]).setup("fit")


def test_data_info_and_layout(table: Path) -> None:
    dm = _dm(table, image_size=[6, 9], channels=1, class_names=["bg", "a", "b"], label_values=[0, 1, 2])
    info = dm.data_info()
    assert info.n_train == len(dm.splits["train"]) and info.input_size == (6, 9) and info.in_channels == 1
    assert info.label_values == [0, 1, 2] and info.num_classes == 3 and info.class_names == ["bg", "a", "b"]
    assert info.class_counts is None
    assert _dm(table).data_info().label_values == [0, 1, 2]  # found in the masks
    assert detect_layout(table, "segmentation2d").name == "mask-table"
    assert detect_layout(table / "masks.csv", "segmentation2d").name == "mask-table"
    with pytest.raises(DataError, match="not a recognised segmentation2d layout"):
        detect_layout(table / "img", "segmentation2d")
    with pytest.raises(ValueError, match="class_names"):
        ImageMaskDataModule(str(table), label_values=[0, 1], class_names=["a"])
    with pytest.raises(ValueError, match="layout must be 'auto', .*'mask-table'"):
        ImageMaskDataModule(str(table), layout="csv")
