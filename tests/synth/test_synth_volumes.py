"""Tests for the 3D phantom writers: head CT (Rubik's cube demo) and BraTS (Menze et al., IEEE TMI 2015)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medlearn.data.manifest import HEADCT_CLASSES
from medlearn.io import read_image
from medlearn.synth import SYNTHESIZERS, get_synth, list_synth
from medlearn.synth.brats import (
    BRATS_LABELS,
    MODALITIES,
    brats_affine,
    brats_rng,
    render_brats_case,
    write_brats,
)
from medlearn.synth.headct import (
    LESION_CLASSES,
    head_rng,
    headct_geometry,
    parse_spacing,
    render_head_ct,
    write_headct,
)

N_HEAD, HEAD_SIZE, HEAD_SEED = 16, 24, 3
N_BRATS, BRATS_SIZE, BRATS_SEED = 3, 32, 5


@pytest.fixture(scope="module")
def headct(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_headct(tmp_path_factory.mktemp("hct") / "ds", n_volumes=N_HEAD, size=HEAD_SIZE, seed=HEAD_SEED)


@pytest.fixture(scope="module")
def brats(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_brats(tmp_path_factory.mktemp("brats") / "ds", n_cases=N_BRATS, size=BRATS_SIZE, seed=BRATS_SEED)


def _digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_registered() -> None:
    assert get_synth("headct") is write_headct is SYNTHESIZERS["headct"]
    assert get_synth("brats") is write_brats is SYNTHESIZERS["brats"]
    assert "lesion" in list_synth()["headct"]
    assert "BraTS" in list_synth()["brats"]
    assert LESION_CLASSES == HEADCT_CLASSES  # the reader's default class order is the writer's


# -------------------------------------------------------------------------------------- head CT


def test_headct_layout_is_exact(headct: Path) -> None:
    assert sorted(p.name for p in headct.iterdir()) == ["README.txt", "labels.csv", "volumes"]
    names = sorted(p.name for p in (headct / "volumes").iterdir())
    assert names == [f"case_{i:04d}.nii.gz" for i in range(N_HEAD)]
    lines = (headct / "labels.csv").read_text().splitlines()
    assert lines[0] == "path,label,split"
    df = pd.read_csv(headct / "labels.csv")
    assert list(df["path"]) == [f"volumes/{n}" for n in names]
    assert set(df["label"]) == set(LESION_CLASSES)
    assert df["label"].value_counts().tolist() == [N_HEAD // 4] * 4  # balanced
    assert (df["split"] == "test").sum() == N_HEAD // 4 and set(df["split"]) == {"train", "test"}


def test_headct_volumes_are_the_rendered_ones_in_hu(headct: Path) -> None:
    df = pd.read_csv(headct / "labels.csv")
    shape, affine = headct_geometry(HEAD_SIZE)
    for i in (0, 5):
        array, meta = read_image(headct / df["path"][i])
        expected, _ = render_head_ct(head_rng(HEAD_SEED, i), HEAD_SIZE, df["label"][i])
        assert array.shape == (1, *shape)
        np.testing.assert_array_equal(array[0], expected)
        np.testing.assert_allclose(meta["affine"], affine)
        assert meta["orientation"] == "RAS" and meta["spacing"] == (1.0, 1.0, 1.0)
        assert meta["datatype"] == "int16"
        assert -1024 <= array.min() < -900 and array.max() > 600  # air and bone in HU


def test_headct_is_deterministic_per_seed(headct: Path, tmp_path: Path) -> None:
    again = write_headct(tmp_path / "a", n_volumes=N_HEAD, size=HEAD_SIZE, seed=HEAD_SEED)
    assert _digest(again) == _digest(headct)
    other = write_headct(tmp_path / "b", n_volumes=N_HEAD, size=HEAD_SIZE, seed=HEAD_SEED + 1)
    assert _digest(other)["volumes/case_0000.nii.gz"] != _digest(headct)["volumes/case_0000.nii.gz"]


def test_headct_refuses_non_empty_folder_and_overwrite_removes_stale(tmp_path: Path) -> None:
    out = write_headct(tmp_path / "d", n_volumes=6, size=16, seed=0)
    with pytest.raises(FileExistsError):
        write_headct(out, n_volumes=4, size=16)
    (out / "notes.txt").write_text("keep me")
    write_headct(out, n_volumes=4, size=16, overwrite=True)
    assert sorted(p.name for p in (out / "volumes").iterdir()) == [f"case_{i:04d}.nii.gz" for i in range(4)]
    assert (out / "notes.txt").read_text() == "keep me"
    assert len(pd.read_csv(out / "labels.csv")) == 4


def test_headct_anisotropic_spacing_goes_into_the_affine(tmp_path: Path) -> None:
    assert parse_spacing("1,1,2.5") == parse_spacing([1, 1, 2.5]) == (1.0, 1.0, 2.5)
    assert parse_spacing(2) == (2.0, 2.0, 2.0)
    with pytest.raises(ValueError):
        parse_spacing("1,0,1")
    out = write_headct(tmp_path / "an", n_volumes=2, size=24, spacing="1,1,2")
    array, meta = read_image(out / "volumes" / "case_0000.nii.gz")
    assert array.shape == (1, 24, 24, 12)
    assert meta["spacing"] == (1.0, 1.0, 2.0) and meta["orientation"] == "RAS"
    # the same head, sampled coarser along z: the anatomy's extent in mm is the same
    iso, _ = render_head_ct(head_rng(0, 0), 24, "none")
    assert abs((array[0] > 300).sum() * 2 - (iso > 300).sum()) < 0.15 * (iso > 300).sum()


def _octant_stats(v: np.ndarray) -> tuple[float, float]:
    """(bottom - top, inferior front - inferior back) mean HU over head tissue (> -500 HU)."""
    n = v.shape[2] // 2
    tissue = v > -500
    top = np.zeros_like(tissue)
    top[:, :, n:] = True
    front = np.zeros_like(tissue)
    front[:, v.shape[1] // 2:] = True
    vertical = v[tissue & ~top].mean() - v[tissue & top].mean()
    sagittal = v[tissue & front & ~top].mean() - v[tissue & ~front & ~top].mean()
    return float(vertical), float(sagittal)


def test_headct_octants_differ_consistently(headct: Path) -> None:
    df = pd.read_csv(headct / "labels.csv")
    for i, rel in enumerate(df["path"]):
        v = read_image(headct / rel)[0][0]
        vertical, sagittal = _octant_stats(v)
        assert vertical > 30.0, (i, vertical)  # thicker skull and the skull base below
        assert sagittal < -5.0, (i, sagittal)  # the anterior-inferior air sinus
        _, masks = render_head_ct(head_rng(HEAD_SEED, i), HEAD_SIZE, df["label"][i])
        n = HEAD_SIZE // 2
        skull = masks["skull"]
        assert skull[:, :, :n].sum() > 1.2 * skull[:, :, n:].sum()
        falx = np.argwhere(masks["falx"])
        assert len(falx) and falx[:, 2].min() >= n - 1  # upper half only
        sinus = np.argwhere(masks["sinus"])
        assert len(sinus) and sinus[:, 1].mean() > n + 2 and sinus[:, 2].mean() < n - 2  # anterior-inferior


@pytest.mark.parametrize("lesion", LESION_CLASSES)
def test_headct_lesions_are_present_and_visible(lesion: str) -> None:
    for i in range(4):
        v, m = render_head_ct(head_rng(11, i), 32, lesion)
        if lesion == "none":
            assert not m["lesion"].any()
            continue
        assert m["lesion"].sum() >= 15, (lesion, i, m["lesion"].sum())
        assert m["lesion"][~m["brain"] & ~m["skull"]].sum() == 0  # intracranial
        normal = m["brain"] & ~m["lesion"] & ~m["ventricles"] & ~m["falx"]
        assert v[m["lesion"]].mean() > v[normal].mean() + 15.0  # acute blood is hyperdense
        if lesion == "intraventricular":
            assert (m["lesion"] & m["ventricles"]).sum() >= 0.9 * m["lesion"].sum()
        if lesion == "intraparenchymal":
            assert (m["lesion"] & m["ventricles"]).sum() == 0


def test_headct_same_head_with_and_without_lesion() -> None:
    a, ma = render_head_ct(head_rng(0, 1), 24, "none")
    b, mb = render_head_ct(head_rng(0, 1), 24, "subdural")
    outside = ~mb["lesion"]
    assert np.abs(a[outside] - b[outside]).mean() < 1.0
    np.testing.assert_array_equal(ma["skull"], mb["skull"])


def test_headct_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_headct(tmp_path / "x", n_volumes=0)
    with pytest.raises(ValueError):
        write_headct(tmp_path / "x", n_volumes=4, size=4)
    with pytest.raises(ValueError):
        write_headct(tmp_path / "x", n_volumes=4, n_test=5)
    with pytest.raises(ValueError):
        render_head_ct(head_rng(0, 0), 16, "epidural")


# ---------------------------------------------------------------------------------------- BraTS


def test_brats_layout_is_exact(brats: Path) -> None:
    cases = [f"BraTS_{i:04d}" for i in range(N_BRATS)]
    assert sorted(p.name for p in brats.iterdir()) == sorted(["README.txt", *cases])
    for case in cases:
        expected = sorted(f"{case}_{k}.nii.gz" for k in (*MODALITIES, "seg"))
        assert sorted(p.name for p in (brats / case).iterdir()) == expected


def test_brats_files_share_one_affine_and_have_the_right_types(brats: Path) -> None:
    affine = brats_affine(BRATS_SIZE)
    assert nib.aff2axcodes(affine) == ("L", "P", "S")
    for case in sorted(p for p in brats.iterdir() if p.is_dir()):
        for key in (*MODALITIES, "seg"):
            img = nib.load(case / f"{case.name}_{key}.nii.gz")
            assert img.shape == (BRATS_SIZE,) * 3
            np.testing.assert_array_equal(img.affine, affine)
            assert img.header.get_zooms() == (1.0, 1.0, 1.0)
            assert img.get_data_dtype() == (np.uint8 if key == "seg" else np.float32)


def test_brats_is_deterministic_per_seed(brats: Path, tmp_path: Path) -> None:
    again = write_brats(tmp_path / "a", n_cases=N_BRATS, size=BRATS_SIZE, seed=BRATS_SEED)
    assert _digest(again) == _digest(brats)
    other = write_brats(tmp_path / "b", n_cases=1, size=BRATS_SIZE, seed=BRATS_SEED + 1)
    key = "BraTS_0000/BraTS_0000_t1.nii.gz"
    assert _digest(other)[key] != _digest(brats)[key]


def test_brats_refuses_non_empty_folder(brats: Path) -> None:
    with pytest.raises(FileExistsError):
        write_brats(brats, n_cases=1, size=BRATS_SIZE)


def test_brats_seg_labels_are_exactly_the_brats_set(brats: Path) -> None:
    for i in range(N_BRATS):
        seg = np.asarray(nib.load(brats / f"BraTS_{i:04d}" / f"BraTS_{i:04d}_seg.nii.gz").dataobj)
        assert set(np.unique(seg).tolist()) == set(BRATS_LABELS)


def test_brats_contrasts_have_the_specified_relations(brats: Path) -> None:
    for i in range(N_BRATS):
        case = brats / f"BraTS_{i:04d}"
        img = {m: read_image(case / f"{case.name}_{m}.nii.gz")[0][0] for m in MODALITIES}
        seg = read_image(case / f"{case.name}_seg.nii.gz")[0][0]
        # skull-stripped: one brain mask, background exactly 0 in every contrast
        brain = img["t1"] > 0
        for m in MODALITIES:
            assert ((img[m] > 0) == brain).all()
        assert (seg[~brain] == 0).all()
        normal = brain & (seg == 0)

        def rel(m: str, label: int, img: dict = img, seg: np.ndarray = seg, normal: np.ndarray = normal) -> float:
            return float(img[m][seg == label].mean() / img[m][normal].mean())

        assert rel("flair", 2) > 1.3 and rel("t2", 2) > 1.3  # oedema bright in FLAIR and T2
        assert rel("t1ce", 4) > 1.5 * rel("t1", 4)  # enhancing rim: contrast uptake
        assert rel("t1ce", 4) > 1.4
        assert rel("t1ce", 1) < 0.6  # necrosis dark in T1ce
        assert rel("t1", 2) < 0.9  # oedema hypo-intense in T1
        # CSF (the brightest normal tissue in T2) is dark in FLAIR
        csf = normal & (img["t2"] > 1.5 * np.median(img["t2"][normal]))
        assert csf.sum() >= 20
        assert img["flair"][csf].mean() < 0.7 * np.median(img["flair"][normal])


def test_brats_render_is_reproducible_and_validated() -> None:
    a, sa = render_brats_case(brats_rng(1, 2), 20)
    b, sb = render_brats_case(brats_rng(1, 2), 20)
    np.testing.assert_array_equal(sa, sb)
    for m in MODALITIES:
        np.testing.assert_array_equal(a[m], b[m])
        assert a[m].dtype == np.float32
    assert sa.dtype == np.uint8
    with pytest.raises(ValueError):
        render_brats_case(brats_rng(0, 0), 8)
