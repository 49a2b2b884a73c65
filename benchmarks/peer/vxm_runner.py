"""The peer side of ``benchmarks/bench_ltnet_peer.py``: the PyPI ``voxelmorph`` package on arrays medlearn exported.

Runs with the peer virtual environment's Python (``.peer-venv/bin/python``, see the docstring of
``bench_ltnet_peer.py``), never with medlearn's: it imports only ``voxelmorph``, ``torch`` and
``numpy`` and knows nothing of medlearn. Two commands:

``train DATA OUT --epochs E --batch B --lr LR --w-smooth W --seed S``
    Trains ``voxelmorph.networks.VxmDense`` (VoxelMorph 0.2, PyTorch backend) on the exported
    one-shot arrays: the atlas is the moving (source) image, each training image the fixed one.
    Loss ``vxm.losses.MSE`` + ``W`` x ``vxm.losses.Grad("l2")`` of the flow, Adam, ``E`` epochs of
    shuffled batches of ``B`` images. After every epoch the same loss is taken on the validation
    images and the weights with the lowest one are kept (the rule of medlearn's ``best.ckpt``).
    With those weights every test image is registered; the atlas's one-hot labels are warped with
    VoxelMorph's own ``SpatialTransformer`` (bilinear) and the argmax is the transferred label.
    Writes ``OUT/test_pred.npy`` (label values), ``OUT/test_fields.npy`` (forward fields),
    ``OUT/test_back_fields.npy`` (the network on the reverse pair: warped atlas -> atlas) and
    ``OUT/log.json``. Evaluation labels are never given to this script; scoring is medlearn's.

``serve DATA --batch B --lr LR --w-smooth W``
    A step-timing server: builds the model and a fixed batch (the atlas and the first ``B``
    training images), then answers each stdin line ``run WARMUP ITERS`` with one JSON line
    ``{"ms": [...]}`` (the timed steps); ``quit`` ends it.

Input folder (written by ``bench_ltnet_peer.export_arrays``): ``atlas.npy`` (1, *S) float32,
``atlas_labels.npy`` (*S) int64, ``train.npy`` / ``val.npy`` / ``test.npy`` (N, 1, *S) float32,
``meta.json`` (``label_values``, ``unet_features``).

Two adaptations, both needed to run VoxelMorph 0.2 here and neither changing what it computes:

* ``voxelmorph.torch.modelio.store_config_args`` calls ``inspect.getargspec``, which Python 3.11
  removed; it is given back as ``getfullargspec``'s first four fields before the import.
* VoxelMorph 0.2's PyTorch ``Grad`` indexes five axes (3D only). A 2D field ``(B, 2, H, W)`` is
  given a last axis of two equal copies: the third difference is then zero and the other two
  means are the 2D ones, so ``Grad`` returns ``(m_h + m_w) / 3``; ``loss_mult=1.5`` makes it the 2D
  mean ``(m_h + m_w) / 2`` that VoxelMorph's TensorFlow ``Grad`` (and medlearn) take.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("VXM_BACKEND", "pytorch")

if not hasattr(inspect, "getargspec"):  # removed in Python 3.11; VoxelMorph 0.2 still calls it
    def _getargspec(func: Any) -> tuple[Any, Any, Any, Any]:
        spec = inspect.getfullargspec(func)
        return spec.args, spec.varargs, spec.varkw, spec.defaults

    inspect.getargspec = _getargspec  # type: ignore[attr-defined]

import numpy as np  # noqa: E402
import torch  # noqa: E402
import voxelmorph as vxm  # noqa: E402


def load(data: Path) -> dict[str, Any]:
    """The exported arrays and ``meta.json`` of one data set."""
    out: dict[str, Any] = {k: np.load(data / f"{k}.npy") for k in ("atlas", "atlas_labels", "train", "val", "test")}
    out["meta"] = json.loads((data / "meta.json").read_text())
    return out


def build(shape: tuple[int, ...], features: list[list[int]]) -> Any:
    """VoxelMorph's ``VxmDense``: plain displacement field (no integration), as medlearn's arms."""
    return vxm.networks.VxmDense(inshape=shape, nb_unet_features=features, int_steps=0, int_downsize=1)


class Loss:
    """``MSE(fixed, warped) + w * Grad('l2')(flow)`` with VoxelMorph's own loss classes."""

    def __init__(self, dims: int, w_smooth: float) -> None:
        self.dims, self.w = dims, w_smooth
        self.sim = vxm.losses.MSE()
        self.grad = vxm.losses.Grad("l2", loss_mult=1.5 if dims == 2 else None)

    def smooth(self, flow: torch.Tensor) -> torch.Tensor:
        """VoxelMorph's ``Grad('l2')``; 2D fields get a last axis of two copies (see the module docstring)."""
        if self.dims == 2:
            flow = torch.stack([flow, flow], dim=-1)
        return self.grad.loss(None, flow)

    def __call__(self, fixed: torch.Tensor, warped: torch.Tensor, flow: torch.Tensor) -> dict[str, torch.Tensor]:
        sim, smooth = self.sim.loss(fixed, warped), self.smooth(flow)
        return {"sim": sim, "smooth": smooth, "total": sim + self.w * smooth}


def _atlas_batch(atlas: np.ndarray, n: int) -> torch.Tensor:
    return torch.from_numpy(atlas).float()[None].expand(n, *atlas.shape).contiguous()


def evaluate_loss(model: Any, loss: Loss, atlas: np.ndarray, images: np.ndarray, batch: int) -> dict[str, float]:
    """Mean loss terms over ``images`` (batches of ``batch``, weighted by batch size)."""
    model.eval()
    sums = {"total": 0.0, "sim": 0.0}
    with torch.no_grad():
        for i in range(0, len(images), batch):
            fixed = torch.from_numpy(images[i:i + batch]).float()
            warped, flow = model(_atlas_batch(atlas, len(fixed)), fixed)
            parts = loss(fixed, warped, flow)
            for k in sums:
                sums[k] += float(parts[k]) * len(fixed)
    model.train()
    return {k: v / len(images) for k, v in sums.items()}


def train(args: argparse.Namespace) -> int:
    """The ``train`` command (module docstring)."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    d = load(Path(args.data))
    atlas, train_x, val_x, test_x = d["atlas"], d["train"], d["val"], d["test"]
    shape, dims = tuple(atlas.shape[1:]), atlas.ndim - 1
    model = build(shape, d["meta"]["unet_features"])
    model.train()
    loss = Loss(dims, args.w_smooth)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    best, best_state, best_epoch, log = float("inf"), None, -1, []
    t0 = time.perf_counter()
    steps = 0
    for epoch in range(args.epochs):
        order = torch.randperm(len(train_x), generator=gen).numpy()
        run = 0.0
        for i in range(0, len(order), args.batch):
            fixed = torch.from_numpy(train_x[order[i:i + args.batch]]).float()
            opt.zero_grad(set_to_none=True)
            warped, flow = model(_atlas_batch(atlas, len(fixed)), fixed)
            parts = loss(fixed, warped, flow)
            parts["total"].backward()
            opt.step()
            run += float(parts["total"]) * len(fixed)
            steps += 1
        val = evaluate_loss(model, loss, atlas, val_x, args.batch) if len(val_x) else {"total": run, "sim": run}
        log.append({"epoch": epoch, "train_loss": run / len(order), "val_loss": val["total"], "val_sim": val["sim"]})
        if val["total"] < best:
            best, best_epoch = val["total"], epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        print(f"[vxm s={args.seed}] epoch {epoch + 1}/{args.epochs} train {run / len(order):.5f} "
              f"val {val['total']:.5f}", file=sys.stderr, flush=True)
    train_s = time.perf_counter() - t0
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    values = torch.as_tensor(d["meta"]["label_values"])
    onehot = torch.nn.functional.one_hot(_label_index(d["atlas_labels"], d["meta"]["label_values"]),
                                         len(values)).movedim(-1, 0).float()[None]
    label_warp = vxm.layers.SpatialTransformer(shape, mode="bilinear")
    preds, fields, back = [], [], []
    with torch.no_grad():
        for i in range(len(test_x)):
            fixed = torch.from_numpy(test_x[i:i + 1]).float()
            moving = _atlas_batch(atlas, 1)
            warped, flow = model(moving, fixed, registration=True)
            probs = label_warp(onehot, flow)
            preds.append(values[probs.argmax(1)][0].numpy())
            fields.append(flow[0].numpy())
            back.append(model(warped, moving, registration=True)[1][0].numpy())
        test = evaluate_loss(model, loss, atlas, test_x, args.batch)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "test_pred.npy", np.stack(preds).astype(np.int64))
    np.save(out / "test_fields.npy", np.stack(fields).astype(np.float32))
    np.save(out / "test_back_fields.npy", np.stack(back).astype(np.float32))
    info = {"voxelmorph": vxm.__version__, "torch": torch.__version__,
            "params": sum(p.numel() for p in model.parameters()),
            "steps": steps, "train_seconds": train_s, "best_epoch": best_epoch, "best_val_loss": best,
            "test_loss": test["total"], "test_sim": test["sim"], "epochs": log}
    (out / "log.json").write_text(json.dumps(info, indent=2))
    return 0


def _label_index(labels: np.ndarray, values: list[int]) -> torch.Tensor:
    """Label values -> indices into ``values`` (values not listed count as the first, the background)."""
    lab = torch.from_numpy(labels)
    idx = torch.zeros_like(lab)
    for k, v in enumerate(values):
        idx[lab == v] = k
    return idx


def serve(args: argparse.Namespace) -> int:
    """The ``serve`` command (module docstring)."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    d = load(Path(args.data))
    atlas = d["atlas"]
    shape, dims = tuple(atlas.shape[1:]), atlas.ndim - 1
    model = build(shape, d["meta"]["unet_features"])
    model.train()
    loss = Loss(dims, args.w_smooth)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    fixed = torch.from_numpy(d["train"][: args.batch]).float()
    moving = _atlas_batch(atlas, len(fixed))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        warped, flow = model(moving, fixed)
        loss(fixed, warped, flow)["total"].backward()
        opt.step()

    print(json.dumps({"ready": True, "params": sum(p.numel() for p in model.parameters())}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        warmup, iters = int(cmd[1]), int(cmd[2])
        for _ in range(warmup):
            step()
        ms = []
        for _ in range(iters):
            t = time.perf_counter()
            step()
            ms.append(1000.0 * (time.perf_counter() - t))
        print(json.dumps({"ms": ms}), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``train`` or ``serve`` (module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("train", "serve"):
        s = sub.add_parser(name)
        s.add_argument("data")
        if name == "train":
            s.add_argument("out")
            s.add_argument("--epochs", type=int, required=True)
            s.add_argument("--seed", type=int, default=0)
        s.add_argument("--batch", type=int, required=True)
        s.add_argument("--lr", type=float, required=True)
        s.add_argument("--w-smooth", type=float, required=True)
        s.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    return train(args) if args.command == "train" else serve(args)


if __name__ == "__main__":
    sys.exit(main())
