"""Tests for medlearn.io: real files shipped with pydicom/pydicom-data/nibabel, round trips, and
malformed files that must raise DataError naming the file and the reason."""

from __future__ import annotations

import gzip
import re
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydicom.data import get_testdata_file

from medlearn.io import (
    DataError,
    FormatMismatchWarning,
    PrecisionLossWarning,
    read_dicom,
    read_image,
    read_png,
    reorient_to,
    write_image,
)

NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"
REQUIRED_KEYS = {
    "format", "path", "spatial_shape", "spacing", "affine", "orientation", "channels", "bit_depth",
}
PRIVATE_WORDS = ("patient", "study", "accession", "birth", "institution", "physician", "instanceuid")


def dicom_file(name: str) -> Path:
    """A pydicom / pydicom-data test file, or skip the test when it is not installed."""
    found = get_testdata_file(name)
    if found is None:
        pytest.skip(f"{name} is not in the installed pydicom test data")
    return Path(found)


def check_meta(arr: np.ndarray, meta: dict) -> None:
    """The contract every reader promises."""
    assert arr.dtype == np.float32
    assert REQUIRED_KEYS <= set(meta)
    assert meta["channels"] == arr.shape[0]
    assert meta["spatial_shape"] == arr.shape[1:]
    assert np.isfinite(arr).all()
    if meta["spacing"] is not None:
        assert len(meta["spacing"]) == len(meta["spatial_shape"])
        assert all(isinstance(s, float) and s > 0 for s in meta["spacing"])
    if meta["affine"] is not None:
        assert meta["affine"].shape == (4, 4)


def raises_data_error(path: Path, reason: str):
    """``pytest.raises(DataError)`` whose message names the file *and* matches ``reason``."""
    return pytest.raises(DataError, match=rf"(?s){re.escape(path.name)}.*{reason}")


# ---------------------------------------------------------------------------------------------
# Real DICOM files
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def radiograph() -> tuple[np.ndarray, dict]:
    """RG1_UNCI: a real chest radiograph (CR, MONOCHROME1, 15-bit), decoded once per module."""
    return read_image(dicom_file("RG1_UNCI.dcm"))


def test_radiograph_shape_and_meta(radiograph):
    arr, meta = radiograph
    ds = pydicom.dcmread(dicom_file("RG1_UNCI.dcm"), stop_before_pixels=True)
    check_meta(arr, meta)
    assert arr.shape == (1, ds.Rows, ds.Columns) == (1, 1955, 1841)
    assert meta["format"] == "dicom"
    assert meta["modality"] == "CR"
    assert meta["photometric"] == "MONOCHROME1"
    assert meta["output_photometric"] == "MONOCHROME2"
    assert meta["inverted"] is True
    assert meta["bit_depth"] == 15
    assert meta["n_frames"] == 1
    # The header's PixelSpacing is "0.000\0.000": not a usable spacing, so it is reported as unknown.
    assert [float(v) for v in ds.PixelSpacing] == [0.0, 0.0]
    assert meta["spacing"] is None and meta["pixel_spacing"] is None


def test_radiograph_has_no_patient_or_study_identifiers(radiograph):
    _, meta = radiograph
    for key in meta:
        assert not any(word in key.lower() for word in PRIVATE_WORDS), key
    text = repr(meta)
    assert "CompressedSamples" not in text  # PatientName
    assert "9RG1" not in text  # PatientID / StudyID
    assert "1.3.6.1.4.1.5962.1.2.9" not in text  # StudyInstanceUID


def test_radiograph_monochrome1_is_inverted_to_display_convention(radiograph):
    arr, _ = radiograph
    img = arr[0]
    h, w = img.shape
    rows = slice(int(0.30 * h), int(0.50 * h))
    right_lung = img[rows, int(0.20 * w) : int(0.35 * w)].mean()
    left_lung = img[rows, int(0.65 * w) : int(0.80 * w)].mean()
    mediastinum = img[rows, int(0.47 * w) : int(0.53 * w)].mean()
    assert right_lung < mediastinum and left_lung < mediastinum
    # Exactly the stored values flipped within the 15-bit range.
    raw = pydicom.dcmread(dicom_file("RG1_UNCI.dcm")).pixel_array
    np.testing.assert_array_equal(img, (2**15 - 1) - raw.astype(np.float32))


def test_radiograph_jpeg2000_variants(radiograph):
    arr_unci, _ = radiograph
    lossless, meta = read_image(dicom_file("RG1_J2KR.dcm"))
    reference, _ = read_image(dicom_file("RG1_UNCR.dcm"))
    assert "2000" in meta["transfer_syntax_name"]
    assert lossless.shape == reference.shape == arr_unci.shape
    np.testing.assert_array_equal(lossless, reference)
    # The lossy (irreversible) codestream decodes to its uncompressed copy, up to decoder rounding.
    lossy, _ = read_image(dicom_file("RG1_J2KI.dcm"))
    assert lossy.shape == arr_unci.shape
    assert np.abs(lossy - arr_unci).max() <= 2


@pytest.mark.parametrize(
    ("compressed", "reference"),
    [
        ("RG1_RLE.dcm", "RG1_UNCR.dcm"),  # skipped if pydicom-data lacks it
        ("MR_small_RLE.dcm", "MR_small.dcm"),
        ("MR_small_jp2klossless.dcm", "MR_small.dcm"),
        ("emri_small_RLE.dcm", "emri_small.dcm"),
        ("emri_small_jpeg_2k_lossless.dcm", "emri_small.dcm"),
    ],
)
def test_lossless_transfer_syntaxes_equal_uncompressed(compressed, reference):
    arr, meta = read_image(dicom_file(compressed))
    ref, ref_meta = read_image(dicom_file(reference))
    assert meta["transfer_syntax"] != ref_meta["transfer_syntax"]
    assert arr.shape == ref.shape
    np.testing.assert_array_equal(arr, ref)


def test_ct_in_hounsfield_units():
    path = dicom_file("CT_small.dcm")
    arr, meta = read_image(path)
    check_meta(arr, meta)
    assert arr.shape == (1, 128, 128)
    assert meta["modality"] == "CT"
    assert meta["modality_lut"] == "rescale"
    assert meta["rescale_slope"] == 1.0 and meta["rescale_intercept"] == -1024.0
    assert meta["spacing"] == pytest.approx((0.661468, 0.661468))
    assert meta["slice_thickness"] == pytest.approx(5.0)
    assert arr.min() < -500  # air
    assert 0 <= np.median(arr[0, 40:88, 40:88]) <= 100  # soft tissue
    raw = pydicom.dcmread(path).pixel_array.astype(np.float32)
    np.testing.assert_array_equal(arr[0], raw - 1024)


def test_mr_rescale_and_spacing():
    path = dicom_file("MR2_UNCI.dcm")
    arr, meta = read_image(path)
    check_meta(arr, meta)
    ds = pydicom.dcmread(path)
    assert arr.shape == (1, ds.Rows, ds.Columns)
    assert meta["modality"] == "MR"
    assert meta["spacing"] == pytest.approx(tuple(float(v) for v in ds.PixelSpacing))
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_allclose(arr[0], expected, rtol=1e-6, atol=1e-3)


def test_ultrasound_rgb_has_three_channels():
    arr, meta = read_image(dicom_file("US1_UNCI.dcm"))
    check_meta(arr, meta)
    assert arr.shape == (3, 480, 640)
    assert meta["channels"] == 3 and meta["output_photometric"] == "RGB"
    assert meta["inverted"] is False and meta["modality_lut"] is None
    assert 0 <= arr.min() and arr.max() <= 255


def test_multiframe_monochrome():
    arr, meta = read_image(dicom_file("emri_small.dcm"))
    check_meta(arr, meta)
    assert arr.shape == (1, 10, 64, 64)
    assert meta["n_frames"] == 10
    assert meta["spatial_shape"] == (10, 64, 64)
    assert meta["spacing_between_slices"] == pytest.approx(1.2)
    assert meta["spacing"] is None  # no PixelSpacing in this file


def test_multiframe_colour_jpeg_baseline_is_converted_to_rgb():
    arr, meta = read_image(dicom_file("color3d_jpeg_baseline.dcm"))
    check_meta(arr, meta)
    assert arr.shape == (3, 120, 480, 640)
    assert meta["photometric"] == "YBR_FULL_422" and meta["output_photometric"] == "RGB"
    assert "JPEG Baseline" in meta["transfer_syntax_name"]
    frame = arr[:, 60]
    # Mostly gray ultrasound: in RGB the three channels agree; left in YCbCr, Cb/Cr would sit near 128.
    means = frame.mean(axis=(1, 2))
    assert np.abs(means - means[0]).max() < 5
    assert np.abs(frame[0] - frame[1]).mean() < 5


def test_dicom_is_found_by_content_without_extension(tmp_path):
    src = dicom_file("CT_small.dcm")
    target = tmp_path / "IM000001"
    shutil.copy(src, target)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FormatMismatchWarning)
        arr, meta = read_image(target)
    assert meta["format"] == "dicom" and meta["extension_mismatch"] is False
    np.testing.assert_array_equal(arr, read_image(src)[0])


def test_raw_dicom_without_preamble_is_read(tmp_path):
    ds = pydicom.dcmread(dicom_file("CT_small.dcm"))
    expected, _ = read_dicom(dicom_file("CT_small.dcm"))
    raw = tmp_path / "raw.dcm"
    ds.preamble = None
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    pydicom.dcmwrite(raw, ds, enforce_file_format=False, implicit_vr=True, little_endian=True)
    assert raw.read_bytes()[128:132] != b"DICM"
    arr, meta = read_image(raw)
    np.testing.assert_array_equal(arr, expected)


# ---------------------------------------------------------------------------------------------
# Real NIfTI files
# ---------------------------------------------------------------------------------------------


def test_nifti_3d_matches_nibabel():
    path = NIBABEL_DATA / "anatomical.nii"
    arr, meta = read_image(path)
    check_meta(arr, meta)
    img = nib.load(path)
    assert arr.shape == (1, *img.shape)
    np.testing.assert_array_equal(arr[0], img.get_fdata().astype(np.float32))
    np.testing.assert_allclose(meta["affine"], img.affine)
    assert meta["spacing"] == pytest.approx(tuple(float(z) for z in img.header.get_zooms()[:3]))
    assert meta["orientation"] == "".join(nib.aff2axcodes(img.affine))
    assert meta["format"] == "nifti" and meta["channels"] == 1


def test_nifti_4d_is_time_first():
    path = NIBABEL_DATA / "example4d.nii.gz"
    arr, meta = read_image(path)
    check_meta(arr, meta)
    img = nib.load(path)
    x, y, z, t = img.shape
    assert arr.shape == (t, x, y, z)
    np.testing.assert_array_equal(arr, np.moveaxis(img.get_fdata().astype(np.float32), -1, 0))
    assert meta["time_step"] == pytest.approx(float(img.header.get_zooms()[3]))
    assert meta["spacing"] == pytest.approx(tuple(float(v) for v in img.header.get_zooms()[:3]))
    np.testing.assert_allclose(meta["affine"], img.affine)


def test_reorient_to_ras_keeps_world_coordinates():
    arr, meta = read_image(NIBABEL_DATA / "anatomical.nii")
    assert meta["orientation"] != "RAS"
    out, affine = reorient_to(arr, meta["affine"], "RAS")
    assert "".join(nib.aff2axcodes(affine)) == "RAS"
    rng = np.random.default_rng(0)
    to_old = np.linalg.inv(meta["affine"]) @ affine
    for _ in range(20):
        ijk = np.array([rng.integers(0, n) for n in out.shape[1:]] + [1])
        old = np.rint(to_old @ ijk).astype(int)[:3]
        assert out[(0, *ijk[:3])] == arr[(0, *old)]


# ---------------------------------------------------------------------------------------------
# 2D raster formats and round trips
# ---------------------------------------------------------------------------------------------


def test_png_modes(tmp_path):
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (7, 9), dtype=np.uint8)
    rgba = rng.integers(0, 256, (7, 9, 4), dtype=np.uint8)

    Image.fromarray(np.stack([gray, gray], -1)).save(tmp_path / "la.png")
    arr, meta = read_image(tmp_path / "la.png")
    assert arr.shape == (1, 7, 9) and meta["had_alpha"] is True
    np.testing.assert_array_equal(arr[0], gray)

    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    arr, meta = read_image(tmp_path / "rgba.png")
    assert arr.shape == (3, 7, 9) and meta["had_alpha"] is True and meta["bit_depth"] == 8
    np.testing.assert_array_equal(arr, np.moveaxis(rgba[..., :3], -1, 0))

    pal = Image.fromarray(np.array([[0, 1], [1, 0]], dtype=np.uint8), mode="P")
    pal.putpalette([10, 20, 30, 200, 150, 100])
    pal.save(tmp_path / "pal.png")
    arr, meta = read_image(tmp_path / "pal.png")
    assert arr.shape == (3, 2, 2)
    assert arr[:, 0, 0].tolist() == [10, 20, 30] and arr[:, 0, 1].tolist() == [200, 150, 100]

    Image.fromarray(gray > 127).save(tmp_path / "bits.png")
    arr, meta = read_image(tmp_path / "bits.png")
    assert meta["bit_depth"] == 1 and set(np.unique(arr)) <= {0.0, 1.0}


def test_png_16bit_colour_warns_about_precision(tmp_path):
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pixels = np.array([[[1000, 2000, 3000], [65535, 0, 257]]], dtype=">u2")
    raw = b"".join(b"\x00" + row.tobytes() for row in pixels)
    ihdr = struct.pack(">IIBBBBB", 2, 1, 16, 2, 0, 0, 0)
    path = tmp_path / "rgb16.png"
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    with pytest.warns(PrecisionLossWarning, match="16-bit"):
        arr, meta = read_image(path)
    assert arr.shape == (3, 1, 2)
    assert meta["bit_depth"] == 8 and meta["stored_bit_depth"] == 16


def test_jpeg_and_bmp(tmp_path):
    rng = np.random.default_rng(2)
    rgb = np.repeat(np.repeat(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), 8, 0), 8, 1)
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=95)
    arr, meta = read_image(tmp_path / "a.jpg")
    check_meta(arr, meta)
    assert meta["format"] == "jpeg" and arr.shape == (3, 32, 32)
    assert np.abs(arr - np.moveaxis(rgb, -1, 0)).mean() < 10
    Image.fromarray(rgb).save(tmp_path / "a.bmp")
    arr, meta = read_image(tmp_path / "a.bmp")
    assert meta["format"] == "bmp"
    np.testing.assert_array_equal(arr, np.moveaxis(rgb, -1, 0))


def test_round_trip_png_8bit(tmp_path):
    rng = np.random.default_rng(3)
    gray = rng.integers(0, 256, (1, 12, 10)).astype(np.float32)
    rgb = rng.integers(0, 256, (3, 12, 10)).astype(np.float32)
    write_image(tmp_path / "g.png", gray, dtype="uint8")
    write_image(tmp_path / "c.png", rgb, dtype="uint8")
    arr, meta = read_image(tmp_path / "g.png")
    np.testing.assert_array_equal(arr, gray)
    assert meta["bit_depth"] == 8 and meta["spacing"] is None
    arr, _ = read_image(tmp_path / "c.png")
    np.testing.assert_array_equal(arr, rgb)


def test_round_trip_png_16bit_exact(tmp_path):
    gray = np.array([[[0, 1, 255, 256, 4095, 65534, 65535]]], dtype=np.float32)
    write_image(tmp_path / "g16.png", gray, dtype="uint16")
    arr, meta = read_image(tmp_path / "g16.png")
    assert meta["bit_depth"] == 16
    np.testing.assert_array_equal(arr, gray)
    # Writing back what was read: the metadata's bit depth picks the dtype.
    write_image(tmp_path / "again.png", arr, meta)
    np.testing.assert_array_equal(read_image(tmp_path / "again.png")[0], gray)


def test_round_trip_tiff(tmp_path):
    rng = np.random.default_rng(4)
    floats = rng.normal(size=(1, 6, 5)).astype(np.float32)
    write_image(tmp_path / "f.tif", floats)
    arr, meta = read_image(tmp_path / "f.tif")
    assert meta["format"] == "tiff" and meta["bit_depth"] == 32
    np.testing.assert_array_equal(arr, floats)

    rgb = rng.integers(0, 256, (3, 6, 5)).astype(np.uint8)
    write_image(tmp_path / "c.tiff", rgb)
    arr, _ = read_image(tmp_path / "c.tiff")
    np.testing.assert_array_equal(arr, rgb)

    stack = rng.integers(0, 4096, (1, 4, 6, 5)).astype(np.float32)
    write_image(tmp_path / "s.tif", stack, dtype="uint16")
    arr, meta = read_image(tmp_path / "s.tif")
    assert arr.shape == (1, 4, 6, 5) and meta["n_frames"] == 4 and meta["bit_depth"] == 16
    np.testing.assert_array_equal(arr, stack)


def test_tiff_miniswhite_is_inverted(tmp_path):
    data = np.array([[0, 10, 255]], dtype=np.uint8)
    tifffile.imwrite(tmp_path / "mw.tif", data, photometric="miniswhite")
    arr, meta = read_image(tmp_path / "mw.tif")
    assert meta["inverted"] is True
    np.testing.assert_array_equal(arr[0], 255 - data)


@pytest.mark.parametrize("name", ["vol.nii", "vol.nii.gz"])
def test_round_trip_nifti_keeps_affine(tmp_path, name):
    rng = np.random.default_rng(5)
    vol = rng.normal(size=(1, 5, 6, 7)).astype(np.float32)
    affine = np.array([[-1.5, 0, 0, 10], [0, 2.0, 0.1, -20], [0, 0, 3.0, 5], [0, 0, 0, 1]])
    write_image(tmp_path / name, vol, {"affine": affine})
    arr, meta = read_image(tmp_path / name)
    np.testing.assert_array_equal(arr, vol)
    np.testing.assert_allclose(meta["affine"], affine, atol=1e-6)
    assert meta["orientation"] == "".join(nib.aff2axcodes(affine))


def test_round_trip_nifti_4d(tmp_path):
    src, meta = read_image(NIBABEL_DATA / "example4d.nii.gz")
    write_image(tmp_path / "copy.nii.gz", src, meta, dtype="int16")
    arr, meta2 = read_image(tmp_path / "copy.nii.gz")
    np.testing.assert_array_equal(arr, src)
    np.testing.assert_allclose(meta2["affine"], meta["affine"], atol=1e-5)
    assert meta2["time_step"] == pytest.approx(meta["time_step"])


def test_write_refuses_overwrite_and_is_atomic(tmp_path):
    img = np.zeros((1, 4, 4), dtype=np.uint8)
    target = tmp_path / "x.png"
    write_image(target, img)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_image(target, img + 1)
    assert read_image(target)[0].max() == 0
    write_image(target, img + 7, overwrite=True)
    assert read_image(target)[0].max() == 7
    # A failed write leaves neither a partial file nor a temp file behind.
    with pytest.raises(DataError):
        write_image(tmp_path / "bad.png", np.full((1, 4, 4), 300.0), dtype="uint8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]


def test_write_rejects_ambiguous_or_lossy_requests(tmp_path):
    floats = np.full((1, 4, 4), 0.5, dtype=np.float32)
    with pytest.raises(DataError, match="dtype"):
        write_image(tmp_path / "f.png", floats)
    with pytest.raises(DataError, match="do not fit uint8"):
        write_image(tmp_path / "f.png", floats * 1000, dtype="uint8")
    with pytest.raises(DataError, match="NaN"):
        write_image(tmp_path / "f.png", floats * np.nan, dtype="uint8")
    with pytest.raises(DataError, match="16-bit colour"):
        write_image(tmp_path / "f.png", np.zeros((3, 4, 4)), dtype="uint16")
    with pytest.raises(DataError, match="read-only"):
        write_image(tmp_path / "f.dcm", floats)
    with pytest.raises(DataError, match=r"\(C, X, Y, Z\)"):
        write_image(tmp_path / "f.nii", floats)


# ---------------------------------------------------------------------------------------------
# Wrong extensions: read by content, loudly
# ---------------------------------------------------------------------------------------------


def test_png_renamed_dcm_is_read_by_content_with_warning(tmp_path):
    data = np.arange(12, dtype=np.uint8).reshape(3, 4)
    Image.fromarray(data).save(tmp_path / "real.png")
    shutil.copy(tmp_path / "real.png", tmp_path / "fake.dcm")
    with pytest.warns(FormatMismatchWarning, match=r"fake\.dcm.*DICOM.*PNG"):
        arr, meta = read_image(tmp_path / "fake.dcm")
    assert meta["format"] == "png" and meta["extension_mismatch"] is True
    np.testing.assert_array_equal(arr[0], data)
    # The strict per-format reader refuses it.
    with raises_data_error(tmp_path / "fake.dcm", "not a DICOM file.*looks like PNG"):
        read_dicom(tmp_path / "fake.dcm")


def test_dicom_renamed_png_is_read_by_content_with_warning(tmp_path):
    shutil.copy(dicom_file("CT_small.dcm"), tmp_path / "ct.png")
    with pytest.warns(FormatMismatchWarning, match="PNG.*DICOM"):
        arr, meta = read_image(tmp_path / "ct.png")
    assert meta["format"] == "dicom" and arr.shape == (1, 128, 128)
    with raises_data_error(tmp_path / "ct.png", "not a valid PNG file.*looks like DICOM"):
        read_png(tmp_path / "ct.png")


def test_nifti_renamed_is_read_by_content(tmp_path):
    shutil.copy(NIBABEL_DATA / "example4d.nii.gz", tmp_path / "vol.png")
    with pytest.warns(FormatMismatchWarning, match="NIfTI"):
        arr, meta = read_image(tmp_path / "vol.png")
    assert meta["format"] == "nifti" and arr.shape == (2, 128, 96, 24)


# ---------------------------------------------------------------------------------------------
# Malformed input: always DataError with the file name and the reason
# ---------------------------------------------------------------------------------------------


def _half(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def test_missing_and_empty_files(tmp_path):
    with raises_data_error(tmp_path / "nope.png", "file not found"):
        read_image(tmp_path / "nope.png")
    for name in ("empty.png", "empty.dcm", "empty.nii.gz", "empty"):
        (tmp_path / name).write_bytes(b"")
        with raises_data_error(tmp_path / name, r"empty \(0 bytes\)"):
            read_image(tmp_path / name)
    with raises_data_error(tmp_path, "is a directory"):
        read_image(tmp_path)


@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_truncated_png_and_jpeg(tmp_path, suffix):
    rng = np.random.default_rng(6)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / f"full.{suffix}")
    cut = _half(tmp_path / f"full.{suffix}", tmp_path / f"cut.{suffix}")
    with raises_data_error(cut, "truncated"):
        read_image(cut)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_RLE.dcm", "emri_small_jpeg_2k_lossless.dcm"])
def test_truncated_dicom(tmp_path, name):
    cut = _half(dicom_file(name), tmp_path / f"cut_{name}")
    with raises_data_error(cut, "truncated"):
        read_image(cut)


@pytest.mark.parametrize("nbytes", [200, 600, 1000])
def test_dicom_cut_inside_the_header(tmp_path, nbytes):
    cut = tmp_path / f"cut{nbytes}.dcm"
    cut.write_bytes(dicom_file("CT_small.dcm").read_bytes()[:nbytes])
    with raises_data_error(cut, "truncated"):
        read_image(cut)


def test_truncated_nifti(tmp_path):
    gz = _half(NIBABEL_DATA / "example4d.nii.gz", tmp_path / "cut.nii.gz")
    with raises_data_error(gz, "truncated"):
        read_image(gz)
    plain = _half(NIBABEL_DATA / "anatomical.nii", tmp_path / "cut.nii")
    with raises_data_error(plain, "truncated"):
        read_image(plain)
    tiny = tmp_path / "tiny.nii.gz"
    tiny.write_bytes((NIBABEL_DATA / "example4d.nii.gz").read_bytes()[:40])
    with raises_data_error(tiny, "truncated"):
        read_image(tiny)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("notes.png", "not a valid PNG"),
        ("notes.dcm", "not a valid DICOM"),
        ("notes.nii", "not a valid NIfTI"),
        ("notes.nii.gz", "not a NIfTI file: the gzip stream"),
        ("notes", "unrecognised content"),
    ],
)
def test_text_file_with_image_extension(tmp_path, name, reason):
    path = tmp_path / name
    text = b"patient_id,label\n" * 20
    path.write_bytes(gzip.compress(text) if name.endswith(".gz") else text)
    with raises_data_error(path, reason):
        read_image(path)


def test_git_lfs_pointer_is_explained(tmp_path):
    path = tmp_path / "scan.nii.gz"
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
    with raises_data_error(path, "Git LFS pointer.*git lfs pull"):
        read_image(path)


def test_gzipped_nifti_named_nii_is_read(tmp_path):
    path = tmp_path / "really_gzipped.nii"
    shutil.copy(NIBABEL_DATA / "example4d.nii.gz", path)
    arr, meta = read_image(path)
    assert meta["format"] == "nifti" and arr.shape == (2, 128, 96, 24)


def test_text_file_given_to_strict_readers(tmp_path):
    path = tmp_path / "notes.dcm"
    path.write_text("not an image\n" * 20)
    with raises_data_error(path, "not a DICOM file: no 'DICM' marker"):
        read_dicom(path)
    with raises_data_error(path, "not a valid PNG file"):
        read_png(path)


def test_nan_and_inf_pixels_are_counted(tmp_path):
    data = np.ones((8, 8), dtype=np.float32)
    data[0, :3] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", data)
    with raises_data_error(tmp_path / "nan.tif", "3 NaN and 0 Inf"):
        read_image(tmp_path / "nan.tif")
    data = np.ones((8, 8), dtype=np.float32)
    data[1, :2] = [np.inf, -np.inf]
    tifffile.imwrite(tmp_path / "inf.tif", data)
    with raises_data_error(tmp_path / "inf.tif", "0 NaN and 2 Inf"):
        read_image(tmp_path / "inf.tif")
    vol = np.zeros((4, 4, 4), dtype=np.float32)
    vol[1, 2, 3] = np.nan
    vol[0, 0, 0] = np.inf
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "nan.nii.gz")
    with raises_data_error(tmp_path / "nan.nii.gz", "1 NaN and 1 Inf"):
        read_image(tmp_path / "nan.nii.gz")


def test_zero_size_dimensions(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 0, 4), dtype=np.float32), np.eye(4)), tmp_path / "zero.nii")
    with raises_data_error(tmp_path / "zero.nii", "zero-size dimension"):
        read_image(tmp_path / "zero.nii")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # tifffile: "nonconformant TIFF"
        tifffile.imwrite(tmp_path / "zero.tif", np.zeros((0, 6), dtype=np.uint8))
    with raises_data_error(tmp_path / "zero.tif", "zero-size dimension"):
        read_image(tmp_path / "zero.tif")
    ds = pydicom.dcmread(dicom_file("CT_small.dcm"))
    ds.Rows = 0
    ds.save_as(tmp_path / "zero.dcm")
    with raises_data_error(tmp_path / "zero.dcm", "zero-size dimension"):
        read_image(tmp_path / "zero.dcm")


def test_nifti_with_more_than_four_dimensions(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 3, 2, 3), dtype=np.float32), np.eye(4)), tmp_path / "vec.nii.gz")
    with raises_data_error(tmp_path / "vec.nii.gz", "5 dimensions.*at most 4"):
        read_image(tmp_path / "vec.nii.gz")


def test_dicom_without_pixel_data(tmp_path):
    ds = pydicom.dcmread(dicom_file("CT_small.dcm"))
    del ds.PixelData
    ds.save_as(tmp_path / "stripped.dcm")
    with raises_data_error(tmp_path / "stripped.dcm", "no pixel data.*128x128"):
        read_image(tmp_path / "stripped.dcm")
    for keyword in ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
                    "SamplesPerPixel", "PhotometricInterpretation"):
        delattr(ds, keyword)
    ds.save_as(tmp_path / "noimage.dcm")
    with raises_data_error(tmp_path / "noimage.dcm", "no pixel data: not an image"):
        read_image(tmp_path / "noimage.dcm")


def test_unsupported_transfer_syntax(tmp_path):
    path = dicom_file("MR_small_jpeg_ls_lossless.dcm")
    with raises_data_error(path, "unsupported transfer syntax JPEG-LS"):
        read_image(path)
    ds = pydicom.dcmread(dicom_file("CT_small.dcm"))
    ds.file_meta.TransferSyntaxUID = "1.2.3.4.5.6"
    ds.save_as(tmp_path / "bogus.dcm")
    with raises_data_error(tmp_path / "bogus.dcm", r"unsupported transfer syntax.*1\.2\.3\.4\.5\.6"):
        read_image(tmp_path / "bogus.dcm")


def test_corrupt_library_errors_are_wrapped(tmp_path):
    # A valid PNG signature followed by garbage: Pillow fails, the user sees a DataError.
    path = tmp_path / "garbage.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    with pytest.raises(DataError, match=r"garbage\.png") as excinfo:
        read_image(path)
    assert excinfo.value.__cause__ is not None


# ---------------------------------------------------------------------------------------------
# Property-based round trips
# ---------------------------------------------------------------------------------------------

_shapes = st.tuples(st.sampled_from([1, 3]), st.integers(1, 9), st.integers(1, 9))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=_shapes, bits=st.sampled_from([8, 16]), seed=st.integers(0, 2**16))
def test_png_round_trip_property(tmp_path, shape, bits, seed):
    if bits == 16 and shape[0] == 3:
        shape = (1, *shape[1:])  # Pillow writes 16-bit PNG for gray only
    arr = np.random.default_rng(seed).integers(0, 2**bits, shape).astype(np.float32)
    path = tmp_path / f"p{seed}_{bits}_{'x'.join(map(str, shape))}.png"
    write_image(path, arr, dtype=f"uint{bits}", overwrite=True)
    out, meta = read_image(path)
    assert out.shape == arr.shape and meta["bit_depth"] == bits
    np.testing.assert_array_equal(out, arr)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    shape=st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6), st.integers(1, 6)),
    diag=st.tuples(*[st.floats(0.1, 5.0) for _ in range(3)]),
    signs=st.tuples(*[st.sampled_from([-1.0, 1.0]) for _ in range(3)]),
    seed=st.integers(0, 2**16),
)
def test_nifti_round_trip_property(tmp_path, shape, diag, signs, seed):
    arr = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    affine = np.diag([d * s for d, s in zip(diag, signs)] + [1.0])
    affine[:3, 3] = [seed % 7, -3.0, 2.5]
    path = tmp_path / f"v{seed}_{'x'.join(map(str, shape))}.nii.gz"
    write_image(path, arr, {"affine": affine}, overwrite=True)
    out, meta = read_image(path)
    np.testing.assert_array_equal(out, arr)
    np.testing.assert_allclose(meta["affine"], affine, atol=1e-5)
    assert meta["spacing"] == pytest.approx(diag, rel=1e-5)
