"""Mask corruption (every kind keeps the cup in the disc, seeded, exact fraction, the input untouched) and the
two-camera fundus phantoms in the REFUGE layout, through the API and the CLI."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medlearn.cli import main
from medlearn.data.refuge import read_refuge
from medlearn.io.errors import DataError
from medlearn.synth.corrupt import CORRUPTIONS, corrupt_labels, corrupt_masks, disk_footprint
from medlearn.synth.fundus import SOURCE_STYLE, TARGET_STYLE, render_fundus, write_refuge


def _disc(size: int = 40, r: float = 9.0, rc: float = 4.0) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    d2 = (yy - 20) ** 2 + (xx - 20) ** 2
    lab = (d2 <= r * r).astype(np.int64)
    lab[d2 <= rc * rc] = 2
    return lab


def _tree_hash(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("kind", CORRUPTIONS)
@pytest.mark.parametrize("seed", range(4))
def test_every_kind_changes_the_mask_and_keeps_the_cup_in_the_disc(kind: str, seed: int) -> None:
    lab = _disc()
    out, info = corrupt_labels(lab, kind, np.random.default_rng(seed), radius=(3, 5), shift=(2, 5))
    assert set(np.unique(out)) <= {0, 1, 2} and info.kind == kind and info.changed == int((out != lab).sum()) > 0
    disc, cup = out >= 1, out == 2
    assert not (cup & ~disc).any()  # the labels can only encode a cup inside the disc ...
    if kind in ("dilate", "erode"):
        r = int(info.params["radius"])
        assert 3 <= r <= 5
        grow = kind == "dilate"
        assert int(disc.sum()) > int((lab >= 1).sum()) if grow else int(disc.sum()) < int((lab >= 1).sum())
    if kind == "shift":
        dy, dx = int(info.params["dy"]), int(info.params["dx"])
        assert 2 <= abs(dy) <= 5 and 2 <= abs(dx) <= 5
        np.testing.assert_array_equal(out[10 + dy:30 + dy, 10 + dx:30 + dx], lab[10:30, 10:30])
    again, _ = corrupt_labels(lab, kind, np.random.default_rng(seed), radius=(3, 5), shift=(2, 5))
    np.testing.assert_array_equal(out, again)


def test_dilation_is_a_disk_of_the_drawn_radius() -> None:
    lab = np.zeros((21, 21), dtype=np.int64)
    lab[10, 10] = 2  # a one-pixel disc that is all cup
    out, info = corrupt_labels(lab, "dilate", np.random.default_rng(0), radius=(4, 4))
    np.testing.assert_array_equal(out[6:15, 6:15] >= 1, disk_footprint(4))
    np.testing.assert_array_equal(out[7:14, 7:14] == 2, disk_footprint(3))  # the cup grows by one less


def test_cup_cut_to_the_disc_after_erosion() -> None:
    lab = _disc(r=6.0, rc=5.0)
    out, _ = corrupt_labels(lab, "erode", np.random.default_rng(1), radius=(5, 5))
    assert not ((out == 2) & (out < 1)).any() and int((out == 2).sum()) <= int((out >= 1).sum())


def _mask_folder(root: Path, n: int = 8) -> Path:
    for i in range(n):
        sub = root / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        stored = np.array([255, 128, 0], dtype=np.uint8)[_disc()]
        Image.fromarray(stored).save(sub / f"m{i}.bmp")
    return root


def test_corrupt_masks_folder_exact_fraction_seeded_and_input_untouched(tmp_path: Path) -> None:
    src = _mask_folder(tmp_path / "masks")
    before = _tree_hash(src)
    out = corrupt_masks(src, tmp_path / "noisy", fraction=0.5, seed=3)
    assert _tree_hash(src) == before
    rows = list(csv.DictReader((out / "corruption.csv").open()))
    assert len(rows) == 8 and sum(r["corrupted"] == "1" for r in rows) == 4
    for r in rows:
        a = np.asarray(Image.open(src / r["mask"]))
        b = np.asarray(Image.open(out / r["mask"]))
        assert set(np.unique(b)) <= {0, 128, 255}  # REFUGE encoding kept
        assert (r["corrupted"] == "1") == (not np.array_equal(a, b))
        assert (r["kind"] == "none") == (r["corrupted"] == "0")
    again = corrupt_masks(src, tmp_path / "noisy2", fraction=0.5, seed=3)
    assert _tree_hash(again) == _tree_hash(out)
    other = corrupt_masks(src, tmp_path / "noisy3", fraction=0.5, seed=4)
    assert _tree_hash(other) != _tree_hash(out)
    with pytest.raises(ValueError, match="inside the input folder"):
        corrupt_masks(src, src / "x")
    with pytest.raises(FileExistsError):
        corrupt_masks(src, out)


def test_corrupt_masks_table_and_bad_masks(tmp_path: Path) -> None:
    src = _mask_folder(tmp_path / "data" / "masks", 4)
    (tmp_path / "data" / "img.png").write_bytes(b"")
    table = tmp_path / "data" / "masks.csv"
    table.write_text("image,mask,domain\n" + "".join(f"img.png,masks/{'a' if i % 2 else 'b'}/m{i}.bmp,x\n"
                                                     for i in range(4)))
    out = corrupt_masks(table, tmp_path / "data" / "noisy", fraction=0.25, seed=0, kinds=["shift"])
    rows = list(csv.DictReader((out / "masks.csv").open()))
    assert [r["mask"] for r in rows] == ["masks/b/m0.bmp", "masks/a/m1.bmp", "masks/b/m2.bmp", "masks/a/m3.bmp"]
    assert all((out / r["mask"]).is_file() and (out / r["image"]).resolve() == (tmp_path / "data" / "img.png")
               for r in rows)
    # unusable masks: every one listed, nothing written
    for name, arr in (("b/m0.bmp", np.full((40, 40), 7, np.uint8)), ("a/m1.bmp", np.full((40, 40), 200, np.uint8))):
        Image.fromarray(arr).save(src / name)
    with pytest.raises(DataError, match="2 unusable masks") as exc:
        corrupt_masks(table, tmp_path / "fresh")
    assert "m0.bmp" in exc.value.problems[0] and "m1.bmp" in exc.value.problems[1]
    assert not (tmp_path / "fresh").exists()


def test_cli_corrupt_masks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _mask_folder(tmp_path / "masks", 4)
    rc = main(["corrupt-masks", "--masks", str(src), "--out", str(tmp_path / "o"), "--fraction", "0.5", "--seed",
               "1", "--kinds", "dilate,erode", "--radius", "2", "3"])
    assert rc == 0 and "(2 corrupted)" in capsys.readouterr().out
    kinds = {r["kind"] for r in csv.DictReader((tmp_path / "o" / "corruption.csv").open())}
    assert kinds <= {"none", "dilate", "erode"}
    assert main(["corrupt-masks", "--masks", str(src), "--out", str(src / "inner")]) == 2
    assert main(["corrupt-masks", "--masks", str(tmp_path / "nope"), "--out", str(tmp_path / "p")]) == 2


def test_camera_styles_differ() -> None:
    a, lab, shape = render_fundus(np.random.default_rng(0), 48, SOURCE_STYLE)
    b, lab_b, _ = render_fundus(np.random.default_rng(0), 48, TARGET_STYLE, shape)
    assert a.shape == (48, 48, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(lab, lab_b)
    assert abs(float(a.mean()) - float(b.mean())) > 5  # a visible shift between the cameras
    assert float(a[lab == 2].mean()) > float(a[lab == 1].mean()) > float(a[lab == 0].mean())  # cup > rim > bg


def test_write_refuge_layout_clean_copies_and_cli(tmp_path: Path) -> None:
    root = write_refuge(tmp_path / "f", n_train=12, n_target=3, n_test=4, n_source_test=2, noise_fraction=0.5, seed=5)
    recs = read_refuge(root)
    assert [sum(r.split == s for r in recs) for s in ("train", "val", "test")] == [12, 3, 4]
    rows = list(csv.DictReader((root / "clean" / "corruption.csv").open()))
    assert sum(r["corrupted"] == "1" for r in rows) == 6
    for r in rows:
        noisy = np.asarray(Image.open(root / "Annotation-Training400" / "Disc_Cup_Masks" / r["mask"]))
        clean = np.asarray(Image.open(root / "clean" / "Annotation-Training400" / "Disc_Cup_Masks" / r["mask"]))
        assert (r["corrupted"] == "1") == (not np.array_equal(noisy, clean))
    table = list(csv.DictReader((root / "clean" / "source_test.csv").open()))
    assert len(table) == 2 and all(r["split"] == "test" and (root / "clean" / r["mask"]).is_file() for r in table)
    assert main(["synth", "fundus", "--out", str(tmp_path / "cli"), "--n-train", "4", "--n-target", "2",
                 "--n-test", "2", "--n-source-test", "0", "--seed", "1"]) == 0
    assert len(read_refuge(tmp_path / "cli")) == 8
