"""Run one config in a run folder: fit (then test on the best checkpoint), or predict.

The recipes (demos, reproductions) and the tests run configs through these functions; the CLI
runs the same configs through LightningCLI. Both build their trainers with the run builder
(:mod:`medlearn.engine.trainer`), so a config gives the same numbers either way.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule

from medlearn.data.check import check_before_fit
from medlearn.engine.config import dump_config, instantiate_class, resolve_links
from medlearn.engine.predict import uncached_data
from medlearn.engine.seed import seed_everything
from medlearn.engine.trainer import TRAINER_DEFAULTS, make_trainer, open_run_folder, quiet_console, trainer_arguments

__all__ = ["fit_from_config", "predict_from_config", "RunResult", "NO_VALIDATION_WARNINGS", "no_validation_quiet"]

#: Warnings of a run without a validation split (a recipe's or a job's choice): no validation batches, so
#: no monitored metric; the last checkpoint is used.
NO_VALIDATION_WARNINGS = (r"Total length of `list` across ranks is zero",
                          r".*could not find the monitored key in the returned metrics")


@contextmanager
def no_validation_quiet(active: bool = True) -> Iterator[None]:
    """Silence :data:`NO_VALIDATION_WARNINGS` inside the block (when ``active``): expected, not news to a user."""
    with warnings.catch_warnings():
        if active:
            for pattern in NO_VALIDATION_WARNINGS:
                warnings.filterwarnings("ignore", message=pattern)
        yield


@dataclass
class RunResult:
    """What a finished run produced."""

    run_dir: Path
    model: LightningModule
    datamodule: LightningDataModule
    seconds: float
    last_ckpt: Path
    best_ckpt: Path | None
    test: dict[str, float] = field(default_factory=dict)


def _trainer_options(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in dict(cfg.get("trainer") or {}).items() if k != "default_root_dir"}


def fit_from_config(cfg: Mapping[str, Any], run_dir: str | Path, test: bool = True, progress: str = "line",
                    prefix: str = "", model: LightningModule | None = None, overwrite: bool = True,
                    check_data: bool = True) -> RunResult:
    """Fit the model of ``cfg`` on its data in ``run_dir``; test on the best checkpoint if asked.

    The resolved ``cfg`` is written to ``run_dir/config.yaml`` first. Before training, the data
    gets the cheap checks ``medlearn fit`` runs (:func:`medlearn.data.check.check_before_fit`):
    a dataset with errors stops the run with their listing before anything is trained or
    checkpointed. The test results are logged into the same ``metrics.csv`` and added to
    ``report.html``.

    Args:
        cfg: a config as :func:`medlearn.engine.config.load_config` reads it.
        run_dir: the run folder.
        test: test the best (else last) checkpoint when the data has a test split.
        progress: ``"line"``, ``"rich"``, ``"none"`` or ``"auto"``.
        prefix: text before each epoch line.
        model: an already built model (default: built from ``cfg["model"]``).
        overwrite: allow a folder that already holds checkpoints (recipes rerun into their own folders).
        check_data: run the cheap dataset checks before training.

    Raises:
        DataError: the dataset has errors (listed on standard error first).
    """
    folder = open_run_folder(run_dir, "fit", overwrite=overwrite)
    folder.root.mkdir(parents=True, exist_ok=True)
    cfg = resolve_links(cfg)
    cfg["trainer"] = {**dict(cfg.get("trainer") or {}), "default_root_dir": str(folder.root)}
    dump_config(cfg, folder.root / "config.yaml")
    seed = cfg.get("seed_everything")
    if seed is not None:
        seed_everything(int(seed), workers=True, verbose=False)
    t0 = time.perf_counter()
    model = model or instantiate_class(cfg["model"])
    dm = instantiate_class(cfg["data"])
    if check_data:
        check_before_fit(dm)
    tkw = _trainer_options(cfg)
    max_epochs = int(tkw.pop("max_epochs", 10))
    trainer = make_trainer(folder, max_epochs=max_epochs, progress=progress, prefix=prefix, model=model, **tkw)
    trainer.fit(model, datamodule=dm)
    ck = folder.checkpoints
    best = ck / "best.ckpt" if (ck / "best.ckpt").is_file() else None
    results: dict[str, float] = {}
    if test:
        dm.setup("test")  # a datamodule may build its test split only now
    if test and getattr(dm, "test_set", None) is not None:
        out = trainer.test(model, datamodule=dm, ckpt_path=str(best) if best else None, verbose=False)
        results = {k: float(v) for k, v in (out[0] if out else {}).items()}
    return RunResult(folder.root, model, dm, time.perf_counter() - t0, ck / "last.ckpt", best, results)


def predict_from_config(cfg: Mapping[str, Any], run_dir: str | Path, ckpt_path: str | Path | None = None,
                        progress: str = "none") -> Path:
    """``medlearn predict`` in Python: predictions of ``cfg``'s model on its data's predict split.

    Returns:
        The folder the predictions were written to (``run_dir``, or a new ``predict`` subfolder
        when ``run_dir`` holds a training run).
    """
    folder = open_run_folder(run_dir, "predict")
    cfg = resolve_links(cfg)
    data = {**cfg["data"], "init_args": dict(cfg["data"].get("init_args") or {})}
    uncached_data(data)  # each input is read once: no cache to grow
    cfg = {**cfg, "data": data}
    model = instantiate_class(cfg["model"])
    dm = instantiate_class(cfg["data"])
    folder.records.mkdir(parents=True, exist_ok=True)
    dump_config({**cfg, "trainer": {**dict(cfg.get("trainer") or {}), "default_root_dir": str(folder.root)}},
                folder.records / "config.yaml")
    from lightning.pytorch import Trainer

    tkw = _trainer_options(cfg)
    quiet_console(verbose=False)
    args = trainer_arguments(folder, model, progress=progress, plugins=tkw.pop("plugins", None),
                             logger=tkw.pop("logger", False), precision=tkw.pop("precision", "auto"),
                             accelerator=tkw.get("accelerator"))
    trainer = Trainer(**{**TRAINER_DEFAULTS, **args, **tkw})
    trainer.predict(model, datamodule=dm, ckpt_path=str(ckpt_path) if ckpt_path else None, return_predictions=False)
    return folder.records
