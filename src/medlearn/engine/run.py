"""Run one config end to end (fit, then test when the data has a test split) in a run folder."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule

from medlearn.engine.config import dump_config, instantiate_class
from medlearn.engine.seed import seed_everything
from medlearn.engine.trainer import make_trainer

__all__ = ["fit_from_config", "RunResult"]


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


def fit_from_config(cfg: Mapping[str, Any], run_dir: str | Path, test: bool = True, progress: str = "line",
                    prefix: str = "", model: LightningModule | None = None) -> RunResult:
    """Fit the model of ``cfg`` on its data in ``run_dir``; test on the best checkpoint if asked.

    The resolved ``cfg`` is written to ``run_dir/config.yaml`` first.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = dict(cfg)
    cfg.setdefault("trainer", {})
    cfg["trainer"] = {**cfg["trainer"], "default_root_dir": str(run_dir)}
    dump_config(cfg, run_dir / "config.yaml")
    seed = cfg.get("seed_everything")
    if seed is not None:
        seed_everything(int(seed), workers=True, verbose=False)
    t0 = time.perf_counter()
    model = model or instantiate_class(cfg["model"])
    dm = instantiate_class(cfg["data"])
    monitor, mode = getattr(model, "monitor", (None, "max"))
    tkw = {k: v for k, v in cfg["trainer"].items() if k != "default_root_dir"}
    max_epochs = int(tkw.pop("max_epochs", 10))
    trainer = make_trainer(run_dir, max_epochs=max_epochs, monitor=monitor, mode=mode, progress=progress,
                           prefix=prefix, **tkw)
    trainer.fit(model, datamodule=dm)
    ck = run_dir / "checkpoints"
    best = ck / "best.ckpt" if (ck / "best.ckpt").is_file() else None
    results: dict[str, float] = {}
    if test:
        dm.setup("test")  # a datamodule may build its test split only now
    if test and getattr(dm, "test_set", None) is not None:
        out = trainer.test(model, datamodule=dm, ckpt_path=str(best) if best else None, verbose=False)
        results = {k: float(v) for k, v in (out[0] if out else {}).items()}
        from medlearn.engine.report import write_run_report

        write_run_report(trainer, model)  # refresh the report with the test results
    return RunResult(run_dir, model, dm, time.perf_counter() - t0, ck / "last.ckpt", best, results)
