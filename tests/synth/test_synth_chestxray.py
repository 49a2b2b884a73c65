"""Tests for the ChestX-ray14 phantom writer (layout of Wang et al., "ChestX-ray8", CVPR 2017)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medlearn.synth import SYNTHESIZERS, get_synth, list_synth
from medlearn.synth.chestxray import (
    CSV_HEADER,
    FINDINGS,
    image_rng,
    render_chest_radiograph,
    to_uint8,
    write_chestxray14,
)

OFFICIAL_COLUMNS = [
    "Image Index",
    "Finding Labels",
    "Follow-up #",
    "Patient ID",
    "Patient Age",
    "Patient Gender",
    "View Position",
    "OriginalImage[Width",
    "Height]",
    "OriginalImagePixelSpacing[x",
    "y]",
    "Unnamed: 11",
]


@pytest.fixture(scope="module")
def cxr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_chestxray14(tmp_path_factory.mktemp("cxr") / "ds", n_images=40, size=32, seed=3)


def _lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if ln]


def test_writes_the_exact_public_layout(cxr: Path) -> None:
    assert sorted(p.name for p in cxr.iterdir()) == [
        "Data_Entry_2017.csv",
        "README.txt",
        "images",
        "test_list.txt",
        "train_val_list.txt",
    ]
    assert (cxr / "Data_Entry_2017.csv").read_text().splitlines()[0] == CSV_HEADER
    assert CSV_HEADER == (
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
        "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
    )
    df = pd.read_csv(cxr / "Data_Entry_2017.csv")
    assert list(df.columns) == OFFICIAL_COLUMNS
    assert len(df) == 40 and df["Unnamed: 11"].isna().all()
    assert df["Image Index"].is_unique and list(df["Image Index"]) == sorted(df["Image Index"])
    for _, row in df.iterrows():
        m = re.fullmatch(r"(\d{8})_(\d{3})\.png", row["Image Index"])
        assert m is not None
        assert int(m.group(1)) == row["Patient ID"] and int(m.group(2)) == row["Follow-up #"]
        labels = row["Finding Labels"].split("|")
        assert labels == ["No Finding"] or (labels == sorted(labels) and set(labels) <= set(FINDINGS))
        assert row["Patient Gender"] in ("M", "F") and row["View Position"] in ("PA", "AP")
        assert row["OriginalImage[Width"] == 32 and row["Height]"] == 32
    assert df.groupby("Patient ID").size().max() >= 2  # some patients have follow-ups
    pngs = sorted(p.name for p in (cxr / "images").iterdir())
    assert pngs == sorted(df["Image Index"])
    with Image.open(cxr / "images" / pngs[0]) as im:
        assert im.format == "PNG" and im.mode == "L" and im.size == (32, 32)
    readme = (cxr / "README.txt").read_text()
    assert "synthetic" in readme.lower() and "seed=3" in readme


def test_split_is_by_patient(cxr: Path) -> None:
    df = pd.read_csv(cxr / "Data_Entry_2017.csv")
    patient = dict(zip(df["Image Index"], df["Patient ID"]))
    train, test = _lines(cxr / "train_val_list.txt"), _lines(cxr / "test_list.txt")
    assert len(test) == 10 and len(train) == 30  # default n_test: a quarter
    assert sorted(train + test) == sorted(df["Image Index"])
    assert not {patient[n] for n in train} & {patient[n] for n in test}


def test_explicit_n_test_and_prevalence_extremes(tmp_path: Path) -> None:
    out = write_chestxray14(tmp_path / "a", n_images=20, size=16, n_test=7, prevalence=0.0)
    assert len(_lines(out / "test_list.txt")) == 7
    assert set(pd.read_csv(out / "Data_Entry_2017.csv")["Finding Labels"]) == {"No Finding"}
    out = write_chestxray14(tmp_path / "b", n_images=20, size=16, prevalence=1.0)
    assert set(pd.read_csv(out / "Data_Entry_2017.csv")["Finding Labels"]) == {"|".join(FINDINGS)}


def test_deterministic_given_the_seed(tmp_path: Path) -> None:
    a = write_chestxray14(tmp_path / "a", n_images=15, size=32, seed=7)
    b = write_chestxray14(tmp_path / "b", n_images=15, size=32, seed=7)
    c = write_chestxray14(tmp_path / "c", n_images=15, size=32, seed=8)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert (a / "Data_Entry_2017.csv").read_bytes() != (c / "Data_Entry_2017.csv").read_bytes()


def test_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=re.escape(str(out))):
        write_chestxray14(out, n_images=5, size=16)
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
    write_chestxray14(out, n_images=12, size=16, overwrite=True)
    write_chestxray14(out, n_images=5, size=16, overwrite=True)  # shrinks: stale phantoms removed
    assert len(list((out / "images").iterdir())) == 5
    assert (out / "mine.txt").read_text() == "keep me"


def test_images_are_what_the_table_says(cxr: Path) -> None:
    """Re-rendering each row from its CSV labels reproduces the PNG: the labels are the truth."""
    df = pd.read_csv(cxr / "Data_Entry_2017.csv")
    for i, row in df.iterrows():
        labels = set(row["Finding Labels"].split("|")) - {"No Finding"}
        expected = to_uint8(render_chest_radiograph(image_rng(3, i), 32, {f: True for f in labels}))
        with Image.open(cxr / "images" / row["Image Index"]) as im:
            np.testing.assert_array_equal(np.asarray(im), expected)


def _pair(seed: int, finding: str, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    base = render_chest_radiograph(np.random.default_rng(seed), size, {})
    with_f = render_chest_radiograph(np.random.default_rng(seed), size, {finding: True})
    return base, with_f


def test_cardiomegaly_brightens_the_heart_borders() -> None:
    # heart centre (0.10, 0.30) in [-1, 1] units, normal half-width 0.26, enlarged 0.38
    diffs = []
    for seed in range(20):
        base, big = _pair(seed, "Cardiomegaly")
        region = (slice(38, 48), slice(22, 46))  # rows y ~ 0.2..0.5, cols x ~ -0.3..0.45
        diffs.append(big[region].mean() - base[region].mean())
    assert np.mean(diffs) > 0.05 and min(diffs) > 0


def test_nodule_is_a_small_bright_local_change() -> None:
    for seed in range(10):
        base, nod = _pair(seed, "Nodule")
        diff = nod - base
        assert diff.min() >= -1e-6  # additive: never darker
        assert diff.max() > 0.1
        assert (diff > 0.05).mean() < 0.08  # local: a few percent of the image


@pytest.mark.parametrize("finding", ["Effusion", "Consolidation"])
def test_lung_findings_raise_lung_opacity(finding: str) -> None:
    diffs = []
    for seed in range(10):
        base, sick = _pair(seed, finding)
        lungs = (slice(12, 44), slice(8, 56))
        diffs.append(sick[lungs].mean() - base[lungs].mean())
    assert min(diffs) > 0.005


def test_render_is_resolution_independent() -> None:
    small = render_chest_radiograph(np.random.default_rng(1), 32, {"Cardiomegaly": True, "Effusion": True})
    large = render_chest_radiograph(np.random.default_rng(1), 256, {"Cardiomegaly": True, "Effusion": True})
    assert small.shape == (32, 32) and large.shape == (256, 256)
    assert small.dtype == np.float32 and 0.0 <= small.min() and small.max() <= 1.0
    pooled = large.reshape(32, 8, 32, 8).mean(axis=(1, 3))
    assert np.corrcoef(pooled.ravel(), small.ravel())[0, 1] > 0.9


def test_render_rejects_unknown_findings() -> None:
    with pytest.raises(ValueError, match="Pneumonia"):
        render_chest_radiograph(np.random.default_rng(0), 32, {"Pneumonia": True})


def test_registry() -> None:
    assert get_synth("chestxray") is write_chestxray14 is SYNTHESIZERS["chestxray"]
    assert "chestxray" in list_synth() and list_synth()["chestxray"]
    with pytest.raises(KeyError, match="chestxray"):
        get_synth("no-such-thing")
    params = inspect.signature(write_chestxray14).parameters
    assert next(iter(params)) == "out"
    for name, p in list(params.items())[1:]:
        assert p.default is not inspect.Parameter.empty and p.annotation is not inspect.Parameter.empty, name
    assert inspect.getdoc(write_chestxray14).splitlines()[0]


def test_held_out_count_default_and_bounds():
    from medlearn.synth import held_out_count

    assert [held_out_count(None, n, "n") for n in (0, 1, 2, 8, 10)] == [0, 0, 1, 2, 2]
    assert held_out_count(3, 10, "n") == 3
    with pytest.raises(ValueError, match=r"n_test must be in \[0, n_images=4\], got 5"):
        held_out_count(5, 4, "n_images")
