"""Training engine: Trainer defaults, checkpoints, seeding, configs and reports."""

from __future__ import annotations

from medlearn.engine.checkpoint import (
    AtomicCheckpointIO,
    CheckpointError,
    LoadReport,
    atomic_save,
    load_pretrained,
    safe_load,
)
from medlearn.engine.config import apply_overrides, dump_config, instantiate_class, load_config
from medlearn.engine.report import ReportCallback, Section, write_report
from medlearn.engine.run import RunResult, fit_from_config
from medlearn.engine.seed import RNGStateCallback, seed_everything
from medlearn.engine.trainer import make_trainer, set_cpu_threads

__all__ = [
    "AtomicCheckpointIO", "CheckpointError", "LoadReport", "atomic_save", "load_pretrained", "safe_load",
    "apply_overrides", "dump_config", "instantiate_class", "load_config", "ReportCallback", "Section",
    "write_report", "RNGStateCallback", "seed_everything", "make_trainer", "set_cpu_threads",
    "fit_from_config", "RunResult",
]
