"""Kill-and-resume: a run stopped after a checkpoint and resumed ends with the same weights."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Callback, seed_everything

from medlearn.engine.config import instantiate_class, load_config
from medlearn.engine.trainer import make_trainer
from medlearn.methods.c2l.recipe import write_contract_data
from medlearn.registry import config_dir


class Kill(Callback):
    """Crash at the start of ``epoch`` (after the previous epoch's checkpoint was written)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated kill")


def _run(cfg, run_dir, callbacks=(), ckpt_path=None):
    seed_everything(0, workers=True)
    model = instantiate_class(cfg["model"])
    dm = instantiate_class(cfg["data"])
    monitor, mode = model.monitor  # best.ckpt on the module's metric + last.ckpt every epoch
    trainer = make_trainer(run_dir, max_epochs=4, monitor=monitor, mode=mode, progress="none", report=False,
                           callbacks=list(callbacks), deterministic=True, accelerator="cpu", devices=1)
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return model, trainer


@pytest.mark.parametrize("config", ["demo.yaml", "demo_finetune.yaml"])
def test_kill_and_resume_matches_uninterrupted(config, tmp_path):
    root = write_contract_data(tmp_path / "data")
    cfg = load_config(config_dir("c2l") / config, {
        "data.init_args.root": str(root), "data.init_args.batch_size": 8, "data.init_args.num_train": 16,
        "model.init_args.queue_size": 32})
    if config == "demo_finetune.yaml":
        del cfg["model"]["init_args"]["queue_size"]
    full, _ = _run(cfg, tmp_path / "full")
    with pytest.raises(RuntimeError, match="simulated kill"):
        _run(cfg, tmp_path / "killed", [Kill(2)])
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    assert last.is_file()
    resumed, trainer = _run(cfg, tmp_path / "killed", ckpt_path=str(last))
    assert trainer.current_epoch == 4
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, f"resumed run differs in {diff[:5]}"
