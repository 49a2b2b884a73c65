"""The one-shot phantom writer (LT-Net): recipe A (nested ellipses) and recipe B (the MNI152 template
from the nilearn wheel), the layout it writes, its deformations and the command line."""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from medlearn.cli import main
from medlearn.data.layouts import detect_layout
from medlearn.data.oneshot import read_oneshot_folder
from medlearn.io import read_image
from medlearn.synth import get_synth, list_synth
from medlearn.synth.oneshot import (
    ELLIPSE_INTENSITIES,
    ELLIPSE_LABELS,
    MNI_LABELS,
    diffeomorphic_displacement,
    ellipse_atlas,
    smooth_displacement,
    warp,
    write_oneshot,
)

needs_nilearn = pytest.mark.skipif(importlib.util.find_spec("nilearn") is None, reason="nilearn is not installed")


def _read(path: Path) -> np.ndarray:
    return read_image(path)[0][0]


def _dice(a: np.ndarray, b: np.ndarray, values: list[int]) -> float:
    return float(np.mean([2 * ((a == v) & (b == v)).sum() / ((a == v).sum() + (b == v).sum()) for v in values]))


@pytest.fixture(scope="module")
def ellipses2d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_oneshot(tmp_path_factory.mktemp("os") / "e2", n_train=4, n_eval=3, seed=2)


def test_registered_and_writes_the_layout(ellipses2d: Path) -> None:
    assert get_synth("oneshot") is write_oneshot and "one-shot" in list_synth()["oneshot"]
    assert detect_layout(ellipses2d, "oneshot").name == "oneshot"
    names = sorted(p.name for p in (ellipses2d / "images").iterdir())
    assert names == [f"eval_000{i}.nii.gz" for i in range(3)] + [f"train_000{i}.nii.gz" for i in range(4)]
    assert sorted(p.name for p in (ellipses2d / "labels").iterdir()) == [f"eval_000{i}.nii.gz" for i in range(3)]
    assert json.loads((ellipses2d / "labels.json").read_text()) == {str(k): v for k, v in ELLIPSE_LABELS.items()}
    found = read_oneshot_folder(ellipses2d)
    assert found.label_values == [0, 1, 2, 3, 4] and len(found.unlabelled) == 4 and len(found.labelled) == 3


def test_ellipse_atlas_and_subjects_follow_recipe_a(ellipses2d: Path) -> None:
    image, meta = read_image(ellipses2d / "atlas" / "image.nii.gz")
    labels = _read(ellipses2d / "atlas" / "labels.nii.gz")[:, :, 0].astype(int)
    assert image.shape == (1, 64, 64, 1) and meta["spacing"] == (1.0, 1.0, 1.0)
    assert sorted(np.unique(labels).tolist()) == [0, 1, 2, 3, 4]
    clean, clean_labels = ellipse_atlas((64, 64))
    np.testing.assert_array_equal(labels, clean_labels)
    for value, intensity in enumerate(ELLIPSE_INTENSITIES):  # label intensities, exact before the blur
        assert np.allclose(clean[clean_labels == value], intensity)
        assert abs(float(np.median(image[0, :, :, 0][labels == value])) - intensity) < 0.06
    for i in range(3):
        subject = _read(ellipses2d / "labels" / f"eval_000{i}.nii.gz")[:, :, 0].astype(int)
        assert sorted(np.unique(subject).tolist()) == [0, 1, 2, 3, 4]
        assert (subject != labels).mean() > 0.02  # deformed ...
        assert _dice(subject, labels, [1, 2, 3, 4]) > 0.5  # ... but still the same anatomy
    noisy = _read(ellipses2d / "images" / "train_0000.nii.gz")[:, :, 0]
    background = noisy[:8, :8]
    assert 0.005 < float(background.std()) < 0.05  # noise sigma 0.03-0.05, then blurred


def test_same_arguments_same_data_and_separate_test_streams(tmp_path: Path, ellipses2d: Path) -> None:
    again = write_oneshot(tmp_path / "again", n_train=2, n_eval=3, seed=2)
    for rel in ("images/eval_0001.nii.gz", "labels/eval_0002.nii.gz", "images/train_0001.nii.gz"):
        np.testing.assert_array_equal(_read(again / rel), _read(ellipses2d / rel))
    other = write_oneshot(tmp_path / "other", n_train=2, n_eval=1, seed=3)
    assert not np.array_equal(_read(other / "images/eval_0000.nii.gz"), _read(ellipses2d / "images/eval_0000.nii.gz"))


def test_3d_ellipsoids(tmp_path: Path) -> None:
    out = write_oneshot(tmp_path / "e3", dims=3, n_train=1, n_eval=1, size=20, seed=0)
    image, meta = read_image(out / "images" / "eval_0000.nii.gz")
    assert image.shape == (1, 20, 20, 20)
    labels = _read(out / "labels" / "eval_0000.nii.gz")
    assert sorted(np.unique(labels).astype(int).tolist()) == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(meta["affine"][:3, 3], -9.5)  # centred on the origin


def test_refuses_bad_arguments_and_overwrites_only_its_folders(tmp_path: Path) -> None:
    out = write_oneshot(tmp_path / "d", n_train=3, n_eval=2, size=16)
    with pytest.raises(FileExistsError, match="overwrite"):
        write_oneshot(out, size=16)
    (out / "notes.txt").write_text("mine")
    write_oneshot(out, n_train=1, n_eval=1, size=16, overwrite=True)
    assert sorted(p.name for p in (out / "images").iterdir()) == ["eval_0000.nii.gz", "train_0000.nii.gz"]
    assert (out / "notes.txt").read_text() == "mine"
    for bad in (dict(dims=4), dict(variant="circles"), dict(size=8), dict(n_train=0), dict(amp=-1.0)):
        with pytest.raises(ValueError):
            write_oneshot(tmp_path / "bad", **bad)  # type: ignore[arg-type]


def test_displacements() -> None:
    rng = np.random.default_rng(0)
    field = smooth_displacement(rng, (40, 40), sigma=5.0, largest=3.0)
    assert field.shape == (2, 40, 40)
    assert np.isclose(np.sqrt((field**2).sum(0)).max(), 3.0)
    # an integer shift reproduces np.roll away from the border
    image = rng.normal(size=(20, 20))
    shift = np.zeros((2, 20, 20))
    shift[0] = 2.0
    np.testing.assert_allclose(warp(image, shift)[:-2], np.roll(image, -2, axis=0)[:-2])
    labels = rng.integers(0, 3, (20, 20)).astype(np.uint8)
    assert warp(labels, shift, order=0).dtype == np.uint8
    # scaling and squaring gives an invertible map even where the velocity is large: det(Jacobian) > 0
    disp = diffeomorphic_displacement(np.random.default_rng(1), (48, 48), sigma=4.0, largest=8.0)
    grad = [np.gradient(disp[c]) for c in range(2)]
    det = (1 + grad[0][0]) * (1 + grad[1][1]) - grad[0][1] * grad[1][0]
    assert det.min() > 0
    assert np.sqrt((disp**2).sum(0)).max() > 4.0  # and it does move things


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    args = ["synth", "oneshot", "--out", str(out), "--dims", "3", "--n-train", "2", "--n-eval", "1", "--size", "16",
            "--amp", "2.5"]
    assert main(args) == 0
    assert "wrote oneshot data" in capsys.readouterr().out
    assert read_image(out / "images" / "train_0001.nii.gz")[0].shape == (1, 16, 16, 16)
    assert "amp=2.5" in (out / "README.txt").read_text()


@needs_nilearn
@pytest.mark.parametrize("dims,size", [(2, 56), (3, 24)])
def test_mni_variant_has_four_tissue_labels(tmp_path: Path, dims: int, size: int) -> None:
    out = write_oneshot(tmp_path / f"mni{dims}", dims=dims, n_train=1, n_eval=2, size=size, variant="mni", seed=0)
    found = read_oneshot_folder(out)
    assert found.label_values == [0, 1, 2, 3] and found.label_names == list(MNI_LABELS.values())
    atlas = _read(out / "atlas" / "labels.nii.gz").astype(int)
    assert max(atlas.shape) == size
    t1 = _read(out / "atlas" / "image.nii.gz")
    assert 0.0 <= t1.min() and t1.max() <= 1.0
    means = [float(t1[atlas == v].mean()) for v in range(4)]
    assert means[0] < means[1] < means[2] < means[3]  # T1: background < CSF < grey < white matter
    counts = np.bincount(atlas.ravel(), minlength=4)
    assert (counts > 0).all() and counts[2] > counts[1] and counts[3] > counts[1]
    for i in range(2):
        subject = _read(out / "labels" / f"eval_000{i}.nii.gz").astype(int)
        assert sorted(np.unique(subject).tolist()) == [0, 1, 2, 3]
        assert 0.5 < _dice(subject, atlas, [1, 2, 3]) < 0.99
    _, meta = read_image(out / "atlas" / "image.nii.gz")
    spacing = meta["spacing"][:dims]
    assert np.allclose(spacing, spacing[0]) and spacing[0] > 1.0  # isotropic, coarser than the 1 mm template


def test_mni_without_nilearn_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.resources.files

    def files(package: str):  # type: ignore[no-untyped-def]
        if package == "nilearn":
            raise ModuleNotFoundError("No module named 'nilearn'")
        return real(package)

    monkeypatch.setattr(importlib.resources, "files", files)
    with pytest.raises(ModuleNotFoundError, match="pip install nilearn"):
        write_oneshot(tmp_path / "x", variant="mni")
