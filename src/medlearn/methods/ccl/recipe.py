"""CCL-Net demo and CPU-scale reproduction.

Both write correlated-class skin-lesion phantoms in the ISIC 2018 Task 3 layout with
``medlearn synth isic``'s generator (7 classes in super-groups {MEL, NV, BCC}, {AKIEC, BKL}, {DF},
{VASC}; imbalanced training set, balanced official test set), read them back through the ISIC
reader and run ``configs/ccl/demo.yaml`` with ``soft_labels`` switched per arm, so every arm has the
same backbone, data, split, optimiser, schedule and seed.

- demo: hard labels vs CCL-Net on one phantom set (label smoothing on request); passed = CCL beats
  hard labels in test balanced accuracy.
- reproduce: the same arms (plus knowledge distillation from the same seed's hard-label model) on 5
  seeds (new phantom draws, split and initialisation per seed), paired by seed; and whether the
  largest learned correlations fall on the truly related class pairs. Table to ``docs/results.md``.
"""

from __future__ import annotations

import shutil
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from medlearn.engine.config import load_config
from medlearn.engine.experiment import Experiment, Paired, mean_sd_cell, paired, select
from medlearn.engine.run import fit_from_config
from medlearn.engine.trainer import set_cpu_threads
from medlearn.methods.ccl.module import CCLClassifier
from medlearn.registry import DemoResult, config_dir
from medlearn.synth.isic import RELATED_PAIRS, SUPER_GROUPS, write_isic2018

__all__ = ["demo", "reproduce", "write_contract_data", "correlation_structure", "table_from_results", "ARMS"]

ARMS = {"hard": "hard labels", "smoothing": "label smoothing 0.1", "kd": "distillation (teacher: hard, same seed)",
        "smoothing_strong": "label smoothing 0.6 (true-class mass 0.49, as CCL's here)",
        "ccl": "CCL-Net (d=4, detached, L_geo)"}
#: arm -> model overrides (arms not listed: ``soft_labels = arm``)
ARM_OVERRIDES: dict[str, dict[str, Any]] = {
    "smoothing_strong": {"model.init_args.soft_labels": "smoothing", "model.init_args.smoothing": 0.6}}
METRICS = ("acc", "bal_acc", "f1", "kappa", "nll", "ece")


def write_contract_data(folder: Path) -> Path:
    """A tiny ISIC-layout phantom set for the contract tests."""
    root = Path(folder) / "isic"
    write_isic2018(root, counts="6,10,6,6,6,6,6", n_test_per_class=3, size=24, seed=1, overwrite=True)
    return root


def _data(out: Path, seed: int) -> Path:
    root = out / "data" / f"isic-synth-s{seed}"
    if not (root / "README.txt").is_file():
        write_isic2018(root, seed=seed, overwrite=True)
    return root


def _run(root: Path, arm: str, seed: int, run_dir: Path, teacher: Path | None = None, **over: Any) -> dict[str, Any]:
    cfg = load_config(config_dir("ccl") / "demo.yaml", {
        "data.init_args.root": str(root), "data.init_args.split_seed": seed, "seed_everything": seed,
        "model.init_args.soft_labels": arm, "model.init_args.teacher": str(teacher) if teacher else None,
        **ARM_OVERRIDES.get(arm, {}), **over})
    r = fit_from_config(cfg, run_dir, prefix=f"[{arm} s={seed}] ")
    shutil.rmtree(run_dir / "tb", ignore_errors=True)
    row: dict[str, Any] = {"arm": arm, "seed": seed, "seconds": r.seconds,
                           **{k: r.test[f"test/{k}"] for k in METRICS}}
    assert isinstance(r.model, CCLClassifier)
    corr = r.model.correlation_matrix()
    if corr is not None:
        row["corr"] = corr.tolist()
        row.update(correlation_structure(corr))
    row["best_ckpt"] = str(r.best_ckpt or r.last_ckpt)
    return row


def correlation_structure(corr: np.ndarray) -> dict[str, float]:
    """How well a learned ``C`` recovers the phantom's super-groups.

    Returns ``group_gap`` (mean ``C`` over truly related pairs minus mean over unrelated pairs),
    ``top_hits`` (how many of the ``len(RELATED_PAIRS)`` largest off-diagonal values are related
    pairs; random ranking expects ``n^2 / 21``) and ``top_pair_related`` (1 if the single largest is).
    """
    c = np.asarray(corr, dtype=float)
    k = c.shape[0]
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    related = set(RELATED_PAIRS)
    rel = [c[i, j] for i, j in pairs if (i, j) in related]
    unrel = [c[i, j] for i, j in pairs if (i, j) not in related]
    order = sorted(pairs, key=lambda p: -c[p])
    top = order[:len(RELATED_PAIRS)]
    return {"group_gap": float(np.mean(rel) - np.mean(unrel)), "top_hits": float(sum(p in related for p in top)),
            "top_pair_related": float(order[0] in related)}


def demo(out_dir: str | Path = "runs/demo/ccl", seed: int = 0, threads: int | None = None,
         epochs: int | None = None, arms: tuple[str, ...] = ("hard", "ccl")) -> DemoResult:
    """Hard labels vs CCL-Net (``arms`` may add ``"smoothing"``) on the phantom set of ``seed``."""
    set_cpu_threads(threads)
    out = Path(out_dir)
    t0 = time.perf_counter()
    root = _data(out, seed)
    over: dict[str, Any] = {"trainer.max_epochs": epochs} if epochs else {}
    rows = {arm: _run(root, arm, seed, out / arm, **over) for arm in dict.fromkeys(("hard", *arms, "ccl"))}
    _demo_report(out, rows)
    h, c = rows["hard"], rows["ccl"]
    headline = (f"test balanced accuracy: CCL {c['bal_acc']:.3f} vs hard labels {h['bal_acc']:.3f}"
                + "".join(f" vs {a} {r['bal_acc']:.3f}" for a, r in rows.items() if a not in ("hard", "ccl"))
                + f"; NLL {c['nll']:.2f} vs {h['nll']:.2f}")
    metrics = {f"{arm}_{k}": float(r[k]) for arm, r in rows.items() for k in METRICS}
    return DemoResult("ccl", headline, c["bal_acc"] > h["bal_acc"], time.perf_counter() - t0, out, metrics)


def _demo_report(out: Path, rows: dict[str, dict[str, Any]]) -> None:
    import matplotlib.pyplot as plt

    from medlearn.engine.report import Section, save_figure, write_report

    shown = ("bal_acc", "f1", "kappa", "nll", "ece")
    fig, axes = plt.subplots(1, len(shown), figsize=(2.6 * len(shown), 3))
    colors = {"hard": "#bb5566", "smoothing": "#ddaa33", "kd": "#999999", "ccl": "#228833"}
    for ax, k in zip(axes, shown):
        ax.bar(range(len(rows)), [r[k] for r in rows.values()], color=[colors.get(a, "#4477aa") for a in rows])
        ax.set_xticks(range(len(rows)), list(rows), rotation=30)
        ax.set_title(k + (" (lower better)" if k in ("nll", "ece") else ""), fontsize=9)
        ax.set_ylabel(f"test {k}", fontsize=8)
    fig.suptitle("Test metrics per arm (balanced test set)", fontsize=10)
    fig.tight_layout()
    png = save_figure(fig, out / "figures" / "arms.png")
    table = (["arm", *METRICS], [[ARMS[a], *[r[k] for k in METRICS]] for a, r in rows.items()])
    sections = [Section("Soft labels: hard vs label smoothing vs CCL-Net",
                        "Test set = the phantoms' balanced official Test split (200 per class), so accuracy = "
                        "balanced accuracy. Same backbone, data, split, optimiser and seed in every arm.", [png],
                        table=table)]
    if "ccl" in rows:
        figs = [out / "ccl" / "figures" / n for n in ("ccl_correlation.png", "ccl_soft_labels.png")]
        c = rows["ccl"]
        sections.append(Section(
            "Learned inter-class correlations", f"True super-groups: {SUPER_GROUPS} (class indices MEL=0 ... VASC=6). "
            f"Group gap (mean C related - unrelated) {c['group_gap']:+.2f}; {int(c['top_hits'])} of the "
            f"{len(RELATED_PAIRS)} largest correlations are related pairs.", [f for f in figs if f.is_file()]))
    write_report(out, "medlearn demo: CCL-Net", sections)


# ---------------------------------------------------------------------------------------------
def reproduce(out_dir: str | Path = "runs/reproduce/ccl", seeds: tuple[int, ...] = (0, 1, 2, 3, 4),
              arms: tuple[str, ...] = ("hard", "smoothing", "kd", "smoothing_strong", "ccl"),
              results_md: str | Path | None = "docs/results.md", threads: int | None = None,
              epochs: int | None = None, resume: bool = False) -> str:
    """Hard vs label smoothing (vs distillation) vs CCL-Net over ``seeds``, paired; returns the markdown.

    ``resume`` keeps the finished runs of an interrupted reproduction in ``out_dir``.
    """
    set_cpu_threads(threads)
    out = Path(out_dir)
    over = {"trainer.max_epochs": epochs} if epochs else {}
    order = [a for a in ARMS if a in arms and (a != "kd" or "hard" in arms)]  # kd distils the hard arm
    cfg = load_config(config_dir("ccl") / "demo.yaml", over)
    exp = Experiment(out, resume, meta={"seeds": list(seeds), "arms": order,
                                        "epochs": int(cfg["trainer"]["max_epochs"])},
                     total_runs=len(seeds) * len(order))

    def one(arm: str, seed: int) -> dict[str, Any]:
        hard = exp.find(arm="hard", seed=seed)
        teacher = Path(hard["best_ckpt"]) if arm == "kd" and hard else None
        return _run(_data(out, seed), arm, seed, out / f"{arm}-s{seed}", teacher=teacher, **over)

    for seed in seeds:
        for arm in order:
            exp.run({"arm": arm, "seed": seed}, partial(one, arm, seed),
                    valid=lambda r: Path(r["best_ckpt"]).is_file())  # a teacher checkpoint to distil
        shutil.rmtree(out / "data" / f"isic-synth-s{seed}", ignore_errors=True)
    return exp.publish("ccl", table_from_results, results_md)


def table_from_results(run: dict[str, Any]) -> str:
    """The markdown of a reproduction from its ``results.json`` content."""
    rows, seeds, arms = run["rows"], run["seeds"], run["arms"]
    lines = [f"Correlated-class skin-lesion phantoms (ISIC 2018 layout, 24 px, 7 classes in super-groups "
             f"{{MEL, NV, BCC}}, {{AKIEC, BKL}}, {{DF}}, {{VASC}}; imbalanced training set 960 images, balanced "
             f"test set 1400), mean ± sd over seeds {seeds}; per-seed values in brackets. Balanced test set: "
             "accuracy = balanced accuracy (mean recall).", "",
             "| arm | balanced acc | macro F1 | kappa | NLL (lower better) | ECE (lower better) |",
             "|---|---|---|---|---|---|"]
    for arm in arms:
        lines.append(f"| {ARMS[arm]} | " + " | ".join(mean_sd_cell(select(rows, k, arm=arm))
                                                    for k in ("bal_acc", "f1", "kappa", "nll", "ece")) + " |")

    def diff(a: str, b: str, k: str) -> Paired:
        return paired(rows, k, {"arm": a}, {"arm": b}, lower_is_better=k in ("nll", "ece"))

    pairs = [(a, b) for a, b in (("ccl", "hard"), ("ccl", "smoothing"), ("ccl", "kd"), ("ccl", "smoothing_strong"),
                                 ("smoothing", "hard"), ("kd", "hard"), ("smoothing_strong", "hard"))
             if a in arms and b in arms]
    lines += ["", "Paired differences (same phantom draw, split and seed); wins = seeds where the first arm is better "
              "(for NLL and ECE: lower):", "",
              "| comparison | balanced acc | macro F1 | NLL | ECE |", "|---|---|---|---|---|"]
    for a, b in pairs:
        cells = [diff(a, b, k).cell() for k in ("bal_acc", "f1", "nll", "ece")]
        lines.append(f"| {a} − {b} | " + " | ".join(cells) + " |")
    ccl = [r for r in rows if r["arm"] == "ccl"]
    if ccl:
        gaps = np.array([r["group_gap"] for r in ccl])
        hits = np.array([r["top_hits"] for r in ccl])
        top1 = np.array([r["top_pair_related"] for r in ccl])
        n_rel = len(RELATED_PAIRS)
        chance = n_rel * n_rel / 21
        lines += ["", f"Learned correlations C of the CCL runs vs the phantom's truly related pairs "
                  f"({n_rel} of 21: MEL-NV, MEL-BCC, NV-BCC, AKIEC-BKL):", "",
                  "| seed | group gap (mean C related − unrelated) | related pairs among the 4 largest C | "
                  "largest C on a related pair | mean soft-label mass on the true class q_y(y) |",
                  "|---|---|---|---|---|"]
        for r in sorted(ccl, key=lambda r: r["seed"]):
            c = np.asarray(r["corr"])
            k = c.shape[0]
            top = sorted(((i, j) for i in range(k) for j in range(i + 1, k)), key=lambda p: -c[p])[0]
            lines.append(f"| {r['seed']} | {r['group_gap']:+.3f} | {int(r['top_hits'])}/{n_rel} | "
                         f"{'yes' if r['top_pair_related'] else 'no'} ({_NAMES[top[0]]}-{_NAMES[top[1]]} "
                         f"{c[top]:+.2f}) | {_true_mass(c):.2f} |")
        mass = np.array([_true_mass(np.asarray(r["corr"])) for r in ccl])
        lines.append(f"| mean | {gaps.mean():+.3f} | {hits.mean():.1f}/{n_rel} (random ranking: {chance:.2f}) | "
                     f"{int(top1.sum())}/{len(top1)} | {mass.mean():.2f} (label smoothing 0.1: 0.91) |")
    lines += ["", "Reading (computed from the rows above):", ""]
    for a, b, claim in (("ccl", "hard", "CCL soft labels beat hard labels"),
                        ("ccl", "smoothing", "CCL soft labels beat label smoothing"),
                        ("ccl", "smoothing_strong", "CCL soft labels beat label smoothing of the same strength")):
        if a in arms and b in arms:
            n = diff(a, b, "nll")
            lines.append(diff(a, b, "bal_acc").reading(f"{claim} (balanced accuracy)", 0.01).rstrip(".")
                         + f"; NLL {n.mean:+.3f} ({'better' if n.mean < 0 else 'worse'} calibrated by NLL).")
    if ccl:
        lines.append(f"- Learned correlations fall on the truly related pairs: group gap {gaps.mean():+.3f} "
                     f"(> 0 on {int((gaps > 0).sum())}/{gaps.size} seeds), {hits.mean():.1f} of the {n_rel} largest "
                     f"are related vs {chance:.2f} for a random ranking -> "
                     + ("reproduced" if (gaps > 0).all() and hits.mean() > 2 * chance else
                        "partly" if hits.mean() > 1.5 * chance else "not reproduced (no better than a random "
                        "ranking)") + ".")
        lines.append(f"- The CCL targets put {mass.mean():.2f} of their mass on the true class on average (label "
                     "smoothing 0.1: 0.91): at this scale CCL acts as a strong, class-dependent smoothing whose "
                     "off-diagonal mass does not follow the planted super-groups; its accuracy gain comes with "
                     "under-confident predictions (higher NLL and ECE).")
    secs = np.array([r["seconds"] for r in rows])
    lines += ["", f"Setup: `configs/ccl/demo.yaml` (3-block CNN 16/32/64, Adam 1e-3 + cosine, batch 64, "
              f"{run['epochs']} epochs, input noise 0.2; CCL: d=4, s=16, t=4, softmax soft labels, detached CCL "
              "input, lambda_soft = lambda_dml = lambda_geo = 1, CCL block lr x10), model selection on the "
              "validation balanced accuracy (10 % of the training lesions), test on the best checkpoint. "
              f"{len(rows)} runs, {secs.mean():.0f} s each on average; total wall time "
              f"{run['seconds'] / 60:.1f} min on this machine (2 shared CPU cores, {run.get('threads', 1)} torch "
              "thread(s))."]
    return "\n".join(lines)


_NAMES = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")


def _true_mass(corr: np.ndarray, temperature: float = 4.0) -> float:
    """Mean over classes of ``q_y(y)`` for the softmax soft labels of ``corr``."""
    q = np.exp(temperature * (corr - corr.max(axis=1, keepdims=True)))
    q = q / q.sum(axis=1, keepdims=True)
    return float(np.diag(q).mean())
