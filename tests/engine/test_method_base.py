"""MethodModule: optimiser plans, schedules, EMA and frozen submodules, evaluation dispatch, data
hand-over, and the contract for automatic, manual (GAN, n_critic) and two-input (registration) modules."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import LightningDataModule, seed_everything
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from medlearn.engine.contract import reload_problems, training_step_problems
from medlearn.engine.module import (
    ContractLoss,
    MethodModule,
    OptimizerPlan,
    OptimSpec,
    ParamGroup,
    build_optimizer,
    build_scheduler,
)
from medlearn.engine.trainer import make_trainer

# --------------------------------------------------------------------------------- optimisation


def _lrs(spec: OptimSpec, epochs: int) -> list[float]:
    opt = build_optimizer([ParamGroup([nn.Parameter(torch.zeros(1))])], spec)
    sched = build_scheduler(opt, spec, epochs)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_schedules_by_hand():
    assert _lrs(OptimSpec(lr=1.0, schedule="step", milestones=(2, 4)), 5) == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    assert _lrs(OptimSpec(lr=1.0, schedule="step"), 10)[6:8] == pytest.approx([1.0, 0.1])  # default: 70 %
    cos = _lrs(OptimSpec(lr=2.0, schedule="cosine"), 4)
    assert cos == pytest.approx([2 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)])
    warm = _lrs(OptimSpec(lr=1.0, schedule="constant", warmup_epochs=3), 5)
    assert warm == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
    # CycleGAN's linear rule (n_epochs 3 + n_epochs_decay 3): 1 - max(0, e + 1 - 3) / 4
    assert _lrs(OptimSpec(lr=1.0, schedule="linear"), 6) == pytest.approx([1, 1, 1, 0.75, 0.5, 0.25])
    assert _lrs(OptimSpec(lr=1.0, schedule="linear", milestones=(4,)), 6) == pytest.approx([1, 1, 1, 1, 2 / 3, 1 / 3])


def test_param_groups_and_optimisers():
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(3))
    opt = build_optimizer([ParamGroup([a]), ParamGroup([b], lr_mult=10.0)], OptimSpec(lr=0.01, optimizer="sgd",
                                                                                       momentum=0.8))
    assert isinstance(opt, torch.optim.SGD) and [g["lr"] for g in opt.param_groups] == pytest.approx([0.01, 0.1])
    assert opt.param_groups[0]["momentum"] == 0.8
    assert isinstance(build_optimizer([ParamGroup([a])], OptimSpec(optimizer="adamw")), torch.optim.AdamW)
    with pytest.raises(ValueError, match="shares parameters"):
        build_optimizer([ParamGroup([a]), ParamGroup([a])], OptimSpec())
    with pytest.raises(ValueError, match="no parameters"):
        build_optimizer([ParamGroup([])], OptimSpec())
    with pytest.raises(ValueError, match="optimizer must be"):
        OptimSpec(optimizer="rmsprop")
    with pytest.raises(ValueError, match="schedule must be"):
        OptimSpec(schedule="poly")
    spec = OptimSpec.from_hparams({"lr": 0.5, "milestones": [3, 1], "backbone": "resnet18", "momentum": None})
    assert spec.lr == 0.5 and spec.milestones == (3, 1) and spec.momentum == 0.9


# ------------------------------------------------------------------------------------ toy modules


class _Data(LightningDataModule):
    """Random images; ``data_info`` as the real DataModules declare it."""

    def __init__(self, n: int = 16, two: bool = False) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.x = torch.rand(n, 1, 8, 8, generator=g)
        self.y = torch.rand(n, 1, 8, 8, generator=g) if two else (torch.arange(n) % 2)
        self.two = two

    def data_info(self) -> SimpleNamespace:
        return SimpleNamespace(n_train=len(self.x), class_counts=[8, 8], input_size=(8, 8))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.x, self.y), batch_size=4, shuffle=False)

    def val_dataloader(self) -> DataLoader:
        return self.train_dataloader()


class Classifier(MethodModule):
    """Automatic optimisation, an EMA copy, a frozen non-persistent teacher, evaluation dispatch."""

    def __init__(self, lr: float = 0.1, schedule: str = "step", milestones: tuple[int, ...] = (1,),
                 head_lr_mult: float = 10.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU())
        self.head = nn.Linear(8, 2)
        self.add_ema("body_ema", "body", 0.5)
        self.add_frozen("teacher", nn.Linear(64, 2))
        self.example_input_array = torch.zeros(2, 1, 8, 8)
        self.received: list = []

    @property
    def monitor(self):
        return ("val/acc", "max")

    def receive_data(self, info) -> None:
        super().receive_data(info)
        self.received.append(info.n_train)

    def param_groups(self):
        head = {id(p) for p in self.head.parameters()}
        base = [p for _, p in self.named_trainable_parameters() if id(p) not in head]
        return [ParamGroup(base), ParamGroup(list(self.head.parameters()), self.hparams.head_lr_mult, "head")]

    def forward(self, x):
        return self.head(self.body(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def evaluation_step(self, batch, batch_idx, stage):
        x, y = batch
        acc = self.stage_state(stage, lambda: [0, 0])
        acc[0] += int((self(x).argmax(1) == y).sum())
        acc[1] += len(y)

    def evaluation_end(self, stage):
        acc = self.pop_stage_state(stage)
        return None if acc is None else {"acc": acc[0] / acc[1], "counts": acc}


class GAN(MethodModule):
    """Manual optimisation: generator and discriminator optimisers, ``n_critic`` critic steps per
    generator step, each with its own schedule."""

    def __init__(self, n_critic: int = 2, lr: float = 0.01) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator = nn.Conv2d(1, 1, 3, padding=1)
        self.discriminator = nn.Sequential(nn.Flatten(), nn.Linear(64, 1))
        self.example_input_array = torch.zeros(2, 1, 8, 8)
        self.steps = {"generator": 0, "discriminator": 0}

    def optimizer_plans(self):
        spec = OptimSpec(lr=self.hparams.lr, schedule="step", milestones=(1,))
        return [OptimizerPlan("generator", [ParamGroup(list(self.generator.parameters()))], spec),
                OptimizerPlan("discriminator", [ParamGroup(list(self.discriminator.parameters()))],
                              OptimSpec(lr=self.hparams.lr / 2, schedule="constant"))]

    def forward(self, x):
        return self.generator(x)

    def losses(self, batch):
        x, real = batch
        fake = self.generator(x)
        d_loss = self.discriminator(fake.detach()).square().mean() + (self.discriminator(real) - 1).square().mean()
        g_loss = (self.discriminator(fake) - 1).square().mean()
        return g_loss, d_loss

    def training_step(self, batch, batch_idx):
        g_loss, d_loss = self.losses(batch)
        self.manual_step("discriminator", d_loss)
        self.steps["discriminator"] += 1
        if (batch_idx + 1) % self.hparams.n_critic == 0:
            g_loss, _ = self.losses(batch)
            self.manual_step("generator", g_loss)
            self.steps["generator"] += 1

    def contract_step(self, batch):
        g_loss, d_loss = self.losses(batch)
        return [ContractLoss("generator", g_loss, list(self.generator.named_parameters())),
                ContractLoss("discriminator", d_loss, list(self.discriminator.named_parameters()))]


class Registration(MethodModule):
    """Two inputs (fixed, moving) -> a displacement field."""

    def __init__(self) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Conv2d(2, 2, 3, padding=1)
        self.example_input_array = (torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))

    def optim_spec(self):
        return OptimSpec(lr=0.01)

    def forward(self, fixed, moving):
        return self.net(torch.cat([fixed, moving], 1))

    def training_step(self, batch, batch_idx):
        fixed, moving = batch
        return self(fixed, moving).square().mean() + (fixed - moving).square().mean() * 0


# ---------------------------------------------------------------------------------------- tests


def test_ema_frozen_and_groups_through_a_fit(tmp_path):
    seed_everything(0)
    model = Classifier()
    assert not any(n.startswith(("body_ema.", "teacher.")) for n, _ in model.named_trainable_parameters())
    assert not any(k.startswith("teacher.") for k in model.state_dict())  # not persistent
    assert any(k.startswith("body_ema.") for k in model.state_dict())  # EMA: part of the training state
    ema_before = model.body_ema[1].weight.detach().clone()
    teacher_before = model.teacher.weight.detach().clone()
    trainer = make_trainer(tmp_path, max_epochs=2, progress="none", model=model, accelerator="cpu")
    trainer.fit(model, datamodule=_Data())
    assert model.received == [16]  # the data hand-over, once
    opt = trainer.optimizers[0]
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01, 0.1])  # 0.1 x 0.1 after the milestone
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.body.parameters())) + 2
    assert not torch.equal(model.body_ema[1].weight, ema_before)  # updated after each batch
    assert torch.equal(model.teacher.weight, teacher_before) and not model.teacher.training
    model.train()
    assert not model.teacher.training  # frozen: evaluation mode whatever the parent's
    assert model.results["val"]["counts"][1] == 16 and 0.0 <= model.results["val"]["acc"] <= 1.0
    assert "val/acc" in trainer.callback_metrics and "val/counts" not in trainer.callback_metrics
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["medlearn"]["module"].endswith("Classifier")
    assert not reload_problems(model, tmp_path / "checkpoints" / "last.ckpt")  # strict load without the teacher
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file()  # on the declared monitor


def test_manual_optimisation_gan(tmp_path):
    seed_everything(0)
    model = GAN(n_critic=2)
    dm = _Data(two=True)
    assert not training_step_problems(model, next(iter(dm.train_dataloader())))
    g0 = model.generator.weight.detach().clone()
    trainer = make_trainer(tmp_path, max_epochs=2, progress="none", model=model, accelerator="cpu",
                           limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    assert model.steps == {"discriminator": 8, "generator": 4}  # 4 batches x 2 epochs, n_critic 2
    assert not torch.equal(model.generator.weight, g0)
    g_opt, d_opt = trainer.optimizers
    assert g_opt.param_groups[0]["lr"] == pytest.approx(0.001)  # its step schedule ran at the epoch end
    assert d_opt.param_groups[0]["lr"] == pytest.approx(0.005)
    assert not reload_problems(model, tmp_path / "checkpoints" / "last.ckpt")


def test_two_input_module(tmp_path):
    seed_everything(0)
    model = Registration()
    dm = _Data(two=True)
    batch = next(iter(dm.train_dataloader()))
    assert not training_step_problems(model, batch)
    fixed, moving = model.contract_inputs()
    assert fixed.shape == moving.shape == (1, 1, 8, 8)
    trainer = make_trainer(tmp_path, max_epochs=1, progress="none", model=model, accelerator="cpu",
                           limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    assert not reload_problems(model, tmp_path / "checkpoints" / "last.ckpt")


def test_contract_reports_parameters_without_gradient():
    class Detached(Classifier):
        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.cross_entropy(self.head(self.body(x).detach()), y)

    problems = training_step_problems(Detached(), (torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 0, 1])))
    assert problems and "body" in problems[0]
