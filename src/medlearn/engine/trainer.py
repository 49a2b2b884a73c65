"""Trainer factory: medlearn's defaults for every run.

Each run writes into one folder::

    run_dir/
      config.yaml          resolved configuration (LightningCLI or the recipe)
      checkpoints/         last.ckpt, best.ckpt (atomic writes, weights-only loads)
      metrics.csv          every logged scalar (CSVLogger)
      tb/                  TensorBoard events
      report.html, figures/*.png

Defaults: rich progress bar on a terminal (one line per epoch otherwise), CSV + TensorBoard
loggers, last + best checkpoints on the module's monitored metric, RNG state in checkpoints,
seeding. Everything is a plain ``lightning.pytorch.Trainer`` argument, so ``devices``,
``strategy="ddp"``, ``precision="bf16-mixed"`` work unchanged.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from medlearn.engine.checkpoint import AtomicCheckpointIO
from medlearn.engine.report import ReportCallback
from medlearn.engine.seed import RNGStateCallback
from medlearn.runtime import set_cpu_threads  # re-exported: the threading policy lives in medlearn.runtime

__all__ = ["make_trainer", "trainer_callbacks", "EpochLine", "set_cpu_threads"]


class EpochLine(Callback):
    """Print one line per epoch (for logs and non-interactive terminals)."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self._t0 = 0.0

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        m = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1 and k.count("/") <= 1}
        keys = sorted(k for k in m if not k.endswith("_step"))
        body = "  ".join(f"{k}={m[k]:.4f}" for k in keys)
        print(f"{self.prefix}epoch {trainer.current_epoch + 1}/{trainer.max_epochs} "
              f"({time.perf_counter() - self._t0:.1f}s)  {body}", flush=True)


def trainer_callbacks(run_dir: str | Path, monitor: str | None, mode: str = "max", progress: str = "auto",
                      report: bool = True, prefix: str = "") -> list[Callback]:
    """The default callbacks: checkpoints (last + best), RNG state, progress, report."""
    ckdir = Path(run_dir) / "checkpoints"
    cbs: list[Callback] = []
    if monitor:
        cbs.append(ModelCheckpoint(dirpath=ckdir, filename="best", monitor=monitor, mode=mode, save_top_k=1,
                                   auto_insert_metric_name=False, enable_version_counter=False))
    # last.ckpt after every epoch, on its own: Lightning's save_last only refreshes "last" when a
    # top-k checkpoint was written, which would leave a stale file to resume from.
    cbs += [
        ModelCheckpoint(dirpath=ckdir, filename="last", monitor=None, save_top_k=1, auto_insert_metric_name=False,
                        enable_version_counter=False),
        RNGStateCallback(),
    ]
    if progress == "auto":
        progress = "rich" if sys.stdout.isatty() else "line"
    if progress == "rich":
        cbs.append(RichProgressBar())
    elif progress == "line":
        cbs.append(EpochLine(prefix))
    if report:
        cbs.append(ReportCallback())
    return cbs


def make_trainer(run_dir: str | Path, max_epochs: int = 10, monitor: str | None = None, mode: str = "max",
                 progress: str = "auto", report: bool = True, callbacks: list[Callback] | None = None,
                 prefix: str = "", **trainer_kwargs: Any) -> Trainer:
    """A ``Trainer`` with medlearn's defaults writing into ``run_dir``.

    Args:
        run_dir: the run folder (created).
        max_epochs: epochs.
        monitor: metric for ``best.ckpt`` (``None``: only ``last.ckpt``).
        mode: ``"max"`` or ``"min"`` for ``monitor``.
        progress: ``"rich"``, ``"line"`` (one line per epoch), ``"none"`` or ``"auto"``.
        report: write ``report.html`` at the end of fit.
        callbacks: extra callbacks.
        prefix: text before each epoch line.
        **trainer_kwargs: any other ``Trainer`` argument (``accelerator``, ``devices``, ``strategy``,
            ``precision``, ``deterministic``, ``limit_train_batches`` ...).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    loggers = [CSVLogger(save_dir=str(run_dir), name="", version=""),
               TensorBoardLogger(save_dir=str(run_dir), name="tb", version="", default_hp_metric=False)]
    cbs = trainer_callbacks(run_dir, monitor, mode, progress, report, prefix) + list(callbacks or [])
    kwargs: dict[str, Any] = dict(
        default_root_dir=str(run_dir), max_epochs=max_epochs, logger=loggers, callbacks=cbs,
        plugins=[AtomicCheckpointIO()], enable_progress_bar=progress in ("rich", "auto") and sys.stdout.isatty(),
        enable_model_summary=False, log_every_n_steps=10, num_sanity_val_steps=0,
    )
    kwargs.update(trainer_kwargs)
    if kwargs.get("accelerator") is None:
        kwargs.pop("accelerator", None)
    return Trainer(**kwargs)
