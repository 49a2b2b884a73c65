"""Tests for the 3D volume readers, MONAI preprocessing and VolumeDataModule (medlearn.data.volumes).

Layouts: NIfTI folders, CSV manifests (the head CT phantom's ``labels.csv``) and BraTS (Menze et
al., IEEE TMI 2015; Bakas et al. 2017, 2018); real volumes from the nibabel (and, if installed,
nilearn) packages.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

import medlearn.data.brats
import medlearn.data.volume_preprocess
import medlearn.data.volumes as volumes
import medlearn.io.api
from medlearn.data.brats import BRATS_MODALITIES, brats_regions, read_brats
from medlearn.data.manifest import HEADCT_CLASSES, list_volumes, read_volume_manifest
from medlearn.data.records import VolumeRecord
from medlearn.data.sampling import case_split
from medlearn.data.volume_preprocess import LoadVolumed, load_volume, volume_transforms
from medlearn.data.volumes import VolumeDataModule
from medlearn.io import nifti_geometry
from medlearn.io.errors import DataError
from medlearn.synth.brats import brats_affine, write_brats
from medlearn.synth.headct import write_headct

NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"
BRATS_SIZE = 24


@pytest.fixture(scope="module")
def headct(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_headct(tmp_path_factory.mktemp("hct") / "ds", n_volumes=16, size=20, seed=1)


@pytest.fixture(scope="module")
def brats_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_brats(tmp_path_factory.mktemp("brats") / "ds", n_cases=6, size=BRATS_SIZE, seed=2)


@pytest.fixture
def brats(brats_source: Path, tmp_path: Path) -> Path:
    """A private copy to corrupt."""
    return Path(shutil.copytree(brats_source, tmp_path / "brats"))


def _case_file(root: Path, i: int, key: str) -> Path:
    return root / f"BraTS_{i:04d}" / f"BraTS_{i:04d}_{key}.nii.gz"


def _write(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    img = nib.Nifti1Image(data, np.eye(4) if affine is None else affine)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    return path


def _truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


# ---------------------------------------------------------------------------- folder, manifest


def test_list_volumes_is_recursive_sorted_and_skips_hidden(tmp_path: Path) -> None:
    vol = np.zeros((4, 4, 4), np.float32)
    for rel in ("b.nii.gz", "a/c.nii", "a/B.NII.GZ", ".hidden.nii.gz", ".git/x.nii", "notes.txt"):
        if rel.endswith("txt"):
            (tmp_path / rel).write_text("x")
        else:
            _write(tmp_path / rel, vol)
    assert [p.relative_to(tmp_path).as_posix() for p in list_volumes(tmp_path)] == [
        "a/B.NII.GZ", "a/c.nii", "b.nii.gz"
    ]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no NIfTI volumes") as exc:
        list_volumes(tmp_path / "empty")
    assert "empty" in exc.value.path
    with pytest.raises(DataError, match="not found"):
        list_volumes(tmp_path / "absent")


def test_manifest_round_trips_the_headct_table(headct: Path) -> None:
    df = pd.read_csv(headct / "labels.csv")
    records = read_volume_manifest(headct / "labels.csv", classes=HEADCT_CLASSES)
    assert [r.path for r in records] == [headct / p for p in df["path"]]
    assert [r.label for r in records] == list(df["label"])
    assert [r.split for r in records] == list(df["split"])
    assert records[0].case == "case_0000" and records[0].seg is None


def test_manifest_lists_every_bad_row(headct: Path, tmp_path: Path) -> None:
    csv = tmp_path / "m.csv"
    vol = (headct / "volumes" / "case_0000.nii.gz").as_posix()
    csv.write_text(
        "path,label,split\n"
        f"{vol},none,train\n"  # fine (absolute path)
        "missing.nii.gz,none,train\n"  # missing file
        ",none,train\n"  # empty path
        f"{vol.replace('0000', '0001')},epidural,train\n"  # unknown label
        f"{vol.replace('0000', '0002')},subdural,holdout\n"  # unknown split
        f"{vol},none,test\n"  # repeated path
        f"{vol.replace('0000', '0003')},,\n"  # unlabeled, no split: fine
    )
    with pytest.raises(DataError) as exc:
        read_volume_manifest(csv, classes=HEADCT_CLASSES)
    problems = exc.value.problems
    assert len(problems) == 5
    assert "line 3" in problems[0] and "file not found" in problems[0]
    assert "line 4" in problems[1] and "empty path" in problems[1]
    assert "unknown label 'epidural'" in problems[2]
    assert "unknown split 'holdout'" in problems[3]
    assert "listed again" in problems[4] and "line 2" in problems[4]
    assert exc.value.path == str(csv)
    with pytest.raises(DataError, match="'path' column"):
        (tmp_path / "bad.csv").write_text("file,label\nx,y\n")
        read_volume_manifest(tmp_path / "bad.csv")


# ------------------------------------------------------------------------------------- BraTS


def test_read_brats_happy_path(brats_source: Path) -> None:
    records = read_brats(brats_source)
    assert [r.case for r in records] == [f"BraTS_{i:04d}" for i in range(6)]
    r = records[0]
    assert r.modalities == list(BRATS_MODALITIES) and r.path is None
    assert r.files == [_case_file(brats_source, 0, m) for m in BRATS_MODALITIES]
    assert r.seg == _case_file(brats_source, 0, "seg")


def test_nifti_geometry_reads_headers_only(brats_source: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(medlearn.io.api, "read_image", lambda p: calls.append(p))
    shape, affine = nifti_geometry(_case_file(brats_source, 0, "t1"))
    assert shape == (BRATS_SIZE,) * 3
    np.testing.assert_array_equal(affine, brats_affine(BRATS_SIZE))
    assert calls == []  # an intact file is never decoded


def test_brats_missing_modality_names_the_case(brats: Path) -> None:
    _case_file(brats, 1, "flair").unlink()
    with pytest.raises(DataError) as exc:
        read_brats(brats)
    assert exc.value.problems == ["BraTS_0001: missing flair (BraTS_0001_flair.nii.gz)"]
    assert exc.value.path == str(brats)


def test_brats_mis_shaped_modality(brats: Path) -> None:
    _write(_case_file(brats, 2, "t1ce"), np.zeros((BRATS_SIZE, BRATS_SIZE, 20), np.float32), brats_affine(BRATS_SIZE))
    with pytest.raises(DataError) as exc:
        read_brats(brats)
    (problem,) = exc.value.problems
    assert problem.startswith("BraTS_0002: BraTS_0002_t1ce.nii.gz: shape")
    assert f"({BRATS_SIZE}, {BRATS_SIZE}, 20) differs from t1" in problem


def test_brats_shifted_affine(brats: Path) -> None:
    affine = brats_affine(BRATS_SIZE)
    affine[0, 3] += 0.5
    data = np.asarray(nib.load(_case_file(brats, 0, "t2")).dataobj)
    _write(_case_file(brats, 0, "t2"), data, affine)
    with pytest.raises(DataError) as exc:
        read_brats(brats)
    (problem,) = exc.value.problems
    assert "BraTS_0000_t2.nii.gz: affine differs from t1" in problem


def test_brats_seg_with_label_3(brats: Path) -> None:
    path = _case_file(brats, 3, "seg")
    seg = np.asarray(nib.load(path).dataobj).copy()
    seg[0, 0, :7] = 3
    _write(path, seg, brats_affine(BRATS_SIZE))
    with pytest.raises(DataError) as exc:
        read_brats(brats)
    (problem,) = exc.value.problems
    assert problem.startswith("BraTS_0003: BraTS_0003_seg.nii.gz: labels outside [0, 1, 2, 4]: 3 (7 voxels)")
    # the label check decodes the seg: it can be switched off
    assert len(read_brats(brats, check_labels=False)) == 6


def test_brats_truncated_file_is_caught_from_the_header(brats: Path) -> None:
    _truncate(_case_file(brats, 4, "t2"))
    with pytest.raises(DataError) as exc:
        read_brats(brats, check_labels=False)
    (problem,) = exc.value.problems
    assert problem.startswith("BraTS_0004: BraTS_0004_t2.nii.gz:") and "truncated" in problem
    with pytest.raises(DataError, match="truncated") as exc2:
        load_volume(_case_file(brats, 4, "t2"))
    assert exc2.value.path.endswith("BraTS_0004_t2.nii.gz")


def test_brats_file_that_is_not_nifti(brats: Path) -> None:
    _case_file(brats, 5, "t1").write_bytes(b"<html>not found</html>" * 40)
    with pytest.raises(DataError) as exc:
        read_brats(brats, check_labels=False)
    (problem,) = exc.value.problems
    assert problem.startswith("BraTS_0005: BraTS_0005_t1.nii.gz: not a valid NIfTI file: an HTML page")


def test_brats_several_bad_cases_are_all_listed(brats: Path) -> None:
    _case_file(brats, 0, "t1ce").unlink()
    _case_file(brats, 1, "seg").unlink()
    _truncate(_case_file(brats, 2, "flair"))
    _write(_case_file(brats, 3, "t2"), np.zeros((BRATS_SIZE,) * 2 + (3,), np.float32), brats_affine(BRATS_SIZE))
    nan = np.asarray(nib.load(_case_file(brats, 5, "t1")).dataobj).copy()
    nan[3, 3, 3] = np.nan
    _write(_case_file(brats, 5, "t1"), nan, brats_affine(BRATS_SIZE))
    with pytest.raises(DataError) as exc:
        read_brats(brats)
    problems = exc.value.problems
    assert len(problems) == 4  # the NaN is only seen when images are decoded
    assert [p.split(":")[0] for p in problems] == ["BraTS_0000", "BraTS_0001", "BraTS_0002", "BraTS_0003"]
    assert "4 of 6 BraTS cases are invalid" in str(exc.value)
    with pytest.raises(DataError) as exc:
        read_brats(brats, check_images=True)
    assert len(exc.value.problems) == 5
    assert exc.value.problems[-1].startswith("BraTS_0005: BraTS_0005_t1.nii.gz:")
    assert "non-finite" in exc.value.problems[-1]
    # without require_seg a case without seg is fine
    with pytest.raises(DataError) as exc:
        read_brats(brats, require_seg=False)
    assert [p.split(":")[0] for p in exc.value.problems] == ["BraTS_0000", "BraTS_0002", "BraTS_0003"]


def test_brats_empty_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no BraTS case folders"):
        read_brats(tmp_path)


# ------------------------------------------------------------------------- loading, transforms


def test_load_volume_nan_and_stack_mismatch_name_the_file(tmp_path: Path) -> None:
    bad = np.ones((6, 6, 6), np.float32)
    bad[1, 2, 3] = np.inf
    path = _write(tmp_path / "inf.nii.gz", bad)
    with pytest.raises(DataError, match="non-finite") as exc:
        load_volume(path)
    assert exc.value.path == str(path)
    a = _write(tmp_path / "a.nii.gz", np.ones((6, 6, 6), np.float32))
    b = _write(tmp_path / "b.nii.gz", np.ones((6, 6, 5), np.float32))
    with pytest.raises(DataError, match=r"spatial shape \(6, 6, 5\) differs from a.nii.gz") as exc:
        load_volume([a, b])
    assert exc.value.path == str(b)
    stacked = load_volume({"x": a, "y": a})
    assert stacked.shape == (2, 6, 6, 6)
    # through a MONAI Compose a DataError still arrives as a DataError (VolumeDataset unwraps it)
    ds = volumes.VolumeDataset([{"image": str(path)}], volume_transforms(), cache=False)
    with pytest.raises(DataError, match="non-finite"):
        ds[0]


def test_real_nibabel_volumes_keep_the_header_geometry() -> None:
    for name in ("anatomical.nii", "example4d.nii.gz"):
        path = NIBABEL_DATA / name
        img = nib.load(path)
        x = load_volume(path)
        channels = img.shape[3] if img.ndim == 4 else 1
        assert tuple(x.shape) == (channels, *img.shape[:3])
        assert x.meta["orientation"] == "".join(nib.aff2axcodes(img.affine)) == "LAS"
        np.testing.assert_allclose(x.meta["spacing"], img.header.get_zooms()[:3])
        np.testing.assert_allclose(x.affine.numpy(), img.affine, atol=1e-6)
        data = np.asarray(img.get_fdata(dtype=np.float32))
        first = data if img.ndim == 3 else data[..., 0]
        np.testing.assert_allclose(x[0].numpy(), first, rtol=1e-6)


@pytest.mark.parametrize("fit", ["pad_crop", "resize"])
def test_real_volumes_through_mr_preprocessing(fit: str) -> None:
    for name in ("anatomical.nii", "example4d.nii.gz"):
        t = volume_transforms(normalisation="mr", spatial_size=(20, 24, 16), fit=fit)
        out = t({"image": str(NIBABEL_DATA / name), "name": name})
        x = out["image"]
        assert type(x) is torch.Tensor and x.dtype == torch.float32
        assert tuple(x.shape) == ((1 if name == "anatomical.nii" else 2), 20, 24, 16)
        assert x.min() >= -1.0 and x.max() <= 1.0 and x.max() > 0.8
        assert out["name"] == name


def test_foreground_crop_and_resampling_on_a_real_volume() -> None:
    epi = str(NIBABEL_DATA / "example4d.nii.gz")  # 128 x 96 x 24 EPI with dark background
    size = (130, 100, 30)  # larger than the volume: padding (with -2 here) shows the crop box
    whole = volume_transforms(normalisation="mr", spatial_size=size, foreground_threshold=None, pad_value=-2)
    cropped = volume_transforms(normalisation="mr", spatial_size=size, foreground_threshold=-0.9, pad_value=-2)
    a, b = whole({"image": epi})["image"], cropped({"image": epi})["image"]
    box = (b[0] != -2).nonzero()
    extent = (box.amax(0) - box.amin(0) + 1).tolist()
    assert extent[0] < 128 and extent[1] < 96  # background removed
    assert int((b > -0.9).sum()) == int((a > -0.9).sum())  # every foreground voxel kept
    path = str(NIBABEL_DATA / "anatomical.nii")  # 33 x 41 x 25 at 2 mm
    coarse = volume_transforms(normalisation="mr", target_spacing=4.0, spatial_size=(40, 48, 32),
                               foreground_threshold=None)({"image": path})["image"]
    extent = (coarse[0] > -1).nonzero()
    size = (extent.amax(0) - extent.amin(0) + 1).tolist()
    assert size == [17, 21, 13]  # (33, 41, 25) * 2 mm / 4 mm, rounded up


def test_ct_window_and_anisotropic_resampling(tmp_path: Path) -> None:
    out = write_headct(tmp_path / "an", n_volumes=1, size=20, spacing=(1.0, 1.0, 2.0))
    path = str(out / "volumes" / "case_0000.nii.gz")
    keep = LoadVolumed("image")({"image": path})["image"]
    assert tuple(keep.shape) == (1, 20, 20, 10) and keep.meta["spacing"] == (1.0, 1.0, 2.0)
    t = volume_transforms(normalisation="ct", window=(-100, 200), target_spacing=(1, 1, 1),
                          spatial_size=(40, 40, 40), foreground_threshold=None, pad_value=-2)
    x = t({"image": path})["image"]
    box = (x[0] != -2).nonzero()
    assert (box.amax(0) - box.amin(0) + 1).tolist() in ([20, 20, 19], [20, 20, 20])  # z: 10 x 2 mm -> 1 mm
    inside = x[x != -2]
    assert inside.min() == -1.0 and inside.max() == 1.0  # air and bone clipped by the window


def test_mni152_template_from_nilearn() -> None:
    if importlib.util.find_spec("nilearn") is None:
        pytest.skip("nilearn is not installed (its MNI152 T1 template ships in the wheel; pip install nilearn)")
    name = "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    path = Path(str(importlib.resources.files("nilearn") / name))  # no import of nilearn's modules
    if not path.is_file():
        pytest.skip(f"nilearn is installed but has no {path.name}")
    img = nib.load(path)
    x = load_volume(path)
    assert tuple(x.shape[1:]) == img.shape[:3]
    assert x.meta["orientation"] == "".join(nib.aff2axcodes(img.affine))
    np.testing.assert_allclose(x.meta["spacing"], img.header.get_zooms()[:3])
    y = volume_transforms(normalisation="mr", target_spacing=4.0, spatial_size=(32, 32, 32),
                          foreground_threshold=-0.9)({"image": str(path)})["image"]
    assert tuple(y.shape) == (1, 32, 32, 32) and -1.0 <= y.min() and y.max() <= 1.0


def test_itk_example_t1_orientation_spacing_and_labels(itk_example_data: Path) -> None:
    """ITK's example head T1 (128 x 128 x 62, 2 x 2 x 3 mm, LSA-ordered) and its k-means tissue map."""
    path = itk_example_data / "KmeansTest_T1UCharRaw.nii.gz"
    img = nib.load(path)
    x = load_volume(path)
    assert tuple(x.shape) == (1, 128, 128, 62)
    assert x.meta["orientation"] == "".join(nib.aff2axcodes(img.affine)) == "LSA"
    np.testing.assert_allclose(x.meta["spacing"], (2.0, 2.0, 3.0))
    np.testing.assert_array_equal(x[0].numpy(), np.asarray(img.dataobj, dtype=np.float32))
    seg = load_volume(itk_example_data / "KmeansTest_T1KmeansPrelimSegmentation.nii.gz")
    assert tuple(seg.shape) == (1, 128, 128, 62) and set(np.unique(seg.numpy()).tolist()) <= set(range(7))
    iso = volume_transforms(normalisation="mr", target_spacing=2.0, spatial_size=(128, 128, 96),
                            foreground_threshold=None, pad_value=-2)({"image": str(path)})["image"]
    box = (iso[0] != -2).nonzero()
    assert (box.amax(0) - box.amin(0) + 1).tolist() == [128, 128, 92]  # voxel centres: (62 - 1) x 3 mm / 2 mm + 1


def test_brats_regions() -> None:
    seg = torch.tensor([0, 1, 2, 4]).view(1, 1, 4, 1, 1)
    regions = brats_regions(seg)
    assert regions.shape == (1, 3, 4, 1, 1) and regions.dtype == torch.float32
    assert regions[0, :, :, 0, 0].tolist() == [[0, 1, 1, 1], [0, 1, 0, 1], [0, 0, 0, 1]]  # WT, TC, ET
    with pytest.raises(ValueError):
        brats_regions(torch.zeros(2, 4, 4, 4))


def test_case_split_is_by_case_and_deterministic() -> None:
    recs = [VolumeRecord(path=Path(f"v{i}.nii"), case=f"p{i // 2}") for i in range(20)]
    a, b = case_split(recs, 0.3, seed=4)
    assert {r.case for r in a}.isdisjoint({r.case for r in b})
    assert len({r.case for r in b}) == 3
    assert case_split(recs, 0.3, seed=4) == (a, b)
    with pytest.raises(ValueError):
        VolumeRecord(case="x")


# -------------------------------------------------------------------------------- DataModule


def _names(loader: Any) -> list[str]:
    return [n for batch in loader for n in batch["name"]]


def test_datamodule_classification_on_headct(headct: Path) -> None:
    dm = VolumeDataModule(str(headct), layout="headct", task="classification", spatial_size=(16, 16, 16),
                          batch_size=3, val_fraction=0.25)
    assert dm.class_names == list(HEADCT_CLASSES)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (3, 1, 16, 16, 16) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (3,) and batch["label"].dtype == torch.int64
    assert set(batch) == {"image", "label", "name"}
    assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    df = pd.read_csv(headct / "labels.csv")
    test_cases = {Path(p).name.removesuffix(".nii.gz") for p in df["path"][df["split"] == "test"]}
    splits = {k: {r.case for r in v} for k, v in dm.splits.items()}
    assert splits["test"] == test_cases  # the table's split column is honoured
    assert splits["train"].isdisjoint(splits["val"]) and splits["train"].isdisjoint(splits["test"])
    assert splits["val"].isdisjoint(splits["test"])
    assert len(splits["train"]) + len(splits["val"]) + len(splits["test"]) == 16 and len(splits["val"]) == 3
    assert dm.n_train == 9
    labels = dict(zip(df["path"].map(lambda p: Path(p).name.removesuffix(".nii.gz")), df["label"]))
    for b in dm.test_dataloader():
        assert [HEADCT_CLASSES[i] for i in b["label"].tolist()] == [labels[n] for n in b["name"]]
    # deterministic: a second module splits the same way; num_train subsets the training cases
    dm2 = VolumeDataModule(str(headct), layout="headct", task="classification", val_fraction=0.25, num_train=4)
    assert {r.case for r in dm2.splits["val"]} == splits["val"]
    assert dm2.n_train == 4 and {r.case for r in dm2.splits["train"]} <= splits["train"]


def test_datamodule_unlabeled_folder(headct: Path) -> None:
    dm = VolumeDataModule(str(headct / "volumes"), task="unlabeled", spatial_size=(16, 16, 16), batch_size=4,
                          val_fraction=0.0, test_fraction=0.25)
    assert dm.resolved_layout == "folder" and dm.class_names == [] and dm.n_channels == 1
    assert dm.n_train == 12 and len(dm.splits["test"]) == 4
    batches = list(dm.train_dataloader())
    assert [tuple(b["image"].shape) for b in batches] == [(4, 1, 16, 16, 16)] * 3
    assert set(batches[0]) == {"image", "name"}
    assert dm.val_dataloader() == []
    # pretraining never sees the test cases
    assert set(_names(dm.train_dataloader())).isdisjoint({r.case for r in dm.splits["test"]})
    # auto-detection
    assert VolumeDataModule(str(headct)).resolved_layout == "manifest"


def test_datamodule_segmentation_on_brats(brats_source: Path) -> None:
    dm = VolumeDataModule(str(brats_source), task="segmentation", normalisation="mr", spatial_size=(16, 20, 24),
                          batch_size=2, val_fraction=0.25, test_fraction=0.2)
    assert dm.resolved_layout == "brats" and dm.n_channels == 4
    assert dm.class_names == ["background", "necrotic_core", "oedema", "enhancing"]
    splits = {k: {r.case for r in v} for k, v in dm.splits.items()}
    assert sum(len(s) for s in splits.values()) == 6 and len(splits["test"]) == 1
    assert splits["train"].isdisjoint(splits["val"] | splits["test"]) and splits["val"].isdisjoint(splits["test"])
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 4, 16, 20, 24) and batch["image"].dtype == torch.float32
    assert batch["seg"].shape == (2, 1, 16, 20, 24) and batch["seg"].dtype == torch.int64
    assert set(torch.unique(batch["seg"]).tolist()) <= {0, 1, 2, 4}
    for c in range(4):  # per-channel percentile normalisation
        assert batch["image"][:, c].max() == 1.0 and batch["image"][:, c].min() == -1.0
    assert brats_regions(batch["seg"]).shape == (2, 3, 16, 20, 24)
    with pytest.raises(DataError, match="classification needs a label"):
        VolumeDataModule(str(brats_source), task="classification").setup("fit")


def test_datamodule_cache_decodes_each_file_once(brats_source: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = medlearn.io.read_image

    def counting(path: Any) -> Any:
        calls.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(medlearn.data.brats, "read_image", counting)  # the label check
    monkeypatch.setattr(medlearn.data.volume_preprocess, "read_image", counting)  # the loader
    kwargs: dict[str, Any] = dict(task="segmentation", normalisation="mr", spatial_size=(12, 12, 12), batch_size=2,
                                  val_fraction=0.25)
    dm = VolumeDataModule(str(brats_source), cache=True, **kwargs)
    dm.setup("fit")
    n_fit = len(dm.splits["train"]) + len(dm.splits["val"])
    after_setup = len(calls)
    # each seg decoded once by the label check + (4 modalities + seg) once by the cache
    assert after_setup == 6 + 5 * n_fit
    for _ in range(2):
        list(dm.train_dataloader())
        list(dm.val_dataloader())
    assert len(calls) == after_setup
    assert sorted(calls[6:]) == sorted(set(calls[6:]))  # no file decoded twice for the cache

    calls.clear()
    dm = VolumeDataModule(str(brats_source), cache=False, **kwargs)
    dm.setup("fit")
    assert len(calls) == 6  # only the label check
    list(dm.train_dataloader())
    list(dm.train_dataloader())
    assert len(calls) == 6 + 2 * 5 * len(dm.splits["train"])


def test_datamodule_raises_data_error_for_a_bad_volume(headct: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(headct, tmp_path / "hct"))
    bad = root / "volumes" / "case_0003.nii.gz"
    data = np.asarray(nib.load(bad).dataobj).astype(np.float32)
    data[2, 2, 2] = np.nan
    _write(bad, data)
    dm = VolumeDataModule(str(root), layout="headct", task="classification", test_fraction=0.0)
    with pytest.raises(DataError, match="non-finite") as exc:
        dm.setup()
    assert exc.value.path == str(bad)
    dm = VolumeDataModule(str(root), layout="headct", task="classification", cache=False)
    dm.setup()
    with pytest.raises(DataError, match="non-finite"):
        for split in ("train", "val", "test"):
            list(getattr(dm, f"{split}_dataloader")())
