"""The AS-OCT phantom writer (AGE layout): layout, determinism, geometry of the drawn spur, labels."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.ndimage import map_coordinates

from medlearn.cli import main
from medlearn.synth import list_synth
from medlearn.synth.asoct import CLOSURE_GAP, image_rng, render_angle, render_scan, write_age


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix != ".xlsx":  # xlsx embeds a timestamp
            h.update(p.name.encode() + p.read_bytes())
    h.update(pd.read_excel(next(root.glob("*_Location.xlsx"))).to_csv().encode())
    return h.hexdigest()


def test_layout_and_determinism(tmp_path: Path) -> None:
    a = write_age(tmp_path / "a", n_scans=10, images_per_patient=4, seed=3)
    b = write_age(tmp_path / "b", n_scans=10, images_per_patient=4, seed=3)
    assert _digest(a) == _digest(b)
    names = sorted(p.name for p in (a / "ASOCT_Image").iterdir())
    assert names[:5] == ["T0001-01.jpg", "T0001-02.jpg", "T0001-03.jpg", "T0001-04.jpg", "T0002-01.jpg"]
    im = Image.open(a / "ASOCT_Image" / names[0])
    assert im.mode == "L" and im.size == (192, 96) and im.format == "JPEG"
    df = pd.read_excel(a / "a_Location.xlsx")
    assert list(df.columns) == ["ASOCT_Name", "Left_Label", "X1", "Y1", "Right_Label", "X2", "Y2"]
    ok = df.X1 >= 0
    assert (df.X1[ok] < 96).all() and (df.X2[df.X2 >= 0] >= 96).all()  # each spur in its own half
    with pytest.raises(FileExistsError):
        write_age(a, n_scans=2)
    c = write_age(tmp_path / "c", n_scans=3, table_format="csv", seed=3)
    assert (c / "c_Location.csv").is_file() and not list(c.glob("*.xlsx"))


def test_cli_and_registry(tmp_path: Path) -> None:
    assert "asoct" in list_synth()
    assert main(["synth", "asoct", "--out", str(tmp_path / "s"), "--n-scans", "4", "--width", "128",
                 "--height", "64"]) == 0
    assert Image.open(next((tmp_path / "s" / "ASOCT_Image").iterdir())).size == (128, 64)


def test_scan_halves_are_the_two_angles_mirrored() -> None:
    scan, left, right = render_scan(7, 2, 200, 90)
    a, da = render_angle(image_rng(7, 2, 0), 90, 100)
    b, db = render_angle(image_rng(7, 2, 1), 90, 100)
    np.testing.assert_array_equal(scan[:, :100], a)
    np.testing.assert_array_equal(scan[:, 100:], b[:, ::-1])
    assert left.spur == da.spur and right.spur == (199 - db.spur[0], db.spur[1])


@pytest.mark.parametrize("size", [96, 240])
def test_the_spur_is_the_corner_of_the_band(size: int) -> None:
    """On a small ring around the written spur, the band (bright) fills one side of a bent edge: more than
    half and less than three quarters of the ring (band side 180 + 25..45 degrees of 360)."""
    for i in range(12):
        img, d = render_angle(image_rng(11, i, 0), size, size, noise=False)
        u = size / 96
        ang = np.linspace(0, 2 * np.pi, 180, endpoint=False)
        x, y = d.spur[0] + 5 * u * np.cos(ang), d.spur[1] + 5 * u * np.sin(ang)
        ring = map_coordinates(img.astype(np.float64), [y, x], order=1)
        bright = float((ring > 0.55).mean())
        assert 0.45 < bright < 0.8, (i, bright)
        centre = float(map_coordinates(img.astype(np.float64), [[d.spur[1]], [d.spur[0]]], order=1)[0])
        assert 0.25 < centre < 0.75, (i, centre)  # on the edge, not inside either side


def test_labels_follow_the_gap_and_prevalence() -> None:
    draws = [render_angle(image_rng(1, i, 0), 32, 32)[1] for i in range(400)]
    assert all(d.closed == (d.gap < CLOSURE_GAP) for d in draws)
    assert 0.18 < np.mean([d.closed for d in draws]) < 0.32  # gap ~ U(0, 12), closure below 3: 25 %
    with pytest.raises(ValueError, match="at least 16"):
        render_angle(image_rng(0, 0, 0), 8, 40)


def test_missing_spurs_are_minus_one(tmp_path: Path) -> None:
    root = write_age(tmp_path / "m", n_scans=40, p_missing=0.5, seed=2)
    df = pd.read_excel(next(root.glob("*_Location.xlsx")))
    gone = (df.X1 == -1) & (df.Y1 == -1)
    assert 0.25 < gone.mean() < 0.75
    assert not ((df.X1 == -1) ^ (df.Y1 == -1)).any()
    assert set(df.Left_Label[gone]) <= {0, 1}
    assert not math.isnan(df.Left_Label[gone].sum())
