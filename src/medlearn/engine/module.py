"""The method base: :class:`MethodModule`, the contract every method and task meets.

A medlearn LightningModule writes what its paper adds (the networks, the training step, the
metrics) and inherits the rest from :class:`MethodModule`:

* **Monitor.** The ``monitor`` property, e.g. ``("val/acc", "max")``, names the metric that
  selects ``best.ckpt``; ``None`` keeps only ``last.ckpt``.
* **Optimisers.** :meth:`MethodModule.configure_optimizers` builds one optimiser and one
  epoch-stepped schedule per :class:`OptimizerPlan`. The default plan is one optimiser over every
  parameter (outside EMA and frozen submodules) with the :class:`OptimSpec` read from the
  module's hyper-parameters (``optimizer``, ``lr``, ``weight_decay``, ``momentum``, ``schedule``,
  ``milestones``, ``warmup_epochs``). Override :meth:`param_groups` for learning-rate
  multipliers (a new head trained 10x faster), :meth:`optim_spec` for other hyper-parameter
  names, :meth:`optimizer_plans` for several optimisers (a GAN's generator and discriminator,
  two peer networks). With ``automatic_optimization = False`` the subclass steps the optimisers
  itself with :meth:`manual_step`, and the base steps their schedules at every epoch end.
* **Submodules outside the optimisers.** :meth:`add_ema` declares an exponential-moving-average
  copy of a submodule (a momentum teacher: in the checkpoint, never in an optimiser, updated by
  the base after every training batch); :meth:`add_frozen` declares a fixed network (a
  distillation teacher loaded from its own checkpoint: kept in evaluation mode, outside the
  optimisers and, unless ``persistent``, outside the checkpoint).
* **Evaluation.** ``validation_step`` and ``test_step`` both call
  :meth:`evaluation_step` with the stage name; at the epoch end the base calls
  :meth:`evaluation_end`, logs every scalar it returns as ``{stage}/{name}`` and keeps the whole
  record in ``self.results[stage]`` (for reports and recipes). :meth:`stage_state` keeps one
  per-stage accumulator (a metric object) between them.
* **Data hand-over.** :meth:`receive_data` gets the training data's
  :class:`~medlearn.data.info.DataInfo` (training-set size, class counts, input size) once, before
  the optimisers are built; the run builder calls it. Modules never read ``trainer.datamodule``.
* **Documented hooks.** :meth:`report_sections` (sections of ``report.html`` for a stage),
  :meth:`prediction_writer` (what ``medlearn predict`` writes), :meth:`contract_step` and
  :meth:`contract_inputs` (how the registry-driven contract test drives a module, whether it
  optimises automatically, manually with several optimisers, or takes two inputs).

Subclasses call ``super().__init__()`` (keyword arguments only, when extending another module)
and ``self.save_hyperparameters()``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from lightning.fabric.utilities.data import AttributeDict
from lightning.pytorch import LightningModule
from torch import nn

if TYPE_CHECKING:
    from lightning.pytorch.callbacks import BasePredictionWriter

    from medlearn.data.info import DataInfo
    from medlearn.engine.report import Section

__all__ = ["MethodModule", "OptimSpec", "ParamGroup", "OptimizerPlan", "ContractLoss", "build_optimizer",
           "build_scheduler", "OPTIMIZERS", "SCHEDULES"]

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("step", "cosine", "constant", "linear")


# ----------------------------------------------------------------------------------- optimisation
@dataclass(frozen=True)
class OptimSpec:
    """One optimiser and its epoch-stepped learning-rate schedule.

    Attributes:
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"`` (SGD with ``momentum``).
        lr: base learning rate (a :class:`ParamGroup` multiplies it).
        weight_decay: weight decay (L2 for Adam and SGD, decoupled for AdamW).
        momentum: SGD momentum.
        betas: Adam / AdamW betas.
        schedule: ``"step"`` (x ``gamma`` at each milestone), ``"cosine"`` (to 0 at the last epoch),
            ``"linear"`` (CycleGAN: constant for ``milestones[0]`` epochs, default half of them, then
            linearly towards 0: ``1 - max(0, e + 1 - n) / (epochs - n + 1)``) or ``"constant"``;
            each with optional linear warm-up.
        milestones: epochs of the step schedule (``None``: one step at 70 % of the epochs); for
            ``"linear"``, its first entry is the end of the constant part.
        warmup_epochs: linear warm-up epochs (0: none).
        gamma: step-schedule factor.
    """

    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "constant"
    milestones: tuple[int, ...] | None = None
    warmup_epochs: int = 0
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any], **defaults: Any) -> OptimSpec:
        """The spec from a module's hyper-parameters (keys named as the fields; ``defaults`` fill gaps)."""
        names = {f.name for f in fields(cls)}
        unknown = set(defaults) - names
        if unknown:
            raise TypeError(f"unknown OptimSpec fields {sorted(unknown)}")
        values = {**defaults, **{k: hparams[k] for k in names if k in hparams and hparams[k] is not None}}
        if values.get("milestones") is not None:
            values["milestones"] = tuple(int(m) for m in values["milestones"])
        if values.get("betas") is not None:
            values["betas"] = tuple(float(b) for b in values["betas"])
        return cls(**values)


@dataclass
class ParamGroup:
    """Parameters that share an optimiser setting.

    Attributes:
        params: the parameters.
        lr_mult: learning-rate multiplier relative to :attr:`OptimSpec.lr`.
        name: shown in errors and learning-rate logs.
    """

    params: list[nn.Parameter]
    lr_mult: float = 1.0
    name: str = "params"


@dataclass
class OptimizerPlan:
    """One optimiser of a module: its name, parameter groups and spec."""

    name: str
    groups: list[ParamGroup]
    spec: OptimSpec


def build_optimizer(groups: Sequence[ParamGroup], spec: OptimSpec) -> torch.optim.Optimizer:
    """A torch optimiser over ``groups`` (each at ``spec.lr * lr_mult``).

    Raises:
        ValueError: no parameters, or a parameter in two groups.
    """
    seen: set[int] = set()
    torch_groups: list[dict[str, Any]] = []
    for g in groups:
        ids = {id(p) for p in g.params}
        if ids & seen:
            raise ValueError(f"parameter group {g.name!r} shares parameters with an earlier group")
        seen |= ids
        if g.params:
            torch_groups.append({"params": list(g.params), "lr": spec.lr * g.lr_mult})
    if not torch_groups:
        raise ValueError("the optimiser has no parameters")
    if spec.optimizer == "adam":
        return torch.optim.Adam(torch_groups, lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay)
    if spec.optimizer == "adamw":
        return torch.optim.AdamW(torch_groups, lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay)
    return torch.optim.SGD(torch_groups, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)


def build_scheduler(opt: torch.optim.Optimizer, spec: OptimSpec,
                    max_epochs: int | None) -> torch.optim.lr_scheduler.LRScheduler:
    """Epoch-stepped schedule of ``spec`` (a ``LambdaLR``; warm-up is linear over ``warmup_epochs``)."""
    epochs = max(1, int(max_epochs or 1))
    milestones = sorted(spec.milestones) if spec.milestones is not None else [int(epochs * 0.7)]
    kind, warmup, gamma = spec.schedule, spec.warmup_epochs, spec.gamma

    def factor(epoch: int) -> float:
        w = 1.0 if warmup <= 0 or epoch >= warmup else (epoch + 1) / (warmup + 1)
        if kind == "step":
            return w * gamma ** sum(epoch >= m for m in milestones)
        if kind == "cosine":
            return w * 0.5 * (1 + math.cos(math.pi * min(epoch, epochs) / epochs))
        if kind == "linear":  # CycleGAN: constant for n epochs, then linearly to 0 (its lambda_rule)
            n = milestones[0] if spec.milestones is not None else epochs // 2
            return w * (1.0 - max(0, epoch + 1 - n) / float(epochs - n + 1))
        return w

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


# ------------------------------------------------------------------------------------- contract
@dataclass
class ContractLoss:
    """A loss the contract test back-propagates, and the parameters it must reach.

    Attributes:
        name: which loss (``"loss"``; a GAN: ``"generator"``, ``"discriminator"``).
        loss: a scalar tensor.
        params: ``(name, parameter)`` pairs that must receive a non-zero gradient from it.
    """

    name: str
    loss: torch.Tensor
    params: list[tuple[str, nn.Parameter]] = field(default_factory=list)


def _is_scalar(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, (int, float)):
        return True
    return isinstance(v, torch.Tensor) and v.numel() == 1


# ----------------------------------------------------------------------------------------- base
class MethodModule(LightningModule):
    """Base LightningModule of every medlearn method and task (see the module docstring).

    Attributes:
        encoder_prefix: the state-dict prefix of the encoder this module offers for transfer
            (e.g. ``"backbone."``), or ``None``; written into every checkpoint, where
            :func:`medlearn.engine.checkpoint.load_encoder` finds it. A method declares it in its
            :class:`~medlearn.registry.MethodSpec` (``encoders``); a task on the class.
        bf16_autocast: whether ``precision: auto`` may run this module under bfloat16 autocast
            where the hardware has it (:func:`medlearn.engine.trainer.resolve_precision`); a method
            whose results do not hold under bf16 sets ``False`` (measured: ``docs/benchmarks.md``).
        results: per stage, the last :meth:`evaluation_end` record.
    """

    encoder_prefix: ClassVar[str | None] = None
    bf16_autocast: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        self.results: dict[str, dict[str, Any]] = {}
        self._ema: dict[str, tuple[str, float]] = {}
        self._frozen: set[str] = set()
        self._stage_state: dict[str, Any] = {}
        self.data_info: DataInfo | None = None

    @property
    def hparams(self) -> AttributeDict:
        """The saved hyper-parameters (``save_hyperparameters``), with attribute access."""
        hp = super().hparams
        assert isinstance(hp, AttributeDict)
        return hp

    @property
    def monitor(self) -> tuple[str, str] | None:
        """``(metric, "max" | "min")`` that selects ``best.ckpt``; ``None``: only ``last.ckpt``."""
        return None

    @property
    def console_metrics(self) -> tuple[str, ...] | None:
        """The metrics of the console's one line per epoch, in order; ``None``: every scalar of the
        epoch (everything is still logged to ``metrics.csv`` and TensorBoard).
        """
        return None

    # --- data -------------------------------------------------------------------------------------
    def receive_data(self, info: DataInfo) -> None:
        """Take what the model needs from the training data (called once before ``fit`` builds the
        optimisers). Overrides call ``super().receive_data(info)``; the default keeps ``info``.
        """
        self.data_info = info

    # --- submodules outside the optimisers ----------------------------------------------------------
    def add_ema(self, name: str, source: str, momentum: float) -> nn.Module:
        """Declare ``self.<name>``: an exponential moving average of ``self.<source>``.

        The copy is a registered submodule (saved in checkpoints, moved with the module, in the
        same train/eval mode), excluded from every optimiser, and updated after every training
        batch: ``ema = momentum * ema + (1 - momentum) * source`` (parameters; buffers are the
        copy's own, as in MoCo / C2L).
        """
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"EMA momentum must be in [0, 1), got {momentum}")
        src = getattr(self, source)
        copy_ = copy.deepcopy(src)
        for p in copy_.parameters():
            p.requires_grad_(False)
        setattr(self, name, copy_)
        self._ema[name] = (source, float(momentum))
        return copy_

    def add_frozen(self, name: str, module: nn.Module, persistent: bool = False) -> nn.Module:
        """Declare ``self.<name>``: a fixed network (e.g. a distillation teacher).

        Moved with the module, always in evaluation mode, without gradients, outside every
        optimiser; outside the checkpoint unless ``persistent`` (it is rebuilt from its own source,
        e.g. a checkpoint path among the hyper-parameters).
        """
        module.eval()
        for p in module.parameters():
            p.requires_grad_(False)
        setattr(self, name, module)
        self._frozen.add(name)
        if not persistent:
            prefix = f"{name}."

            def drop(mod: nn.Module, state: dict[str, Any], pre: str, local: Any) -> None:
                for k in [k for k in state if k.startswith(pre + prefix)]:
                    del state[k]

            def ignore_missing(mod: nn.Module, incompatible: Any) -> None:
                incompatible.missing_keys[:] = [k for k in incompatible.missing_keys if not k.startswith(prefix)]

            self._register_state_dict_hook(drop)
            self.register_load_state_dict_post_hook(ignore_missing)
        return module

    def _outside_optimisers(self) -> tuple[str, ...]:
        return tuple(f"{n}." for n in (*self._ema, *self._frozen))

    def named_trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """Parameters the optimisers may update: all, minus EMA and frozen submodules."""
        skip = self._outside_optimisers()
        for n, p in self.named_parameters():
            if not n.startswith(skip):
                yield n, p

    @torch.no_grad()
    def update_ema(self) -> None:
        """One EMA step of every :meth:`add_ema` copy."""
        for name, (source, m) in self._ema.items():
            for ps, pt in zip(getattr(self, source).parameters(), getattr(self, name).parameters()):
                pt.mul_(m).add_(ps.detach(), alpha=1.0 - m)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Updates the EMA copies (subclasses overriding this call ``super()``)."""
        self.update_ema()

    def train(self, mode: bool = True) -> MethodModule:
        """Set training / evaluation mode; frozen submodules stay in evaluation mode."""
        super().train(mode)
        for name in self._frozen:
            getattr(self, name).eval()
        return self

    # --- optimisation -------------------------------------------------------------------------------
    def optim_spec(self) -> OptimSpec:
        """The :class:`OptimSpec` of the default plan, from the hyper-parameters."""
        return OptimSpec.from_hparams(self.hparams)

    def param_groups(self) -> list[ParamGroup]:
        """Parameter groups of the default plan: one group of :meth:`named_trainable_parameters`.

        Parameters frozen by ``requires_grad_(False)`` stay in the group (they get no gradient, so
        the optimiser skips them until they are unfrozen).
        """
        return [ParamGroup([p for _, p in self.named_trainable_parameters()])]

    def optimizer_plans(self) -> list[OptimizerPlan]:
        """Every optimiser of the module (default: one, ``"main"``)."""
        return [OptimizerPlan("main", self.param_groups(), self.optim_spec())]

    def configure_optimizers(self) -> Any:
        """One optimiser and one epoch-stepped schedule per :meth:`optimizer_plans` entry."""
        max_epochs = self.trainer.max_epochs if self._trainer is not None else None
        out = []
        for plan in self.optimizer_plans():
            opt = build_optimizer(plan.groups, plan.spec)
            sched = build_scheduler(opt, plan.spec, max_epochs)
            out.append({"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}})
        return out[0] if len(out) == 1 else out

    def optimizer_names(self) -> list[str]:
        """Names of :meth:`optimizer_plans`, in the order of ``self.optimizers()``."""
        return [p.name for p in self.optimizer_plans()]

    def manual_step(self, name: str, loss: torch.Tensor) -> None:
        """Manual optimisation: zero the named optimiser's gradients, back-propagate, step."""
        opts = self.optimizers()
        opts = opts if isinstance(opts, list) else [opts]
        opt = opts[self.optimizer_names().index(name)]
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()

    def on_train_epoch_end(self) -> None:
        """Manual optimisation: step every learning-rate schedule once per epoch."""
        if self.automatic_optimization:
            return
        scheds = self.lr_schedulers()
        for s in scheds if isinstance(scheds, list) else ([scheds] if scheds is not None else []):
            s.step()  # type: ignore[call-arg]  # epoch schedules (LambdaLR), never ReduceLROnPlateau

    # --- evaluation ---------------------------------------------------------------------------------
    def stage_state(self, stage: str, factory: Any) -> Any:
        """The accumulator of ``stage`` (created by ``factory()`` at the first batch of the epoch)."""
        if stage not in self._stage_state:
            self._stage_state[stage] = factory()
        return self._stage_state[stage]

    def pop_stage_state(self, stage: str) -> Any:
        """Remove and return the accumulator of ``stage`` (``None`` if no batch was seen)."""
        return self._stage_state.pop(stage, None)

    def evaluation_step(self, batch: Any, batch_idx: int, stage: str) -> Any:
        """One validation or test batch (``stage`` = ``"val"`` or ``"test"``)."""
        raise NotImplementedError(f"{type(self).__name__} has no evaluation_step")

    def evaluation_end(self, stage: str) -> Mapping[str, Any] | None:
        """The stage's epoch record (scalars are logged as ``{stage}/{key}``), or ``None``."""
        return None

    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        """A validation batch: :meth:`evaluation_step` with ``stage='val'``."""
        return self.evaluation_step(batch, batch_idx, "val")

    def test_step(self, batch: Any, batch_idx: int) -> Any:
        """A test batch: :meth:`evaluation_step` with ``stage='test'``."""
        return self.evaluation_step(batch, batch_idx, "test")

    def on_validation_epoch_end(self) -> None:
        """Log and keep :meth:`evaluation_end`'s ``val`` record."""
        self._finish_stage("val")

    def on_test_epoch_end(self) -> None:
        """Log and keep :meth:`evaluation_end`'s ``test`` record."""
        self._finish_stage("test")

    def _finish_stage(self, stage: str) -> None:
        record = self.evaluation_end(stage)
        if record is None:
            return
        for k, v in record.items():
            if _is_scalar(v):
                self.log(f"{stage}/{k}", float(v), sync_dist=False)
        self.results[stage] = dict(record)

    # --- checkpoints --------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Declare the module and the encoder it offers in the checkpoint (``checkpoint['medlearn']``).

        The hyper-parameters also name the class and how to build it (``_class_path`` and
        ``_instantiator``, as in the checkpoints of models LightningCLI builds), so that a checkpoint
        of a model built without LightningCLI (demos, reproductions, ``fit_from_config``) reads back
        the same way in ``medlearn test|predict --ckpt_path`` and ``load_from_checkpoint``.
        """
        from medlearn import __version__

        cls = type(self)
        class_path = f"{cls.__module__}.{cls.__qualname__}"
        checkpoint["medlearn"] = {"module": class_path, "encoder_prefix": cls.encoder_prefix, "version": __version__}
        hparams = checkpoint.get(self.CHECKPOINT_HYPER_PARAMS_KEY)
        if isinstance(hparams, Mapping) and hparams and "_class_path" not in hparams:
            checkpoint[self.CHECKPOINT_HYPER_PARAMS_KEY] = {
                **hparams, "_class_path": class_path, "_instantiator": "lightning.pytorch.cli.instantiate_module"}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse, in one line naming the file, a checkpoint whose weights do not fit this module.

        Called by the ``Trainer`` before it loads the weights (``--ckpt_path``); a strict
        ``load_state_dict`` would otherwise fail with a list of every key.
        """
        trainer = self._trainer
        path = getattr(trainer, "ckpt_path", None) if trainer is not None else None
        state = checkpoint.get("state_dict")
        if path is not None and isinstance(state, Mapping):
            from medlearn.engine.checkpoint import check_weights_fit

            check_weights_fit(self, state, path, strict=self.strict_loading)

    # --- documented hooks ---------------------------------------------------------------------------
    def report_sections(self, run_dir: Path, stage: str) -> list[Section]:
        """Sections of ``report.html`` after ``stage`` (``"fit"``, ``"validate"``, ``"test"``);
        figures go under ``run_dir``. Default: none.
        """
        return []

    def prediction_writer(self, run_dir: Path) -> BasePredictionWriter:
        """What ``medlearn predict`` attaches (default: ``predictions.csv`` of class probabilities)."""
        from medlearn.engine.predict import CSVPredictionWriter

        return CSVPredictionWriter(run_dir)

    def contract_step(self, batch: Any) -> list[ContractLoss]:
        """The losses of one training batch, without optimiser steps, for the contract test.

        Default (automatic optimisation): :meth:`training_step`'s loss, which must reach every
        trainable parameter. Manually optimised modules return one :class:`ContractLoss` per
        optimiser with that optimiser's parameters.
        """
        if not self.automatic_optimization:
            raise NotImplementedError(f"{type(self).__name__} optimises manually: implement contract_step")
        out = self.training_step(batch, 0)
        loss = out["loss"] if isinstance(out, Mapping) else out
        if not isinstance(loss, torch.Tensor):
            raise TypeError(f"{type(self).__name__}.training_step returned {type(out).__name__}, not a loss")
        params = [(n, p) for n, p in self.named_trainable_parameters() if p.requires_grad]
        return [ContractLoss("loss", loss, params)]

    def contract_inputs(self) -> tuple[Any, ...]:
        """Random inputs shaped like ``example_input_array`` (a tensor, tuple or dict of tensors),
        as positional arguments of ``forward``.
        """
        ex = self.example_input_array
        if isinstance(ex, torch.Tensor):
            return (torch.rand_like(ex),)
        if isinstance(ex, (tuple, list)):
            return tuple(torch.rand_like(t) for t in ex)
        if isinstance(ex, Mapping):
            return ({k: torch.rand_like(v) for k, v in ex.items()},)
        raise TypeError(f"{type(self).__name__}: set example_input_array to a tensor, tuple or dict")
