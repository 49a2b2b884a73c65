"""Peer run: the PyPI ``voxelmorph`` package next to medlearn's VoxelMorph-style and LT-Net arms.

Usage::

    MEDLEARN_THREADS=1 python benchmarks/bench_ltnet_peer.py [--quick] [--seeds 0 1 2] [--scales 2d 3d]
        [--out docs/benchmarks.md] [--results docs/results.md] [--json PATH] [--work runs/bench/ltnet-peer]

The peer lives in its own virtual environment, ``.peer-venv`` at the repository root (git-ignored),
never in medlearn's and never a medlearn dependency. Create it once (VoxelMorph 0.2 is the last
release with ``voxelmorph.networks.VxmDense`` and the ``VXM_BACKEND=pytorch`` backend; it imports
``neurite`` only to check its version, and neurite 0.3.4 is PyTorch-only, so no TensorFlow is
needed)::

    python3.11 -m venv .peer-venv
    .peer-venv/bin/pip install torch==2.13.0          # the same torch as medlearn's environment
    .peer-venv/bin/pip install voxelmorph==0.2 neurite==0.3.4

Without it the script prints these commands and exits with status 0 (nothing measured). The peer
runs in subprocesses of that environment's Python (``benchmarks/peer/vxm_runner.py``, which
imports only voxelmorph, torch and numpy), so this process never imports voxelmorph.

What is compared, per scale and seed (the same files and splits for every arm):

* **Data.** ``medlearn synth oneshot`` ellipse phantoms (``write_oneshot``, seed = the run's seed),
  read by medlearn's ``OneShotDataModule`` with the split of the run's seed. The atlas and the
  intensity-normalised training, validation and test images it serves are exported as ``.npy``
  and the peer trains on exactly those arrays (it never sees an evaluation label).
  ``2d``: recipe A of ``medlearn reproduce ltnet`` (64 x 64, 200 training and 60 labelled
  subjects, ``configs/ltnet/demo.yaml``, 20 epochs of batch 4 = 1000 steps). ``3d``: 32^3
  ellipsoids, 60 training and 20 labelled subjects, ``configs/ltnet/oneshot.yaml`` (3D, batch 2,
  cycles ramped in between steps 100 and 200), 8 epochs = 240 steps (fewer than recipe A's
  1000, to keep the whole run near half an hour on one thread per process).
* **Training.** medlearn: ``fit_from_config`` (Lightning) on the config, VoxelMorph-style arm
  ``backward=False``, LT-Net arm as configured; the checkpoint with the lowest validation loss is
  tested. Peer: ``VxmDense`` with the same U-Net widths (encoder 8-16-16-16, decoder
  16-16-16-16-16-8-8: 27,514 weights in 2D, equal to medlearn's generator), no integration,
  ``vxm.losses.MSE`` + the config's smoothness weight x ``vxm.losses.Grad('l2')``, Adam with the
  config's learning rate, the same batch size and number of steps, the weights with the lowest
  validation loss kept.
* **Scoring.** Labels are transferred by warping the atlas's one-hot labels bilinearly and taking
  the argmax (medlearn's ``label_transfer: linear``; the peer with VoxelMorph's own
  ``SpatialTransformer``). Both are scored by ``medlearn.metrics.registration``: Dice per
  structure (foreground), mean over structures then over test images; fraction of folded voxels
  of the forward field; inverse-consistency error with the generator applied to the reverse pair.
* **Step time.** One training step on a fixed batch (the atlas and the first training images) in
  three persistent worker processes (peer, medlearn VoxelMorph-style, medlearn LT-Net), one torch
  thread each; repeats alternate between them (A B C, C B A, ...), so only one computes at a time
  and slow drifts of the machine's load hit all three. Median of the timed steps of a repeat,
  median over repeats; ratios against the peer.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    DOC_INTRO,
    Budget,
    bench_parser,
    command_line,
    machine_info,
    markdown_table,
    run_meta,
    section_header,
    update_section,
    write_json,
)

ROOT = Path(__file__).resolve().parents[1]
PEER_VENV = ROOT / ".peer-venv"
RUNNER = Path(__file__).resolve().parent / "peer" / "vxm_runner.py"
SECTION = "ltnet-peer"
SETUP_COMMANDS = (
    "python3.11 -m venv .peer-venv",
    ".peer-venv/bin/pip install torch==2.13.0",
    ".peer-venv/bin/pip install voxelmorph==0.2 neurite==0.3.4",
)
ARMS = {"peer": "voxelmorph 0.2 (PyPI), VxmDense", "voxelmorph": "medlearn VoxelMorph-style",
        "ltnet": "medlearn LT-Net", "peer_reseed": "voxelmorph 0.2, another training seed"}
#: ``--control``: the peer trained again with this added to the seed (other initial weights and batch order,
#: the same data), so that peer - peer shows how far two trainings differ by chance alone.
RESEED = 100


@dataclass(frozen=True)
class Scale:
    """One phantom scale: data, config, training length and the arms trained."""

    name: str
    dims: int
    n_train: int
    n_eval: int
    config: str
    epochs: int
    overrides: tuple[tuple[str, Any], ...]
    title: str
    arms: tuple[str, ...] = ("peer", "voxelmorph", "ltnet")


SCALES = {
    "2d": Scale("2d", 2, 200, 60, "demo.yaml", 20, (("model.init_args.image_size", None),),
                "2D ellipses, 64 x 64 (recipe A)"),
    # 3D on one CPU thread: 240 steps (LT-Net's cycles ramp in between steps 100 and 200 of oneshot.yaml)
    "3d": Scale("3d", 3, 60, 20, "oneshot.yaml", 8,
                (("data.init_args.size", None), ("data.init_args.val_fraction", 0.2),
                 ("model.init_args.spatial_dims", 3), ("model.init_args.image_size", [32, 32, 32]),
                 ("trainer.accelerator", "cpu")),
                "3D ellipsoids, 32^3"),
}


def peer_python(venv: Path = PEER_VENV) -> Path | None:
    """The peer environment's Python, or ``None`` when it has not been created."""
    py = venv / "bin" / "python"
    return py if py.is_file() else None


def skip_message(venv: Path = PEER_VENV) -> str:
    """What to print when the peer environment is missing."""
    cmds = "\n".join(f"    {c}" for c in SETUP_COMMANDS)
    return (f"skipped: the peer environment {venv} does not exist. Create it from the repository root "
            f"(it is git-ignored and never a medlearn dependency):\n{cmds}")


def peer_env(threads: int = 1) -> dict[str, str]:
    """The environment of a peer subprocess: no medlearn on the path, the PyTorch backend, ``threads`` threads."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update({"VXM_BACKEND": "pytorch", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                "PYTHONWARNINGS": "ignore"})
    return env


# ------------------------------------------------------------------------------------------------ data
def model_config(scale: Scale, root: Path, seed: int, arm: str, epochs: int) -> dict[str, Any]:
    """The medlearn config of one arm (``"voxelmorph"`` or ``"ltnet"``) on ``root``."""
    from medlearn.engine.config import load_config
    from medlearn.registry import config_dir

    over: dict[str, Any] = {"data.init_args.root": str(root), "data.init_args.split_seed": seed,
                            "seed_everything": seed, "model.init_args.backward": arm == "ltnet",
                            "trainer.max_epochs": epochs, **dict(scale.overrides)}
    return load_config(config_dir("ltnet") / scale.config, over)


def write_phantoms(scale: Scale, root: Path, seed: int) -> Path:
    """The scale's ellipse phantoms of ``seed`` (``medlearn synth oneshot``), written once."""
    from medlearn.synth.oneshot import write_oneshot

    if not (root / "atlas").is_dir():
        write_oneshot(root, dims=scale.dims, n_train=scale.n_train, n_eval=scale.n_eval, seed=seed,
                      variant="ellipses", overwrite=True)
    return root


def export_arrays(cfg: dict[str, Any], out: Path) -> dict[str, Any]:
    """The arrays medlearn's data module serves for ``cfg``'s data, as ``.npy`` files for the peer.

    Writes ``atlas``, ``atlas_labels``, ``train``, ``val``, ``test`` (given to the peer),
    ``test_labels`` (kept for scoring) and ``meta.json``; returns the meta.
    """
    from medlearn.data.oneshot import OneShotDataModule
    from medlearn.nn.registration import default_decoder_channels

    dm = OneShotDataModule(**cfg["data"]["init_args"])
    dm.setup(None)
    out.mkdir(parents=True, exist_ok=True)
    atlas, atlas_labels = dm.atlas

    def stack(ds: Any, key: str) -> np.ndarray:
        return np.stack([ds[i][key].numpy() for i in range(len(ds))])

    arrays = {"atlas": atlas.numpy().astype(np.float32), "atlas_labels": atlas_labels.numpy().astype(np.int64),
              "train": stack(dm.train_set, "image"), "val": stack(dm.val_set, "image"),
              "test": stack(dm.test_set, "image"), "test_labels": stack(dm.test_set, "labels")}
    for k, v in arrays.items():
        np.save(out / f"{k}.npy", v)
    enc = list(cfg["model"]["init_args"]["encoder_channels"])
    meta = {"label_values": list(dm.label_values), "unet_features": [enc, list(default_decoder_channels(enc))],
            "n": {k: len(v) for k, v in arrays.items() if k in ("train", "val", "test")},
            "shape": list(atlas.shape[1:])}
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta


# ------------------------------------------------------------------------------------------------ arms
def score(pred: np.ndarray, true: np.ndarray, fields: np.ndarray, back: np.ndarray,
          values: Sequence[int]) -> dict[str, Any]:
    """Test metrics of transferred labels, scored as ``LTNet.evaluation_step`` / ``evaluation_end`` do.

    Args:
        pred: ``(N, *S)`` transferred label values.
        true: ``(N, *S)`` reference label values.
        fields: ``(N, D, *S)`` forward fields (atlas -> image).
        back: ``(N, D, *S)`` fields of the generator on the reverse pair (warped atlas -> atlas).
        values: the atlas's label values (background first).

    Returns:
        ``dice`` (mean over structures, then images), ``dice/<label>``, ``folding``, ``inverse_consistency``.
    """
    from medlearn.metrics.registration import dice_per_label, folding_fraction, inverse_consistency_error, mean_dice

    fg = [int(v) for v in values if v != 0]
    dice, per = [], {v: [] for v in fg}
    for i in range(len(pred)):
        d = dice_per_label(pred[i], true[i], fg)
        dice.append(mean_dice(d))
        for k, v in d.items():
            per[k].append(v)
    out: dict[str, Any] = {"dice": float(np.nanmean(dice)),
                           "folding": float(np.mean([folding_fraction(fields[i:i + 1]) for i in range(len(fields))])),
                           "inverse_consistency": float(np.mean([inverse_consistency_error(fields[i:i + 1],
                                                                                           back[i:i + 1])
                                                                 for i in range(len(fields))]))}
    out.update({f"dice/{k}": float(np.nanmean(v)) for k, v in per.items()})
    return out


def run_peer(py: Path, data: Path, out: Path, cfg: dict[str, Any], epochs: int, seed: int) -> dict[str, Any]:
    """Train the peer on ``data`` in a subprocess, then score its test predictions with medlearn's metrics."""
    m = cfg["model"]["init_args"]
    cmd = [str(py), str(RUNNER), "train", str(data), str(out), "--epochs", str(epochs), "--seed", str(seed),
           "--batch", str(cfg["data"]["init_args"]["batch_size"]), "--lr", str(m["lr"]),
           "--w-smooth", str(m["w_smooth"]), "--threads", "1"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=peer_env(1))
    seconds = time.perf_counter() - t0
    log = json.loads((out / "log.json").read_text())
    meta = json.loads((data / "meta.json").read_text())
    res = score(np.load(out / "test_pred.npy"), np.load(data / "test_labels.npy"), np.load(out / "test_fields.npy"),
                np.load(out / "test_back_fields.npy"), meta["label_values"])
    return {**res, "seconds": seconds, "test_sim": log["test_sim"], "best_epoch": log["best_epoch"],
            "steps": log["steps"], "params": log["params"], "voxelmorph": log["voxelmorph"]}


def run_medlearn(cfg: dict[str, Any], run_dir: Path, prefix: str) -> dict[str, Any]:
    """Fit one medlearn arm (Lightning, best validation checkpoint tested); its test metrics."""
    from medlearn.engine.run import fit_from_config

    r = fit_from_config(cfg, run_dir, prefix=prefix)
    shutil.rmtree(run_dir / "tb", ignore_errors=True)
    t = {k.removeprefix("test/"): float(v) for k, v in r.test.items()}
    out = {k: v for k, v in t.items() if k in ("dice", "folding", "inverse_consistency") or k.startswith("dice/")}
    out.pop("dice_sd", None)
    return {**out, "seconds": r.seconds, "test_sim": t.get("loss_sim", float("nan")),
            "params": sum(p.numel() for p in r.model.parameters())}


# ------------------------------------------------------------------------------------------------ step time
class Worker:
    """A persistent step-timing process answering ``run WARMUP ITERS`` with ``{"ms": [...]}``."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.info = self._read()

    def _read(self) -> dict[str, Any]:
        out: IO[str] | None = self.proc.stdout
        assert out is not None
        line = out.readline()
        if not line:
            raise RuntimeError(f"step-timing worker {self.name!r} ended (exit {self.proc.wait()})")
        return dict(json.loads(line))

    def run(self, warmup: int, iters: int) -> list[float]:
        """Time ``iters`` steps after ``warmup`` untimed ones."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"run {warmup} {iters}\n")
        self.proc.stdin.flush()
        return list(self._read()["ms"])

    def close(self) -> None:
        """Ask the worker to quit and wait for it."""
        if self.proc.poll() is None and self.proc.stdin is not None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def serve_medlearn(data: Path, cfg: dict[str, Any]) -> int:
    """The medlearn side of :class:`Worker`: ``LTNet.losses`` + backward + Adam on a fixed batch of ``data``."""
    import torch

    from medlearn.methods.ltnet.module import LTNet
    from medlearn.runtime import set_cpu_threads

    set_cpu_threads(1)
    torch.manual_seed(0)
    meta = json.loads((data / "meta.json").read_text())
    init = {k: v for k, v in cfg["model"]["init_args"].items()}
    init["label_values"] = meta["label_values"]
    model = LTNet(**init)
    model.train()
    batch = int(cfg["data"]["init_args"]["batch_size"])
    atlas = torch.from_numpy(np.load(data / "atlas.npy"))[None].expand(batch, -1, *meta["shape"]).contiguous()
    labels = torch.from_numpy(np.load(data / "atlas_labels.npy"))[None].expand(batch, *meta["shape"]).contiguous()
    image = torch.from_numpy(np.load(data / "train.npy")[:batch])
    opt = torch.optim.Adam(model.parameters(), lr=float(init["lr"]))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        model.losses(atlas, labels, image, 1.0)["total"].backward()
        opt.step()

    print(json.dumps({"ready": True, "params": sum(p.numel() for p in model.parameters())}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        for _ in range(int(cmd[1])):
            step()
        ms = []
        for _ in range(int(cmd[2])):
            t = time.perf_counter()
            step()
            ms.append(1000.0 * (time.perf_counter() - t))
        print(json.dumps({"ms": ms}), flush=True)
    return 0


def time_steps(py: Path, scale: Scale, data: Path, cfg: dict[str, Any], seed: int, warmup: int, iters: int,
               repeats: int) -> dict[str, Any]:
    """Interleaved step times of the peer and both medlearn arms (one thread each) on ``data``."""
    m, b = cfg["model"]["init_args"], cfg["data"]["init_args"]["batch_size"]
    here = [sys.executable, str(Path(__file__).resolve()), "--serve-medlearn", str(data), "--scale", scale.name,
            "--seed", str(seed)]
    env = {**os.environ, "MEDLEARN_THREADS": "1"}
    workers = [Worker("peer", [str(py), str(RUNNER), "serve", str(data), "--batch", str(b), "--lr", str(m["lr"]),
                               "--w-smooth", str(m["w_smooth"]), "--threads", "1"], peer_env(1)),
               Worker("voxelmorph", here + ["--arm", "voxelmorph"], env),
               Worker("ltnet", here + ["--arm", "ltnet"], env)]
    per: dict[str, list[float]] = {w.name: [] for w in workers}
    steps: dict[str, list[float]] = {w.name: [] for w in workers}
    try:
        for rep in range(repeats):
            for w in (workers if rep % 2 == 0 else workers[::-1]):
                ms = w.run(warmup, iters)
                per[w.name].append(statistics.median(ms))
                steps[w.name] += ms
    finally:
        for w in workers:
            w.close()
    out: dict[str, Any] = {"batch": b, "params": {w.name: w.info["params"] for w in workers}}
    for name in per:
        out[name] = {"ms": statistics.median(per[name]), "per_repeat": per[name]}
    for name in ("voxelmorph", "ltnet"):
        ratios = [a / p for a, p in zip(per[name], per["peer"])]
        out[f"{name}/peer"] = {"ratio": out[name]["ms"] / out["peer"]["ms"], "per_repeat": ratios}
    return out


# ------------------------------------------------------------------------------------------------ markdown
def place_after(path: Path, anchor: str, key: str, intro: str) -> None:
    """Make an empty ``key`` section right after the ``anchor`` section (and any text that follows it up to
    the next section) unless ``key`` already has one; without the anchor the section goes at the end."""
    from medlearn.io import atomic_write_text

    text = path.read_text(encoding="utf-8") if path.exists() else intro.rstrip() + "\n"
    if f"<!-- {key}:start -->" in text:
        return
    block = f"<!-- {key}:start -->\n<!-- {key}:end -->"
    end = text.find(f"<!-- {anchor}:end -->")
    if end < 0:
        text = text.rstrip() + "\n\n" + block + "\n"
    else:
        nxt = text.find("<!-- ", end + len(f"<!-- {anchor}:end -->"))
        if nxt < 0:
            text = text.rstrip() + "\n\n" + block + "\n"
        else:
            text = text[:nxt].rstrip() + "\n\n" + block + "\n\n" + text[nxt:]
    atomic_write_text(path, text)


def match_reading(p: Any, claim: str, tol: float, digits: int = 3) -> str:
    """The reading line of an equivalence claim: every seed's difference within ``tol`` -> matched.

    Args:
        p: a :class:`medlearn.engine.experiment.Paired` difference.
        claim: what is claimed.
        tol: the largest difference (either sign) that still counts as a match.
        digits: decimals shown.
    """
    if p.n == 0:
        return f"- {claim}: not measured."
    d = np.asarray(p.diff, dtype=float)
    worst = float(np.abs(d).max())
    if worst <= tol:
        verdict = f"matched (every seed within {tol:g})"
    else:
        verdict = f"not matched (largest difference {worst:.{digits}f} > {tol:g})"
    return f"- {claim} (within {tol:g}): mean {p.mean:+.{digits}f}, {p.wins}/{p.n} seeds higher -> {verdict}."


def _cell(v: np.ndarray, digits: int = 3) -> str:
    from medlearn.engine.experiment import mean_sd_cell

    return mean_sd_cell(np.asarray(v, dtype=float), digits)


def results_markdown(rows: list[dict[str, Any]], seeds: Sequence[int], scales: Sequence[str],
                     meta: dict[str, Any]) -> str:
    """The ``docs/results.md`` section: Dice, per-structure Dice, folding per arm; paired differences."""
    from medlearn.engine.experiment import paired, select

    lines = ["## ltnet: peer run against the PyPI voxelmorph package", "",
             f"Command: `{meta['command']}` (measured {meta['date'][:10]}, 1 torch thread per process; "
             f"training and scoring {meta.get('training_s', meta['wall_s']) / 60:.1f} min in all).", "",
             "The same phantoms, splits and intensity-normalised arrays for every arm (medlearn's data module "
             "exported them to the peer); the same U-Net widths (VoxelMorph's `VxmDense` with medlearn's "
             "encoder 8-16-16-16 / decoder 16-16-16-16-16-8-8, equal weight counts), MSE + smoothness weight, "
             "batch, learning rate and steps; the weights with the lowest validation loss tested; labels "
             "transferred by warping one-hot atlas labels bilinearly, then argmax; everything scored by "
             "`medlearn.metrics.registration`. Mean ± sd over seeds, per-seed values in brackets.", ""]
    for sc in scales:
        scale = SCALES[sc]
        vr = [r for r in rows if r["scale"] == sc]
        if not vr:
            continue
        labs = sorted({k for r in vr for k in r if k.startswith("dice/")}, key=lambda k: int(k.split("/")[1]))
        steps = next((r["steps"] for r in vr if r["arm"] == "peer"), None)
        lines += [f"### {scale.title}: {steps} steps", "",
                  "| arm | test Dice | " + " | ".join(f"Dice {k.split('/')[1]}" for k in labs)
                  + " | folded voxels | inverse consistency, voxels | test MSE | train + test s |",
                  "|---|---|" + "---|" * len(labs) + "---|---|---|---|"]
        for arm in ARMS:
            if not any(r["arm"] == arm for r in vr):
                continue
            cells = [_cell(select(vr, "dice", arm=arm))] + [f"{np.mean(select(vr, k, arm=arm)):.3f}" for k in labs]
            cells += [_cell(select(vr, "folding", arm=arm), 4), _cell(select(vr, "inverse_consistency", arm=arm)),
                      f"{np.mean(select(vr, 'test_sim', arm=arm)):.5f}",
                      f"{np.mean(select(vr, 'seconds', arm=arm)):.0f}"]
            lines.append(f"| {ARMS[arm]} | " + " | ".join(cells) + " |")
        lines += ["", "Paired differences (same phantoms, split and seed; in brackets: seeds where the first arm "
                  "is better):", "", "| comparison | Dice | folded voxels | inverse consistency |", "|---|---|---|---|"]
        for a, b in (("voxelmorph", "peer"), ("ltnet", "peer"), ("ltnet", "voxelmorph"), ("peer_reseed", "peer")):
            if not any(r["arm"] == a for r in vr):
                continue
            cells = [paired(vr, k, {"arm": a}, {"arm": b}, lower_is_better=k != "dice").cell(4 if k == "folding" else 3)
                     for k in ("dice", "folding", "inverse_consistency")]
            lines.append(f"| {ARMS[a]} − {ARMS[b]} | " + " | ".join(cells) + " |")
        lines += ["", "Reading:", ""]
        lines.append(match_reading(paired(vr, "dice", {"arm": "voxelmorph"}, {"arm": "peer"}),
                                   "medlearn's VoxelMorph-style arm matches the voxelmorph package", 0.01))
        if any(r["arm"] == "peer_reseed" for r in vr):
            lines.append(match_reading(paired(vr, "dice", {"arm": "peer_reseed"}, {"arm": "peer"}),
                                       "Control: the voxelmorph package against itself with another training seed",
                                       0.01))
        if any(r["arm"] == "ltnet" for r in vr):
            lines.append(paired(vr, "dice", {"arm": "ltnet"}, {"arm": "peer"}).reading(
                "medlearn's LT-Net beats the voxelmorph package", 0.005))
        lines.append("")
    lines += [f"Peer: voxelmorph {meta.get('voxelmorph', '?')} (`VxmDense`, PyTorch backend) with neurite "
              f"{meta.get('neurite', '?')}, in its own environment (see `benchmarks/bench_ltnet_peer.py`). Setup: "
              + "; ".join(f"{SCALES[s].title}: {SCALES[s].n_train} training and {SCALES[s].n_eval} labelled phantoms "
                          f"per seed (a fifth validate, the rest test), `configs/ltnet/{SCALES[s].config}`, "
                          f"{SCALES[s].epochs} epochs, arms {', '.join(SCALES[s].arms)}" for s in scales)
              + f"; seeds {list(seeds)}."]
    return "\n".join(lines)


def bench_markdown(timing: dict[str, Any], meta: dict[str, Any], warmup: int, iters: int, repeats: int) -> str:
    """The ``docs/benchmarks.md`` section: step times of the peer and both medlearn arms, ratios against the peer."""
    lines = section_header("Peer: voxelmorph (PyPI) against medlearn's VoxelMorph-style and LT-Net steps", meta,
                           f"{warmup} warm-up + {iters} timed steps per repeat, {repeats} interleaved repeat(s) "
                           "(A B C, C B A, ...), median; 1 torch thread per process")
    lines += [f"A step = forward, loss, backward and Adam on a fixed batch of the exported phantom arrays, each in "
              f"its own persistent process. Peer: voxelmorph {meta.get('voxelmorph', '?')} `VxmDense` (no "
              "integration, VoxelMorph's `SpatialTransformer`, `MSE` + `Grad('l2')`) in its own environment; "
              "medlearn: `LTNet.losses` with `backward=False` (VoxelMorph-style) or as configured (LT-Net, "
              "cycles at full weight). Same U-Net widths and weight count. Ratio = medlearn ms / peer ms "
              "(medians; per-repeat range in brackets).", ""]
    rows = []
    for sc, t in timing.items():
        for arm in ("voxelmorph", "ltnet"):
            per = t[f"{arm}/peer"]["per_repeat"]
            spread = f" ({min(per):.2f}-{max(per):.2f})" if len(per) > 1 else ""
            rows.append([f"{SCALES[sc].title}, batch {t['batch']}", ARMS[arm], f"{t[arm]['ms']:.1f}",
                         f"{t['peer']['ms']:.1f}", f"**{t[f'{arm}/peer']['ratio']:.2f}**{spread}",
                         f"{t['params'][arm]:,}", f"{t['params']['peer']:,}"])
    lines.append(markdown_table(["scale", "medlearn arm", "medlearn ms/step", "peer ms/step",
                                 "time ratio medlearn/peer", "medlearn weights", "peer weights"], rows, "llrrrrr"))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ main
def _peer_versions(py: Path) -> dict[str, str]:
    code = ("import importlib.metadata as m; import json; "
            "print(json.dumps({k: m.version(k) for k in ('voxelmorph', 'neurite', 'torch')}))")
    out = subprocess.run([str(py), "-c", code], check=True, capture_output=True, text=True, env=peer_env(1))
    return dict(json.loads(out.stdout))


def main(argv: list[str] | None = None) -> int:
    """Run the peer comparison (module docstring)."""
    p = bench_parser(__doc__, SECTION, "smoke: 2D, one seed, 1 epoch, 1 repeat of 2 + 3 timed steps")
    p.add_argument("--results", default=str(ROOT / "docs" / "results.md"), help="results markdown to update")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default 0 1 2)")
    p.add_argument("--scales", nargs="+", choices=sorted(SCALES), default=None, help="scales (default 2d 3d)")
    p.add_argument("--epochs", type=int, default=None, help="override every scale's epochs")
    p.add_argument("--work", default=str(ROOT / "runs" / "bench" / "ltnet-peer"), help="data and run folder")
    p.add_argument("--fresh", action="store_true", help="ignore finished runs stored in WORK/results.json")
    p.add_argument("--control", action="store_true",
                   help=f"2D: also train the peer with seed + {RESEED} on the same data (training noise alone)")
    p.add_argument("--skip-timing", action="store_true",
                   help="no step timing; the benchmarks section is left as it is")
    p.add_argument("--peer-venv", default=str(PEER_VENV), help="the peer's virtual environment")
    p.add_argument("--serve-medlearn", default=None, help=argparse.SUPPRESS)
    p.add_argument("--scale", default="2d", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--arm", default="voxelmorph", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve_medlearn:
        data = Path(args.serve_medlearn)
        return serve_medlearn(data, model_config(SCALES[args.scale], data, args.seed, args.arm, 1))

    py = peer_python(Path(args.peer_venv))
    if py is None:
        print(skip_message(Path(args.peer_venv)))
        return 0
    from medlearn.engine.experiment import Experiment
    from medlearn.runtime import set_cpu_threads

    budget = Budget(args)
    set_cpu_threads(1)
    quick = args.quick
    seeds = args.seeds or ([0] if quick else [0, 1, 2])
    scales = args.scales or (["2d"] if quick else ["2d", "3d"])
    warmup, iters, repeats = budget.pick("warmup", 2, 3), budget.pick("iters", 3, 10), budget.pick("repeats", 1, 5)
    budget.settings.update(seeds=seeds, scales=scales)
    cmd = command_line("benchmarks/bench_ltnet_peer.py", argv)
    t0 = time.perf_counter()
    machine = machine_info()
    versions = _peer_versions(py)
    work = Path(args.work)
    exp = Experiment(work, resume=not args.fresh, meta={"seeds": seeds, "scales": scales, "peer": versions})
    timing: dict[str, Any] = {}
    for sc in scales:
        scale = SCALES[sc]
        epochs = args.epochs or (1 if quick else scale.epochs)
        for seed in seeds:
            root = write_phantoms(scale, work / "data" / f"{sc}-s{seed}", seed)
            cfgs = {arm: model_config(scale, root, seed, arm, epochs) for arm in ("voxelmorph", "ltnet")}
            arrays = work / "arrays" / f"{sc}-s{seed}"
            export_arrays(cfgs["voxelmorph"], arrays)
            cell = {"scale": sc, "seed": seed, "epochs": epochs}
            exp.run({**cell, "arm": "peer"},
                    partial(run_peer, py, arrays, work / f"{sc}-peer-s{seed}", cfgs["voxelmorph"], epochs, seed))
            if args.control and scale.dims == 2:
                exp.run({**cell, "arm": "peer_reseed"},
                        partial(run_peer, py, arrays, work / f"{sc}-peer_reseed-s{seed}", cfgs["voxelmorph"], epochs,
                                seed + RESEED))
            for arm in scale.arms[1:]:
                exp.run({**cell, "arm": arm},
                        partial(run_medlearn, cfgs[arm], work / f"{sc}-{arm}-s{seed}", f"[{sc} {arm} s={seed}] "))
        arrays = work / "arrays" / f"{sc}-s{seeds[0]}"
        if args.skip_timing:
            continue
        timing[sc] = time_steps(py, scale, arrays, model_config(scale, arrays, seeds[0], "voxelmorph", 1),
                                seeds[0], warmup, iters if scale.dims == 2 else max(3, iters // 2), repeats)
    exp.save()
    meta = run_meta(cmd, t0, machine, budget, **versions)
    meta["training_s"] = float(exp.meta["seconds"])
    rows = [r for r in exp.rows if r["seed"] in seeds and r["scale"] in scales]
    res_md = results_markdown(rows, seeds, scales, meta)
    bench_md = bench_markdown(timing, meta, warmup, iters, repeats)
    if quick:
        res_md += "\n\n> Smoke run (`--quick`): too few steps for the numbers to mean much."
    from medlearn.engine.experiment import RESULTS_INTRO

    place_after(Path(args.results), "ltnet", SECTION, RESULTS_INTRO)
    update_section(args.results, SECTION, res_md)
    place_after(budget.out, "ltnet", SECTION, DOC_INTRO)
    if timing:
        update_section(budget.out, SECTION, bench_md)
    payload: dict[str, Any] = {**meta, "rows": rows, "timing": timing}
    if not timing and budget.json_path.is_file():  # --skip-timing: keep the step times measured before
        before = json.loads(budget.json_path.read_text(encoding="utf-8"))
        payload["timing"] = before.get("timing", {})
        payload["timing_run"] = before.get("timing_run") or {k: before.get(k) for k in ("command", "date", "wall_s")}
    write_json(budget.json_path, payload)
    print(res_md)
    print(bench_md)
    print(f"\nwrote {args.results} and {budget.out} (section {SECTION!r}) and {budget.json_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
