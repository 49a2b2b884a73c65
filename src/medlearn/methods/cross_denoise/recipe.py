"""Cross-denoising demo and CPU-scale reproduction.

Both write two-camera fundus phantoms in the REFUGE layout with ``medlearn synth fundus``'s
generator (:func:`medlearn.synth.fundus.write_refuge`: 80 source-camera training images, half of
their masks corrupted; 60 unlabelled target-camera images; 60 target test and 60 clean
source-camera test images; 48 x 48 px), read them back through the REFUGE reader and the
two-domain DataModule, and run ``configs/cross_denoise/demo.yaml`` with ``arm`` switched, so every
arm has the same data, batches, optimiser, schedule and initialisation seed.

- demo: single network vs two independent networks vs CDN on one phantom draw, then
  ``medlearn predict`` on the target test folder (``Test400``) writes REFUGE-encoded masks and
  overlays, scored against ``REFUGE-Test-GT``; passed = CDN beats the single network in target
  Dice (mean of disc and cup, per-network mean).
- reproduce: every arm (:data:`~medlearn.methods.cross_denoise.module.ARMS`) on >= 3 seeds (new
  phantom draw, corruption and initialisation per seed), paired by seed; the table goes to
  ``docs/results.md``.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from medlearn.engine.config import load_config
from medlearn.engine.experiment import Experiment, Paired, mean_sd_cell, paired, select
from medlearn.engine.run import fit_from_config, predict_from_config
from medlearn.engine.trainer import set_cpu_threads
from medlearn.methods.cross_denoise.module import ARM_LABELS, CrossDenoise
from medlearn.registry import DemoResult, config_dir
from medlearn.synth.fundus import write_refuge

__all__ = ["demo", "reproduce", "write_contract_data", "table_from_results", "score_masks", "REPRODUCE_ARMS"]

#: Arms of the reproduction, in table order.
REPRODUCE_ARMS = ("single", "indep", "coteach", "cdn_no_nt", "cdn_no_pl", "cdn", "pl_only")
_QUIET = (r".*Total length of `list` across ranks is zero.*",)
#: Torch threads of the recipes unless ``threads`` or ``MEDLEARN_THREADS`` say otherwise. The peers are tiny
#: U-Nets on 48 px images whose convolutions gain little from a second thread. Measured on the 2-core
#: development machine (one 40-epoch CDN run of the demo config, seed 0, with the wait policy
#: ``medlearn.runtime`` picks at import): both cores free, 1 thread 27.3-27.5 s (3 runs) and 2 threads
#: 24.4-24.6 s (2 runs, spinning), so 2 threads are 11 % faster. Another process on one core from the start:
#: 1 thread 27.4 s, 2 threads 52.8 s (passive waiting). Cores free at the start and one of them taken 5 s
#: later: 2 threads 91.8 s (still spinning). The recipes run on shared machines, where one thread costs at
#: most 11 % and two can cost 2-3x. One thread also makes the documented numbers independent of the core
#: count, because float sums depend on the thread count: seed 0 scored target Dice disc / cup
#: 0.8006 / 0.3704 with 1 thread and 0.7990 / 0.3678 with 2.
RECIPE_THREADS = 1


def _set_threads(threads: int | None) -> None:
    if threads is None and not os.environ.get("MEDLEARN_THREADS", "").strip():
        threads = RECIPE_THREADS
    set_cpu_threads(threads)


def write_contract_data(folder: Path) -> Path:
    """A tiny REFUGE-layout phantom set for the contract tests."""
    return write_refuge(Path(folder) / "fundus", n_train=16, n_target=8, n_test=8, n_source_test=8, seed=1,
                        overwrite=True)


def _data(out: Path, seed: int) -> Path:
    root = out / "data" / f"fundus-synth-s{seed}"
    if not (root / "README.txt").is_file():
        write_refuge(root, seed=seed, overwrite=True)
    return root


def _cfg(root: Path, arm: str, seed: int, **over: Any) -> dict[str, Any]:
    return load_config(config_dir("cross_denoise") / "demo.yaml", {
        "data.init_args.root": str(root), "data.init_args.split_seed": seed, "seed_everything": seed,
        "model.init_args.arm": arm, **over})


def _run(root: Path, arm: str, seed: int, run_dir: Path, **over: Any) -> dict[str, Any]:
    with warnings.catch_warnings():
        for pattern in _QUIET:
            warnings.filterwarnings("ignore", message=pattern)
        r = fit_from_config(_cfg(root, arm, seed, **over), run_dir, prefix=f"[{arm} s={seed}] ")
    shutil.rmtree(run_dir / "tb", ignore_errors=True)
    row: dict[str, Any] = {"arm": arm, "seed": seed, "seconds": r.seconds,
                           **{k.removeprefix("test/"): float(v) for k, v in r.test.items()}}
    assert isinstance(r.model, CrossDenoise)
    late = [h for h in r.model.history if "drop_precision" in h and h["epoch"] >= r.model.hparams.t_k]
    if late:
        row["drop_precision"] = float(np.mean([h["drop_precision"] for h in late]))
        row["drop_recall"] = float(np.nanmean([h.get("drop_recall", np.nan) for h in late]))
    row["last_ckpt"] = str(r.last_ckpt)
    return row


def score_masks(pred_dir: Path, root: Path) -> dict[str, float]:
    """Dice of disc and cup of the REFUGE-encoded masks ``medlearn predict`` wrote, against ``REFUGE-Test-GT``."""
    from medlearn.data.refuge import RefugeMask, refuge_mask_path

    dice: dict[str, list[float]] = {"disc": [], "cup": []}
    for mask in sorted((pred_dir / "masks").rglob("*.bmp")):
        pred = RefugeMask(mask).load()
        true = RefugeMask(refuge_mask_path(root, "test", mask.with_suffix(".jpg").name)).load()
        for name, values in (("disc", (1, 2)), ("cup", (2,))):
            p, t = np.isin(pred, values), np.isin(true, values)
            s = p.sum() + t.sum()
            dice[name].append(1.0 if s == 0 else 2.0 * float((p & t).sum()) / float(s))
    return {f"dice_{k}": float(np.mean(v)) if v else float("nan") for k, v in dice.items()} | {
        "n": float(len(dice["disc"]))}


def demo(out_dir: str | Path = "runs/demo/cross_denoise", seed: int = 0, threads: int | None = None,
         epochs: int | None = None, arms: tuple[str, ...] = ("single", "indep", "cdn")) -> DemoResult:
    """Single network vs two independent networks vs CDN on the phantoms of ``seed``, then ``medlearn predict``."""
    _set_threads(threads)
    out = Path(out_dir)
    t0 = time.perf_counter()
    root = _data(out, seed)
    over: dict[str, Any] = {"trainer.max_epochs": epochs} if epochs else {}
    order = list(dict.fromkeys(("single", *arms, "cdn")))
    rows = {arm: _run(root, arm, seed, out / arm, **over) for arm in order}
    cfg = load_config(config_dir("cross_denoise") / "demo_predict.yaml", {
        "data.init_args.predict_root": str(root / "Test400")})  # as `medlearn predict --config ...` runs it
    pred_dir = predict_from_config(cfg, out / "predict", ckpt_path=rows["cdn"]["last_ckpt"])
    scored = score_masks(pred_dir, root)
    _demo_report(out, rows, pred_dir, scored)
    c, s = rows["cdn"], rows["single"]
    headline = (f"target Dice disc / cup: CDN {c['target_dice_disc']:.3f} / {c['target_dice_cup']:.3f} vs single "
                f"{s['target_dice_disc']:.3f} / {s['target_dice_cup']:.3f}"
                + (f" vs two independent nets {rows['indep']['target_dice_disc']:.3f} / "
                   f"{rows['indep']['target_dice_cup']:.3f}" if "indep" in rows else "")
                + f"; predict: {int(scored['n'])} REFUGE masks, Dice {scored['dice_disc']:.3f} / "
                  f"{scored['dice_cup']:.3f}")
    metrics = {f"{arm}_{k}": float(r[k]) for arm, r in rows.items() for k in r
               if k.startswith(("target_", "source_"))}
    metrics.update({f"predict_{k}": v for k, v in scored.items()})
    return DemoResult("cross_denoise", headline, c["target_dice_mean"] > s["target_dice_mean"],
                      time.perf_counter() - t0, out, metrics)


def _demo_report(out: Path, rows: dict[str, dict[str, Any]], pred_dir: Path, scored: dict[str, float]) -> None:
    import matplotlib.pyplot as plt

    from medlearn.engine.report import Section, save_figure, write_report

    colors = {"single": "#bb5566", "indep": "#ddaa33", "cdn": "#228833"}
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for ax, role in zip(axes, ("target", "source")):
        for i, (arm, r) in enumerate(rows.items()):
            vals = [r[f"{role}_dice_disc"], r[f"{role}_dice_cup"]]
            ax.bar(np.arange(2) + (i - (len(rows) - 1) / 2) * 0.25, vals, 0.24, label=ARM_LABELS[arm],
                   color=colors.get(arm, "#4477aa"))
        ax.set_xticks([0, 1], ["optic disc", "optic cup"])
        ax.set_title(f"{role} test ({'shifted camera' if role == 'target' else 'clean labels, training camera'})",
                     fontsize=9)
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("Dice (per-network mean)")
    axes[1].legend(fontsize=7, loc="upper right")  # above the short cup bars, clear of every bar
    png = save_figure(fig, out / "figures" / "arms.png")
    cols = ["target_dice_disc", "target_dice_cup", "target_vcdr_err", "source_dice_disc", "source_dice_cup"]
    table = (["arm", "target Dice disc", "target Dice cup", "target vCDR error", "source Dice disc", "source Dice cup",
              "target ensemble Dice disc / cup"],
             [[ARM_LABELS[a], *[r[k] for k in cols],
               f"{r['target/ens/dice_disc']:.3f} / {r['target/ens/dice_cup']:.3f}" if "target/ens/dice_disc" in r
               else "-"] for a, r in rows.items()])
    sections = [Section(
        "Corrupted source labels + camera shift: single vs two independent networks vs CDN",
        "Phantoms in the REFUGE layout: 80 source-camera training images with half of the masks corrupted "
        "(dilation / erosion / shift), 60 unlabelled target-camera images, 60 target test images, 60 clean "
        "source test images. Same data, batches, optimiser and seed in every arm; the last checkpoint is tested. "
        "Two-network arms: mean of the two networks (the ensemble in the last column).", [png], table=table)]
    for arm in rows:
        figs = [p for p in (out / arm / "figures" / "test_target_examples.png",
                            out / arm / "figures" / "selection.png") if p.is_file()]
        if figs:
            sections.append(Section(f"{ARM_LABELS[arm]}: target test examples", f"details: {arm}/report.html", figs))
    overlays = sorted((pred_dir / "overlays").glob("*.png"))[:6]
    if overlays:
        import matplotlib.image as mpimg

        fig, axs = plt.subplots(1, len(overlays), figsize=(2.2 * len(overlays), 2.6))
        for ax, p in zip(np.atleast_1d(axs), overlays):
            ax.imshow(mpimg.imread(p), interpolation="nearest")
            ax.set_title(p.stem, fontsize=8)
            ax.axis("off")
        grid = save_figure(fig, out / "figures" / "predict_overlays.png")
        sections.append(Section(
            "medlearn predict on the target test folder",
            "CDN (ensemble of both networks) on Test400/: masks in the REFUGE encoding (255 background, 128 rim, "
            f"0 cup) in predict/masks/, overlays in predict/overlays/ (green: disc, blue: cup). Scored against "
            f"REFUGE-Test-GT: Dice disc {scored['dice_disc']:.3f}, cup {scored['dice_cup']:.3f} over "
            f"{int(scored['n'])} images.", [grid]))
    write_report(out, "medlearn demo: cross-denoising network (corrupted labels + domain shift)", sections)


# ---------------------------------------------------------------------------------------------
def reproduce(out_dir: str | Path = "runs/reproduce/cross_denoise", seeds: tuple[int, ...] = (0, 1, 2, 3, 4),
              arms: tuple[str, ...] = REPRODUCE_ARMS, results_md: str | Path | None = "docs/results.md",
              threads: int | None = None, epochs: int | None = None, resume: bool = False) -> str:
    """Every arm over ``seeds``, paired by seed; returns the markdown (also written to ``results_md``).

    Per seed: a new phantom draw (geometry, styles, which masks are corrupted and how), the same
    for every arm, and ``seed_everything(seed)`` before each arm. ``resume`` keeps the finished runs
    of an interrupted reproduction in ``out_dir``.
    """
    _set_threads(threads)
    out = Path(out_dir)
    over = {"trainer.max_epochs": epochs} if epochs else {}
    cfg = load_config(config_dir("cross_denoise") / "demo.yaml", over)
    order = [a for a in REPRODUCE_ARMS if a in arms]
    exp = Experiment(out, resume, meta={"seeds": list(seeds), "arms": order,
                                        "epochs": int(cfg["trainer"]["max_epochs"]),
                                        "model": {k: cfg["model"]["init_args"][k] for k in (
                                            "tau_max", "t_k", "nt_filter", "nt_q", "pl_p_start", "pl_p_end",
                                            "lambda_u", "lr", "weight_decay", "widths")}},
                     total_runs=len(seeds) * len(order))
    def one(arm: str, seed: int) -> dict[str, Any]:
        return _run(_data(out, seed), arm, seed, out / f"{arm}-s{seed}", **over)

    for seed in seeds:
        for arm in order:
            exp.run({"arm": arm, "seed": seed}, partial(one, arm, seed))
        shutil.rmtree(out / "data" / f"fundus-synth-s{seed}", ignore_errors=True)
    return exp.publish("cross_denoise", table_from_results, results_md)


def table_from_results(run: dict[str, Any]) -> str:
    """The markdown of a reproduction from its ``results.json`` content."""
    rows, seeds, arms = run["rows"], run["seeds"], run["arms"]
    m = run.get("model", {})
    lines = [f"Two-camera fundus phantoms (REFUGE layout, 48 x 48 px): 80 source-camera training images with 50 % of "
             f"the masks corrupted, 60 unlabelled target-camera images; scored on 60 target test images and 60 clean "
             f"source test images. Mean ± sd over seeds {seeds}, per-seed values in brackets. Two-network arms: the "
             "mean of the two networks' scores (\"per net\") and the softmax ensemble of both (\"ens\").", "",
             "| arm | target Dice disc (per net) | target Dice cup (per net) | target vCDR error (per net) | "
             "target Dice disc / cup (ens) | clean source Dice disc (per net) | clean source Dice cup (per net) |",
             "|---|---|---|---|---|---|---|"]
    for arm in arms:
        cells = [mean_sd_cell(select(rows, k, arm=arm)) for k in ("target_dice_disc", "target_dice_cup",
                                                                  "target_vcdr_err")]
        ens_d, ens_c = select(rows, "target/ens/dice_disc", arm=arm) if arm != "single" else np.array([]), \
            select(rows, "target/ens/dice_cup", arm=arm) if arm != "single" else np.array([])
        ens = f"{ens_d.mean():.3f} / {ens_c.mean():.3f}" if ens_d.size else "-"
        src = [mean_sd_cell(select(rows, k, arm=arm)) for k in ("source_dice_disc", "source_dice_cup")]
        lines.append(f"| {ARM_LABELS[arm]} | " + " | ".join([*cells, ens, *src]) + " |")

    def diff(a: str, b: str, k: str, kb: str | None = None) -> Paired:
        if kb is None:
            return paired(rows, k, {"arm": a}, {"arm": b}, lower_is_better=k.endswith("vcdr_err"))
        va = {r["seed"]: r[k] for r in rows if r["arm"] == a and k in r}
        vb = {r["seed"]: r[kb] for r in rows if r["arm"] == b and kb in r}
        common = sorted(set(va) & set(vb))
        return Paired(np.array([va[s] - vb[s] for s in common], dtype=float))

    pairs = [(a, b) for a, b in (("cdn", "single"), ("cdn", "indep"), ("coteach", "indep"), ("cdn_no_nt", "indep"),
                                 ("cdn_no_pl", "indep"), ("cdn", "cdn_no_nt"), ("cdn", "cdn_no_pl"),
                                 ("pl_only", "indep"), ("cdn", "pl_only")) if a in arms and b in arms]
    lines += ["", "Paired differences (same phantom draw, corruption and seed; per-network mean; wins = seeds where "
              "the first arm is better, for the vCDR error: lower):", "",
              "| comparison | target Dice disc | target Dice cup | target vCDR error | clean source Dice disc | "
              "clean source Dice cup |", "|---|---|---|---|---|---|"]
    for a, b in pairs:
        cells = [diff(a, b, k).cell() for k in ("target_dice_disc", "target_dice_cup", "target_vcdr_err",
                                               "source_dice_disc", "source_dice_cup")]
        lines.append(f"| {a} − {b} | " + " | ".join(cells) + " |")
    if "cdn" in arms and "indep" in arms:
        cells = [diff("cdn", "indep", f"target/ens/{k}", f"target/ens/{k}").cell() for k in ("dice_disc", "dice_cup")]
        lines.append(f"| cdn ensemble − indep ensemble | {cells[0]} | {cells[1]} | | | |")
    if "cdn" in arms and "single" in arms:
        cells = [diff("cdn", "single", f"target/ens/{k}", f"target_{k}").cell() for k in ("dice_disc", "dice_cup")]
        lines.append(f"| cdn ensemble − single | {cells[0]} | {cells[1]} | | | |")
    sel = [r for r in rows if "drop_precision" in r]
    if sel:
        lines += ["", "Peer selection on the source batches after the ramp (epochs >= T_k): share of the dropped "
                  "images whose mask is corrupted (precision; chance = 0.50) and share of the corrupted images dropped "
                  "(recall; at most tau_max / 0.5 = 0.50 when every dropped image is corrupted):", "",
                  "| arm | precision | recall |", "|---|---|---|"]
        for arm in arms:
            p = select(sel, "drop_precision", arm=arm)
            if p.size:
                lines.append(f"| {ARM_LABELS[arm]} | {mean_sd_cell(p)} | "
                             f"{mean_sd_cell(select(sel, 'drop_recall', arm=arm))} |")
    lines += ["", "Reading (computed from the rows above; margin 0.01 Dice):", ""]

    def both(a: str, b: str, claim: str) -> None:
        if a in arms and b in arms:
            d, c = diff(a, b, "target_dice_disc"), diff(a, b, "target_dice_cup")
            lines.append(d.reading(f"{claim}, target Dice disc", 0.01).rstrip(".") + f"; cup: mean {c.mean:+.3f}, "
                         f"{c.wins}/{c.n} seeds -> {c.verdict(0.01)}.")

    both("cdn", "single", "CDN beats a single network on the shifted target (the spec's verification claim)")
    both("cdn", "indep", "CDN beats two independent networks (per network)")
    if "cdn" in arms and "indep" in arms:
        d = diff("cdn", "indep", "target/ens/dice_disc", "target/ens/dice_disc")
        c = diff("cdn", "indep", "target/ens/dice_cup", "target/ens/dice_cup")
        lines.append(d.reading("CDN's ensemble beats the two independent networks' ensemble (gain beyond "
                               "ensembling), target Dice disc", 0.01).rstrip(".")
                     + f"; cup: mean {c.mean:+.3f}, {c.wins}/{c.n} seeds -> {c.verdict(0.01)}.")
    both("coteach", "indep", "Peer selection alone (co-teaching) helps")
    both("cdn", "cdn_no_nt", "The noise-tolerant loss adds to selection + pseudo-labels")
    both("cdn", "cdn_no_pl", "The class-balanced cross pseudo-labels add to selection + noise-tolerant loss")
    both("cdn", "pl_only", "The denoising parts add to cross pseudo-labels alone")
    if "cdn" in arms and "single" in arms:
        d = diff("cdn", "single", "source_dice_disc")
        lines.append(f"- Clean source domain, CDN − single: Dice disc {d.mean:+.3f} ({d.wins}/{d.n} seeds), cup "
                     f"{diff('cdn', 'single', 'source_dice_cup').mean:+.3f} (the spec's pilot saw CDN lose about 4 "
                     "points here).")
    secs = np.array([r["seconds"] for r in rows])
    lines += ["", f"Setup: `configs/cross_denoise/demo.yaml`: MONAI U-Net {m.get('widths', [8, 16, 32])} with batch "
              f"normalisation per network, per-image z-scored inputs, horizontal flips; Adam lr {m.get('lr')} wd "
              f"{m.get('weight_decay')}, cosine, batch 8 source + 8 target images, {run['epochs']} epochs, the last "
              f"checkpoint tested; tau_max {m.get('tau_max')} ramped over T_k = {m.get('t_k')} epochs, per-image "
              f"selection; noise-tolerant loss {m.get('nt_filter')} q = {m.get('nt_q')}; pseudo-labels from epoch "
              f"T_k, p_c {m.get('pl_p_start')} -> {m.get('pl_p_end')}, lambda_u {m.get('lambda_u')}. {len(rows)} runs, "
              f"{secs.mean():.0f} s each on average; total wall time {run['seconds'] / 60:.1f} min on this machine "
              f"(2 shared CPU cores, {run.get('threads', 1)} torch thread(s))."]
    return "\n".join(lines)
