"""C2L under 2-process CPU DDP (gloo): keys gathered across ranks, identical queues, cross-rank ShuffleBN."""

from __future__ import annotations

import json

import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything

from medlearn.engine.config import instantiate_class, load_config
from medlearn.methods.c2l.recipe import write_contract_data
from medlearn.registry import config_dir

B, K, STEPS = 4, 64, 3


class QueueProbe(Callback):
    """After each step: record this rank's queue pointer and a checksum of the queue."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.rows: list[dict] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        q = pl_module.queue
        self.rows.append({"ptr": int(q.ptr), "sum": float(q.queue.double().sum()),
                          "head": q.queue[:2].flatten().tolist(), "world": trainer.world_size})

    def on_train_end(self, trainer, pl_module):
        with open(f"{self.out_dir}/rank{trainer.global_rank}.json", "w") as f:
            json.dump(self.rows, f)


@pytest.mark.ddp
def test_c2l_ddp_gathers_keys_across_ranks(tmp_path):
    root = write_contract_data(tmp_path / "data")
    cfg = load_config(config_dir("c2l") / "demo.yaml", {
        "data.init_args.root": str(root), "data.init_args.batch_size": B,
        "model.init_args.queue_size": K})
    seed_everything(0)
    model = instantiate_class(cfg["model"])
    dm = instantiate_class(cfg["data"])
    trainer = Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_steps=STEPS, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      callbacks=[QueueProbe(str(tmp_path))])
    trainer.fit(model, datamodule=dm)
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert len(r0) == len(r1) == STEPS and r0[0]["world"] == 2
    for step, (a, b) in enumerate(zip(r0, r1), start=1):
        # 3 terms x B keys x 2 ranks pushed per step, the same on both ranks
        assert a["ptr"] == b["ptr"] == (3 * B * 2 * step) % K
        assert a["sum"] == pytest.approx(b["sum"], rel=1e-6, abs=1e-6)
        assert a["head"] == pytest.approx(b["head"], abs=1e-6)


def _gather_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from medlearn.losses import MomentumQueue
    from medlearn.nn.distributed import gather_cat

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    keys = torch.full((3, 2), float(rank + 1))
    got = gather_cat(keys)
    q = MomentumQueue(8, 2, init="normal")
    q.enqueue(keys)
    # cross-rank ShuffleBN: with eval-mode BN every key must come back to its own sample and rank
    from medlearn.methods.c2l.model import C2LEncoder, shuffled_forward

    torch.manual_seed(0)
    net = C2LEncoder("plaincnn", 2, 1, 8).eval()
    x = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(10 + rank))
    with torch.no_grad():
        keys, perm = shuffled_forward(net, x, None, groups=1)
        ref = net(x)
    torch.save({"gathered": got, "queue": q.queue.clone(), "ptr": int(q.ptr), "keys": keys, "ref": ref,
                "perm": perm}, f"{out}/g{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.ddp
def test_gather_cat_and_queue_enqueue_in_rank_order(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_gather_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    for r in range(2):
        d = torch.load(tmp_path / f"g{r}.pt", weights_only=True)
        assert torch.equal(d["gathered"], torch.tensor([[1.0, 1.0]] * 3 + [[2.0, 2.0]] * 3))
        assert torch.equal(d["queue"][:6], d["gathered"]) and d["ptr"] == 6
        assert torch.allclose(d["keys"], d["ref"], atol=1e-5)
        assert sorted(d["perm"].tolist()) == list(range(8))
    p0 = torch.load(tmp_path / "g0.pt", weights_only=True)["perm"]
    assert torch.equal(p0, torch.load(tmp_path / "g1.pt", weights_only=True)["perm"])  # one shuffle, from rank 0


@pytest.mark.ddp
def test_medlearn_fit_with_strategy_ddp_from_the_command_line(tmp_path):
    """The user's path: `medlearn fit ... --trainer.devices 2 --trainer.strategy ddp` (CPU, gloo)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "medlearn"
    if not exe.is_file():
        pytest.skip("the medlearn console script is not installed beside this Python")
    env = {**os.environ, "MEDLEARN_THREADS": "1"}
    subprocess.run([str(exe), "synth", "chestxray", "--out", str(tmp_path / "cxr"), "--n-images", "64",
                    "--size", "32"], check=True, env=env, capture_output=True)
    run = tmp_path / "run"
    proc = subprocess.run(
        [str(exe), "fit", "--config", str(config_dir("c2l") / "demo.yaml"),
         "--data.init_args.root", str(tmp_path / "cxr"), "--data.init_args.batch_size", "8",
         "--model.init_args.queue_size", "64", "--trainer.max_epochs", "1", "--trainer.devices", "2",
         "--trainer.strategy", "ddp", "--trainer.default_root_dir", str(run)],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ck = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    # 48 train_val images, 2 ranks x batch 8 -> 3 steps; 3 terms x 8 keys x 2 ranks per step enter the queue
    assert ck["global_step"] == 3
    assert int(ck["state_dict"]["queue.ptr"]) == (3 * 8 * 2 * 3) % 64
