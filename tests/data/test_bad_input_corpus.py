"""The bad-input corpus: the files users actually break, answered by every layout and table reader.

Each case builds a small dataset (a phantom from ``medlearn synth`` or a few files written here),
breaks it the way users do, and calls the reader through the layout registry (and, where the
fault only shows when pixels are decoded, the decoding a DataModule does). A case either expects a
:class:`~medlearn.io.errors.DataError` whose message names the file (and the row), or a correct
reading when the input is valid after all (a byte-order mark, Windows line ends, a ``;``
separator ...). Every call must finish within :data:`TIME_BOUND` seconds and write nothing in the
dataset folder. ``docs/reliability.md`` ("Bad input") lists the cases.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

import medlearn.data  # noqa: F401  (registers the layouts)
from medlearn.data.decode import load_gray, load_image, load_mask
from medlearn.data.layouts import get_layout
from medlearn.data.records import DecodedMaskedImage, MaskSource
from medlearn.data.segmentation2d import ImageMaskDataModule
from medlearn.data.volume_preprocess import LoadVolumed
from medlearn.io import read_image
from medlearn.io.errors import DataError
from medlearn.synth import get_synth

sys.path.insert(0, str(Path(__file__).parent))
from test_layouts import SMALL  # noqa: E402  (the phantom sizes every layout test uses)

#: Seconds any reader may take on one corpus case (the data are a few small files).
TIME_BOUND = 10.0

Call = Callable[[], Any]


@dataclass
class Built:
    """A broken (or valid) dataset, written: the call to make, and what to expect of it.

    Attributes:
        call: the reader call (through the layout registry, and the decoding where needed).
        check: for a valid input, a check of the call's result; ``None``: a DataError is expected.
        names: what the error message must hold (the file, ``line N``, the values ...).
    """

    call: Call
    check: Callable[[Any], None] | None = None
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Case:
    """One corpus entry: ``build(root, phantom_cache)`` writes the dataset under ``root``.

    Attributes:
        id: the test id, ``<kind>-<layout>-<what>``.
        build: writes the dataset and returns what to call and expect.
    """

    id: str
    build: Callable[[Path, Path], Built]


# --- building blocks -------------------------------------------------------------------------------
_PHANTOMS: dict[str, Path] = {}


def phantom(name: str, root: Path, cache: Path) -> Path:
    """A fresh copy of the ``name`` phantom (written once per session) at ``root``."""
    if name not in _PHANTOMS:
        _PHANTOMS[name] = Path(get_synth(name)(out=cache / name, **SMALL[name]))
    shutil.copytree(_PHANTOMS[name], root, symlinks=True)
    return root


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def write_rows(path: Path, rows: list[list[str]], *, sep: str = ",", newline: str = "\n", quote_all: bool = False,
               encoding: str = "utf-8", bom: bool = False, tail: str = "") -> None:
    buf = io.StringIO()
    csv.writer(buf, delimiter=sep, lineterminator=newline,
               quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL).writerows(rows)
    path.write_bytes((("\ufeff" if bom else "") + buf.getvalue() + tail).encode(encoding))


def reader(kind: str, name: str, root: Path, **options: Any) -> Call:
    layout = get_layout(name, kind)
    return lambda: layout.read(root, **options)


def count_is(n: int) -> Callable[[Any], None]:
    def check(found: Any) -> None:
        assert len(found) == n
    return check


def png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def disc(size: int = 16, value: int = 1) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 3) ** 2).astype(np.uint8) * value


def anti_aliased(size: int = 16, top: int = 255) -> np.ndarray:
    """A 0 / ``top`` disc whose rim holds the in-between values (64, 191) a smoothing brush leaves."""
    mask = disc(size, 1)
    grown = np.zeros_like(mask)
    grown[1:-1, 1:-1] = mask[:-2, 1:-1] | mask[2:, 1:-1] | mask[1:-1, :-2] | mask[1:-1, 2:]
    out = mask.astype(np.uint8) * top
    out[(grown == 1) & (mask == 0)] = 64
    return out


def labelled_table(root: Path) -> Path:
    """``labels.csv`` (image,label) over six gray PNGs in ``root``."""
    rng = np.random.default_rng(0)
    for i in range(6):
        png(root / f"img{i}.png", rng.integers(0, 256, (8, 8), dtype=np.uint8))
    write_rows(root / "labels.csv", [["image", "label"], *[[f"img{i}.png", str(i % 2)] for i in range(6)]])
    return root / "labels.csv"


def mask_table(root: Path, n: int = 6, mask: np.ndarray | None = None) -> Path:
    """``masks.csv`` (image,mask) over ``n`` RGB PNGs and their masks (a 0 / 1 disc) in ``root``."""
    rng = np.random.default_rng(0)
    for i in range(n):
        png(root / f"img{i}.png", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
        png(root / f"mask{i}.png", disc() if mask is None else mask)
    write_rows(root / "masks.csv", [["image", "mask"], *[[f"img{i}.png", f"mask{i}.png"] for i in range(n)]])
    return root / "masks.csv"


def regrid(path: Path, shape: tuple[int, ...] | None = None, shift: float | None = None) -> None:
    """Rewrite a NIfTI file on another grid: another shape, or its affine moved by ``shift`` mm."""
    img = nib.load(str(path))
    data = np.asarray(img.dataobj)
    affine = np.array(img.affine)
    if shape is not None:
        data = np.zeros(shape, dtype=data.dtype)
    if shift is not None:
        affine[:3, 3] += shift
    nib.save(nib.Nifti1Image(data, affine), str(path))


def strip_pixels(path: Path) -> None:
    """Rewrite a DICOM file without its PixelData element (pydicom writes it)."""
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)


def decode_all(records: Any) -> int:
    """Decode every record as the 2D datasets do (image, and mask when there is one)."""
    for r in records:
        if isinstance(r, DecodedMaskedImage):
            r.read_pair()
        elif getattr(r, "mask", None) is not None:
            load_image(r.path, 3)
            r.mask.load() if isinstance(r.mask, MaskSource) else load_mask(r.mask)
        else:
            load_gray(r.path)
    return len(records)


def read_and_decode(kind: str, name: str, root: Path, **options: Any) -> Call:
    read = reader(kind, name, root, **options)
    return lambda: decode_all(read())


def seg_module(root: Path, layout: str, **options: Any) -> Call:
    """``ImageMaskDataModule.setup`` (every mask decoded and checked), as ``medlearn fit`` runs it."""
    def call() -> Any:
        dm = ImageMaskDataModule(str(root), layout=layout, image_size=8, val_fraction=0.2, test_fraction=0.0,
                                 cache=False, **options)
        dm.setup("fit")
        return dm.label_values
    return call


# --- CSV tables ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Table:
    """A layout read from a CSV table: how to build it, and which column holds file paths."""

    kind: str
    layout: str
    make: Callable[[Path, Path], Path]  # (root, phantom cache) -> the table
    path_col: str | None = None  # a column of file paths
    path_base: str = ""  # the folder those paths are relative to, under the root


TABLES: dict[str, Table] = {
    "csv": Table("labelled2d", "csv", lambda root, _: labelled_table(root), "image"),
    "mask-table": Table("segmentation2d", "mask-table", lambda root, _: mask_table(root), "image"),
    "manifest": Table("volume", "manifest", lambda root, c: phantom("headct", root, c) / "labels.csv", "path"),
    "headct": Table("volume", "headct", lambda root, c: phantom("headct", root, c) / "labels.csv"),
    "isic2018": Table("labelled2d", "isic2018", lambda root, c: phantom("isic", root, c) / (
        "ISIC2018_Task3_Training_GroundTruth/ISIC2018_Task3_Training_GroundTruth.csv"), "image",
        "ISIC2018_Task3_Training_Input"),
    "chestxray14": Table("radiograph", "chestxray14",
                         lambda root, c: phantom("chestxray", root, c) / "Data_Entry_2017.csv"),
    "age": Table("asoct", "age", lambda root, c: phantom("asoct", root, c) / "asoct_Location.csv",
                 "ASOCT_Name", "ASOCT_Image"),
    "cvc_clinicdb": Table("segmentation2d", "cvc_clinicdb",
                          lambda root, c: phantom("endoscopy-cvc", root, c) / "metadata.csv"),
}
#: Valid tables a user expects to work: read as the unbroken table is.
VALID_TABLE_CASES = ("bom", "crlf", "trailing-lines", "semicolon", "tab-utf8-bom-crlf", "blank-lines-inside")
#: Broken tables: a DataError naming the table and the line.
BAD_TABLE_CASES = ("latin-1", "extra-cells")
#: Cases on a column of paths: a quoted non-ASCII path with spaces and a comma (valid), a path
#: going up out of the dataset through ``..`` (refused, naming the line).
PATH_TABLE_CASES = ("quoted-non-ascii-path", "escaping-path")


def table_case(what: str, table: Table) -> Callable[[Path, Path], Built]:
    def build(root: Path, cache: Path) -> Built:
        path = table.make(root, cache)
        call = reader(table.kind, table.layout, root)
        rows = read_rows(path)
        n = len(call())  # the unbroken table's reading
        if what == "bom":
            write_rows(path, rows, bom=True)
        elif what == "crlf":
            write_rows(path, rows, newline="\r\n")
        elif what == "trailing-lines":
            write_rows(path, rows, tail="\n\n" + "," * (len(rows[0]) - 1) + "\n  \n")
        elif what == "semicolon":
            write_rows(path, rows, sep=";")
        elif what == "tab-utf8-bom-crlf":
            write_rows(path, rows, sep="\t", newline="\r\n", bom=True)
        elif what == "blank-lines-inside":
            write_rows(path, [rows[0], [], *rows[1:2], [], [], *rows[2:]])
        elif what == "quoted-non-ascii-path":
            assert table.path_col is not None
            col = rows[0].index(table.path_col)
            base = root / table.path_base
            old = rows[1][col]
            file = next(p for p in base.iterdir() if p.name == old or p.stem == old) if "." not in old else base / old
            new_name = "scan é, ü 1" + "".join(file.suffixes)
            new_file = file.with_name(new_name)
            os.replace(file, new_file)
            rows[1][col] = new_file.relative_to(base).as_posix() if "." in old else new_file.name.split(".")[0]
            write_rows(path, rows, quote_all=True)
            for other in root.rglob("*.csv"):  # other tables naming the file (ISIC's lesion groupings)
                if other != path:
                    write_rows(other, [[rows[1][col] if c == old else c for c in r] for r in read_rows(other)])

            def check(found: Any) -> None:
                assert len(found) == n
                assert any(Path(r.path) == new_file for r in found)

            return Built(call, check)
        elif what == "latin-1":
            rows[-1][0] += "é"
            write_rows(path, rows, encoding="cp1252")
            return Built(call, None, (path.name, f"line {len(rows)}", "UTF-8"))
        elif what == "extra-cells":
            rows = [*rows[:2], [], *rows[2:]]
            rows[-1] = [*rows[-1], "x", "y"]
            write_rows(path, rows)
            return Built(call, None, (path.name, f"line {len(rows)}", "more cells than the header"))
        elif what == "escaping-path":
            assert table.path_col is not None
            col = rows[0].index(table.path_col)
            base = root / table.path_base
            value = rows[-1][col]
            file = base / value if (base / value).is_file() else next(p for p in base.iterdir() if p.stem == value)
            outside = root.parent / "outside"
            outside.mkdir(exist_ok=True)
            shutil.copy2(file, outside / file.name)
            ups = "/".join([".."] * (len(Path(table.path_base).parts) + 1))
            rows[-1][col] = f"{ups}/outside/{file.name if '.' in rows[-1][col] else file.stem}"
            rows = [*rows[:2], [], *rows[2:]]
            write_rows(path, rows)
            return Built(call, None, (path.name, f"line {len(rows)}", "goes up out of"))
        else:
            raise AssertionError(what)
        return Built(call, count_is(n))
    return build


CASES: list[Case] = []
for _name, _table in TABLES.items():
    _whats = VALID_TABLE_CASES + BAD_TABLE_CASES + (PATH_TABLE_CASES if _table.path_col else ())
    CASES += [Case(f"{_table.kind}-{_table.layout}-{what}", table_case(what, _table)) for what in _whats]


# --- xlsx tables (AGE) -----------------------------------------------------------------------------
def age_xlsx(what: str) -> Callable[[Path, Path], Built]:
    """The AGE table as xlsx: a title and notes above the header (read), merged cells (refused)."""
    import openpyxl

    def build(root: Path, cache: Path) -> Built:
        table = phantom("asoct", root, cache) / "asoct_Location.csv"
        rows = read_rows(table)
        table.unlink()
        book = openpyxl.Workbook()
        sheet = book.active
        assert sheet is not None
        call = reader("asoct", "age", root)
        xlsx = root / "asoct_Location.xlsx"
        values = [[float(c) if c.replace(".", "").lstrip("-").isdigit() else c for c in row] for row in rows]
        if what == "title-rows-above-header":
            sheet.append(["AGE challenge: angle closure labels and scleral spur points"])
            sheet.merge_cells("A1:G1")
            sheet.append(["exported 2019-07-01"])
            sheet.append([])
            for row in values:
                sheet.append(row)
            book.save(xlsx)
            return Built(call, count_is(len(rows) - 1))
        for row in values:
            sheet.append(row)
        if what == "merged-cells":
            sheet.merge_cells("B3:B4")  # one Left_Label for two scans
            book.save(xlsx)
            return Built(call, None, (xlsx.name, "rows 3-4", "B3:B4", "merged"))
        if what == "misspelled-header":
            sheet["A1"] = "ASOCT Name"
            book.save(xlsx)
            return Built(call, None, (xlsx.name, "ASOCT_Name", "missing"))
        if what == "csv-saved-as-xlsx":
            write_rows(xlsx, rows)
            return Built(call, None, (xlsx.name, "cannot read the workbook"))
        raise AssertionError(what)
    return build


CASES += [Case(f"asoct-age-xlsx-{what}", age_xlsx(what))
          for what in ("title-rows-above-header", "merged-cells", "misspelled-header", "csv-saved-as-xlsx")]


# --- NIfTI masks on another grid than their image --------------------------------------------------
def manifest_with_seg(what: str) -> Callable[[Path, Path], Built]:
    def build(root: Path, cache: Path) -> Built:
        table = phantom("headct", root, cache) / "labels.csv"
        rows = read_rows(table)
        rows[0].append("seg")
        for row in rows[1:]:
            image = root / row[0]
            seg = image.with_name(image.name.replace(".nii.gz", "_seg.nii.gz"))
            img = nib.load(str(image))
            nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine), str(seg))
            row.append(seg.relative_to(root).as_posix())
        bad = root / rows[2][-1]
        regrid(bad, shape=(4, 4, 4)) if what == "shape" else regrid(bad, shift=2.0)
        write_rows(table, rows)
        return Built(reader("volume", "manifest", root), None, (table.name, "line 3", bad.name, "grid"))
    return build


def load_volumes_on_other_grids(root: Path, cache: Path) -> Built:
    """Records not checked on reading (``check_files=False``) still meet the grid check on loading."""
    phantom("headct", root, cache)
    image = root / "volumes" / "case_0000.nii.gz"
    seg = root / "volumes" / "case_0000_seg.nii.gz"
    img = nib.load(str(image))
    affine = np.array(img.affine)
    affine[:3, 3] += 2.0
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), affine), str(seg))
    load = LoadVolumed(("image", "seg"))
    return Built(lambda: load({"image": str(image), "seg": str(seg)}), None, (seg.name, "affine", image.name))


def regridded(synth: str, kind: str, layout: str, relpath: str, what: str, call: str = "read",
              **options: Any) -> Callable[[Path, Path], Built]:
    def build(root: Path, cache: Path) -> Built:
        phantom(synth, root, cache)
        target = root / relpath
        regrid(target, shape=(5, 6, 7)) if what == "shape" else regrid(target, shift=2.0)
        fn = reader(kind, layout, root, **options) if call == "read" else read_and_decode(kind, layout, root)
        return Built(fn, None, (target.name,))
    return build


CASES += [Case(f"volume-manifest-seg-other-{what}", manifest_with_seg(what)) for what in ("shape", "affine")]
CASES += [Case("volume-load-seg-other-affine", load_volumes_on_other_grids)]
CASES += [Case(f"volume-brats-seg-other-{what}",
               regridded("brats", "volume", "brats", "BraTS_0001/BraTS_0001_seg.nii.gz", what, require_seg=True))
          for what in ("shape", "affine")]
CASES += [Case(f"segmentation2d-kits19-seg-other-{what}",
               regridded("kits19", "segmentation2d", "kits19", "case_00001/segmentation.nii.gz", what))
          for what in ("shape", "affine")]
CASES += [Case(f"segmentation2d-acdc-gt-other-{what}",
               regridded("acdc", "segmentation2d", "acdc", "patient002/patient002_frame01_gt.nii.gz", what))
          for what in ("shape", "affine")]
CASES += [Case(f"oneshot-oneshot-atlas-labels-other-{what}",
               regridded("oneshot", "oneshot", "oneshot", "atlas/labels.nii.gz", what))
          for what in ("shape", "affine")]


# --- DICOM without pixel data ----------------------------------------------------------------------
def dicom_without_pixels(where: str) -> Callable[[Path, Path], Built]:
    def build(root: Path, cache: Path) -> Built:
        if where == "inbreast":
            phantom("inbreast", root, cache)
            target = sorted((root / "AllDICOMs").glob("*.dcm"))[1]
            strip_pixels(target)
            return Built(read_and_decode("segmentation2d", "inbreast", root), None, (target.name, "pixel"))
        source = sorted((Path(_PHANTOMS.get("inbreast") or phantom("inbreast", cache / "dcm-src", cache))
                         / "AllDICOMs").glob("*.dcm"))[0]
        phantom("chestxray", root, cache)
        target = root / "images" / "scan_0001.dcm"
        shutil.copy2(source, target)
        strip_pixels(target)
        return Built(read_and_decode("radiograph", "folder", root / "images"), None, (target.name, "pixel"))
    return build


CASES += [Case(f"{kind}-{where}-dicom-without-pixel-data", dicom_without_pixels(where))
          for kind, where in (("radiograph", "folder"), ("segmentation2d", "inbreast"))]


# --- label PNGs: RGB, anti-aliased edges -----------------------------------------------------------
def mask_table_masks(what: str) -> Callable[[Path, Path], Built]:
    def build(root: Path, cache: Path) -> Built:
        if what == "rgb-grey":  # three equal channels: the grey values are the labels (documented)
            mask_table(root, mask=np.repeat(disc()[..., None], 3, axis=2))
            return Built(seg_module(root, "mask-table"), lambda values: assert_equal(values, [0, 1]))
        if what == "rgb-colour":  # a palette-style colour mask
            colour = np.zeros((16, 16, 3), np.uint8)
            colour[disc() == 1] = (255, 0, 0)
            mask_table(root)
            png(root / "mask3.png", colour)
            return Built(seg_module(root, "mask-table", label_values=[0, 1]), None, ("mask3.png", "RGB", "differ"))
        if what == "anti-aliased":
            mask_table(root)
            png(root / "mask4.png", anti_aliased(top=1))
            return Built(seg_module(root, "mask-table", label_values=[0, 1]), None,
                         ("mask4.png", "64 (", "outside label_values"))
        if what == "anti-aliased-value-map":
            mask_table(root, mask=disc(value=255))
            png(root / "mask2.png", anti_aliased())
            return Built(seg_module(root, "mask-table", value_map={0: 0, 255: 1}), None,
                         ("mask2.png", "64 (", "not in value_map"))
        raise AssertionError(what)
    return build


def assert_equal(a: Any, b: Any) -> None:
    assert a == b


def layout_masks(synth: str, layout: str, folder: str, what: str, **options: Any) -> Callable[[Path, Path], Built]:
    """A layout's mask file rewritten with anti-aliased edges or as colour RGB."""
    def build(root: Path, cache: Path) -> Built:
        phantom(synth, root, cache)
        target = sorted(p for p in (root / folder).rglob("*") if p.is_file())[0]
        stored = np.asarray(Image.open(target))
        if what == "anti-aliased":
            edge = np.zeros(stored.shape[:2], bool)
            edge[stored.shape[0] // 2, :] = True
            stored = stored.copy()
            stored[edge] = 200
            expect = ("200 (",)
        else:
            grey = stored if stored.ndim == 2 else stored[..., 0]
            stored = np.stack([grey, 255 - grey, grey], axis=-1).astype(np.uint8)
            expect = ("RGB",)
        Image.fromarray(stored).save(target)
        return Built(seg_module(root, layout, **options), None, (target.name, *expect))
    return build


CASES += [Case(f"segmentation2d-mask-table-{what}", mask_table_masks(what))
          for what in ("rgb-grey", "rgb-colour", "anti-aliased", "anti-aliased-value-map")]
CASES += [Case(f"segmentation2d-{layout}-mask-{what}", layout_masks(synth, layout, folder, what, **opts))
          for synth, layout, folder, opts in (
              ("fundus", "refuge", "Annotation-Training400", {}),
              ("endoscopy-cvc", "cvc_clinicdb", "Ground Truth", {"value_map": {0: 0, 255: 1}}),
              # ETIS has no sequence table: the reader derives the grouping and, like every read,
              # writes nothing into the folder (test_bad_input checks the listing)
              ("endoscopy-etis", "etis", "GroundTruth", {"value_map": {0: 0, 255: 1}}))
          for what in ("anti-aliased", "rgb-colour")]


# --- symbolic link loops ---------------------------------------------------------------------------
def symlink_loop(kind: str, where: str) -> Callable[[Path, Path], Built]:
    def loops(folder: Path, file_suffix: str) -> Path:
        (folder / "loop").symlink_to(".", target_is_directory=True)  # a folder that contains itself
        (folder / "deeper").mkdir()
        (folder / "deeper" / "up").symlink_to("..", target_is_directory=True)
        (folder / f"a{file_suffix}").symlink_to(f"b{file_suffix}")  # two files pointing at each other
        (folder / f"b{file_suffix}").symlink_to(f"a{file_suffix}")
        return folder / f"a{file_suffix}"

    def build(root: Path, cache: Path) -> Built:
        if (kind, where) == ("radiograph", "folder"):
            phantom("chestxray", root, cache)
            bad = loops(root / "images", ".png")
            return Built(read_and_decode("radiograph", "folder", root / "images"), None, (bad.name,))
        if (kind, where) == ("volume", "folder"):
            phantom("headct", root, cache)
            (root / "labels.csv").unlink()
            bad = loops(root / "volumes", ".nii.gz")
            return Built(lambda: [read_image(r.path) for r in get_layout("folder", "volume").read(root)],
                         None, (bad.name,))
        if where == "refuge":
            phantom("fundus", root, cache)
            n = len(get_layout("refuge", "segmentation2d").read(root))
            folder = root / "Annotation-Training400" / "Disc_Cup_Masks"
            (folder / "loop").symlink_to(".", target_is_directory=True)
            (folder / "deeper").mkdir()
            (folder / "deeper" / "up").symlink_to("..", target_is_directory=True)
            return Built(reader("segmentation2d", "refuge", root), count_is(n))
        if where == "mask-table":
            table = mask_table(root)
            rows = read_rows(table)
            loops(root, ".png")
            rows[3][1] = "a.png"
            write_rows(table, rows)
            return Built(reader("segmentation2d", "mask-table", root), None, (table.name, "line 4", "a.png"))
        if where == "video_folder":
            root.mkdir()
            for v in ("v1", "v2"):
                for i in range(2):
                    png(root / v / f"{i}.png", np.full((8, 8, 3), 40 * i, np.uint8))
            (root / "v1" / "loop").symlink_to("..", target_is_directory=True)
            return Built(reader("video", "video_folder", root), count_is(len(reader("video", "video_folder", root)())))
        raise AssertionError(where)
    return build


CASES += [Case(f"{kind}-{where}-symlink-loop", symlink_loop(kind, where))
          for kind, where in (("radiograph", "folder"), ("volume", "folder"), ("segmentation2d", "refuge"),
                              ("segmentation2d", "mask-table"), ("video", "video_folder"))]


# --- the test --------------------------------------------------------------------------------------
def listing(root: Path) -> list[tuple[str, int, int]]:
    """Every entry under ``root`` (links not followed) with its size and modification time."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            out.append((os.path.relpath(os.path.join(dirpath, name), root), st.st_size, st.st_mtime_ns))
    return sorted(out)


@pytest.fixture(scope="module")
def phantom_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("phantoms")


def test_case_ids_are_unique() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case: Case, tmp_path: Path, phantom_cache: Path) -> None:
    root = tmp_path / "data"
    built = case.build(root, phantom_cache)
    before = listing(root)
    start = time.perf_counter()
    if built.check is None:
        with pytest.raises(DataError) as exc:
            built.call()
        message = str(exc.value)
        for name in built.names:
            assert name in message, f"{name!r} not in the message:\n{message}"
    else:
        built.check(built.call())
    elapsed = time.perf_counter() - start
    assert elapsed < TIME_BOUND, f"{case.id} took {elapsed:.1f} s"
    assert listing(root) == before, "the reader wrote in the dataset folder"
