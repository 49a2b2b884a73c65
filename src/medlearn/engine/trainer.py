"""The run builder: one place that turns a run folder into a configured Lightning ``Trainer``.

``medlearn fit | validate | test | predict`` (LightningCLI) and the demo / reproduce recipes
(:mod:`medlearn.engine.run`) build their trainers here, so every run gets the same folder checks,
loggers, callbacks, checkpoint I/O and report. A training run writes into one folder::

    run_dir/
      config.yaml          resolved configuration (LightningCLI or the recipe)
      checkpoints/         last.ckpt, best.ckpt (atomic writes, weights-only loads)
      metrics.csv          every logged scalar (CSVLogger)
      tb/                  TensorBoard events
      report.html, report.json, figures/*.png

An evaluation (``validate``, ``test``, ``predict``) of a finished run never touches the training
records: it writes its own ``metrics.csv``, ``config.yaml`` and figures (or predictions) into a new
subfolder (``run_dir/test``, then ``test-2`` ...), and adds its part to ``run_dir/report.html``.
An evaluation pointed at a folder that holds no training run writes there directly.

Defaults (:data:`TRAINER_DEFAULTS`, also the CLI's): rich progress bar on a terminal (one line per
epoch otherwise, with the time left; no progress at all in quiet mode, :mod:`medlearn.console`),
CSV + TensorBoard loggers, last + best checkpoints on the module's monitored metric, RNG state in
checkpoints, no sanity-check batches. Everything else is a plain ``lightning.pytorch.Trainer``
argument, so ``devices``, ``strategy="ddp"``, ``precision="bf16-mixed"`` work unchanged.

Precision: ``precision: auto`` (the default of every config and of the CLI, :func:`resolve_precision`)
trains under bfloat16 autocast where the hardware computes bfloat16 natively (a CUDA GPU that
supports it; a CPU with AVX-512 BF16 or AMX) and the module allows it, and evaluates in fp32
(:class:`TrainingAutocast`); elsewhere everything is fp32. ``--trainer.precision 32-true`` (or
``MEDLEARN_PRECISION=32-true``, ``medlearn demo --precision 32-true``) gives fp32 everywhere.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import warnings
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.plugins.precision import MixedPrecision, Precision

from medlearn.console import format_duration, is_quiet, lightning_progress
from medlearn.engine.checkpoint import AtomicCheckpointIO
from medlearn.engine.report import ReportCallback
from medlearn.engine.runlock import RunLock
from medlearn.engine.seed import RNGStateCallback
from medlearn.io.errors import DataError
from medlearn.runtime import (
    PRECISION_ENV,
    cpu_bf16_supported,
    set_cpu_threads,  # re-exported: the threading policy lives in medlearn.runtime
)

__all__ = ["make_trainer", "trainer_callbacks", "trainer_arguments", "run_loggers", "open_run_folder", "RunFolder",
           "DataHandover", "EpochLine", "set_cpu_threads", "quiet_console", "TRAINER_DEFAULTS", "STAGES",
           "resolve_precision", "precision_arguments", "TrainingAutocast", "AutoPrecisionTrainer"]

STAGES = ("fit", "validate", "test", "predict")

#: medlearn's ``Trainer`` defaults (recipes and ``medlearn fit`` alike; a config may override them).
TRAINER_DEFAULTS: dict[str, Any] = {"enable_model_summary": False, "log_every_n_steps": 10,
                                    "num_sanity_val_steps": 0, "precision": "auto"}


# ------------------------------------------------------------------------------------- precision
def _autocast_device(accelerator: Any) -> str | None:
    """``"cuda"`` or ``"cpu"`` when bf16 autocast is native there, else ``None``."""
    import torch

    name = str(accelerator or "auto").lower()
    if name in ("gpu", "cuda") or (name == "auto" and torch.cuda.is_available()):
        return "cuda" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else None
    if name in ("cpu", "auto"):
        return "cpu" if cpu_bf16_supported() else None
    return None  # mps, tpu ...: fp32 unless asked


def resolve_precision(precision: Any = "auto", model: Any = None, accelerator: Any = None) -> Any:
    """What ``precision: auto`` means for this machine and module: ``"bf16-mixed"`` or ``"32-true"``.

    In this order: the ``MEDLEARN_PRECISION`` environment variable when set (``32-true`` or
    ``bf16-mixed``; ``medlearn demo|reproduce --precision`` set it); ``"32-true"`` when the module
    says its results do not hold under bfloat16 (``bf16_autocast = False`` on the class);
    ``"bf16-mixed"`` on a CUDA GPU that supports bfloat16 or on a CPU with native bfloat16
    instructions (:func:`medlearn.runtime.cpu_bf16_supported`); else ``"32-true"``. Any value
    other than ``"auto"`` is returned unchanged. :func:`precision_arguments` turns the choice into
    ``Trainer`` arguments.

    Args:
        precision: the configured precision.
        model: the module to be run (its ``bf16_autocast`` attribute), or ``None``.
        accelerator: the configured ``Trainer`` accelerator (``"cpu"``, ``"gpu"``, ``"auto"`` ...).
    """
    import os

    if precision != "auto":
        return precision
    forced = os.environ.get(PRECISION_ENV, "").strip()
    if forced and forced != "auto":
        if forced not in ("32-true", "bf16-mixed"):
            raise ValueError(f"{PRECISION_ENV}={forced!r}: use auto, 32-true or bf16-mixed")
        return forced
    if not getattr(model, "bf16_autocast", True):
        return "32-true"
    return "bf16-mixed" if _autocast_device(accelerator) else "32-true"


class TrainingAutocast(MixedPrecision):
    """bf16 autocast around the training steps only; validation, test and predict run in fp32.

    What ``precision: auto`` uses when it picks bfloat16: the speed-up is in training, and the
    metrics and the written predictions do not depend on whether the machine had bf16 (only the
    trained weights do). An explicit ``precision: bf16-mixed`` autocasts every stage (Lightning's).
    """

    @contextlib.contextmanager
    def val_step_context(self) -> Generator[None, None, None]:  # noqa: D102
        yield

    @contextlib.contextmanager
    def test_step_context(self) -> Generator[None, None, None]:  # noqa: D102
        yield

    @contextlib.contextmanager
    def predict_step_context(self) -> Generator[None, None, None]:  # noqa: D102
        yield


def precision_arguments(precision: Any, model: Any = None, accelerator: Any = None,
                        plugins: Sequence[Any] = ()) -> dict[str, Any]:
    """``Trainer`` arguments (``precision``, ``plugins``) for a configured precision.

    ``"auto"`` resolved to bf16 becomes a :class:`TrainingAutocast` plugin (``precision`` left
    unset); anything else is passed to Lightning as it is. A user's own precision plugin wins.
    """
    plugins = list(plugins)
    if any(isinstance(p, Precision) for p in plugins):
        return {"precision": None if precision == "auto" else precision, "plugins": plugins}
    value = resolve_precision(precision, model, accelerator)
    if precision == "auto" and value == "bf16-mixed":
        device = _autocast_device(accelerator) or ("cuda" if str(accelerator).lower() in ("gpu", "cuda") else "cpu")
        return {"precision": None, "plugins": [*plugins, TrainingAutocast("bf16-mixed", device)]}
    return {"precision": value, "plugins": plugins}


class AutoPrecisionTrainer(Trainer):
    """``lightning.pytorch.Trainer`` that also accepts ``precision="auto"`` (:func:`precision_arguments`).

    Used by ``medlearn fit|validate|test|predict`` so that configs may say ``precision: auto``; the
    run builder resolves it with the module known before this class sees it.
    """

    def __init__(self, *args: Any, precision: str | int | None = "auto", **kwargs: Any) -> None:
        if precision == "auto":
            kwargs.update(precision_arguments(precision, None, kwargs.get("accelerator"), kwargs.get("plugins") or ()))
        else:
            kwargs["precision"] = precision
        super().__init__(*args, **kwargs)


# ------------------------------------------------------------------------------------- console
#: Lightning warnings that say nothing to a medlearn user: medlearn chose these settings on purpose
#: (run folders it manages, zero loader workers on small CPU machines, short demo epochs), or they
#: come from a torch / Lightning version pairing.
_QUIET_WARNINGS = (
    r"Experiment logs directory .* exists and is not empty",
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    r".*does not have many workers which may be a bottleneck",
    r".*isinstance\(treespec, LeafSpec\)",
    r"Be aware that when using `ckpt_path`, callbacks used to create the checkpoint",
    # frozen parts (an evaluator, a frozen encoder, EMA copies) are kept in eval mode on purpose
    r"Found \d+ module\(s\) in eval mode at the start of training",
    # a DataModule without a validation split returns [] on purpose (pretraining methods)
    r"Total length of `list` across ranks is zero",
    # whole-case predict loaders (batch_size=None) carry no batch indices; medlearn's writers do not need them
    r"Couldn't infer the batch indices fetched from your dataloader",
)


class _NoTips(logging.Filter):
    """Drop Lightning's advertising lines (``💡 Tip: ... install ...``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in record.getMessage()


def quiet_console(verbose: bool = True) -> None:
    """Keep the console to medlearn's lines, not Lightning's chatter.

    Args:
        verbose: keep Lightning's information lines (accelerator found, checkpoint restored ...);
            ``False`` (the recipes, which print one line per epoch) shows its warnings only, as
            does quiet mode (:func:`medlearn.console.is_quiet`).
    """
    for pattern in _QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _NoTips) for f in log.filters):
            log.addFilter(_NoTips())
    level = logging.INFO if verbose and not is_quiet() else logging.WARNING
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(level)


# ------------------------------------------------------------------------------------ run folder
@dataclass(frozen=True)
class RunFolder:
    """Where a stage of a run writes.

    Attributes:
        root: the run folder (``checkpoints/``, ``report.html``).
        stage: ``"fit"``, ``"validate"``, ``"test"`` or ``"predict"``.
        records: where this stage's loggers, resolved config and figures (or predictions) go: ``root``
            for training, a fresh subfolder for an evaluation of a training run.
        lock: the claim on ``root`` when :func:`open_run_folder` was asked to lock it (release it
            when the stage ends).
    """

    root: Path
    stage: str
    records: Path
    lock: RunLock | None = field(default=None, compare=False, repr=False)

    @property
    def checkpoints(self) -> Path:
        """``root/checkpoints``."""
        return self.root / "checkpoints"


def _checkpoints(root: Path) -> list[Path]:
    ck = root / "checkpoints"
    return sorted(ck.glob("*.ckpt")) if ck.is_dir() else []


def holds_training_run(root: str | Path) -> bool:
    """Whether ``root`` holds a training run's records (checkpoints or a ``metrics.csv``)."""
    root = Path(root)
    return bool(_checkpoints(root)) or (root / "metrics.csv").is_file()


def open_run_folder(root: str | Path | None, stage: str, *, resume: bool = False,
                    overwrite: bool = False, lock: bool = False) -> RunFolder:
    """Check and claim a run folder for ``stage``.

    Args:
        root: the folder (``None``: ``runs/<timestamp>``).
        stage: one of :data:`STAGES`.
        resume: ``fit`` continues from a checkpoint of this folder (``--ckpt_path``).
        overwrite: ``fit`` may write over a finished run's checkpoints.
        lock: claim the folder for this process first (:class:`~medlearn.engine.runlock.RunLock`,
            in ``RunFolder.lock``), so that a run still going on there is reported as such. An
            evaluation of a training run claims nothing: it writes only into its own new subfolder
            (created here, atomically, so two evaluations never share one) and into ``report.html``
            (whose update takes a short lock of its own), and reads checkpoints that are replaced
            atomically, so it may run while the folder is still training.

    Returns:
        The :class:`RunFolder`; an evaluation of a training run gets a new ``<stage>[-N]`` subfolder.

    Raises:
        RunLockedError: ``lock`` and another process holds the folder (nothing is written).
        DataError: ``fit`` into a folder that already holds checkpoints, without ``resume`` or
            ``overwrite`` (nothing is written).
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    path = Path(root) if root else Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    if not lock or (stage != "fit" and holds_training_run(path)):
        return _open_run_folder(path, stage, resume, overwrite, create=lock)
    claim = RunLock(path).acquire()
    try:
        return replace(_open_run_folder(path, stage, resume, overwrite), lock=claim)
    except BaseException:
        claim.release()
        raise


def _open_run_folder(path: Path, stage: str, resume: bool, overwrite: bool, create: bool = False) -> RunFolder:
    if stage == "fit":
        existing = _checkpoints(path)
        if existing and not resume and not overwrite:
            raise DataError(path, f"this run folder already holds {len(existing)} checkpoint(s); resume "
                                  "with --ckpt_path <run>/checkpoints/last.ckpt, choose another "
                                  "--trainer.default_root_dir, or pass --overwrite true")
        return RunFolder(path, stage, path)
    if not holds_training_run(path):
        return RunFolder(path, stage, path)
    n = 1
    while True:
        records = path / (stage if n == 1 else f"{stage}-{n}")
        n += 1
        if records.exists():
            continue
        if not create:
            return RunFolder(path, stage, records)
        try:
            records.mkdir()  # atomic: a concurrent evaluation that picked the same name takes the next
        except FileExistsError:
            continue
        return RunFolder(path, stage, records)


# ---------------------------------------------------------------------------------- callbacks
def _metric_text(v: float) -> str:
    """A metric on the epoch line: counts as integers (``val/n=63``), everything else to 4 decimals."""
    if v.is_integer() and abs(v) >= 1:
        return str(int(v))
    return f"{v:.4f}"


class EpochLine(Callback):
    """Print one line per epoch (for logs and non-interactive terminals), with the time left.

    The time left is the mean wall time of the epochs run so far (validation included) times the
    epochs still to run. Nothing is printed in quiet mode (:func:`medlearn.console.is_quiet`).
    """

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self._t0 = 0.0
        self._durations: list[float] = []

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        """Start the epoch's clock."""
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Print the epoch's line: its time and the module's ``console_metrics`` (default: every
        scalar logged for it, but not a bare step value such as ``loss`` beside its epoch mean
        ``train/loss``; the count of cases a metric left out, ``*_undefined``, only when there are
        any).
        """
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        seconds = time.perf_counter() - self._t0
        self._durations.append(seconds)
        if is_quiet():
            return
        chosen = getattr(pl_module, "console_metrics", None)
        m = {k: float(v) for k, v in trainer.callback_metrics.items()
             if v.numel() == 1 and (k.count("/") <= 1 or (chosen is not None and k in chosen))}
        if chosen is not None:
            keys = [k for k in chosen if k in m]
        else:
            keys = sorted(k for k in m if not k.endswith("_step") and not (k.endswith("_undefined") and m[k] == 0)
                          and f"train/{k}" not in m)  # a progress-bar step value beside its epoch mean
        body = "  ".join(f"{k}={_metric_text(m[k])}" for k in keys)
        done, total = trainer.current_epoch + 1, trainer.max_epochs
        left = ""
        if isinstance(total, int) and total > done:
            left = f", about {format_duration((total - done) * sum(self._durations) / len(self._durations))} left"
        print(f"{self.prefix}epoch {done}/{total} ({seconds:.1f}s{left})  {body}", flush=True)


class DataHandover(Callback):
    """Hand the training data's ``data_info()`` to the module's ``receive_data`` once, when ``fit``
    sets up (after the DataModule's ``setup``, before the optimisers are built).

    The one place where what a model needs from its data (training-set size, class counts, input
    size) crosses over; modules do not read ``trainer.datamodule``.
    """

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Hand the DataModule's ``data_info()`` to the module when ``fit`` sets up."""
        if stage != "fit":
            return
        dm = trainer.datamodule
        info = getattr(dm, "data_info", None)
        receive = getattr(pl_module, "receive_data", None)
        if callable(info) and callable(receive):
            receive(info())


def trainer_callbacks(run_dir: str | Path | RunFolder, monitor: str | None, mode: str = "max", progress: str = "auto",
                      report: bool = True, prefix: str = "", stage: str = "fit") -> list[Callback]:
    """The default callbacks of a stage.

    ``fit``: best (on ``monitor``) and last checkpoints, RNG state in checkpoints, data hand-over,
    progress, report. Evaluations: progress and report.
    """
    folder = run_dir if isinstance(run_dir, RunFolder) else RunFolder(Path(run_dir), stage, Path(run_dir))
    progress = lightning_progress(progress)
    cbs: list[Callback] = []
    if folder.stage == "fit":
        if monitor:
            cbs.append(ModelCheckpoint(dirpath=folder.checkpoints, filename="best", monitor=monitor, mode=mode,
                                       save_top_k=1, auto_insert_metric_name=False, enable_version_counter=False))
        # last.ckpt after every epoch, on its own: Lightning's save_last only refreshes "last" when a
        # top-k checkpoint was written, which would leave a stale file to resume from.
        cbs += [
            ModelCheckpoint(dirpath=folder.checkpoints, filename="last", monitor=None, save_top_k=1,
                            auto_insert_metric_name=False, enable_version_counter=False),
            RNGStateCallback(),
            DataHandover(),
        ]
    if progress == "auto":
        progress = "rich" if sys.stdout.isatty() else "line"
    if progress == "rich":
        cbs.append(RichProgressBar())
    elif progress == "line" and folder.stage == "fit":
        cbs.append(EpochLine(prefix))
    if report and folder.stage != "predict":
        cbs.append(ReportCallback(folder.root, folder.records))
    return cbs


def run_loggers(folder: RunFolder) -> list[Logger]:
    """CSV (``records/metrics.csv``) and TensorBoard (``records/tb``) loggers."""
    return [CSVLogger(save_dir=str(folder.records), name="", version=""),
            TensorBoardLogger(save_dir=str(folder.records), name="tb", version="", default_hp_metric=False)]


def trainer_arguments(folder: RunFolder, model: Any = None, *, monitor: tuple[str, str] | None = None,
                      progress: str = "auto", prefix: str = "", report: bool = True,
                      callbacks: Sequence[Callback] = (), plugins: Any = None, logger: Any = None,
                      precision: Any = "auto", accelerator: Any = None) -> dict[str, Any]:
    """``Trainer`` arguments of a run folder: loggers, callbacks, checkpoint I/O, progress, precision.

    Args:
        folder: from :func:`open_run_folder`.
        model: the module (its ``monitor`` selects ``best.ckpt``; its ``prediction_writer`` writes
            ``predict`` results into ``folder.records``).
        monitor: ``(metric, mode)`` for ``best.ckpt`` instead of the model's.
        progress: ``"rich"``, ``"line"`` (one line per epoch), ``"none"`` or ``"auto"`` (rich on a
            terminal, else line); always ``"none"`` in quiet mode.
        prefix: text before each epoch line.
        report: write the stage's part of ``report.html``.
        callbacks: extra callbacks (after medlearn's).
        plugins: the user's plugins (an ``AtomicCheckpointIO`` is added unless one is a checkpoint IO).
        logger: the user's logger setting (``None`` / ``True``: medlearn's loggers; ``False``: none).
        precision: the configured precision (``"auto"``: :func:`resolve_precision`).
        accelerator: the configured accelerator (for ``"auto"`` precision).
    """
    folder.records.mkdir(parents=True, exist_ok=True)
    progress = lightning_progress(progress)
    if progress == "auto":
        progress = "rich" if sys.stdout.isatty() else "line"
    metric, mode = monitor or getattr(model, "monitor", None) or (None, "max")
    cbs = trainer_callbacks(folder, metric, mode, progress, report, prefix) + list(callbacks)
    if folder.stage == "predict" and model is not None:
        from medlearn.engine.predict import prediction_writer

        cbs.append(prediction_writer(model, folder.records))
    plugins = list(plugins) if isinstance(plugins, (list, tuple)) else ([plugins] if plugins else [])
    if not any(type(p).__name__.endswith("CheckpointIO") for p in plugins):
        plugins.append(AtomicCheckpointIO())
    prec = precision_arguments(precision, model, accelerator, plugins)
    args = {
        "default_root_dir": str(folder.root),
        "logger": run_loggers(folder) if logger in (None, True) else logger,
        "callbacks": cbs,
        "plugins": prec["plugins"],
        "enable_progress_bar": progress == "rich",
        "precision": prec["precision"],
    }
    if folder.stage != "fit":
        args["enable_checkpointing"] = False  # an evaluation writes no checkpoints
    return args


def make_trainer(run_dir: str | Path | RunFolder, max_epochs: int = 10, monitor: str | None = None, mode: str = "max",
                 progress: str = "auto", report: bool = True, callbacks: list[Callback] | None = None,
                 prefix: str = "", model: Any = None, verbose: bool = False, **trainer_kwargs: Any) -> Trainer:
    """A ``Trainer`` with medlearn's defaults writing into ``run_dir``.

    Args:
        run_dir: the run folder (created), or a :class:`RunFolder` from :func:`open_run_folder`.
        max_epochs: epochs.
        monitor: metric for ``best.ckpt`` (``None``: the ``model``'s, else only ``last.ckpt``).
        mode: ``"max"`` or ``"min"`` for ``monitor``.
        progress: ``"rich"``, ``"line"`` (one line per epoch), ``"none"`` or ``"auto"``.
        report: write ``report.html`` at the end of each stage.
        callbacks: extra callbacks.
        prefix: text before each epoch line.
        model: the module to be trained (its monitor and prediction writer are used).
        verbose: show Lightning's information lines (see :func:`quiet_console`).
        **trainer_kwargs: any other ``Trainer`` argument (``accelerator``, ``devices``, ``strategy``,
            ``precision``, ``deterministic``, ``limit_train_batches`` ...).
    """
    folder = run_dir if isinstance(run_dir, RunFolder) else RunFolder(Path(run_dir), "fit", Path(run_dir))
    quiet_console(verbose)
    args = trainer_arguments(folder, model, monitor=(monitor, mode) if monitor else None, progress=progress,
                             prefix=prefix, report=report,
                             callbacks=callbacks or (), plugins=trainer_kwargs.pop("plugins", None),
                             logger=trainer_kwargs.pop("logger", None),
                             precision=trainer_kwargs.pop("precision", "auto"),
                             accelerator=trainer_kwargs.get("accelerator"))
    kwargs: dict[str, Any] = {**TRAINER_DEFAULTS, "max_epochs": max_epochs, **args}
    kwargs.update(trainer_kwargs)
    if kwargs.get("accelerator") is None:
        kwargs.pop("accelerator", None)
    return Trainer(**kwargs)
