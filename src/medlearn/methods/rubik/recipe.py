"""Rubik's cube demo and CPU-scale reproduction.

Both write synthetic head-CT volumes with ``medlearn synth headct``'s generator (NIfTI files and a
``labels.csv`` manifest), read them back through the volume reader and run the configs shipped in
``configs/rubik/``.

- demo: pretrain the Rubik's cube task on the unlabeled training volumes, then classify the four
  lesion classes with 120 labels by a linear probe on the frozen encoder (logistic regression on
  standardised features, :mod:`medlearn.tasks.probe`) and with 40 labels by fine-tuning, each from
  the Rubik checkpoint and from random initialisation (same labels, seed).
- reproduce: random init vs order only (3D jigsaw) vs the full Rubik's cube; linear probe at 40,
  120 and 300 labels and fine-tuning at 40 labels, 3 seeds, paired; table to ``docs/results.md``.
"""

from __future__ import annotations

import math
import shutil
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from medlearn.engine.checkpoint import load_pretrained
from medlearn.engine.config import instantiate_class, load_config
from medlearn.engine.experiment import Experiment, Paired, mean_sd_cell, paired, select
from medlearn.engine.run import fit_from_config
from medlearn.engine.trainer import set_cpu_threads
from medlearn.nn import build_backbone
from medlearn.registry import DemoResult, config_dir
from medlearn.synth.headct import write_headct
from medlearn.tasks.probe import Features, extract_features, linear_probe

__all__ = ["demo", "reproduce", "write_contract_data", "table_from_results"]

PROBE_SIZES = (40, 120, 300)


def _data(out: Path, n_volumes: int, seed: int = 0) -> Path:
    root = out / "data" / "headct-synth"
    if not (root / "labels.csv").is_file():
        write_headct(root, n_volumes=n_volumes, size=40, seed=seed, overwrite=True)
    return root


def write_contract_data(folder: Path) -> Path:
    """A tiny head-CT set for the contract tests."""
    root = Path(folder) / "headct"
    write_headct(root, n_volumes=24, size=40, seed=1, overwrite=True)
    return root


def write_contract_brats(folder: Path) -> Path:
    """A tiny BraTS-layout set for the segmentation-transfer contract test."""
    from medlearn.synth.brats import write_brats

    root = Path(folder) / "brats"
    write_brats(root, n_cases=12, size=32, seed=1, overwrite=True)
    return root


def _brats_data(out: Path, n_cases: int, seed: int = 0) -> Path:
    from medlearn.synth.brats import write_brats

    root = out / "data" / "brats-synth"
    if not (root / "README.txt").is_file():
        write_brats(root, n_cases=n_cases, size=48, seed=seed, overwrite=True)
    return root


def _segment(root: Path, ckpt: Path | None, n: int, seed: int, run_dir: Path) -> dict[str, float]:
    """Segmentation transfer: the U-Net of ``demo_segment.yaml`` on ``n`` labelled cases; test Dice."""
    cfg = load_config(config_dir("rubik") / "demo_segment.yaml", {
        "data.init_args.root": str(root), "data.init_args.num_train": n, "data.init_args.label_seed": seed,
        "seed_everything": seed, "model.init_args.pretrained": str(ckpt) if ckpt else None})
    r = fit_from_config(cfg, run_dir, prefix=f"[segment n={n} s={seed}] ")
    shutil.rmtree(run_dir / "tb", ignore_errors=True)
    return {k.removeprefix("test/"): v for k, v in r.test.items() if k.startswith("test/dice")}


def _pretrain_cfg(root: Path, **over: Any) -> dict[str, Any]:
    return load_config(config_dir("rubik") / "demo.yaml", {"data.init_args.root": str(root), **over})


def _classify_cfg(root: Path, pretrained: Path | None, n_labels: int | None, seed: int, **over: Any) -> dict[str, Any]:
    return load_config(config_dir("rubik") / "demo_classify.yaml", {
        "data.init_args.root": str(root), "data.init_args.num_train": n_labels, "data.init_args.label_seed": seed,
        "seed_everything": seed, "model.init_args.pretrained": str(pretrained) if pretrained else None, **over})


def _finetune(root: Path, ckpt: Path | None, n: int, seed: int, run_dir: Path) -> float:
    """Fine-tune encoder + linear head on ``n`` labelled volumes; test accuracy."""
    r = fit_from_config(_classify_cfg(root, ckpt, n, seed), run_dir, prefix=f"[finetune n={n} s={seed}] ")
    shutil.rmtree(run_dir / "tb", ignore_errors=True)
    return r.test.get("test/acc", math.nan)


class _Prober:
    """Linear probes of one encoder for many label budgets and seeds, from one feature pass.

    The labelled subsets are exactly those the fine-tuning runs use (the datamodule's ``num_train``
    subset with ``label_seed = seed``), so probe and fine-tuning rows are paired.
    """

    def __init__(self, root: Path, ckpt: Path | None, init_seed: int = 0) -> None:
        self.root = root
        cfg = _classify_cfg(root, None, None, 0)
        self.data_args = cfg["data"]
        dm = instantiate_class(cfg["data"])
        dm.setup("fit")
        dm.setup("test")
        torch.manual_seed(init_seed)
        args = cfg["model"]["init_args"]
        encoder = build_backbone(args["backbone"], 3, args["in_channels"])
        if ckpt is not None:
            load_pretrained(encoder, ckpt, {"octad.encoder.": ""}, ignore=("num_batches_tracked",))
        loaders = {k: DataLoader(ds, batch_size=32, shuffle=False)
                   for k, ds in (("pool", dm.train_set), ("val", dm.val_set), ("test", dm.test_set))}
        self.features = {k: extract_features(encoder, dl) for k, dl in loaders.items()}

    def accuracy(self, n: int, seed: int) -> float:
        dm = instantiate_class({**self.data_args, "init_args": {**self.data_args["init_args"], "num_train": n,
                                                                 "label_seed": seed}})
        names = [r.case for r in dm.splits["train"]]
        train: Features = self.features["pool"].subset(names)
        return linear_probe(train, self.features["val"], self.features["test"], seed=seed).accuracy


def demo(out_dir: str | Path = "runs/demo/rubik", n_volumes: int = 900, pretrain_epochs: int | None = None,
         threads: int | None = None) -> DemoResult:
    """Pretrain on synthetic head CT, then probe (120 labels) and fine-tune (40 labels) vs random init."""
    set_cpu_threads(threads)
    out = Path(out_dir)
    t0 = time.perf_counter()
    root = _data(out, n_volumes)
    over = {"trainer.max_epochs": pretrain_epochs} if pretrain_epochs else {}
    pre = fit_from_config(_pretrain_cfg(root, **over), out / "pretrain", test=False, prefix="[rubik pretrain] ")
    acc: dict[str, float] = {}
    for name, ckpt in (("rubik", pre.last_ckpt), ("random", None)):
        prober = _Prober(root, ckpt)
        for n in PROBE_SIZES:
            acc[f"probe{n}_{name}"] = prober.accuracy(n, 0)
        acc[f"finetune40_{name}"] = _finetune(root, ckpt, 40, 0, out / f"finetune40-{name}")
    _demo_report(out, acc)
    headline = (f"test accuracy, linear probe @120: Rubik {acc['probe120_rubik']:.3f} vs random "
                f"{acc['probe120_random']:.3f}; fine-tune @40: {acc['finetune40_rubik']:.3f} vs "
                f"{acc['finetune40_random']:.3f}")
    return DemoResult("rubik", headline, acc["probe120_rubik"] > acc["probe120_random"], time.perf_counter() - t0,
                      out, acc)


def _demo_report(out: Path, acc: dict[str, float]) -> None:
    import matplotlib.pyplot as plt

    from medlearn.engine.report import Section, save_figure, write_report

    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for name, color, label in (("rubik", "#228833", "Rubik's cube init"), ("random", "#bb5566", "random init")):
        ax.plot(PROBE_SIZES, [acc[f"probe{n}_{name}"] for n in PROBE_SIZES], "o-", color=color, label=label)
    ax.axhline(0.25, color="gray", ls=":", lw=1, label="chance")
    ax.set_xscale("log")
    ax.set_xticks(PROBE_SIZES, [str(n) for n in PROBE_SIZES])
    ax.set_xlabel("labelled volumes")
    ax.set_ylabel("test accuracy (linear probe)")
    ax.set_title("Linear probe accuracy vs labelled volumes", fontsize=9)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    curve = save_figure(fig, out / "figures" / "probe_accuracy_vs_labels.png")

    groups = [("linear probe, 120 labels", "probe120"), ("fine-tune, 40 labels", "finetune40")]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for i, (name, color) in enumerate((("rubik", "#228833"), ("random", "#bb5566"))):
        ax.bar([j + (i - 0.5) * 0.38 for j in range(len(groups))], [acc[f"{g}_{name}"] for _, g in groups], 0.38,
               label="Rubik's cube init" if name == "rubik" else "random init", color=color)
    ax.axhline(0.25, color="gray", ls=":", lw=1, label="chance (4 classes)")
    ax.set_xticks(range(len(groups)), [g for g, _ in groups])
    ax.set_ylim(0, 1)
    ax.set_ylabel("test accuracy")
    ax.set_title("Rubik's-cube pretraining vs random init", fontsize=9)
    ax.legend(fontsize=8)
    png = save_figure(fig, out / "figures" / "rubik_vs_random.png")
    rows = [[g, acc[f"{k}_rubik"], acc[f"{k}_random"]] for g, k in groups]
    sections = [
        Section("Rubik's cube init vs random init", "4-class lesion classification of synthetic head CT volumes "
                "(none / intraparenchymal / intraventricular / subdural); same labelled subsets and seeds. Linear "
                "probe: logistic regression on standardised frozen features.", [png, curve],
                table=(["readout", "Rubik's cube", "random"], rows)),
        Section("Pretext training", "Loss and the order / horizontal / vertical rotation accuracies; the 8 cubes "
                "of a volume before and after the puzzle.",
                [p for p in (out / "pretrain/figures/curves.png", out / "pretrain/figures/cubes.png") if p.is_file()]),
    ]
    write_report(out, "medlearn demo: Rubik's cube", sections)


# ---------------------------------------------------------------------------------------------
ARMS = (("random", "random init"), ("order", "order only (3D jigsaw)"), ("rubik", "Rubik's cube (order + rotation)"))


def reproduce(out_dir: str | Path = "runs/reproduce/rubik", seeds: tuple[int, ...] = (0, 1, 2),
              probe_sizes: tuple[int, ...] = PROBE_SIZES, finetune_size: int = 40, n_volumes: int = 1200,
              pretrain_epochs: int | None = None, results_md: str | Path | None = "docs/results.md",
              threads: int | None = None, segment_cases: int = 10, n_brats: int = 100, resume: bool = False) -> str:
    """The spec's CPU-scale experiment; returns the markdown table (also written to ``results_md``).

    Classification transfer on synthetic head CT (random / order only / Rubik's cube; linear probes
    and fine-tuning), then segmentation transfer on synthetic BraTS cases: a Rubik encoder
    pretrained on the 4-contrast phantoms vs random init, U-Net fine-tuned on ``segment_cases``
    labelled cases (``segment_cases=0`` skips it). ``resume`` keeps the finished runs of an
    interrupted reproduction in ``out_dir``.
    """
    set_cpu_threads(threads)
    out = Path(out_dir)
    root = _data(out, n_volumes)
    pre_over: dict[str, Any] = {"trainer.max_epochs": pretrain_epochs} if pretrain_epochs else {}
    seg_cfg = load_config(config_dir("rubik") / "demo_segment.yaml")
    patch = (seg_cfg["data"]["init_args"].get("train_transform") or {}).get("init_args", {})
    exp = Experiment(out, resume, meta={
        "seeds": list(seeds), "probe_sizes": list(probe_sizes), "finetune_size": finetune_size, "n_volumes": n_volumes,
        "pretrain_epochs": int(_pretrain_cfg(root, **pre_over)["trainer"]["max_epochs"]),
        "segment_cases": segment_cases, "n_brats": n_brats, "segment_epochs": int(seg_cfg["trainer"]["max_epochs"]),
        "segment_patch": patch.get("size"), "segment_pos_ratio": patch.get("pos_ratio", 0.5),
        "brats_epochs": int(load_config(config_dir("rubik") / "demo_brats.yaml")["trainer"]["max_epochs"])
        if segment_cases else 0},
        # two pretrainings; per arm x seed: the probes and a fine-tuning; then the BraTS pretraining + 2 arms per seed
        total_runs=2 + 3 * len(seeds) * (len(probe_sizes) + 1) + (1 + 2 * len(seeds) if segment_cases else 0))

    def pretrain(cfg: dict[str, Any], name: str) -> dict[str, Any]:
        r = fit_from_config(cfg, out / f"pretrain-{name}", test=False, prefix=f"[pretrain {name}] ")
        pretext = {k: float(v) for k, v in r.model.trainer.callback_metrics.items()
                   if k.startswith("train/") and k.endswith("_acc")}
        return {"ckpt": str(r.last_ckpt), "seconds": r.seconds, "pretext": pretext}

    def ckpt_exists(r: Any) -> bool:
        return Path(r["ckpt"]).is_file()

    ckpts: dict[str, Path | None] = {"random": None}
    for arm, rotation in (("order", False), ("rubik", True)):
        cfg = _pretrain_cfg(root, **{"model.init_args.rotation": rotation, **pre_over})
        row = exp.run({"stage": "pretrain", "arm": arm}, partial(pretrain, cfg, arm), valid=ckpt_exists)
        ckpts[arm] = Path(row["ckpt"])
    probers: dict[tuple[str, int], _Prober] = {}

    def probe(arm: str, n: int, seed: int) -> dict[str, Any]:
        init = seed if ckpts[arm] is None else seeds[0]  # random init: a new encoder per seed
        if (arm, init) not in probers:
            probers[arm, init] = _Prober(root, ckpts[arm], init_seed=init)
        return {"acc": probers[arm, init].accuracy(n, seed)}

    def finetune(arm: str, seed: int) -> dict[str, Any]:
        run_dir = out / f"finetune-{arm}-n{finetune_size}-s{seed}"
        return {"acc": _finetune(root, ckpts[arm], finetune_size, seed, run_dir)}

    for arm in ckpts:
        for seed in seeds:
            for n in probe_sizes:
                exp.run({"stage": "classify", "arm": arm, "mode": "probe", "labels": n, "seed": seed},
                        partial(probe, arm, n, seed))
            exp.run({"stage": "classify", "arm": arm, "mode": "finetune", "labels": finetune_size, "seed": seed},
                    partial(finetune, arm, seed))
    if segment_cases:
        broot = _brats_data(out, n_brats)
        bcfg = load_config(config_dir("rubik") / "demo_brats.yaml", {"data.init_args.root": str(broot)})
        brats = exp.run({"stage": "pretrain", "arm": "brats"}, lambda: pretrain(bcfg, "brats"), valid=ckpt_exists)
        for seed in seeds:
            for arm, ck in (("rubik", Path(brats["ckpt"])), ("random", None)):
                exp.run({"stage": "segment", "arm": arm, "seed": seed},
                        partial(_segment, broot, ck, segment_cases, seed, out / f"segment-{arm}-s{seed}"))
    return exp.publish("rubik", table_from_results, results_md)


def table_from_results(run: dict[str, Any]) -> str:
    """The markdown table of a reproduction from its ``results.json`` content."""
    seeds, sizes, ft = run["seeds"], run["probe_sizes"], run["finetune_size"]
    rows = [r for r in run["rows"] if r.get("stage") == "classify"]
    seg = [r for r in run["rows"] if r.get("stage") == "segment"]
    pretrained = {r["arm"]: r for r in run["rows"] if r.get("stage") == "pretrain"}
    pretext = {arm: r.get("pretext", {}) for arm, r in pretrained.items()}
    pre_seconds = {arm: r["seconds"] for arm, r in pretrained.items()}
    cols = [("probe", n, f"linear probe @{n}") for n in sizes] + [("finetune", ft, f"fine-tune @{ft}")]
    lines = [f"Test accuracy, 4-class lesion classification of synthetic head CT (chance 0.25), mean ± sd over "
             f"seeds {seeds}; per-seed values in brackets.", "",
             "| init | " + " | ".join(c[2] for c in cols) + " | pretext accuracy (order / hor / ver) |",
             "|---|" + "---|" * (len(cols) + 1)]
    for arm, label in ARMS:
        cells = [mean_sd_cell(select(rows, "acc", arm=arm, mode=m, labels=n)) for m, n, _ in cols]
        p = pretext.get(arm, {})
        keys = ("train/order_acc", "train/hor_acc", "train/ver_acc")
        pre = " / ".join(f"{p[k]:.2f}" if k in p else "-" for k in keys)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {pre if p else '-'} |")

    def diff(a: str, b: str, mode: str, n: int) -> Paired:
        return paired(rows, "acc", {"arm": a}, {"arm": b}, mode=mode, labels=n)

    lines += ["", "Paired differences (same labelled subset and seed):", "",
              "| comparison | " + " | ".join(f"{c[2]}: mean diff (wins)" for c in cols) + " |",
              "|---|" + "---|" * len(cols)]
    for a, b in (("rubik", "random"), ("order", "random"), ("rubik", "order")):
        lines.append(f"| {a} − {b} | " + " | ".join(diff(a, b, m, n).cell() for m, n, _ in cols) + " |")
    lines += ["", "Reading (computed from the rows above):", ""]
    for a, b, claim in (("rubik", "random", "Rubik's-cube pretraining beats random init"),
                        ("rubik", "order", "rotation prediction adds to order prediction")):
        for m, n, name in cols:
            lines.append(diff(a, b, m, n).reading(f"{claim}, {name}", 0.02))
    if seg:
        regions = ("dice/WT", "dice/TC", "dice/ET", "dice_mean")
        lines += ["", f"Segmentation transfer (synthetic BraTS, {run['n_brats']} cases of 48^3; Rubik pretraining "
                  f"{run.get('brats_epochs', 40)} epochs on the training cases, configs/rubik/demo_brats.yaml; U-Net "
                  f"fine-tuned on {run['segment_cases']} labelled cases, {run.get('segment_epochs', 15)} epochs"
                  + (f" on random {'x'.join(map(str, run['segment_patch']))} patches, a share of "
                     f"{run.get('segment_pos_ratio', 0.5):.2f} centred on tumour" if run.get("segment_patch")
                     else " on whole volumes")
                  + ", configs/rubik/demo_segment.yaml): "
                  f"test Dice per region, mean ± sd over seeds {seeds}.", "",
                  "| encoder init | WT | TC | ET | mean |", "|---|---|---|---|---|"]
        for arm, label in (("random", "random init"), ("rubik", "Rubik's cube on the BraTS phantoms")):
            lines.append(f"| {label} | " + " | ".join(mean_sd_cell(select(seg, k, arm=arm)) for k in regions) + " |")
        d = {k: paired(seg, k, {"arm": "rubik"}, {"arm": "random"}) for k in regions}
        lines.append("| rubik − random (wins) | " + " | ".join(d[k].cell() for k in regions) + " |")
        p = pretext.get("brats", {})
        lines += ["", d["dice_mean"].reading("Rubik's-cube pretraining beats random init for segmentation, mean Dice",
                                            0.02).rstrip(".")
                  + "; pretext accuracy on the BraTS phantoms (order / hor / ver): "
                  + " / ".join(f"{p.get(k, float('nan')):.2f}" for k in ("train/order_acc", "train/hor_acc",
                                                                           "train/ver_acc")) + "."]
        stuck = {arm: [r["seed"] for r in seg if r["arm"] == arm and r.get("dice/TC", 0.0) < 0.2]
                 for arm in ("random", "rubik")}
        if any(stuck.values()):
            lines.append("- Runs whose tumour core never separated from the whole tumour (TC Dice < 0.2; the net "
                         "predicts the tumour as one class, a plateau training leaves only late or not at all): "
                         + "; ".join(f"{arm} seeds {v}" for arm, v in stuck.items() if v) + ".")
    times = ", ".join(f"{k} {v:.0f} s" for k, v in pre_seconds.items())
    lines += ["- Each pretraining ran once (seed 0): the seeds vary the labelled subset and the downstream "
              "training, not the pretraining.", "",
              f"Setup: {run['n_volumes']} synthetic 40^3 head CT volumes (NIfTI + labels.csv, read back by the "
              "volume reader, brain CT window [0, 80] HU -> [-1, 1]); pretraining "
              f"{run['pretrain_epochs']} epochs on the training volumes (wall time: {times}"
              + "); linear probe: logistic regression on standardised frozen features, C chosen on the validation "
              "split; fine-tuning: Adam 1e-3, 30 epochs, left-right flips, model selection on validation accuracy; "
              f"total wall time {run['seconds'] / 60:.1f} min on this machine."]
    return "\n".join(lines)
