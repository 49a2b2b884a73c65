"""Vaa3D .v3draw round trip and header variants; blocks equal slices of the full read, for every format."""

from __future__ import annotations

import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile

from medlearn.io import BlockReader, DataError, read_v3draw, write_v3draw


def _volume() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 4000, (2, 9, 11, 13)).astype(np.uint16)  # (C, Z, Y, X)


def test_v3draw_round_trip_and_old_headers(tmp_path: Path) -> None:
    v = _volume()
    write_v3draw(tmp_path / "a.v3draw", v)
    assert np.array_equal(read_v3draw(tmp_path / "a.v3draw"), v)
    raw = (tmp_path / "a.v3draw").read_bytes()
    assert raw[:24] == b"raw_image_stack_by_hpeng" and struct.unpack("<4i", raw[27:43]) == (13, 11, 9, 2)
    # old 2-byte sizes, big-endian float32
    f = np.arange(2 * 3 * 4, dtype=np.float32).reshape(1, 2, 3, 4)
    old = b"raw_image_stack_by_hpeng" + b"B" + struct.pack(">h", 4) + struct.pack(">4h", 4, 3, 2, 1) + \
        f.astype(">f4").tobytes()
    (tmp_path / "old.v3draw").write_bytes(old)
    assert np.array_equal(read_v3draw(tmp_path / "old.v3draw"), f)
    (tmp_path / "cut.v3draw").write_bytes(raw[:-10])
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_v3draw(tmp_path / "cut.v3draw")
    (tmp_path / "no.v3draw").write_bytes(b"x" * 100)
    with pytest.raises(DataError, match="not a Vaa3D"):
        read_v3draw(tmp_path / "no.v3draw")
    with pytest.raises(FileExistsError):
        write_v3draw(tmp_path / "a.v3draw", v)


def _files(tmp_path: Path) -> dict[str, tuple[Path, np.ndarray]]:
    v = _volume()
    write_v3draw(tmp_path / "v.v3draw", v)
    tifffile.imwrite(tmp_path / "v.tif", v[0])
    tifffile.imwrite(tmp_path / "z.tif", v[0], compression="zlib")  # not memory-mappable: page reads
    nib.save(nib.Nifti1Image(np.transpose(v[0], (2, 1, 0)), np.eye(4)), tmp_path / "v.nii.gz")
    return {"v3draw": (tmp_path / "v.v3draw", v[0]), "tif": (tmp_path / "v.tif", v[0]),
            "tif-zlib": (tmp_path / "z.tif", v[0]), "nifti": (tmp_path / "v.nii.gz", v[0])}


@pytest.mark.parametrize("kind", ["v3draw", "tif", "tif-zlib", "nifti"])
def test_a_block_equals_the_slice_of_the_full_volume(tmp_path: Path, kind: str) -> None:
    path, full = _files(tmp_path)[kind]
    padded = np.zeros((9 + 20, 11 + 20, 13 + 20), np.float32)
    padded[10:19, 10:21, 10:23] = full
    with BlockReader(path) as r:
        assert r.shape == (9, 11, 13)
        for centre in [(4, 5, 6), (0, 0, 0), (8, 10, 12), (-3, 5, 20), (30, 30, 30)]:
            size = (4, 5, 6)
            b = r.block(centre, size)
            s = np.rint(centre).astype(int) - np.array(size) // 2 + 10
            want = padded[s[0]:s[0] + 4, s[1]:s[1] + 5, s[2]:s[2] + 6] if (s >= 0).all() and \
                (s + size <= padded.shape).all() else np.zeros(size, np.float32)
            assert b.shape == size and b.dtype == np.float32 and np.array_equal(b, want), centre


def test_bad_block_sources(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        BlockReader(tmp_path / "missing.v3draw")
    (tmp_path / "x.png").write_bytes(b"png")
    with pytest.raises(DataError, match="block reading supports"):
        BlockReader(tmp_path / "x.png")
    write_v3draw(tmp_path / "v.v3draw", _volume())
    with pytest.raises(DataError, match="channel 5"):
        BlockReader(tmp_path / "v.v3draw", channel=5)


def test_a_reader_over_an_array_gives_the_same_blocks(tmp_path):
    import tifffile

    vol = np.random.default_rng(0).random((12, 10, 9)).astype(np.float32)
    tifffile.imwrite(tmp_path / "v.tif", vol)
    mem = BlockReader.from_array(vol)
    with BlockReader(tmp_path / "v.tif") as disk:
        for centre in ((0, 0, 0), (6, 5, 4), (11, 9, 8), (20, 20, 20)):
            np.testing.assert_array_equal(mem.block(centre, (5, 4, 3)), disk.block(centre, (5, 4, 3)))
        np.testing.assert_array_equal(mem.max_projection(), disk.max_projection())
