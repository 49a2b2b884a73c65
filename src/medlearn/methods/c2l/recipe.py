"""C2L demo and CPU-scale reproduction.

Both write synthetic radiographs in the ChestX-ray14 layout with ``medlearn synth chestxray``'s
generator, read them back through the real ChestX-ray14 reader, and run the configs shipped in
``configs/c2l/`` (the same files a user runs with ``medlearn fit``).

- demo: pretrain C2L on the unlabeled pool, then fine-tune with 50 labels from the C2L checkpoint
  and from scratch (same labels, same seed); report mean test AUC of both.
- reproduce: scratch vs two-view momentum contrast (no mixup) vs full C2L, fine-tuned at 50 and
  200 labels with 3 seeds (paired: one label subset and fine-tuning seed per seed, shared by the
  three arms), plus a linear probe for the pretrained arms; the table goes to ``docs/results.md``.
"""

from __future__ import annotations

import math
import shutil
import time
from functools import partial
from pathlib import Path
from typing import Any

from medlearn.engine.config import load_config
from medlearn.engine.experiment import Experiment, Paired, mean_sd_cell, paired, select
from medlearn.engine.run import fit_from_config
from medlearn.engine.trainer import set_cpu_threads
from medlearn.registry import DemoResult, config_dir
from medlearn.synth.chestxray import write_chestxray14

__all__ = ["demo", "reproduce", "write_contract_data", "DEMO_CLASSES"]

DEMO_CLASSES = ["Cardiomegaly", "Effusion", "Nodule", "Consolidation"]


def _data(out: Path, n_images: int, size: int, seed: int) -> Path:
    root = out / "data" / "chestxray-synth"
    if not (root / "Data_Entry_2017.csv").is_file():
        write_chestxray14(root, n_images=n_images, size=size, seed=seed, overwrite=True)
    return root


def write_contract_data(folder: Path) -> Path:
    """A tiny ChestX-ray14-layout set for the contract tests."""
    root = Path(folder) / "cxr"
    write_chestxray14(root, n_images=48, size=32, seed=1, overwrite=True)
    return root


def _pretrain_cfg(root: Path, **over: Any) -> dict[str, Any]:
    return load_config(config_dir("c2l") / "demo.yaml", {"data.init_args.root": str(root), **over})


def _finetune_cfg(root: Path, pretrained: Path | None, n_labels: int, seed: int, **over: Any) -> dict[str, Any]:
    return load_config(config_dir("c2l") / "demo_finetune.yaml", {
        "data.init_args.root": str(root), "data.init_args.num_train": n_labels, "data.init_args.label_seed": seed,
        "seed_everything": seed, "model.init_args.pretrained": str(pretrained) if pretrained else None, **over})


def demo(out_dir: str | Path = "runs/demo/c2l", n_images: int = 1600, pretrain_epochs: int | None = None,
         n_labels: int = 50, threads: int | None = None) -> DemoResult:
    """Pretrain C2L on synthetic radiographs, then fine-tune with few labels vs from scratch.

    Args:
        out_dir: where the data and the three run folders go.
        n_images: synthetic images written (about 75% train_val, 25% test).
        pretrain_epochs: override of the demo config's epochs.
        n_labels: labelled training images for fine-tuning.
        threads: torch threads (default: :func:`medlearn.runtime.default_threads`).
    """
    set_cpu_threads(threads)
    out = Path(out_dir)
    t0 = time.perf_counter()
    root = _data(out, n_images, 64, seed=0)
    over = {"trainer.max_epochs": pretrain_epochs} if pretrain_epochs else {}
    pre = fit_from_config(_pretrain_cfg(root, **over), out / "pretrain", test=False, prefix="[c2l pretrain] ")
    arms: dict[str, dict[str, float]] = {}
    for name, ckpt in (("c2l", pre.last_ckpt), ("scratch", None)):
        r = fit_from_config(_finetune_cfg(root, ckpt, n_labels, seed=0), out / f"finetune-{name}",
                            prefix=f"[finetune {name}] ")
        arms[name] = r.test
    auc = {k: v.get("test/auc_mean", math.nan) for k, v in arms.items()}
    _demo_report(out, arms, n_labels)
    headline = f"mean test AUC @{n_labels} labels: C2L {auc['c2l']:.3f} vs scratch {auc['scratch']:.3f}"
    return DemoResult("c2l", headline, auc["c2l"] > auc["scratch"], time.perf_counter() - t0, out,
                      {"auc_c2l": auc["c2l"], "auc_scratch": auc["scratch"]})


def _demo_report(out: Path, arms: dict[str, dict[str, float]], n_labels: int) -> None:
    """One page: pretraining curves and views, per-class test AUC of both arms, fine-tuning curves."""
    import matplotlib.pyplot as plt

    from medlearn.engine.report import Section, save_figure, write_report

    classes = DEMO_CLASSES
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    width = 0.38
    for i, (name, color) in enumerate((("c2l", "#228833"), ("scratch", "#bb5566"))):
        vals = [arms[name].get(f"test/auc/{c}", math.nan) for c in classes]
        ax.bar([j + (i - 0.5) * width for j in range(len(classes))], vals, width,
               label=f"{name} (mean {arms[name].get('test/auc_mean', math.nan):.3f})", color=color)
    ax.set_xticks(range(len(classes)), classes)
    ax.set_ylim(0.5, 1.0)
    ax.set_ylabel("test ROC-AUC")
    ax.set_title(f"fine-tuned with {n_labels} labels: C2L init vs scratch")
    ax.legend(loc="lower right", fontsize=8)
    png = save_figure(fig, out / "figures" / "auc_per_class_both_arms.png")
    rows = [[c, arms["c2l"].get(f"test/auc/{c}", math.nan), arms["scratch"].get(f"test/auc/{c}", math.nan)]
            for c in classes]
    rows.append(["mean", arms["c2l"].get("test/auc_mean", math.nan), arms["scratch"].get("test/auc_mean", math.nan)])
    sections = [
        Section("C2L vs scratch", "Same labelled subset, same fine-tuning recipe and seed; test split of the "
                "synthetic ChestX-ray14 set, read through the ChestX-ray14 reader.", [png],
                table=(["finding", "C2L init", "scratch"], rows)),
        Section("Pretraining", "Loss terms and positive-pair accuracy per epoch; sample images with the two "
                "augmented views the student and the teacher see.",
                [p for p in (out / "pretrain/figures/curves.png", out / "pretrain/figures/views.png") if p.is_file()]),
    ]
    for name in ("c2l", "scratch"):
        curves = out / f"finetune-{name}/figures/curves.png"
        sections.append(Section(f"Fine-tuning from {name}", f"details: finetune-{name}/report.html",
                                [curves] if curves.is_file() else []))
    write_report(out, "medlearn demo: C2L", sections)


# ---------------------------------------------------------------------------------------------
def reproduce(out_dir: str | Path = "runs/reproduce/c2l", seeds: tuple[int, ...] = (0, 1, 2),
              label_sizes: tuple[int, ...] = (50, 200), n_images: int = 2400, pretrain_epochs: int | None = None,
              finetune_epochs: int = 40, results_md: str | Path | None = "docs/results.md",
              threads: int | None = None, resume: bool = False) -> str:
    """The spec's CPU-scale experiment; returns the markdown table (also written to ``results_md``).

    One pretraining per arm (pretraining seed 0) on the unlabeled train_val pool; for each seed,
    every arm is fine-tuned on the same labelled subset with the same fine-tuning seed. ``resume``
    keeps the finished runs (pretrainings included) of an interrupted reproduction in ``out_dir``.
    """
    set_cpu_threads(threads)
    out = Path(out_dir)
    root = _data(out, n_images, 64, seed=0)
    pre_over: dict[str, Any] = {"trainer.max_epochs": pretrain_epochs} if pretrain_epochs else {}
    pre_epochs = int(_pretrain_cfg(root, **pre_over)["trainer"]["max_epochs"])
    exp = Experiment(out, resume, meta={"seeds": list(seeds), "label_sizes": list(label_sizes), "n_images": n_images,
                                        "pretrain_epochs": pre_epochs, "finetune_epochs": finetune_epochs},
                     # two pretrainings; per labels x seed: scratch fine-tuned, each pretraining fine-tuned + probed
                     total_runs=2 + len(label_sizes) * len(seeds) * 5)

    def pretrain(arm: str, mixup: bool) -> dict[str, Any]:
        r = fit_from_config(_pretrain_cfg(root, **{"model.init_args.mixup": mixup, **pre_over}),
                            out / f"pretrain-{arm}", test=False, prefix=f"[pretrain {arm}] ")
        return {"ckpt": str(r.last_ckpt), "seconds": r.seconds}

    ckpts: dict[str, Path | None] = {"scratch": None}
    for arm, mixup in (("two-view", False), ("c2l", True)):
        row = exp.run({"stage": "pretrain", "arm": arm}, partial(pretrain, arm, mixup),
                      valid=lambda r: Path(r["ckpt"]).is_file())
        ckpts[arm] = Path(row["ckpt"])

    def finetune(arm: str, mode: str, n: int, seed: int) -> dict[str, Any]:
        over: dict[str, Any] = {"trainer.max_epochs": finetune_epochs,
                                "model.init_args.freeze_backbone": mode == "linear"}
        if mode == "linear":
            over["model.init_args.lr"] = 0.01
        r = fit_from_config(_finetune_cfg(root, ckpts[arm], n, seed, **over), out / f"{mode}-{arm}-n{n}-s{seed}",
                            prefix=f"[{mode} {arm} n={n} s={seed}] ")
        shutil.rmtree(r.run_dir / "tb", ignore_errors=True)
        return {"auc": r.test.get("test/auc_mean", math.nan), "seconds": r.seconds}

    for n in label_sizes:
        for seed in seeds:
            for arm, ck in ckpts.items():
                for mode in ("finetune", "linear") if ck is not None else ("finetune",):
                    exp.run({"stage": "downstream", "labels": n, "seed": seed, "arm": arm, "mode": mode},
                            partial(finetune, arm, mode, n, seed))
    return exp.publish("c2l", table_from_results, results_md)


def table_from_results(run: dict[str, Any]) -> str:
    """The markdown table of a reproduction from its ``results.json`` content."""
    pre_seconds = {r["arm"]: r["seconds"] for r in run["rows"] if r.get("stage") == "pretrain"}
    rows = [r for r in run["rows"] if r.get("stage") != "pretrain"]
    return _table(rows, tuple(run["seeds"]), tuple(run["label_sizes"]), run["n_images"],
                  run["pretrain_epochs"], run["finetune_epochs"], run["seconds"], pre_seconds)


def _table(rows: list[dict[str, Any]], seeds: tuple[int, ...], label_sizes: tuple[int, ...], n_images: int,
           pre_ep: int, ft_ep: int, seconds: float, pre_seconds: dict[str, float]) -> str:
    def diff(a: str, b: str, n: int) -> Paired:
        return paired(rows, "auc", {"arm": a}, {"arm": b}, mode="finetune", labels=n)

    lines = [
        "Mean test ROC-AUC over the 4 synthetic findings (Cardiomegaly, Effusion, Nodule, Consolidation), "
        f"mean ± sd over seeds {list(seeds)}; per-seed values in brackets.",
        "",
        "| init | " + " | ".join(f"fine-tune @{n}" for n in label_sizes) + " | "
        + " | ".join(f"linear probe @{n}" for n in label_sizes) + " |",
        "|---|" + "---|" * (2 * len(label_sizes)),
    ]
    for arm, label in (("scratch", "scratch"), ("two-view", "two-view momentum contrast (no mixup)"),
                       ("c2l", "C2L (3 terms, mixup)")):
        cells = [mean_sd_cell(select(rows, "auc", arm=arm, mode=mode, labels=n))
                 for mode in ("finetune", "linear") for n in label_sizes]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Paired differences (same labelled subset and fine-tuning seed), fine-tuning:", ""]
    lines += ["| comparison | " + " | ".join(f"@{n}: mean diff (wins)" for n in label_sizes) + " |",
              "|---|" + "---|" * len(label_sizes)]
    for a, b in (("c2l", "scratch"), ("two-view", "scratch"), ("c2l", "two-view")):
        lines.append(f"| {a} − {b} | " + " | ".join(diff(a, b, n).cell() for n in label_sizes) + " |")
    lines += ["", "Reading (computed from the rows above):", ""]
    for a, b, claim in (("c2l", "scratch", "C2L pretraining beats training from scratch"),
                        ("c2l", "two-view", "C2L's mixup terms beat two-view contrast alone")):
        for n in label_sizes:
            lines.append(diff(a, b, n).reading(f"{claim} at {n} labels", 0.02))
    lines += ["- C2L beats ImageNet pretraining: not testable here (no ImageNet weights can be loaded offline, "
              "and an out-of-domain supervised proxy is not ImageNet).",
              "- Each pretraining ran once (seed 0): the seeds vary the labelled subset and the fine-tuning, "
              "not the pretraining, so pretraining variance is not in the spread."]
    lines += ["", f"Setup: {n_images} synthetic 64 px radiographs (ChestX-ray14 layout, read back by the "
              f"reader at 32 px); pretraining {pre_ep} epochs on the train_val pool (pretraining seed 0; "
              + ", ".join(f"{k} {v:.0f} s" for k, v in pre_seconds.items())
              + f"); fine-tuning {ft_ep} epochs, Adam 1e-3 (linear probe: lr 1e-2, frozen backbone); "
              f"model selection on validation mean AUC; total wall time {seconds / 60:.1f} min on this machine."]
    return "\n".join(lines)
