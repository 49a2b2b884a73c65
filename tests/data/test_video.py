"""Video layouts: CVC-ClinicDB, ETIS-LaribPolypDB (pseudo-sequences), folders of frames / video files."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from medlearn.data.cvc_clinicdb import read_cvc_clinicdb, read_cvc_clinicdb_masked
from medlearn.data.etis import read_etis
from medlearn.data.video_folder import read_video_folder
from medlearn.data.video_frames import (
    decode_video,
    endoscope_border_mask,
    load_frame,
    load_frame_mask,
    split_by_frame_difference,
    write_video,
)
from medlearn.io import write_image
from medlearn.io.errors import DataError
from medlearn.synth.endoscopy import write_cvc_phantom, write_etis_phantom


@pytest.fixture(scope="module")
def cvc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cvc_phantom(tmp_path_factory.mktemp("cvc") / "cvc", n_videos=3, n_frames=4, size=24, seed=3)


@pytest.fixture(scope="module")
def etis(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_etis_phantom(tmp_path_factory.mktemp("etis") / "etis", n_videos=6, n_frames=5, size=32, seed=4)


def test_cvc_reads_sequences_from_the_table(cvc: Path) -> None:
    recs = read_cvc_clinicdb(cvc)
    assert len(recs) == 12
    assert [r.video for r in recs] == [f"video{v:03d}" for v in (1, 2, 3) for _ in range(4)]
    assert [r.frame for r in recs] == [0, 1, 2, 3] * 3
    assert recs[5].name == "Original/6.tif" and recs[5].mask == cvc / "Ground Truth" / "6.tif"
    frame, mask = load_frame(recs[0]), load_frame_mask(recs[0])
    assert frame.shape == (3, 24, 24) and 0.0 <= float(frame.min()) and float(frame.max()) <= 1.0
    assert set(np.unique(mask)) <= {0, 1} and mask.sum() > 0
    assert float(frame[:, 0, 0].abs().sum()) == 0.0  # the black endoscope border
    masked = read_cvc_clinicdb_masked(cvc)
    assert [m.group for m in masked] == [r.video for r in recs]


def _listing(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


def test_etis_pseudo_sequences_recover_the_clips_and_nothing_is_written(
        etis: Path, caplog: pytest.LogCaptureFixture) -> None:
    before = _listing(etis)
    with caplog.at_level(logging.INFO, logger="medlearn.data.video_frames"):
        recs = read_etis(etis)
    assert _listing(etis) == before  # a read never writes into the dataset
    assert len(recs) == 30
    assert [r.video for r in recs] == [f"etis{v:03d}" for v in range(1, 7) for _ in range(5)]
    assert recs[0].mask == etis / "GroundTruth" / "p1.tif"
    [line] = [r.getMessage() for r in caplog.records]
    assert "30 frames grouped into 6 pseudo-sequences" in line and "cut level" in line
    assert "sequences.csv" in line and "grouping_out" in line


@pytest.mark.parametrize("layout", ["etis", "cvc_clinicdb"])
def test_a_written_grouping_reads_back_as_the_sequence_table(layout: str, tmp_path: Path) -> None:
    if layout == "etis":
        root, read = write_etis_phantom(tmp_path / "etis", n_videos=3, n_frames=3, size=16, seed=2), read_etis
    else:
        root, read = write_cvc_phantom(tmp_path / "cvc", n_videos=3, n_frames=3, size=16, seed=2), read_cvc_clinicdb
        (root / "metadata.csv").unlink()  # no table: the grouping is derived
    out = tmp_path / "run" / "pseudo_sequences.csv"
    recs = read(root, grouping_out=out)
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["name"], r["video"], int(r["frame"])) for r in rows] == [(r.name, r.video, r.frame) for r in recs]
    assert len({r.video for r in recs}) == 3
    # the user's fix: the file, edited (the last sequence split in two), put back as sequences.csv
    rows[-1]["video"] = "mine"
    with (root / "sequences.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, ["name", "video", "frame"])
        w.writeheader()
        w.writerows(rows)
    again = read(root)
    assert [(r.name, r.video) for r in again] == [(r["name"], r["video"]) for r in rows]
    assert again[-1].frame == 0 and again[-2].frame == 1


def test_frame_difference_rule_by_hand() -> None:
    red, blue, dark = torch.zeros(3, 8, 8), torch.zeros(3, 8, 8), torch.zeros(3, 8, 8)
    red[0], blue[2] = 1.0, 1.0
    red2 = red.clone()
    red2[1] = 0.03  # |diff| = 0.01 on average
    assert split_by_frame_difference([red, red2, blue, blue, dark], threshold=0.2) == [0, 0, 1, 1, 2]
    # adaptive: diffs 0.01, 0.01, 2/3, 0.01 -> median 0.01, level 0.025
    assert split_by_frame_difference([red, red2, red, blue, blue]) == [0, 0, 0, 1, 1]
    assert split_by_frame_difference([red, red], threshold=1.0, sizes=[(8, 8), (9, 8)]) == [0, 1]


def test_missing_masks_are_all_listed(tmp_path: Path) -> None:
    root = write_cvc_phantom(tmp_path / "cvc", n_videos=2, n_frames=3, size=16)
    (root / "Ground Truth" / "2.tif").unlink()
    (root / "Ground Truth" / "5.tif").unlink()
    with pytest.raises(DataError) as exc:
        read_cvc_clinicdb(root)
    assert len(exc.value.problems) == 2 and "2.tif: no mask" in str(exc.value) and "5.tif: no mask" in str(exc.value)
    etis = write_etis_phantom(tmp_path / "etis", n_videos=2, n_frames=2, size=16)
    (etis / "GroundTruth" / "p3.tif").unlink()
    with pytest.raises(DataError, match=r"3.tif: no mask \(expected .*p3.tif\)"):
        read_etis(etis)


def test_frames_of_different_sizes_in_one_video_are_listed(tmp_path: Path) -> None:
    root = write_cvc_phantom(tmp_path / "cvc", n_videos=2, n_frames=3, size=16)
    write_image(root / "Original" / "2.tif", np.zeros((3, 20, 16), np.uint8), overwrite=True)
    write_image(root / "Original" / "6.tif", np.zeros((3, 16, 18), np.uint8), overwrite=True)
    with pytest.raises(DataError) as exc:
        read_cvc_clinicdb(root)
    msg = str(exc.value)
    assert "video video001: frames of different sizes" in msg and "video video002" in msg
    folder = tmp_path / "frames"
    for i, shape in enumerate([(3, 8, 8), (3, 8, 8), (3, 10, 8)]):
        write_image(folder / "clipA" / f"f{i}.png", np.zeros(shape, np.uint8))
    write_image(folder / "clipB" / "f0.png", np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(DataError, match=r"video clipA: frames of different sizes \(8x8: clipA/f0.png, clipA/f1.png; "
                                        r"10x8: clipA/f2.png\)"):
        read_video_folder(folder)


def test_bad_sequence_table_rows_are_listed(tmp_path: Path) -> None:
    root = write_cvc_phantom(tmp_path / "cvc", n_videos=1, n_frames=3, size=16)
    (root / "metadata.csv").write_text("frame,sequence_id\n1,a\nx,a\n2,\n1,b\n")
    with pytest.raises(DataError) as exc:
        read_cvc_clinicdb(root)
    assert [p.split(":")[0] for p in exc.value.problems] == ["line 3", "line 4", "line 5"]


def test_video_files_round_trip_and_unreadable_videos_are_listed(tmp_path: Path) -> None:
    pytest.importorskip("av")
    folder = tmp_path / "videos"
    rng = np.random.default_rng(0)
    clip = (rng.uniform(0.2, 0.8, (7, 3, 16, 24)) * 0 + np.linspace(0, 1, 24)[None, None, None]).astype(np.float32)
    write_video(folder / "case1.mp4", torch.from_numpy(clip), fps=12.5)
    frames, fps = decode_video(folder / "case1.mp4")
    assert frames.shape == (7, 16, 24, 3) and fps == pytest.approx(12.5)
    odd = write_video(tmp_path / "odd.mp4", np.full((3, 15, 21, 3), 100, np.uint8), fps=25)
    assert decode_video(odd)[0].shape == (3, 15, 21, 3)  # odd sizes kept
    assert np.abs(frames[3].astype(float) / 255 - np.moveaxis(clip[3], 0, -1)).mean() < 0.03
    for i in range(3):
        write_image(folder / "clip" / f"{i}.png", np.zeros((3, 8, 8), np.uint8))
    recs = read_video_folder(folder, domain="centre2")
    assert [(r.video, r.frame) for r in recs][:4] == [("case1", 0), ("case1", 1), ("case1", 2), ("case1", 3)]
    assert len(recs) == 10 and recs[-1].name == "clip/2.png" and recs[0].domain == "centre2"
    assert load_frame(recs[2]).shape == (3, 16, 24)
    (folder / "broken.mp4").write_bytes(b"not a video at all")
    (folder / "empty.avi").write_bytes(b"")
    with pytest.raises(DataError) as exc:
        read_video_folder(folder)
    assert sorted(p.split(":")[0] for p in exc.value.problems) == ["broken.mp4", "empty.avi"]


def test_border_mask_drops_the_dark_border_and_keeps_a_dark_lumen() -> None:
    frame = torch.full((3, 9, 9), 0.5)
    frame[:, 0, :] = 0.0
    frame[:, :, 8] = 0.01  # border on two sides
    frame[:, 4, 4] = 0.0  # the dark lumen inside the view
    mask = endoscope_border_mask(frame)
    expected = torch.ones(1, 9, 9)
    expected[:, 0, :] = 0.0
    expected[:, :, 8] = 0.0
    assert torch.equal(mask, expected)


def test_border_mask_of_a_phantom_frame(cvc: Path) -> None:
    frame = load_frame(read_cvc_clinicdb(cvc)[0])
    mask = endoscope_border_mask(frame)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 24), torch.linspace(-1, 1, 24), indexing="ij")
    outside = (yy**2 + xx**2).sqrt() > 0.97
    assert float(mask[0][outside].max()) == 0.0 and float(mask[0][~outside].mean()) > 0.95
