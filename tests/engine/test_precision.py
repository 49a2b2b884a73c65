"""`precision: auto`: bf16 autocast for training where the hardware has it, fp32 evaluation, fp32 one flag away."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import LightningModule
from torch.utils.data import DataLoader, TensorDataset

from medlearn.engine.trainer import TrainingAutocast, make_trainer, precision_arguments, resolve_precision
from medlearn.runtime import PRECISION_ENV, cpu_bf16_supported


@pytest.mark.parametrize("flags, expected", [
    ("fpu sse avx2 avx512f avx512_bf16 vaes", True),
    ("fpu sse avx2 amx_tile amx_bf16", True),
    ("fpu sse avx2 avx512f avx512bw", False),  # AVX-512 without BF16: bf16 is emulated, slower than fp32
])
def test_cpu_bf16_support_is_read_from_the_cpu_flags(tmp_path, flags, expected):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: x\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    assert cpu_bf16_supported(info) is expected
    assert cpu_bf16_supported(tmp_path / "absent") is False  # macOS / Windows: no /proc/cpuinfo, fp32


class _Opt(LightningModule):
    bf16_autocast = False


def test_resolution_order(monkeypatch):
    monkeypatch.setattr("medlearn.engine.trainer.cpu_bf16_supported", lambda: True)
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    assert resolve_precision("32-true", None, "cpu") == "32-true"  # an explicit value is kept
    assert resolve_precision("auto", None, "cpu") == "bf16-mixed"
    assert resolve_precision("auto", _Opt(), "cpu") == "32-true"  # the module opts out
    assert resolve_precision("auto", None, "mps") == "32-true"
    monkeypatch.setattr("medlearn.engine.trainer.cpu_bf16_supported", lambda: False)
    assert resolve_precision("auto", None, "cpu") == "32-true"
    monkeypatch.setenv(PRECISION_ENV, "bf16-mixed")
    assert resolve_precision("auto", None, "cpu") == "bf16-mixed"  # the environment decides what auto means
    monkeypatch.setenv(PRECISION_ENV, "fp8")
    with pytest.raises(ValueError, match=PRECISION_ENV):
        resolve_precision("auto", None, "cpu")


def test_auto_becomes_a_training_only_autocast_plugin(monkeypatch):
    monkeypatch.setenv(PRECISION_ENV, "bf16-mixed")
    args = precision_arguments("auto", None, "cpu")
    assert args["precision"] is None and isinstance(args["plugins"][0], TrainingAutocast)
    monkeypatch.setenv(PRECISION_ENV, "32-true")
    assert precision_arguments("auto", None, "cpu") == {"precision": "32-true", "plugins": []}
    assert precision_arguments("bf16-mixed", None, "cpu") == {"precision": "bf16-mixed", "plugins": []}


class _Probe(LightningModule):
    """Records the dtype the linear layer computes in, per stage."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(4, 1)
        self.seen: dict[str, torch.dtype] = {}

    def _out(self, batch, stage):
        y = self.net(batch[0])
        self.seen[stage] = y.dtype
        return y.float().mean()

    def training_step(self, batch, batch_idx):
        return self._out(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._out(batch, "val")

    def test_step(self, batch, batch_idx):
        self._out(batch, "test")

    def predict_step(self, batch, batch_idx):
        return self._out(batch, "predict")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_auto_trains_in_bf16_and_evaluates_in_fp32(tmp_path, monkeypatch):
    monkeypatch.setenv(PRECISION_ENV, "bf16-mixed")
    loader = DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=4)
    model = _Probe()
    trainer = make_trainer(tmp_path / "run", max_epochs=1, progress="none", report=False, accelerator="cpu",
                           limit_val_batches=1)
    trainer.fit(model, loader, loader)
    trainer.test(model, loader, verbose=False)
    trainer.predict(model, loader)
    assert model.seen == {"train": torch.bfloat16, "val": torch.float32, "test": torch.float32,
                          "predict": torch.float32}


def test_fp32_is_one_flag_away(tmp_path, monkeypatch):
    monkeypatch.setenv(PRECISION_ENV, "bf16-mixed")
    loader = DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=4)
    model = _Probe()
    make_trainer(tmp_path / "run", max_epochs=1, progress="none", report=False, accelerator="cpu",
                 precision="32-true").fit(model, loader)
    assert model.seen["train"] == torch.float32
