"""`fit_from_config` (the recipes' path: `medlearn demo`, `medlearn reproduce`) runs the cheap dataset
checks `medlearn fit` runs: a dataset with errors stops before anything is trained or checkpointed."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from medlearn.engine.config import load_config
from medlearn.engine.run import fit_from_config, no_validation_quiet
from medlearn.io.errors import DataError
from medlearn.registry import config_dir
from medlearn.synth.rings import write_rings


@pytest.fixture(scope="module")
def rings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_rings(tmp_path_factory.mktemp("rings") / "rings", n_images=6, n_test=2, size=48, seed=3)


def _cfg(root: Path) -> dict[str, Any]:
    return load_config(config_dir("crossover") / "demo.yaml", {
        "data.init_args.root": str(root), "data.init_args.image_size": 48, "data.init_args.val_fraction": 0.0,
        "trainer.max_epochs": 1, "trainer.limit_train_batches": 1, "model.init_args.centres_per_image": 16,
        "model.init_args.patch_batch": 32, "model.init_args.eval_stride": 8})


def test_a_missing_mask_stops_the_run_before_any_checkpoint(rings: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    root = Path(shutil.copytree(rings, tmp_path / "rings"))
    mask = sorted((root / "masks").glob("*.png"))[0]
    mask.unlink()
    run = tmp_path / "run"
    with pytest.raises(DataError, match="training did not start") as caught:
        fit_from_config(_cfg(root), run, progress="none")
    assert Path(caught.value.path) == root
    err = capsys.readouterr().err
    assert "ERROR missing file (1)" in err and mask.name in err  # the listing names the file
    assert not (run / "checkpoints").exists() and not (run / "metrics.csv").exists()
    # the check can be skipped: the same run then gets as far as the DataModule's own reading
    with pytest.raises(DataError, match=mask.name):
        fit_from_config(_cfg(root), tmp_path / "unchecked", progress="none", check_data=False)


def test_a_clean_dataset_trains_as_before(rings: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The check reads no pixels and draws no random numbers: the same weights with and without it."""
    with no_validation_quiet():
        checked = fit_from_config(_cfg(rings), tmp_path / "checked", test=False, progress="none")
        unchecked = fit_from_config(_cfg(rings), tmp_path / "unchecked", test=False, progress="none",
                                    check_data=False)
    assert checked.last_ckpt.is_file() and checked.model.trainer.global_step > 0
    assert "check-data" not in capsys.readouterr().err  # no listing, no warning line
    weights, other = checked.model.state_dict(), unchecked.model.state_dict()
    assert weights.keys() == other.keys() and all(torch.equal(weights[k], other[k]) for k in weights)
