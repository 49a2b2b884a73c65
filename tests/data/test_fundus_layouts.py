"""REFUGE and Drishti-GS readers on phantoms written in their layouts and on malformed copies; the
disc-centred ROI (crop, paste back, mask / table / detector centres) on phantoms and on a real fundus photo."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medlearn.data.decode import resize_mask
from medlearn.data.drishti import DrishtiMask, binarize_softmap, read_drishti
from medlearn.data.layouts import detect_layout
from medlearn.data.refuge import REFUGE_VALUE_MAP, RefugeMask, read_refuge
from medlearn.data.roi import (
    DiscROI,
    crop_pad,
    detect_disc_centre,
    mask_disc_centre,
    paste_box,
    read_disc_centres,
    roi_box,
)
from medlearn.data.segmentation2d import ImageMaskDataModule, ImageMaskDataset
from medlearn.io.errors import DataError
from medlearn.synth.fundus import write_drishti, write_refuge


@pytest.fixture(scope="module")
def refuge(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_refuge(tmp_path_factory.mktemp("refuge") / "refuge", n_train=10, n_target=4, n_test=6,
                        n_source_test=3, seed=2)


@pytest.fixture(scope="module")
def drishti(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_drishti(tmp_path_factory.mktemp("drishti") / "drishti", n_train=4, n_test=3, seed=2)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# --- REFUGE --------------------------------------------------------------------------------------
def test_refuge_reader_parts_domains_and_labels(refuge: Path) -> None:
    recs = read_refuge(refuge)
    assert [sum(r.split == s for r in recs) for s in ("train", "val", "test")] == [10, 4, 6]
    assert {r.domain for r in recs if r.split == "train"} == {"zeiss"}
    assert {r.domain for r in recs if r.split != "train"} == {"canon"}
    train = [r for r in recs if r.split == "train"]
    assert all(r.name.startswith("Training400/") and r.path.is_file() for r in train)
    assert all(isinstance(r.mask, RefugeMask) for r in recs)
    stored = np.asarray(Image.open(Path(str(recs[0].mask))))
    labels = recs[0].mask.load()  # type: ignore[union-attr]
    assert set(np.unique(stored)) <= {0, 128, 255}
    for value, label in REFUGE_VALUE_MAP.items():
        assert (labels[stored == value] == label).all()
    assert detect_layout(refuge, "segmentation2d").name == "refuge"


def test_refuge_datamodule_uses_the_challenge_parts(refuge: Path) -> None:
    dm = ImageMaskDataModule(str(refuge), layout="refuge", image_size=32, label_values=[0, 1, 2], batch_size=4)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (10, 4, 6)
    batch = next(iter(dm.train_dataloader()))
    assert batch["seg"].unique().tolist() == [0, 1, 2] and set(batch["domain"]) == {"zeiss"}


def test_refuge_unknown_mask_values_are_listed_for_every_file(refuge: Path, tmp_path: Path) -> None:
    root = _copy(refuge, tmp_path / "r")
    bad = sorted((root / "REFUGE-Test-GT").rglob("*.bmp"))[:2]
    for p in bad:
        a = np.asarray(Image.open(p)).copy()
        a[0, :3] = 7  # an unknown value
        Image.fromarray(a).save(p)
    dm = ImageMaskDataModule(str(root), layout="refuge", image_size=32, label_values=[0, 1, 2])
    with pytest.raises(DataError) as exc:
        dm.setup("fit")
    assert len(exc.value.problems) == 2
    for p in bad:
        assert any(str(p) in line and "7 (3 pixels)" in line for line in exc.value.problems)
    # the threshold rule reads them (disc <= 150, cup <= 100)
    recs = read_refuge(root, mask_rule="threshold")
    lab = next(r for r in recs if str(r.mask) == str(bad[0])).mask.load()  # type: ignore[union-attr]
    assert (lab[0, :3] == 2).all()


def test_refuge_mask_of_another_size_than_its_image_is_listed(refuge: Path, tmp_path: Path) -> None:
    root = _copy(refuge, tmp_path / "r")
    masks = sorted((root / "Annotation-Training400").rglob("*.bmp"))[:3]
    for p in masks:
        Image.fromarray(np.asarray(Image.open(p))[:40]).save(p)
    dm = ImageMaskDataModule(str(root), layout="refuge", image_size=32, label_values=[0, 1, 2])
    with pytest.raises(DataError, match="3 unusable image / mask pairs") as exc:
        dm.setup("fit")
    assert all("48 x 48" in line and "48 x 40" in line for line in exc.value.problems)


def test_refuge_missing_files_are_listed(refuge: Path, tmp_path: Path) -> None:
    root = _copy(refuge, tmp_path / "r")
    gone_mask = sorted((root / "Annotation-Training400").rglob("*.bmp"))[0]
    gone_mask.unlink()
    gone_image = sorted((root / "Test400").glob("*.jpg"))[0]
    gone_image.unlink()
    with pytest.raises(DataError, match="2 unpaired images or masks") as exc:
        read_refuge(root)
    text = "\n".join(exc.value.problems)
    assert gone_mask.stem in text and "no mask" in text and "mask without an image" in text
    with pytest.raises(DataError, match="not a REFUGE folder"):
        read_refuge(tmp_path / "empty")


# --- Drishti-GS ----------------------------------------------------------------------------------
def test_binarisation_rules_on_expert_levels() -> None:
    levels = np.array([0, 64, 127, 128, 191, 255]) / 255.0  # 0..4 of 4 experts, 2/4 stored either way
    assert binarize_softmap(levels, "any").tolist() == [False, True, True, True, True, True]
    assert binarize_softmap(levels, "majority").tolist() == [False, False, True, True, True, True]
    assert binarize_softmap(levels, "all").tolist() == [False, False, False, False, False, True]
    assert binarize_softmap(levels, 0.7).tolist() == [False, False, False, False, True, True]
    with pytest.raises(ValueError, match="binarize"):
        binarize_softmap(levels, "most")


def test_drishti_reader_and_rules(drishti: Path) -> None:
    recs = read_drishti(drishti)
    assert [r.split for r in recs] == ["train"] * 4 + ["test"] * 3 and {r.domain for r in recs} == {"drishti"}
    assert detect_layout(drishti, "segmentation2d").name == "drishti"
    assert read_drishti(drishti / "Drishti-GS1_files")[0].path == recs[0].path
    areas = {}
    for rule in ("any", "majority", "all"):
        m = read_drishti(drishti, binarize=rule)[0].mask
        assert isinstance(m, DrishtiMask)
        lab = m.load()
        assert set(np.unique(lab)) <= {0, 1, 2}
        areas[rule] = int((lab >= 1).sum())
    assert areas["any"] >= areas["majority"] >= areas["all"] > 0
    dm = ImageMaskDataModule(str(drishti), layout="drishti", image_size=32, label_values=[0, 1, 2], val_fraction=0.25,
                             layout_options={"binarize": "all"})
    dm.setup("fit")
    assert len(dm.test_set) == 3 and dm.train_set.records[0].mask.rule == "all"  # type: ignore[union-attr]


def test_drishti_missing_soft_maps_are_listed(drishti: Path, tmp_path: Path) -> None:
    root = _copy(drishti, tmp_path / "d")
    gt = root / "Drishti-GS1_files" / "Training" / "GT"
    (gt / "drishtiGS_001" / "SoftMap" / "drishtiGS_001_cupsegSoftmap.png").unlink()
    shutil.rmtree(gt / "drishtiGS_002")
    with pytest.raises(DataError, match="2 images without their soft maps") as exc:
        read_drishti(root)
    assert "drishtiGS_001_cupsegSoftmap" in exc.value.problems[0] and "drishtiGS_002" in exc.value.problems[1]


def test_drishti_soft_maps_of_different_sizes(drishti: Path, tmp_path: Path) -> None:
    root = _copy(drishti, tmp_path / "d")
    cup = root / "Drishti-GS1_files/Training/GT/drishtiGS_001/SoftMap/drishtiGS_001_cupsegSoftmap.png"
    Image.fromarray(np.asarray(Image.open(cup))[:30]).save(cup)
    dm = ImageMaskDataModule(str(root), layout="drishti", image_size=32, label_values=[0, 1, 2], val_fraction=0)
    with pytest.raises(DataError, match="unusable") as exc:
        dm.setup("fit")
    assert "cup soft map is 64 x 30" in exc.value.problems[0]


# --- ROI -----------------------------------------------------------------------------------------
def test_crop_and_paste_back_are_inverse_on_the_box() -> None:
    rng = np.random.default_rng(0)
    full = rng.integers(0, 3, (20, 30))
    box = roi_box((3.0, 25.0), 12)  # reaches outside the top and the right
    assert box == (-3, 19, 9, 31)
    crop = crop_pad(full, box, fill=0)
    assert crop.shape == (12, 12) and (crop[:3] == 0).all() and (crop[:, -1] == 0).all()
    back = paste_box(crop, box, (20, 30), fill=0)
    np.testing.assert_array_equal(back[0:9, 19:30], full[0:9, 19:30])
    assert (back[9:] == 0).all() and (back[:, :19] == 0).all()
    up = paste_box(np.kron(crop, np.ones((2, 2), dtype=crop.dtype)), box, (20, 30))  # a 2x larger prediction
    np.testing.assert_array_equal(up, back)
    t = crop_pad(torch.arange(12.0).view(1, 3, 4), (1, -1, 3, 2), fill=-1.0)
    assert t.tolist() == [[[-1.0, 4.0, 5.0], [-1.0, 8.0, 9.0]]]


def test_mask_centre_and_detector_on_a_bright_disc() -> None:
    lab = np.zeros((60, 80), dtype=np.int64)
    lab[20:31, 50:61] = 1
    assert mask_disc_centre(lab) == (25.0, 55.0) and mask_disc_centre(lab * 0) is None
    yy, xx = np.mgrid[0:60, 0:80]
    img = 0.3 + 0.6 * (((yy - 25) ** 2 + (xx - 55) ** 2) < 36) + np.random.default_rng(0).normal(0, 0.05, (60, 80))
    r, c = detect_disc_centre(np.stack([img] * 3))
    assert abs(r - 25) <= 2 and abs(c - 55) <= 2


def test_detector_finds_the_disc_of_a_real_fundus_photo() -> None:
    data = pytest.importorskip("skimage.data")
    img = torch.from_numpy(np.asarray(data.retina())).permute(2, 0, 1).float() / 255.0  # 1411 x 1411, CC0
    r, c = detect_disc_centre(img)
    # the optic disc of skimage's retina photo lies left of centre, around row 650, column 215
    assert 560 < r < 740 and 150 < c < 300


def test_roi_in_the_image_mask_dataset(refuge: Path, tmp_path: Path) -> None:
    recs = [r for r in read_refuge(refuge) if r.split == "train"][:4]
    roi = DiscROI(fraction=0.5)
    ds = ImageMaskDataset(recs, (16, 16), label_values=[0, 1, 2], roi=roi)
    item = ds[0]
    full = recs[0].mask.load()  # type: ignore[union-attr]
    cy, cx = mask_disc_centre(full)  # type: ignore[misc]
    assert item["roi"].tolist() == list(roi_box((cy, cx), 24)) and item["orig_hw"].tolist() == [48, 48]
    assert item["image"].shape == (3, 16, 16) and item["seg"].shape == (1, 16, 16)
    want = resize_mask(np.asarray(crop_pad(full, item["roi"].tolist(), fill=0)), (16, 16))
    assert torch.equal(item["seg"], want) and (item["seg"] >= 1).sum() > 0
    # table rule: the centres come from a name,x,y CSV; a missing name is listed by the data check
    table = tmp_path / "centres.csv"
    table.write_text("name,x,y\n" + "".join(f"{r.name},{20 + i},{21 + i}\n" for i, r in enumerate(recs[:3])))
    ds = ImageMaskDataset(recs[:3], (16, 16), label_values=[0, 1, 2], roi=DiscROI(0.5, centres=str(table),
                                                                                   train_centre="table"))
    assert ds[1]["roi"].tolist() == list(roi_box((22.0, 21.0), 24))
    ds = ImageMaskDataset(recs, (16, 16), label_values=[0, 1, 2], roi=DiscROI(0.5, centres=str(table),
                                                                              train_centre="table"))
    _, problems = ds.scan()
    assert len(problems) == 1 and "no disc centre" in problems[0]
    # detector rule: no mask needed for the box
    ds = ImageMaskDataset(recs, (16, 16), label_values=[0, 1, 2], roi=roi, roi_centre="detector")
    box = ds[2]["roi"].tolist()
    cy, cx = mask_disc_centre(recs[2].mask.load())  # type: ignore[union-attr,misc]
    assert abs((box[0] + box[2]) / 2 - cy) <= 6 and abs((box[1] + box[3]) / 2 - cx) <= 6


def test_disc_centre_table_errors_list_every_row(tmp_path: Path) -> None:
    p = tmp_path / "c.csv"
    p.write_text("name,x,y\na.png,1,2\n,3,4\na.png,5,6\nb.png,x,7\n")
    with pytest.raises(DataError, match="3 invalid rows") as exc:
        read_disc_centres(p)
    assert [line.split(":")[0] for line in exc.value.problems] == ["line 3 (<empty name>)", "line 4 (a.png)",
                                                                   "line 5 (b.png)"]
    (tmp_path / "d.csv").write_text("file,x\n")
    with pytest.raises(DataError, match="columns name,x,y"):
        read_disc_centres(tmp_path / "d.csv")
    with pytest.raises(ValueError, match="needs centres"):
        DiscROI(train_centre="table")
