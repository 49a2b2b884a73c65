"""GANModule on a toy 1-D GAN: players, n_critic rhythm, schedules, penalty, EMA, console line, learning."""

from __future__ import annotations

import math

import pytest
import torch
from lightning.pytorch import Trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from medlearn.engine.gan import GANModule
from medlearn.losses.adversarial import gradient_penalty


class ToyGAN(GANModule):
    """G maps noise to one number; D scores numbers. Real data: N(3, 0.5^2)."""

    def __init__(self, n_critic: int = 1, lambda_gp: float = 0.0, g_ema: float = 0.0, gan_loss: str = "lsgan",
                 lr: float = 0.02, lr_discriminator: float | None = None, schedule: str = "constant",
                 milestones: list[int] | None = None, gamma: float = 0.1, betas: tuple[float, float] = (0.5, 0.999)
                 ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.gen = nn.Linear(1, 1)
        self.disc = nn.Sequential(nn.Linear(1, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
        self.add_generator_ema("gen")

    def players(self) -> dict[str, list[str]]:
        return {"generator": ["gen"], "discriminator": ["disc"]}

    @property
    def monitor(self) -> tuple[str, str]:
        return ("val/gap", "min")

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        real = batch[0]
        fake = self.gen(torch.randn_like(real))
        d_loss = self.adversarial.discriminator(self.disc(real), self.disc(fake.detach())) + self.penalty(
            self.disc, real, fake.detach())
        self.step_player("discriminator", d_loss, {"adv": d_loss}, real.shape[0])
        if self.generator_turn():
            self.step_player("generator", self.adversarial.generator(self.disc(fake)), None, real.shape[0])
        self.finish_batch()


def _loader(n: int = 256, batch: int = 32) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(3.0 + 0.5 * torch.randn(n, 1, generator=g)), batch_size=batch, shuffle=False)


def _trainer(epochs: int) -> Trainer:
    return Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False)


def test_players_get_their_own_optimisers_and_learning_rates() -> None:
    model = ToyGAN(lr=0.02, lr_discriminator=0.005, g_ema=0.9)
    plans = {p.name: p for p in model.optimizer_plans()}
    assert list(plans) == ["generator", "discriminator"]
    g_params = {id(p) for g in plans["generator"].groups for p in g.params}
    d_params = {id(p) for g in plans["discriminator"].groups for p in g.params}
    assert g_params == {id(p) for p in model.gen.parameters()}
    assert d_params == {id(p) for p in model.disc.parameters()}
    assert plans["generator"].spec.lr == 0.02 and plans["discriminator"].spec.lr == 0.005
    # the EMA copy is outside every optimiser
    assert not {id(p) for p in model.gen_ema.parameters()} & (g_params | d_params)
    assert model.console_metrics == ("train/generator/loss", "train/discriminator/loss", "val/gap")


def test_n_critic_rhythm_and_the_step_counter() -> None:
    torch.manual_seed(0)
    model = ToyGAN(n_critic=3)
    g_before = [p.detach().clone() for p in model.gen.parameters()]
    changes = []
    original = model.manual_step

    def spy(name: str, loss: torch.Tensor) -> None:
        changes.append(name)
        original(name, loss)

    model.manual_step = spy  # type: ignore[method-assign]
    _trainer(1).fit(model, _loader(n=192, batch=32))  # 6 batches
    assert changes.count("discriminator") == 6 and changes.count("generator") == 2
    assert [i for i, c in enumerate(changes) if c == "generator"] == [3, 7]  # after D on batches 3 and 6
    assert int(model.gan_step) == 6
    assert any(not torch.equal(a, b) for a, b in zip(g_before, model.gen.parameters()))
    assert "gan_step" in dict(model.named_buffers())  # saved with the weights: a resumed run keeps the rhythm


def test_every_player_schedule_steps_once_per_epoch() -> None:
    model = ToyGAN(schedule="step", milestones=[1, 2], gamma=0.5)
    _trainer(3).fit(model, _loader(n=64))
    lrs = [opt.param_groups[0]["lr"] for opt in model.optimizers()]
    assert lrs == pytest.approx([0.02 * 0.25] * 2)


def test_penalty_is_lambda_times_the_gradient_penalty_and_zero_when_off() -> None:
    torch.manual_seed(0)
    real, fake = torch.randn(8, 1), torch.randn(8, 1)
    off = ToyGAN(lambda_gp=0.0)
    assert float(off.penalty(off.disc, real, fake)) == 0.0
    on = ToyGAN(lambda_gp=10.0)
    torch.manual_seed(1)
    got = on.penalty(on.disc, real, fake)
    torch.manual_seed(1)
    want = 10.0 * gradient_penalty(on.disc, real, fake)
    assert float(got.detach()) == pytest.approx(float(want.detach()), rel=1e-6) and float(got.detach()) > 0


def test_generator_ema_follows_the_generator_and_serves_inference() -> None:
    torch.manual_seed(0)
    model = ToyGAN(g_ema=0.9)
    assert model.inference_generator("gen") is model.gen_ema
    start = model.gen_ema.weight.detach().clone()
    _trainer(1).fit(model, _loader(n=64))
    ema, live = model.gen_ema.weight.detach(), model.gen.weight.detach()
    assert not torch.equal(ema, start) and not torch.equal(ema, live)
    assert ToyGAN().inference_generator("gen") is not None and not hasattr(ToyGAN(), "gen_ema")


@pytest.mark.parametrize("loss", ["lsgan", "vanilla"])
def test_a_toy_gan_moves_its_samples_to_the_real_distribution(loss: str) -> None:
    torch.manual_seed(0)
    model = ToyGAN(gan_loss=loss, lr=0.02)
    with torch.no_grad():
        before = float(model.gen(torch.randn(2000, 1)).mean())
    _trainer(60).fit(model, _loader())
    with torch.no_grad():
        after = float(model.gen(torch.randn(2000, 1)).mean())
    assert abs(after - 3.0) < 0.5 < abs(before - 3.0), (before, after)
    assert math.isfinite(after)


def test_the_epoch_line_shows_each_players_loss_not_every_logged_scalar(capsys: pytest.CaptureFixture[str]) -> None:
    from medlearn.engine.trainer import EpochLine

    class Chatty(ToyGAN):
        def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
            super().training_step(batch, batch_idx)
            self.log("train/chatter", 1.0, on_step=False, on_epoch=True)

    trainer = Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=[EpochLine("[toy] ")])
    trainer.fit(Chatty(), _loader(n=64))
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[toy] epoch 1/1")]
    assert len(line) == 1 and "train/generator/loss=" in line[0] and "train/discriminator/loss=" in line[0]
    assert "chatter" not in line[0] and "adv" not in line[0]
