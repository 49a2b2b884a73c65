"""Reader messages that say the true cause: missing decoders, DICOMDIR, headers without Rows, CIFTI-2,
the NaN policy of NIfTI, palette PNGs with transparency."""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medlearn.io import NonFiniteReplacedWarning, read_image
from medlearn.io.errors import DataError

pydicom = pytest.importorskip("pydicom")
from pydicom.data import get_testdata_file  # noqa: E402


def _testfile(name: str) -> str:
    p = get_testdata_file(name)
    if p is None:
        pytest.skip(f"pydicom test file {name} not installed")
    return str(p)


def test_a_dicom_whose_codec_is_missing_is_called_unsupported_not_corrupt() -> None:
    try:
        read_image(_testfile("JPEG-lossy.dcm"))
    except DataError as e:
        assert "no installed decoder supports" in str(e) and "corrupt" not in str(e)
    # (with a 12-bit JPEG decoder installed the file simply reads)


def test_dicomdir_and_missing_rows_say_what_they_are(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="a DICOMDIR"):
        read_image(_testfile("DICOMDIR"))
    ds = pydicom.dcmread(_testfile("CT_small.dcm"))
    del ds.Rows
    ds.save_as(tmp_path / "no_rows.dcm")
    with pytest.raises(DataError, match="the header lacks Rows"):
        read_image(tmp_path / "no_rows.dcm")


def test_cifti2_is_named() -> None:
    p = Path(nib.__file__).parent / "tests" / "data" / "row_major.dconn.nii"
    if not p.is_file():
        pytest.skip("nibabel's CIFTI-2 test file is not installed")
    with pytest.raises(DataError, match="CIFTI-2 file"):
        read_image(p)


def test_nifti_nan_policy_refuse_or_replace_with_a_warning(tmp_path: Path) -> None:
    vol = np.ones((4, 5, 6), np.float32)
    vol[0, 0, :3] = np.nan
    vol[1, 1, 1] = np.inf
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "nan.nii.gz")
    with pytest.raises(DataError, match=r"3 NaN and 1 Inf.*nonfinite=<value>"):
        read_image(tmp_path / "nan.nii.gz")
    with pytest.warns(NonFiniteReplacedWarning, match="3 NaN and 1 Inf"):
        arr, _ = read_image(tmp_path / "nan.nii.gz", nonfinite=0.0)
    assert np.isfinite(arr).all() and arr[0, 0, 0, 0] == 0.0 and arr[0, 1, 1, 1] == 0.0 and arr[0, 2, 2, 2] == 1.0
    with pytest.raises(ValueError, match="nonfinite"):
        read_image(tmp_path / "nan.nii.gz", nonfinite="zero")


def test_palette_png_with_transparency_reads_without_warnings(tmp_path: Path) -> None:
    from PIL import Image

    img = Image.new("P", (4, 3))
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.putpixel((1, 1), 1)
    img.info["transparency"] = b"\x00\xff"
    img.save(tmp_path / "p.png", transparency=b"\x00\xff")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        arr, _ = read_image(tmp_path / "p.png")
    assert arr.shape == (3, 3, 4) and arr[0, 1, 1] == 255 and arr[1, 1, 1] == 0
