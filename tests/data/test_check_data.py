"""The dataset integrity check: every layout's phantom checks clean; broken copies list each problem
with its file, grouped and counted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from test_layouts import AUTO, SMALL

from medlearn.data.check import CheckReport, check_dataset, detect_any_layout
from medlearn.data.layouts import list_layouts
from medlearn.io.errors import DataError
from medlearn.synth import get_synth

#: Layouts no phantom writer writes: (kind, name) -> (phantom, sub-folder) they read.
GENERIC: dict[tuple[str, str], tuple[str, str]] = {
    ("radiograph", "folder"): ("chestxray", "images"),
    ("labelled2d", "csv"): ("table", ""),
    ("volume", "manifest"): ("headct", ""),
    ("volume", "folder"): ("brats", ""),
    ("segmentation2d", "mask-table"): ("rings", ""),
    ("segmentation2d", "cvc_clinicdb"): ("endoscopy-cvc", ""),
    ("segmentation2d", "etis"): ("endoscopy-etis", ""),
    ("video", "video_folder"): ("endoscopy-cvc", ""),
}


def write_table_dataset(root: Path, n: int = 8) -> Path:
    """A labelled2d ``csv`` dataset: ``n`` random 8-bit PNGs, ``image,label,patient,split``."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = ["image,label,patient,split"]
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8)).save(root / "images" / f"im{i}.png")
        rows.append(f"images/im{i}.png,{'ab'[i % 2]},p{i},{'train' if i < n - 2 else 'test'}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("phantoms")
    found = {name: Path(get_synth(name)(out=out / name, **opts)) for name, opts in SMALL.items()}
    found["rings"] = Path(get_synth("rings")(out=out / "rings", n_images=4, size=48, seed=1))
    found["table"] = write_table_dataset(out / "table")
    return found


def copy_of(written: dict[str, Path], name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(written[name], tmp_path / name))


def by_kind(report: CheckReport) -> dict[str, list[str]]:
    """kind -> ``file[:row]: message`` of each problem, files relative to the root."""
    out: dict[str, list[str]] = {}
    for _, kind, problems in report.grouped():
        out.setdefault(kind, []).extend(
            f"{report._name(p.file)}{f':{p.row}' if p.row is not None else ''}: {p.message}" for p in problems)
    return out


def test_every_layout_is_covered() -> None:
    keys = {(entry.kind, entry.name) for entry in list_layouts()}
    with_writer = {(entry.kind, entry.name) for entry in list_layouts() if entry.synth}
    assert keys - with_writer <= set(GENERIC), f"add {sorted(keys - with_writer - set(GENERIC))} to GENERIC"


@pytest.mark.parametrize("layout", [entry for entry in list_layouts() if entry.synth],
                         ids=lambda entry: f"{entry.kind}-{entry.name}")
def test_every_layouts_phantom_checks_clean(layout: Any, written: dict[str, Path]) -> None:
    root = written[layout.synth]
    report = check_dataset(root, f"{layout.kind}/{layout.name}")
    assert report.problems == [], report.format()
    assert report.n_records and report.ok(strict=True)
    detected = check_dataset(root)  # auto: the writer's layout, or a layout of its kind that reads it
    assert detected.layout is not None and detected.layout.kind == AUTO[layout.synth][0]
    assert detected.ok(strict=True), detected.format()


@pytest.mark.parametrize("key", sorted(GENERIC), ids=lambda key: f"{key[0]}-{key[1]}")
def test_generic_layouts_check_clean(key: tuple[str, str], written: dict[str, Path]) -> None:
    phantom, sub = GENERIC[key]
    report = check_dataset(written[phantom] / sub, "/".join(key))
    assert report.problems == [] and report.n_records, report.format()


def test_detection_failure_lists_the_layouts_tried(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("nothing here")
    report = check_dataset(tmp_path)
    assert not report.ok() and [p.kind for p in report.problems] == ["layout"]
    assert "brats" in report.problems[0].message and "radiograph/chestxray14" in report.problems[0].message
    with pytest.raises(DataError, match="not a recognised dataset layout"):
        detect_any_layout(tmp_path)
    assert check_dataset(tmp_path, "nope").problems[0].kind == "layout"
    assert "does not exist" in check_dataset(tmp_path / "missing").format()


def test_a_broken_table_dataset_lists_every_problem_at_once(written: dict[str, Path], tmp_path: Path) -> None:
    root = copy_of(written, "table", tmp_path)
    (root / "images" / "im0.png").unlink()  # a row naming an absent file
    data = (root / "images" / "im1.png").read_bytes()
    (root / "images" / "im1.png").write_bytes(data[: len(data) // 2])  # truncated
    Image.fromarray(np.full((12, 12), 7, np.uint8)).save(root / "images" / "im2.png")  # constant
    Image.fromarray(np.zeros((12, 12), np.uint8)).save(root / "images" / "stray.png")  # no row names it
    with (root / "labels.csv").open("a") as f:
        f.write("images/im3.png,b,p3,train\n")  # duplicated id (line 10)
    table = (root / "labels.csv").read_text()
    (root / "labels.csv").write_text(table.replace("images/im7.png,b,p7,test", "images/im7.png,b,p5,test"))
    report = check_dataset(root)
    found = by_kind(report)
    assert report.layout is not None and report.layout.name == "csv"
    assert found == {
        "missing file": [f"labels.csv:2: images/im0.png: image not found in {root}"],
        "unreadable file": [found["unreadable file"][0]],
        "duplicated id": ["labels.csv:10: images/im3.png: duplicate image, first on line 5"],
        "split leakage": ["images/im5.png: group 'p5' is in 2 splits: test (images/im7.png), train (images/im5.png)"],
        "constant image": ["images/im2.png: every value is 7"],
        "stray file": ["images/stray.png: in an image folder but no record names it"],
    }
    assert found["unreadable file"][0].startswith("images/im1.png: ")
    assert (report.n_errors, report.n_warnings) == (4, 2) and not report.ok()
    text = report.format()
    assert "ERROR missing file (1)" in text and "WARNING stray file (1)" in text
    assert text.index("ERROR") < text.index("WARNING")
    assert text.splitlines()[-1] == "4 errors, 2 warnings in 6 kinds of problem"
    assert json.loads(json.dumps(report.to_dict()))["errors"] == report.n_errors


def test_volume_pixel_problems(written: dict[str, Path], tmp_path: Path) -> None:
    """NaN voxels, a mask on another grid, mask labels outside the set, CT not in HU, an empty mask."""
    root = copy_of(written, "headct", tmp_path)
    rows = (root / "labels.csv").read_text().splitlines()
    vols = [line.split(",")[0] for line in rows[1:]]
    img = nib.load(root / vols[0])
    arr = np.asarray(img.dataobj, dtype=np.float32)
    nan = arr.copy()
    nan[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(nan, img.affine), root / vols[0])
    scaled = (arr - arr.min()) / (arr.max() - arr.min()) * 255.0
    nib.save(nib.Nifti1Image(scaled.astype(np.float32), img.affine), root / vols[1])
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.uint8), img.affine), root / "seg2.nii.gz")
    shifted = img.affine.copy()
    shifted[0, 3] += 5.0
    seg3 = np.zeros(arr.shape, np.uint8)
    seg3[1, 1, 1] = 1
    nib.save(nib.Nifti1Image(seg3, shifted), root / "seg3.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros(arr.shape, np.uint8), img.affine), root / "seg4.nii.gz")
    header, *body = rows
    body[2] += ",seg2.nii.gz"
    body[3] += ",seg3.nii.gz"
    body[4] += ",seg4.nii.gz"
    body = [b if b.count(",") == 3 else b + "," for b in body]
    (root / "labels.csv").write_text("\n".join([header + ",seg", *body]) + "\n")
    report = check_dataset(root)
    found = by_kind(report)
    assert report.layout is not None and report.layout.name == "headct"
    assert [s.split(":")[0] for s in found["non-finite image"]] == [vols[0]]
    assert found["intensity range"][0].startswith(f"{vols[1]}: CT values in [0, 255] look like 0..255")
    # the volume manifest's reader compares each seg with its image's header and names the row
    assert found["shape mismatch"] == [f"labels.csv:4: {vols[2]}: seg seg2.nii.gz has shape (4, 4, 4), its image "
                                       f"{tuple(arr.shape)} (not on the image's grid)"]
    assert found["geometry mismatch"] == [f"labels.csv:5: {vols[3]}: seg seg3.nii.gz has another affine than its "
                                          "image (max difference 5 > 0.001, not on the image's grid)"]
    assert "stray file" not in found  # the files of the refused rows are named by their problems
    assert found["empty mask"] == ["seg4.nii.gz: the mask is all background (0)"]
    assert not report.ok()


def test_mask_values_outside_the_label_set(written: dict[str, Path], tmp_path: Path) -> None:
    root = copy_of(written, "rings", tmp_path)
    report = check_dataset(root)
    assert report.ok(strict=True)
    mask = root / "masks" / "ring_0001.png"
    arr = np.asarray(Image.open(mask)).copy()
    arr[0, 0] = 9
    Image.fromarray(arr).save(mask)
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(root / "masks" / "ring_0002.png")
    # the table layout has no label set of its own: the DataModule's label_values (or value_map) say it
    report = check_dataset(root, "segmentation2d/mask-table", options={"label_values": [0, 1]})
    found = by_kind(report)
    assert found["shape mismatch"] == ["masks/ring_0002.png: mask shape (20, 20) differs from ring_0002.png's "
                                       "(48, 48)"]
    assert found["label values"] == ["masks/ring_0001.png: values [9] outside the label set [0, 1]"]
    assert "label values" not in by_kind(check_dataset(root, options={"value_map": {0: 0, 1: 1, 9: 1}}))


def test_decoded_masks_are_checked_against_the_layouts_labels(written: dict[str, Path], tmp_path: Path) -> None:
    """REFUGE masks decode 255 / 128 / 0; another value is a reader problem naming the mask file."""
    root = copy_of(written, "fundus", tmp_path)
    masks = sorted((root / "Annotation-Training400").rglob("*.bmp"))
    arr = np.asarray(Image.open(masks[0])).copy()
    arr[0, 0] = 77
    Image.fromarray(arr).save(masks[0])
    masks[1].unlink()
    report = check_dataset(root)
    found = by_kind(report)
    assert report.layout is not None and report.layout.name == "refuge" and not report.ok()
    listed = "\n".join(s for lines in found.values() for s in lines)
    assert masks[0].name in listed and masks[1].name in listed, report.format()


def test_patient_in_two_official_splits(written: dict[str, Path], tmp_path: Path) -> None:
    """ChestX-ray14 fixes its splits by lists: a patient in both is listed."""
    root = copy_of(written, "chestxray", tmp_path)
    train = (root / "train_val_list.txt").read_text().split()
    test = (root / "test_list.txt").read_text().split()
    moved = train[0][:8] + "_001.png"  # another image of the first training patient, listed for test
    shutil.copy(root / "images" / train[0], root / "images" / moved)
    with (root / "Data_Entry_2017.csv").open("a") as f:
        table = (root / "Data_Entry_2017.csv").read_text().splitlines()
        row = next(line for line in table if line.startswith(train[0]))
        f.write(row.replace(train[0], moved).replace(",0,", ",1,", 1) + "\n")
    (root / "test_list.txt").write_text("\n".join([*test, moved]) + "\n")
    found = by_kind(check_dataset(root))
    assert len(found["split leakage"]) == 1 and "test" in found["split leakage"][0] \
        and "train_val" in found["split leakage"][0], found


def test_quick_checks_read_no_pixels(written: dict[str, Path], tmp_path: Path) -> None:
    root = copy_of(written, "table", tmp_path)
    (root / "images" / "im1.png").write_bytes(b"not a png")
    assert check_dataset(root, pixels=False).ok()
    assert by_kind(check_dataset(root))["unreadable file"]


def test_datamodules_name_their_sources_and_check_clean(written: dict[str, Path]) -> None:
    """What `fit` checks: each DataModule's root in its layout, with its reader options, no pixel read."""
    import medlearn.data as data
    from medlearn.data.age_asoct import ASOCTDataModule
    from medlearn.data.check import check_datamodule
    from medlearn.data.neurons import NeuronQCDataModule
    from medlearn.data.oneshot import OneShotDataModule

    modules = [data.RadiographDataModule(str(written["chestxray"])),
               data.LabelledImageDataModule(str(written["isic"])),
               data.VolumeDataModule(str(written["brats"]), task="segmentation"),
               data.ImageMaskDataModule(str(written["kits19"])),
               ASOCTDataModule(root=str(written["asoct"])),
               OneShotDataModule(root=str(written["oneshot"])),
               NeuronQCDataModule(str(written["neurons"]))]  # its reader takes no other options
    for dm in modules:
        (report,) = check_datamodule(dm)
        assert report.layout is not None and report.layout.kind == dm.layout_kind
        assert report.ok(strict=True) and not report.pixels and report.n_records, report.format()
    assert check_datamodule(object()) == []


def test_a_refused_table_still_gets_its_image_files_checked(written: dict[str, Path], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A manifest without its path column: the table problem, and each image file checked on its own."""
    from medlearn.cli import main

    root = copy_of(written, "headct", tmp_path)
    header, *body = (root / "labels.csv").read_text().splitlines()
    (root / "labels.csv").write_text("\n".join([header.replace("path", "file"), *body]) + "\n")
    vols = [line.split(",")[0] for line in body]
    data = (root / vols[0]).read_bytes()
    (root / vols[0]).write_bytes(data[: len(data) // 2])  # truncated
    img = nib.load(root / vols[1])
    arr = np.asarray(img.dataobj, dtype=np.float32)
    nan = arr.copy()
    nan[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(nan, img.affine), root / vols[1])
    scaled = (arr - arr.min()) / (arr.max() - arr.min()) * 255.0  # CT that is not in Hounsfield units
    nib.save(nib.Nifti1Image(scaled.astype(np.float32), img.affine), root / vols[2])
    # a label map is not judged as CT; hidden files are not read; a link loop is walked once
    nib.save(nib.Nifti1Image((arr > arr.mean()).astype(np.uint8), img.affine), root / "seg.nii.gz")
    (root / ".partial.nii.gz").write_bytes(b"not a volume")
    (root / "volumes" / "again").symlink_to(root, target_is_directory=True)

    report = check_dataset(root, "volume/headct")
    found = by_kind(report)
    assert report.n_records is None and report.files_read == len(vols) + 1 and not report.files_limit_reached
    assert found == {
        "table": ["labels.csv: manifest needs a 'path' column (found: file, label, split)"],
        "unreadable file": [found["unreadable file"][0]],
        "non-finite image": [found["non-finite image"][0]],
        "intensity range": [found["intensity range"][0]],
    }, report.format()
    assert found["unreadable file"][0].startswith(f"{vols[0]}: NIfTI file is truncated")
    assert found["non-finite image"][0].startswith(f"{vols[1]}: ") and "1 NaN" in found["non-finite image"][0]
    assert found["intensity range"][0].startswith(f"{vols[2]}: CT values in [0, 255] look like 0..255")
    header_line = report.format().splitlines()[0]
    assert "file-level pixel checks only" in header_line and "because the reader refused the dataset" in header_line
    assert f"{len(vols) + 1} image files" in header_line

    assert main(["check-data", str(root), "--layout", "volume/headct"]) == 1
    assert "ERROR unreadable file (1)" in capsys.readouterr().out
    assert main(["check-data", str(root), "--layout", "volume/headct", "--json"]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert {g["kind"]: g["count"] for g in summary["groups"]} == {
        "table": 1, "unreadable file": 1, "non-finite image": 1, "intensity range": 1}
    assert summary["file_level"]["files"] == len(vols) + 1 and summary["records"] is None
    assert main(["check-data", str(root), "--layout", "volume/headct", "--quick", "--json"]) == 1
    quick = json.loads(capsys.readouterr().out)
    assert [g["kind"] for g in quick["groups"]] == ["table"] and quick["file_level"] is None


def test_file_level_checks_stop_at_their_limit(written: dict[str, Path], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import medlearn.data.check as check

    root = copy_of(written, "table", tmp_path)
    table = (root / "labels.csv").read_text()
    (root / "labels.csv").write_text(table.replace("image,label", "picture,label", 1))
    (root / "images" / "im0.png").write_bytes(b"not a png")
    Image.fromarray(np.full((12, 12), 7, np.uint8)).save(root / "images" / "im1.png")
    found = by_kind(check_dataset(root))
    assert set(found) == {"table", "unreadable file", "constant image"}, found
    assert found["table"] == ["labels.csv: missing column 'image'"]
    monkeypatch.setattr(check, "FILE_LEVEL_LIMIT", 1)
    report = check_dataset(root)
    assert (report.files_read, report.files_limit_reached) == (1, True)
    assert set(by_kind(report)) == {"table", "unreadable file"}  # im0.png only, in sorted order
    assert "stopped at the limit of 1" in report.format().splitlines()[0]
