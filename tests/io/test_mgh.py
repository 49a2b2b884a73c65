"""FreeSurfer MGH / MGZ through read_image: the NIfTI array and metadata contract, label values kept,
frames, 2D, truncated and corrupt files named, content detection, header-only geometry."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medlearn.io import (
    DataError,
    FormatMismatchWarning,
    detect_format,
    image_geometry,
    mgh_geometry,
    read_image,
    read_mgh,
)


def _affine() -> np.ndarray:
    # rotated, anisotropic, shifted: MGH stores direction cosines, zooms and the centre, not the affine
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.9, 1.2, 2.0])
    affine[:3, 3] = [-40.0, 12.5, 7.0]
    return affine


def _volume(shape: tuple[int, ...] = (6, 7, 5)) -> np.ndarray:
    return np.random.default_rng(0).normal(100.0, 20.0, shape).astype(np.float32)


def test_mgz_reads_like_the_same_nifti(tmp_path: Path) -> None:
    vol, affine = _volume(), _affine()
    nib.save(nib.MGHImage(vol, affine), tmp_path / "orig.mgz")
    nib.save(nib.Nifti1Image(vol, affine), tmp_path / "orig.nii.gz")
    arr, meta = read_image(tmp_path / "orig.mgz")
    ref, ref_meta = read_image(tmp_path / "orig.nii.gz")
    assert arr.dtype == np.float32 and arr.shape == (1, 6, 7, 5)
    np.testing.assert_array_equal(arr, ref)
    np.testing.assert_allclose(meta["affine"], ref_meta["affine"], atol=1e-4)
    np.testing.assert_allclose(meta["spacing"], ref_meta["spacing"], rtol=1e-6)
    assert meta["spatial_shape"] == ref_meta["spatial_shape"] == (6, 7, 5)
    assert meta["orientation"] == ref_meta["orientation"]
    assert meta["format"] == "mgh" and meta["compressed"] and not meta["extension_mismatch"]
    assert meta["channels"] == 1 and meta["n_volumes"] == 1 and meta["time_step"] is None
    assert meta["datatype"] == "float32" and meta["bit_depth"] == 32 and meta["spatial_unit"] == "mm"
    shared = {"format", "path", "spatial_shape", "spacing", "affine", "orientation", "channels", "bit_depth",
              "datatype", "spatial_unit", "time_unit", "time_step", "n_volumes", "extension_mismatch"}
    assert shared <= set(meta) and shared <= set(ref_meta)


def test_uncompressed_mgh_keeps_label_values(tmp_path: Path) -> None:
    labels = np.zeros((8, 8, 8), np.int32)
    labels[2:5, 2:5, 2:5] = 2
    labels[5:, 5:, 5:] = 41  # FreeSurfer's right cerebral white matter
    nib.save(nib.MGHImage(labels, np.eye(4)), tmp_path / "aseg.mgh")
    arr, meta = read_image(tmp_path / "aseg.mgh")
    assert sorted(np.unique(arr).tolist()) == [0.0, 2.0, 41.0]
    np.testing.assert_array_equal(arr[0], labels)
    assert meta["format"] == "mgh" and not meta["compressed"] and meta["datatype"] == "int32"


def test_frames_become_channels_and_2d_gets_a_singleton_axis(tmp_path: Path) -> None:
    frames = _volume((4, 5, 3, 2))
    img = nib.MGHImage(frames, np.eye(4))
    img.header.set_zooms((1.0, 1.0, 1.0, 2000.0))
    nib.save(img, tmp_path / "series.mgz")
    arr, meta = read_image(tmp_path / "series.mgz")
    assert arr.shape == (2, 4, 5, 3) and meta["n_volumes"] == 2 and meta["time_step"] == 2000.0
    np.testing.assert_array_equal(arr[1], frames[..., 1])

    flat = np.arange(30, dtype=np.uint8).reshape(5, 6)
    nib.save(nib.MGHImage(flat, np.eye(4)), tmp_path / "slice.mgz")
    arr, meta = read_image(tmp_path / "slice.mgz")
    assert arr.shape == (1, 5, 6, 1) and meta["spatial_shape"] == (5, 6, 1)
    np.testing.assert_array_equal(arr[0, :, :, 0], flat)


def test_truncated_and_corrupt_files_name_the_file(tmp_path: Path) -> None:
    nib.save(nib.MGHImage(_volume((16, 16, 16)), _affine()), tmp_path / "whole.mgz")
    nib.save(nib.MGHImage(_volume((16, 16, 16)), _affine()), tmp_path / "whole.mgh")
    mgz = (tmp_path / "whole.mgz").read_bytes()
    mgh = (tmp_path / "whole.mgh").read_bytes()
    cases = {
        "half.mgz": mgz[: len(mgz) // 2],  # stream cut inside the voxels
        "head.mgz": mgz[:30],  # cut inside the header
        "half.mgh": mgh[: len(mgh) // 2],
        "header_only.mgh": mgh[:284],
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        for read in (read_image, read_mgh, image_geometry, mgh_geometry):
            with pytest.raises(DataError, match="truncated") as exc:
                read(tmp_path / name)
            assert exc.value.path == str(tmp_path / name) and name in str(exc.value)

    (tmp_path / "text.mgz").write_bytes(gzip.compress(b"this is not a volume" * 20))
    with pytest.raises(DataError, match="not an MGH/MGZ file") as exc:
        read_image(tmp_path / "text.mgz")
    assert "text.mgz" in str(exc.value)
    (tmp_path / "empty.mgh").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        read_image(tmp_path / "empty.mgh")
    (tmp_path / "noise.mgh").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(DataError, match="not a valid MGH/MGZ file"):
        read_image(tmp_path / "noise.mgh")


def test_content_decides_the_format(tmp_path: Path) -> None:
    vol = _volume()
    nib.save(nib.MGHImage(vol, np.eye(4)), tmp_path / "scan.mgz")
    (tmp_path / "scan.bin").write_bytes((tmp_path / "scan.mgz").read_bytes())  # no extension hint
    assert detect_format(tmp_path / "scan.bin") == ["mgh"]
    arr, meta = read_image(tmp_path / "scan.bin")
    np.testing.assert_array_equal(arr[0], vol)
    assert not meta["extension_mismatch"]
    (tmp_path / "scan.nii.gz").write_bytes((tmp_path / "scan.mgz").read_bytes())  # MGZ named as NIfTI
    with pytest.warns(FormatMismatchWarning, match="extension says NIfTI but the content is MGH/MGZ"):
        arr, meta = read_image(tmp_path / "scan.nii.gz")
    assert meta["format"] == "mgh" and meta["extension_mismatch"]
    # a NIfTI is not mistaken for MGH and the other way round
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "real.nii")
    nib.save(nib.MGHImage(vol, np.eye(4)), tmp_path / "real.mgh")
    assert detect_format(tmp_path / "real.nii") == ["nifti"]
    assert detect_format(tmp_path / "real.mgh") == ["mgh"]
    bad_type = bytearray((tmp_path / "real.mgh").read_bytes())
    bad_type[20:24] = (7).to_bytes(4, "big")  # not an MGH voxel type
    (tmp_path / "bad_type.mgh").write_bytes(bytes(bad_type))
    assert detect_format(tmp_path / "bad_type.mgh") == []


def test_geometry_matches_the_decoded_file(tmp_path: Path) -> None:
    affine = _affine()
    nib.save(nib.MGHImage(_volume(), affine), tmp_path / "a.mgz")
    nib.save(nib.Nifti1Image(_volume(), affine), tmp_path / "a.nii.gz")
    for name in ("a.mgz", "a.nii.gz"):
        shape, aff = image_geometry(tmp_path / name)
        _, meta = read_image(tmp_path / name)
        assert shape == (6, 7, 5)
        np.testing.assert_allclose(aff, meta["affine"], atol=1e-6)
        np.testing.assert_allclose(aff, affine, atol=1e-4)
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    with pytest.raises(DataError, match="not a NIfTI or MGH/MGZ volume"):
        image_geometry(tmp_path / "a.png")
    with pytest.raises(DataError, match="file not found"):
        image_geometry(tmp_path / "missing.mgz")
