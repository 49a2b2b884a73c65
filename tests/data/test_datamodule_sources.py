"""What `medlearn fit` checks before training for the DataModules with more than one root or their own
reader options: one clean report per root on phantoms, a broken root named with its file, nothing
written into the data; and where a training run keeps a derived video grouping (its run folder)."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest
from lightning.pytorch import Trainer
from lightning.pytorch.trainer.states import TrainerFn

from medlearn.data.age_asoct import ASOCTDataModule
from medlearn.data.check import CheckReport, check_datamodule
from medlearn.data.mr_slices import MRSliceDataModule
from medlearn.data.oneshot import OneShotDataModule
from medlearn.data.segmentation2d import ImageMaskDataModule
from medlearn.data.two_domain import TwoDomainDataModule
from medlearn.data.video_pairs import VideoPairDataModule
from medlearn.synth import get_synth

#: Tiny phantoms: name -> (writer, options); sub-paths under one folder.
PHANTOMS = {
    "polyps/CVC-ClinicDB": ("endoscopy-cvc", dict(n_videos=2, n_frames=3, size=16, seed=1)),
    "polyps/ETIS-LaribPolypDB": ("endoscopy-etis", dict(n_videos=2, n_frames=3, size=16, seed=1)),
    "brats": ("brats", dict(n_cases=2, size=16, seed=1)),
    "fundus": ("fundus", dict(n_train=4, n_target=2, n_test=2, n_source_test=1, seed=1)),
    "drishti": ("drishti", dict(n_train=2, n_test=2, size=32, seed=1)),
    "asoct": ("asoct", dict(n_scans=4, width=64, height=32, images_per_patient=2, table_format="csv", seed=1)),
    "asoct-test": ("asoct", dict(n_scans=2, width=64, height=32, images_per_patient=2, table_format="csv", seed=2)),
    "oneshot": ("oneshot", dict(dims=2, n_train=2, n_eval=1, size=16, seed=1)),
}


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sources")
    for sub, (name, opts) in PHANTOMS.items():
        get_synth(name)(out=out / sub, **opts)
    return out


@pytest.fixture
def data(phantoms: Path, tmp_path: Path) -> Path:
    """A private copy of the phantoms, free to break."""
    return Path(shutil.copytree(phantoms, tmp_path / "data"))


def listing(root: Path) -> list[tuple[str, int, int]]:
    out = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            st = os.stat(os.path.join(dirpath, name))
            out.append((os.path.relpath(os.path.join(dirpath, name), root), st.st_size, st.st_mtime_ns))
    return sorted(out)


def assert_clean(reports: list[CheckReport], roots: list[Path], layouts: list[str]) -> None:
    assert [r.root for r in reports] == roots
    assert [r.layout.name if r.layout else None for r in reports] == layouts
    for r in reports:
        assert r.ok(strict=True) and not r.pixels and r.n_records, r.format()


def errors_naming(report: CheckReport, file_name: str) -> list[str]:
    return [f"{p.file}: {p.message}" for p in report.problems
            if p.severity == "error" and file_name in f"{p.file} {p.message}"]


def test_video_pair_checks_each_domain_root_and_writes_nothing(data: Path) -> None:
    root = data / "polyps"
    before = listing(root)
    dm = VideoPairDataModule(str(root))
    assert [(s.kind, s.layout) for s in dm.layout_sources()] == [("video", "cvc_clinicdb"), ("video", "etis")]
    assert_clean(check_datamodule(dm), [root / "CVC-ClinicDB", root / "ETIS-LaribPolypDB"], ["cvc_clinicdb", "etis"])
    # an absolute domain path replaces root / domain; a layout given is kept
    moved = Path(shutil.move(str(root / "ETIS-LaribPolypDB"), str(data / "elsewhere")))
    dm = VideoPairDataModule(str(root), domain_b=str(moved), layout_b="etis")
    assert_clean(check_datamodule(dm), [root / "CVC-ClinicDB", moved], ["cvc_clinicdb", "etis"])
    shutil.move(str(moved), str(root / "ETIS-LaribPolypDB"))
    assert listing(root) == before  # ETIS derives its grouping: nothing of it is written


def test_video_pair_broken_domain_is_named_before_training(data: Path) -> None:
    root = data / "polyps"
    (root / "ETIS-LaribPolypDB" / "GroundTruth" / "p2.tif").unlink()
    dm = VideoPairDataModule(str(root))
    good, bad = check_datamodule(dm)
    assert good.ok(strict=True), good.format()
    assert not bad.ok() and bad.root == root / "ETIS-LaribPolypDB"
    assert errors_naming(bad, "2.tif"), bad.format()
    assert dm.train_set is None  # checked without reading the data for training


def test_mr_slices_check_the_volume_root_with_every_contrast_required(data: Path) -> None:
    dm = MRSliceDataModule(str(data / "brats"), image_size=16)
    assert_clean(check_datamodule(dm), [data / "brats"], ["brats"])
    case = sorted(p for p in (data / "brats").iterdir() if p.is_dir())[0]
    (seg,) = case.glob("*_seg.nii*")
    seg.unlink()  # mgan trains on the tumour mask: a missing one is an error, not a later crash
    (report,) = check_datamodule(dm)
    assert not report.ok() and errors_naming(report, seg.name), report.format()
    assert MRSliceDataModule(None).layout_sources() == []


def test_two_domains_check_the_target_root_too(data: Path) -> None:
    dm = TwoDomainDataModule(str(data / "fundus"), target_root=str(data / "drishti"))
    assert_clean(check_datamodule(dm), [data / "fundus", data / "drishti"], ["refuge", "drishti"])
    mask = sorted((data / "drishti").rglob("*_ODsegSoftmap.png"))[0]
    mask.unlink()
    source, target = check_datamodule(dm)
    assert source.ok(strict=True) and not target.ok() and errors_naming(target, mask.name), target.format()


def test_asoct_checks_its_test_root(data: Path) -> None:
    dm = ASOCTDataModule(root=str(data / "asoct"), test_root=str(data / "asoct-test"))
    assert_clean(check_datamodule(dm), [data / "asoct", data / "asoct-test"], ["age", "age"])
    image = sorted((data / "asoct-test").rglob("*.jpg"))[0]
    image.unlink()
    train, test = check_datamodule(dm)
    assert train.ok(strict=True) and not test.ok() and errors_naming(test, image.name), test.format()


def test_oneshot_explicit_files_are_no_layout_root(data: Path) -> None:
    root = data / "oneshot"
    assert_clean(check_datamodule(OneShotDataModule(root=str(root))), [root], ["oneshot"])
    explicit = OneShotDataModule(atlas=str(root / "atlas" / "image.nii.gz"),
                                 atlas_labels=str(root / "atlas" / "labels.nii.gz"), images=str(root / "images"))
    assert check_datamodule(explicit) == []  # read by read_oneshot, which checks the files itself


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def fitting(run: Path) -> Trainer:
    """A trainer in the state ``fit`` puts it in when it sets up the data (no model needed)."""
    trainer = Trainer(default_root_dir=str(run), logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)
    trainer.state.fn = TrainerFn.FITTING
    return trainer


def test_a_training_run_keeps_the_derived_grouping_in_its_run_folder(data: Path, tmp_path: Path) -> None:
    root = data / "polyps"
    before = listing(root)
    run = tmp_path / "run"
    dm = VideoPairDataModule(str(root), image_size=16, test_fraction=0.5)
    dm.setup("fit")  # no trainer: written nowhere
    assert not run.exists() and listing(root) == before
    dm = VideoPairDataModule(str(root), image_size=16, test_fraction=0.5)
    dm.trainer = Trainer(default_root_dir=str(run), logger=False)  # not fitting: an evaluation writes nothing
    dm.setup("test")
    assert not run.exists()
    dm = VideoPairDataModule(str(root), image_size=16, test_fraction=0.5)
    dm.trainer = fitting(run)
    dm.setup("fit")
    assert sorted(p.name for p in run.iterdir()) == ["pseudo_sequences-ETIS-LaribPolypDB.csv"]  # CVC has its table
    rows = _rows(run / "pseudo_sequences-ETIS-LaribPolypDB.csv")
    assert [r["video"] for r in rows] == ["etis001"] * 3 + ["etis002"] * 3
    assert listing(root) == before


def test_segmentation_of_etis_keeps_the_grouping_in_the_run_folder_or_where_asked(data: Path, tmp_path: Path) -> None:
    root = data / "polyps" / "ETIS-LaribPolypDB"
    before = listing(root)
    trainer = fitting(tmp_path / "run")
    dm = ImageMaskDataModule(str(root), layout="etis", image_size=16, value_map={0: 0, 255: 1})
    dm.trainer = trainer
    dm.setup("fit")
    assert len(_rows(tmp_path / "run" / "pseudo_sequences-ETIS-LaribPolypDB.csv")) == 6
    asked = tmp_path / "mine.csv"
    dm = ImageMaskDataModule(str(root), layout="etis", image_size=16, value_map={0: 0, 255: 1},
                             layout_options={"grouping_out": str(asked)})
    dm.trainer = trainer
    dm.setup("fit")
    assert len(_rows(asked)) == 6
    assert listing(root) == before
