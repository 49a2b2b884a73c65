"""KiTS19, ACDC and INbreast layouts: what their writers write reads back through ImageMaskDataModule with
case-level splits; real NIfTI / DICOM sample files read correctly (nibabel's anatomical.nii as a KiTS volume,
pydicom's CT_small.dcm as an INbreast image with a hand-written XML contour); malformed inputs raise one
DataError listing every bad item."""

from __future__ import annotations

import gzip
import plistlib
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medlearn.data import ImageMaskDataModule
from medlearn.data.acdc import read_acdc, read_info_cfg
from medlearn.data.decode import load_image
from medlearn.data.inbreast import rasterise_contours, read_inbreast, read_inbreast_xml
from medlearn.data.kits19 import read_kits19
from medlearn.data.volume_slices import crop_padded, roi_around, select_slices
from medlearn.io import write_image
from medlearn.io.errors import DataError
from medlearn.synth.acdc import write_acdc
from medlearn.synth.inbreast import write_inbreast
from medlearn.synth.kits19 import write_kits19

ANATOMICAL = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"


@pytest.fixture(scope="module")
def kits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_kits19(tmp_path_factory.mktemp("kits") / "kits", n_cases=5, n_unlabelled=1, seed=3)


@pytest.fixture(scope="module")
def acdc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_acdc(tmp_path_factory.mktemp("acdc") / "acdc", n_patients=5, seed=3)


@pytest.fixture(scope="module")
def inbreast(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_inbreast(tmp_path_factory.mktemp("inb") / "inb", n_images=8, p_mass=0.8, seed=3)


@pytest.mark.parametrize("layout,options,value_map", [
    ("kits19", {"roi_size": 40}, {0: 0, 1: 0, 2: 1}),
    ("acdc", {"slices": 3}, {0: 0, 1: 0, 2: 0, 3: 1}),
    ("inbreast", {"roi_size": 96}, None)])
def test_datamodule_serves_slices_with_case_level_splits(layout, options, value_map, kits, acdc, inbreast):
    root = {"kits19": kits, "acdc": acdc, "inbreast": inbreast}[layout]
    dm = ImageMaskDataModule(str(root), layout_options=options, image_size=40, channels=1, value_map=value_map,
                             batch_size=3, val_fraction=0.2, test_fraction=0.3, split_seed=1)
    dm.setup("fit")
    assert dm.resolved_layout == layout and dm.label_values == [0, 1]
    groups = {part: {r.group for r in recs} for part, recs in dm.splits.items()}
    parts = list(groups)
    for i, a in enumerate(parts):
        for b in parts[i + 1:]:
            assert not groups[a] & groups[b], f"{layout}: a case in both {a} and {b}"
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape[1:] == (1, 40, 40) and set(batch["seg"].unique().tolist()) <= {0, 1}
    assert 0.0 <= float(batch["image"].min()) and float(batch["image"].max()) <= 1.0
    assert dm.train_set is not None and dm.train_set._images is not None
    assert all(dm.train_set._images.has(i) for i in range(len(dm.train_set)))  # filled while checking the masks


def test_kits19_slices_roi_and_unlabelled_cases(kits):
    recs = read_kits19(kits, roi_size=40, roi_margin=4)
    cases = {r.group for r in recs}
    assert cases <= {f"case_{i:05d}" for i in range(5)}  # case_00005 has no segmentation: skipped
    for r in recs[:6]:
        image, mask = r.read_pair()
        assert image.shape == (1, 40, 40) and (mask == 2).any()  # tumour-bearing slices, ROI around the kidney
    everything = read_kits19(kits, slices="all", roi=None)
    assert len(everything) == 5 * 12 and everything[0].read_pair()[0].shape == (1, 64, 64)
    with pytest.raises(DataError, match="1 of 6"):
        read_kits19(kits, require_seg=True)
    with pytest.raises(ValueError):
        read_kits19(kits, hu_window=(300, -200))


def test_kits19_reads_a_real_nifti_volume(tmp_path):
    """nibabel's anatomical.nii (a real T1, 33 x 41 x 25) as case_00000's imaging, a hand-written segmentation."""
    case = tmp_path / "kits" / "case_00000"
    case.mkdir(parents=True)
    with open(ANATOMICAL, "rb") as src, gzip.open(case / "imaging.nii.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    ref = nib.load(ANATOMICAL)
    vol = np.asarray(ref.get_fdata(), dtype=np.float32)
    seg = np.zeros(vol.shape, dtype=np.uint8)
    seg[10:20, 10:30, 5:20] = 1
    seg[12:15, 15:22, 8:12] = 2  # tumour on slices 12, 13, 14 of axis 0
    write_image(case / "segmentation.nii.gz", seg[None], {"affine": ref.affine}, overwrite=True)
    lo, hi = float(vol.min()), float(np.percentile(vol, 99))
    recs = read_kits19(tmp_path / "kits", hu_window=(lo, hi), roi=None)
    assert [r.index for r in recs] == [12, 13, 14]
    image, mask = recs[1].read_pair()
    np.testing.assert_allclose(image[0], np.clip((vol[13] - lo) / (hi - lo), 0, 1), atol=1e-6)
    np.testing.assert_array_equal(mask, seg[13])
    roi = read_kits19(tmp_path / "kits", hu_window=(lo, hi), roi_size=16, roi_margin=5)[0]
    image, mask = roi.read_pair()
    assert image.shape == (1, 30, 30)  # the kidney (20 x 15 px) is larger than 16: its box + 2 x 5 margin, squared
    assert int((mask == 2).sum()) == int((seg[12] == 2).sum())


def test_kits19_malformed_cases_are_all_listed(tmp_path):
    root = write_kits19(tmp_path / "kits", n_cases=5, n_unlabelled=0, seed=1)
    shutil.copy(root / "case_00001" / "segmentation.nii.gz", root / "case_00000" / "segmentation.nii.gz")
    affine = {"affine": nib.load(root / "case_00001" / "imaging.nii.gz").affine}
    small = np.zeros((12, 60, 64), dtype=np.uint8)
    write_image(root / "case_00001" / "segmentation.nii.gz", small[None], affine, overwrite=True)  # size mismatch
    bad = np.zeros((12, 64, 64), dtype=np.uint8)
    bad[5, 5, 5] = 3
    write_image(root / "case_00002" / "segmentation.nii.gz", bad[None], affine, overwrite=True)  # unknown label 3
    (root / "case_00003" / "imaging.nii.gz").unlink()  # missing image
    (root / "case_00004" / "imaging.nii.gz").write_bytes(b"\x1f\x8b broken")  # corrupt
    with pytest.raises(DataError) as info:
        read_kits19(root)
    text = str(info.value)
    assert "4 of 5 KiTS19 cases are invalid" in text
    problems = info.value.problems
    assert any(p.startswith("case_00001") and "does not match" in p for p in problems)
    assert any(p.startswith("case_00002") and "3 (1 voxels)" in p for p in problems)
    assert any(p.startswith("case_00003") and "missing imaging" in p for p in problems)
    assert any(p.startswith("case_00004") and "imaging.nii.gz" in p for p in problems)
    with pytest.raises(DataError, match="no KiTS19 case"):
        read_kits19(tmp_path)


def test_acdc_frames_slices_groups_and_info(acdc):
    recs = read_acdc(acdc)
    assert {r.group for r in recs} == {f"patient{i:03d}" for i in range(1, 6)}
    assert {r.domain for r in recs} == {"NOR", "MINF", "DCM", "HCM", "RV"}
    assert {r.name.split("/")[1][:7] for r in recs} == {"frame01", "frame08"}
    image, mask = recs[0].read_pair()
    assert image.shape == (1, 64, 64) and set(np.unique(mask)) == {0, 1, 2, 3}
    assert read_info_cfg(acdc / "patient001" / "Info.cfg")["ES"] == "8"
    nested = acdc.parent / "nested"
    shutil.copytree(acdc / "patient001", nested / "training" / "patient001")
    shutil.copytree(acdc / "patient002", nested / "testing" / "patient002")
    split = {r.group: r.split for r in read_acdc(nested)}
    assert split == {"patient001": "", "patient002": "test"}


def test_acdc_malformed_patients_are_all_listed(tmp_path):
    root = write_acdc(tmp_path / "acdc", n_patients=4, seed=2)
    (root / "patient001" / "patient001_frame01.nii.gz").unlink()  # ground truth without its image
    write_image(root / "patient002" / "patient002_frame08_gt.nii.gz", np.zeros((1, 64, 60, 6), np.uint8),
                overwrite=True)  # shape mismatch
    gt = np.zeros((64, 64, 6), np.uint8)
    gt[1, 1, 1] = 7
    write_image(root / "patient003" / "patient003_frame01_gt.nii.gz", gt[None], {"affine": np.diag([1.5, 1.5, 10, 1])},
                overwrite=True)
    with pytest.raises(DataError) as info:
        read_acdc(root)
    problems = info.value.problems
    assert len(problems) == 3 and "3 of 4 ACDC patients" in str(info.value)
    assert "patient001_frame01.nii.gz is missing" in problems[0]
    assert "does not match" in problems[1] and "7 (1 voxels)" in problems[2]


def _xml(path: Path, rois: list[tuple[str, list[tuple[float, float]]]]) -> None:
    doc = {"Images": [{"ImageIndex": 0, "NumberOfROIs": len(rois),
                       "ROIs": [{"Name": n, "NumberOfPoints": len(p), "Point_px": [f"({x}, {y})" for x, y in p]}
                                for n, p in rois]}]}
    path.write_bytes(plistlib.dumps(doc))


def test_inbreast_real_dicom_with_a_hand_written_contour(tmp_path):
    """pydicom's CT_small.dcm (a real 128 x 128 CT) as an INbreast image; a square 'Mass' contour."""
    from pydicom.data import get_testdata_file

    root = tmp_path / "inb"
    (root / "AllDICOMs").mkdir(parents=True)
    (root / "AllXML").mkdir()
    dcm = root / "AllDICOMs" / "22678622_61b13c59bcba149e_MG_L_CC_ANON.dcm"
    shutil.copy(get_testdata_file("CT_small.dcm"), dcm)
    _xml(root / "AllXML" / "22678622.xml", [("Mass", [(20, 30), (59, 30), (59, 49), (20, 49)]),
                                            ("Calcification", [(100.2, 100.4)])])
    recs = read_inbreast(root, roi=None)
    assert len(recs) == 1 and recs[0].group == "61b13c59bcba149e" and recs[0].domain == "L_CC"
    image, mask = recs[0].read_pair()
    np.testing.assert_array_equal(image, load_image(dcm, 1).numpy())
    want = np.zeros((128, 128), np.int64)
    want[30:50, 20:60] = 1  # pixel centres inside the polygon through the vertices (x = column, y = row)
    np.testing.assert_array_equal(mask, want)
    both = read_inbreast(root, lesions=("mass", "calcification"), roi=None)[0].read_pair()[1]
    assert both[100, 100] == 1 and int(both.sum()) == 801
    cropped = read_inbreast(root, roi_size=64, roi_margin=8)[0]
    image, mask = cropped.read_pair()
    assert image.shape == (1, 64, 64) and int(mask.sum()) == 800


def test_inbreast_malformed_inputs_are_all_listed(inbreast, tmp_path):
    root = tmp_path / "inb"
    shutil.copytree(inbreast, root)
    dicoms = sorted((root / "AllDICOMs").iterdir())
    first_id = dicoms[0].name.split("_")[0]
    _xml(root / "AllXML" / f"{first_id}.xml", [("Mass", [(-5, 10), (50, 10), (50, 9999)]), ("Mass", [(3, 3)] * 3)])
    (root / "AllXML" / "99999999.xml").write_bytes((root / "AllXML" / f"{first_id}.xml").read_bytes())  # no DICOM
    second_id = dicoms[1].name.split("_")[0]
    (root / "AllXML" / f"{second_id}.xml").write_text("<plist><dict><key>Images</key>", encoding="utf-8")
    (root / "AllDICOMs" / "not_inbreast.dcm").write_bytes(b"x")
    with pytest.raises(DataError) as info:
        read_inbreast(root)
    problems = info.value.problems
    assert len(problems) == 4
    outside = next(p for p in problems if p.startswith(f"AllXML/{first_id}.xml"))
    assert "ROI 0 (Mass): 2 of 3 points outside the 160 x 200 image" in outside and "(-5.0, 10.0)" in outside
    assert any("not a readable OsiriX XML" in p and second_id in p for p in problems)
    assert any("99999999" in p and "no DICOM" in p for p in problems)
    assert any("not_inbreast.dcm" in p for p in problems)
    (root / "AllXML" / "bad_points.xml").write_bytes(plistlib.dumps(
        {"Images": [{"ROIs": [{"Name": "Mass", "Point_px": ["(1, 2)", "one, two"]}]}]}))
    with pytest.raises(DataError, match="point 'one, two'"):
        read_inbreast_xml(root / "AllXML" / "bad_points.xml")


def test_generic_slice_helpers():
    lab = np.zeros((3, 6, 6), np.int64)
    lab[1, 2:4, 2:4] = 1
    lab[2, 0, 0] = 2
    assert select_slices(lab, 0, "all") == [0, 1, 2] and select_slices(lab, 0, "labelled") == [1, 2]
    assert select_slices(lab, 0, 2) == [2] and select_slices(lab, 0, "labelled", min_pixels=2) == [1]
    assert select_slices(lab, 1, [1]) == [2, 3]
    two = np.zeros((20, 20), np.int64)
    two[2:6, 2:6] = 1  # a kidney without tumour
    two[10:16, 12:18] = 1
    two[12, 14] = 2  # the tumour-bearing kidney
    assert roi_around(two, (2,), (1, 2), size=8, margin=1) == (9, 17, 11, 19)
    assert roi_around(two, (2,), (1, 2), size=4, margin=2) == (8, 18, 10, 20)
    assert roi_around(two, (3,), (1, 2), size=8) is None
    x = np.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(crop_padded(x, (-1, 2, 2, 5), fill=-1),
                                  [[-1, -1, -1], [2, 3, -1], [6, 7, -1]])
    mask = rasterise_contours([("Mass", ((1.0, 1.0), (3.0, 1.0), (3.0, 3.0), (1.0, 3.0)))], (5, 5), ["MASS"])
    assert int(mask.sum()) == 9 and mask[1:4, 1:4].all()  # pixel centres inside or on the polygon
