"""The correlated-class ISIC phantom writer (CCL-Net spec section 5, ISIC 2018 Task 3 layout)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medlearn.cli import main
from medlearn.synth import get_synth
from medlearn.synth.isic import GROUP_OF, RELATED_PAIRS, world_templates, write_isic2018


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_layout_counts_and_determinism(tmp_path: Path) -> None:
    a = write_isic2018(tmp_path / "a", counts="3,5,2,2,3,1,1", n_test_per_class=2, size=16, seed=4)
    assert sorted(p.name for p in a.iterdir()) == [
        "ISIC2018_Task3_Test_GroundTruth", "ISIC2018_Task3_Test_Input", "ISIC2018_Task3_Training_GroundTruth",
        "ISIC2018_Task3_Training_Input", "ISIC2018_Task3_Training_LesionGroupings.csv", "README.txt"]
    gt = (a / "ISIC2018_Task3_Training_GroundTruth/ISIC2018_Task3_Training_GroundTruth.csv").read_text().splitlines()
    assert gt[0] == "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC" and len(gt) == 18
    assert gt[1].startswith("ISIC_") and gt[1].count("1.0") == 1
    jpgs = sorted((a / "ISIC2018_Task3_Training_Input").iterdir())
    with Image.open(jpgs[0]) as im:
        assert im.format == "JPEG" and im.mode == "RGB" and im.size == (16, 16)
    assert _digest(a) == _digest(write_isic2018(tmp_path / "b", counts="3,5,2,2,3,1,1", n_test_per_class=2,
                                                size=16, seed=4))
    assert _digest(a) != _digest(write_isic2018(tmp_path / "c", counts="3,5,2,2,3,1,1", n_test_per_class=2,
                                                size=16, seed=5))
    with pytest.raises(FileExistsError):
        write_isic2018(a, size=16)
    with pytest.raises(ValueError, match="7"):
        write_isic2018(tmp_path / "d", counts="1,2,3")


def test_super_groups_share_templates() -> None:
    assert GROUP_OF == (0, 0, 0, 1, 1, 2, 3) and RELATED_PAIRS == ((0, 1), (0, 2), (1, 2), (3, 4))
    groups, classes = world_templates(24, 1234, 0.5)
    assert groups.shape == (4, 24, 24) and classes.shape == (7, 24, 24)
    np.testing.assert_allclose(classes.std(axis=(1, 2)), 0.5, rtol=1e-6)
    # class means of rendered images correlate within a super-group more than across
    from medlearn.synth.isic import render_lesion

    rng = np.random.default_rng(0)
    means = np.stack([np.mean([render_lesion(rng, k, 1.0, 0.6, groups, classes, noise=0.0).mean(-1)
                               for _ in range(1)], axis=0).ravel() for k in range(7)])
    c = np.corrcoef(means)
    assert c[0, 1] > c[0, 3] and c[3, 4] > c[3, 5]


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert get_synth("isic") is write_isic2018
    out = tmp_path / "cli"
    assert main(["synth", "isic", "--out", str(out), "--counts", "2,2,2,2,2,2,2", "--n-test-per-class", "0",
                 "--size", "12", "--seed", "1"]) == 0
    assert "wrote isic" in capsys.readouterr().out
    assert not (out / "ISIC2018_Task3_Test_Input").exists()
    assert "seed=1" in (out / "README.txt").read_text()
