"""`medlearn check-data`: exit status, the grouped listing, --json, --strict; `fit` stops on a broken dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medlearn.cli import main
from medlearn.registry import config_dir
from medlearn.synth import get_synth


@pytest.fixture(scope="module")
def isic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli-check") / "isic"
    return Path(get_synth("isic")(out=out, counts="3,6,2,2,3,2,2", n_test_per_class=1, size=12, seed=1))


def broken_copy(isic: Path, tmp_path: Path) -> tuple[Path, list[Path]]:
    """A copy with a deleted image, a truncated one and a stray file."""
    import shutil

    root = Path(shutil.copytree(isic, tmp_path / "isic"))
    images = sorted((root / "ISIC2018_Task3_Training_Input").glob("*.jpg"))
    images[0].unlink()
    images[1].write_bytes(images[1].read_bytes()[:100])
    (root / "ISIC2018_Task3_Training_Input" / "ISIC_9999999.jpg").write_bytes(images[2].read_bytes())
    return root, images


def test_a_clean_dataset_passes(isic: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-data", str(isic)]) == 0
    out = capsys.readouterr().out
    assert "layout labelled2d/isic2018" in out and "no problems found" in out
    assert main(["check-data", str(isic), "--layout", "isic2018", "--strict"]) == 0


def test_a_broken_dataset_lists_each_problem_grouped_and_counted(isic: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    root, images = broken_copy(isic, tmp_path)
    assert main(["check-data", str(root)]) == 1
    out = capsys.readouterr().out
    assert "ERROR missing file (1)" in out and f"line 2: {images[0].stem}: image not found" in out
    assert "ERROR unreadable file (1)" in out and images[1].name in out
    assert "WARNING stray file (1)" in out and "ISIC_9999999.jpg" in out
    assert out.strip().splitlines()[-1] == "2 errors, 1 warning in 3 kinds of problem"
    assert "Traceback" not in out

    assert main(["check-data", str(root), "--json"]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["ok"] is False and (summary["errors"], summary["warnings"]) == (2, 1)
    assert {g["kind"]: g["count"] for g in summary["groups"]} == {"missing file": 1, "unreadable file": 1,
                                                                  "stray file": 1}
    missing = next(g for g in summary["groups"] if g["kind"] == "missing file")["problems"][0]
    assert missing["row"] == 2 and missing["file"].endswith("ISIC2018_Task3_Training_GroundTruth.csv")

    assert main(["check-data", str(root), "--quick", "--json"]) == 1  # no pixel read: the truncated file passes
    assert json.loads(capsys.readouterr().out)["errors"] == 1


def test_warnings_fail_only_with_strict(isic: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    root = Path(shutil.copytree(isic, tmp_path / "isic"))
    image = next((root / "ISIC2018_Task3_Training_Input").glob("*.jpg"))
    (root / "ISIC2018_Task3_Training_Input" / "extra.jpg").write_bytes(image.read_bytes())
    assert main(["check-data", str(root)]) == 0
    assert main(["check-data", str(root), "--strict"]) == 1
    assert "WARNING stray file (1)" in capsys.readouterr().out


def test_unrecognised_root_lists_the_layouts_tried(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-data", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "ERROR layout (1)" in out and "tried" in out and "volume/brats" in out
    assert main(["check-data", str(tmp_path), "--option", "novalue"]) == 2


def test_fit_stops_before_training_with_the_listing(isic: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    root, images = broken_copy(isic, tmp_path)
    run = tmp_path / "run"
    code = main(["fit", "--config", str(config_dir("ccl") / "demo.yaml"), "--data.init_args.root", str(root),
                 "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(run)])
    err = capsys.readouterr().err
    assert code == 2 and "ERROR missing file (1)" in err and images[0].stem in err
    assert "WARNING stray file (1)" in err and "training did not start" in err
    assert "unreadable" not in err  # fit reads no pixels
    assert not (run / "checkpoints").exists() and not (run / "metrics.csv").exists()


def test_a_derived_video_grouping_is_said_on_the_console_and_nothing_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from medlearn.synth.endoscopy import write_etis_phantom

    root = write_etis_phantom(tmp_path / "etis", n_videos=3, n_frames=4, size=24, seed=2)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    assert main(["check-data", str(root), "--quick"]) == 0
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if "pseudo-sequences" in x)
    assert line.startswith("medlearn: ") and "12 frames" in line and "sequences.csv" in line
    assert main(["check-data", str(root), "--quick", "--quiet"]) == 0
    assert "pseudo-sequences" not in capsys.readouterr().err  # information lines are not shown when quiet
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


def test_a_folder_holding_several_datasets_checks_each_in_its_own_layout(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from medlearn.data.check import dataset_roots
    from medlearn.synth.endoscopy import write_cvc_phantom, write_etis_phantom

    cvc = write_cvc_phantom(tmp_path / "data" / "CVC-ClinicDB", n_videos=2, n_frames=3, size=24, seed=1)
    etis = write_etis_phantom(tmp_path / "data" / "ETIS-LaribPolypDB", n_videos=2, n_frames=3, size=24, seed=2)
    assert [(r, lay.name) for r, lay in dataset_roots(tmp_path / "data")] == [(cvc, "cvc_clinicdb"), (etis, "etis")]
    assert [r for r, _ in dataset_roots(etis)] == [etis]  # a dataset is checked as itself
    assert main(["check-data", str(tmp_path / "data"), "--quick"]) == 0
    out = capsys.readouterr().out
    assert "holds 2 dataset(s)" in out and "CVC-ClinicDB (video/cvc_clinicdb)" in out
    assert out.count("no problems found") == 2 and "duplicated id" not in out

    (etis / "GroundTruth" / "p2.tif").unlink()
    assert main(["check-data", str(tmp_path / "data"), "--quick", "--json"]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["ok"] is False and [d["ok"] for d in summary["datasets"]] == [True, False]
    assert "p2.tif" in json.dumps(summary["datasets"][1])
