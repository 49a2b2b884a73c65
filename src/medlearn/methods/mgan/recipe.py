"""MGAN demo and CPU-scale reproduction on brain phantoms written in the BraTS layout.

Both write synthetic four-contrast brain MR volumes with tumour labels in the BraTS layout
(``medlearn synth brats``), read them back through the BraTS reader as 32 px axial slices
(:class:`~medlearn.data.mr_slices.MRSliceDataModule`) and run the configs in ``configs/mgan/``:

- an independent tumour evaluator trained on *real* slices of separate phantoms
  (``demo_evaluator.yaml``), the instrument that scores how well the tumour survives synthesis;
- the arms, same data, split and seed: **pix2pix x3** (one unconditional model per contrast,
  ``demo_pix2pix.yaml``), **MGAN** (one conditional generator, ``demo.yaml`` with ``lambda_tc 0``)
  and **TC-MGAN** (``demo.yaml``). Every model trains the same number of epochs, so MGAN spends a
  third of pix2pix x3's generator updates per contrast (the paper's efficiency argument).

The demo also runs ``medlearn predict`` on new T2-only cases and checks the written NIfTI volumes
(grid, affine, names). The reproduction repeats the arms over seeds (``Experiment``, resumable)
and writes its table and readings into ``docs/results.md``.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from medlearn.engine.config import load_config
from medlearn.engine.experiment import Experiment, mean_sd_cell, paired, select
from medlearn.engine.run import fit_from_config, predict_from_config
from medlearn.engine.trainer import set_cpu_threads
from medlearn.registry import DemoResult, config_dir
from medlearn.synth.brats import write_brats

__all__ = ["ARMS", "CONTRASTS", "demo", "reproduce", "table_from_results", "write_contract_data"]

#: Target contrasts in MGAN's code order.
CONTRASTS = ("flair", "t1ce", "t1")
#: Arms: name -> label.
ARMS: dict[str, str] = {
    "pix2pix": "pix2pix x3 (one model per contrast)",
    "mgan": "MGAN (one conditional generator)",
    "tcmgan": "TC-MGAN (+ tumour-consistency loss)",
}
_NAMES = {"flair": "FLAIR", "t1ce": "T1ce", "t1": "T1"}
#: Epochs of the independent evaluator (about 1 s each on 2 cores).
EVALUATOR_EPOCHS = 20


def write_contract_data(folder: Path) -> Path:
    """A tiny BraTS-layout phantom set for the contract tests."""
    return write_brats(Path(folder) / "brats", n_cases=6, size=32, seed=1, overwrite=True)


def _data(out: Path, name: str, n_cases: int, seed: int, size: int = 48) -> Path:
    root = out / "data" / name
    if not (root / "README.txt").is_file():
        write_brats(root, n_cases=n_cases, size=size, seed=seed, overwrite=True)
    return root


def _cfg(config: str, root: Path, seed: int, **over: Any) -> dict[str, Any]:
    return load_config(config_dir("mgan") / config, {"data.init_args.root": str(root), "seed_everything": seed,
                                                     **over})


def _evaluator(out: Path, root: Path, epochs: int) -> Path:
    """Train (or reuse) the independent tumour evaluator; returns its best checkpoint."""
    run = out / "evaluator"
    best = run / "checkpoints" / "best.ckpt"
    if not best.is_file():
        r = fit_from_config(_cfg("demo_evaluator.yaml", root, 0, **{"trainer.max_epochs": epochs}), run,
                            test=False, prefix="[evaluator] ")
        best = r.best_ckpt or r.last_ckpt
    return best


def _row(test: dict[str, float]) -> dict[str, float]:
    """The reading values of one arm's test record (``test/`` prefix dropped)."""
    t = {k.removeprefix("test/"): v for k, v in test.items()}
    row: dict[str, float] = {}
    for c in CONTRASTS:
        for key in ("psnr", "psnr_brain", "ssim_brain", "mae_brain", "psnr_tumour", "ssim_tumour", "mae_tumour"):
            if f"{c}/{key}" in t:
                row[f"{key}_{c}"] = t[f"{c}/{key}"]
        for key in (f"dice_{c}", f"dice_{c}_real"):
            if key in t:
                row[key] = t[key]
    if "dice_t2" in t:
        row["dice_t2"] = t["dice_t2"]
    return row


def _average(row: dict[str, float]) -> dict[str, float]:
    keys = ("psnr", "psnr_brain", "ssim_brain", "mae_brain", "psnr_tumour", "ssim_tumour", "mae_tumour")
    out = dict(row)
    for key in keys:
        vals = [row[f"{key}_{c}"] for c in CONTRASTS if f"{key}_{c}" in row]
        out[key] = float(np.mean(vals)) if vals else math.nan
    dice = [row[f"dice_{c}"] for c in CONTRASTS if f"dice_{c}" in row]
    out["dice"] = float(np.mean(dice)) if dice else math.nan
    real = [row[f"dice_{c}_real"] for c in CONTRASTS if f"dice_{c}_real" in row]
    out["dice_real"] = float(np.mean(real)) if real else math.nan
    return out


def _train_arm(arm: str, seed: int, root: Path, evaluator: Path, epochs: int, out: Path,
               val_every: int = 1) -> dict[str, Any]:
    """Train one arm (pix2pix: its three models) and return its test readings, time and size.

    ``val_every``: validate every that many epochs (the GAN keeps its last checkpoint, so validation
    only feeds the curves; the reproduction validates rarely to save time).
    """
    over = {"trainer.max_epochs": epochs, "model.init_args.evaluator": str(evaluator),
            "trainer.check_val_every_n_epoch": val_every}
    row: dict[str, float] = {}
    seconds, params, last = 0.0, 0, {}
    if arm == "pix2pix":
        for c in CONTRASTS:
            r = fit_from_config(_cfg("demo_pix2pix.yaml", root, seed, **over, **{"model.init_args.synthesise": [c]}),
                                out / f"pix2pix-{c}-s{seed}", prefix=f"[pix2pix {c} s={seed}] ")
            row.update(_row(r.test))
            seconds += r.seconds
            params += _generator_params(r.model)
            last[c] = r.run_dir
    else:
        if arm == "mgan":
            extra: dict[str, Any] = {"model.init_args.lambda_tc": 0.0, "model.init_args.seg_pretrain_epochs": 0}
        else:  # the segmentor's pre-training epochs come on top: as many GAN iterations as MGAN
            pre = int(load_config(config_dir("mgan") / "demo.yaml")["model"]["init_args"]["seg_pretrain_epochs"])
            extra = {"trainer.max_epochs": epochs + pre}
        r = fit_from_config(_cfg("demo.yaml", root, seed, **{**over, **extra}), out / f"{arm}-s{seed}",
                            prefix=f"[{arm} s={seed}] ")
        row.update(_row(r.test))
        seconds = r.seconds
        params = _generator_params(r.model)
        last["all"] = r.run_dir
    result: dict[str, Any] = _average(row)
    result.update({"seconds": seconds, "generator_params": params, "runs": {k: str(v) for k, v in last.items()}})
    return result


def _generator_params(model: Any) -> int:
    return int(sum(p.numel() for p in model.generator.parameters()))


# ------------------------------------------------------------------------------------------ demo
def _t2_only_cases(out: Path, n: int) -> Path:
    """New phantom cases of which only the T2 file is kept (what ``predict`` gets in practice)."""
    root = out / "data" / "t2-only"
    if not (root / "README.txt").is_file():
        write_brats(root, n_cases=n, size=48, seed=2000, overwrite=True)
        full = out / "data" / "t2-only-reference"
        if full.exists():
            shutil.rmtree(full)
        shutil.copytree(root, full)
        for case in sorted(p for p in root.iterdir() if p.is_dir()):
            for f in case.iterdir():
                if not f.name.endswith("_t2.nii.gz"):
                    f.unlink()
    return root


def _predict(ckpt: Path, cases: Path, run_dir: Path) -> Path:
    cfg = load_config(config_dir("mgan") / "demo_predict.yaml", {"data.init_args.predict_root": str(cases)})
    return predict_from_config(cfg, run_dir, ckpt_path=ckpt)


def _check_predictions(pred: Path, cases: Path, reference: Path) -> dict[str, float]:
    """Check every case has the three synthesised contrasts on T2's grid and affine; their brain MAE to
    the real (withheld) contrast after per-volume max scaling.
    """
    from medlearn.io import read_image

    errors: list[float] = []
    n = 0
    for case in sorted(p.name for p in cases.iterdir() if p.is_dir()):
        t2, meta = read_image(cases / case / f"{case}_t2.nii.gz")
        for c in CONTRASTS:
            syn, m2 = read_image(pred / case / f"{case}_{c}.nii.gz")
            if syn.shape != t2.shape or not np.allclose(m2["affine"], meta["affine"]):
                raise AssertionError(f"{case}_{c}: written on another grid than its T2")
            real, _ = read_image(reference / case / f"{case}_{c}.nii.gz")
            brain = t2 > 0
            errors.append(float(np.abs(syn / max(syn.max(), 1e-6) - real / real.max())[brain].mean()))
            n += 1
    return {"predicted_volumes": float(n), "predicted_mae_brain": float(np.mean(errors)) if errors else math.nan}


def demo(out_dir: str | Path = "runs/demo/mgan", n_cases: int = 40, epochs: int = 15, threads: int | None = None
         ) -> DemoResult:
    """pix2pix x3 vs MGAN vs TC-MGAN on phantoms, scored by an independent evaluator; predict on T2-only cases.

    Args:
        out_dir: where the data and the run folders go.
        n_cases: phantom cases of the GAN set (split by case into train / val / test).
        epochs: epochs of every GAN model.
        threads: torch threads (default: :func:`medlearn.runtime.default_threads`).
    """
    set_cpu_threads(threads)
    out = Path(out_dir)
    t0 = time.perf_counter()
    root = _data(out, "brats-gan", n_cases, seed=0)
    evaluator = _evaluator(out, _data(out, "brats-eval", max(10, n_cases // 2), seed=1000), epochs=EVALUATOR_EPOCHS)
    rows = {arm: _train_arm(arm, 0, root, evaluator, epochs, out) for arm in ARMS}
    cases = _t2_only_cases(out, 3)
    tc_run = Path(rows["tcmgan"]["runs"]["all"])
    pred = _predict(tc_run / "checkpoints" / "last.ckpt", cases, out / "predict")
    checks = _check_predictions(pred, cases, out / "data" / "t2-only-reference")
    m = {f"{k}_{arm}": float(v) for arm, r in rows.items() for k, v in r.items()
         if isinstance(v, (int, float))}
    m.update(checks)
    _demo_report(out, rows, checks, tc_run, pred)
    headline = (f"evaluator tumour Dice on synthesised slices: TC-MGAN {m['dice_tcmgan']:.3f}, MGAN "
                f"{m['dice_mgan']:.3f}, pix2pix x3 {m['dice_pix2pix']:.3f} (T2 alone {m['dice_t2_tcmgan']:.3f}, "
                f"real {m['dice_real_tcmgan']:.3f}); brain PSNR {m['psnr_brain_tcmgan']:.1f} / "
                f"{m['psnr_brain_mgan']:.1f} / {m['psnr_brain_pix2pix']:.1f} dB; "
                f"predict wrote {int(checks['predicted_volumes'])} NIfTI volumes")
    return DemoResult("mgan", headline, m["dice_tcmgan"] > m["dice_mgan"], time.perf_counter() - t0, out, m)


def _demo_report(out: Path, rows: dict[str, dict[str, Any]], checks: dict[str, float], tc_run: Path,
                 pred: Path) -> None:
    import matplotlib.pyplot as plt

    from medlearn.engine.report import Section, save_figure, write_report
    from medlearn.io import read_image

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    colours = {"pix2pix": "#bb5566", "mgan": "#4477aa", "tcmgan": "#228833"}
    x = np.arange(len(CONTRASTS))
    for ax, (key, label) in zip(axes, (("psnr_brain", "brain PSNR, dB"), ("mae_tumour", "tumour MAE"),
                                       ("dice", "evaluator tumour Dice"))):
        for i, arm in enumerate(ARMS):
            vals = [rows[arm].get(f"{key}_{c}" if key != "dice" else f"dice_{c}", math.nan) for c in CONTRASTS]
            ax.bar(x + (i - 1) * 0.27, vals, 0.26, color=colours[arm], label=ARMS[arm])
        if key == "dice":
            ax.axhline(rows["tcmgan"].get("dice_t2", math.nan), color="k", ls=":", lw=1, label="T2 alone")
            ax.axhline(rows["tcmgan"].get("dice_real", math.nan), color="k", ls="--", lw=1, label="real contrast")
        ax.set_xticks(x, [_NAMES[c] for c in CONTRASTS])
        ax.set_title(label, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[2].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    bars = save_figure(fig, out / "figures" / "arms.png")

    header = ["arm", "generator params", "train s", *[f"{_NAMES[c]} PSNR brain / SSIM brain / tumour MAE / Dice"
                                                      for c in CONTRASTS]]
    table = [[ARMS[a], int(r["generator_params"]), round(float(r["seconds"]), 1),
              *[f"{r.get(f'psnr_brain_{c}', math.nan):.2f} / {r.get(f'ssim_brain_{c}', math.nan):.3f} / "
                f"{r.get(f'mae_tumour_{c}', math.nan):.3f} / {r.get(f'dice_{c}', math.nan):.3f}" for c in CONTRASTS]]
             for a, r in rows.items()]
    case = sorted(p.name for p in pred.iterdir() if p.is_dir())[0]
    vols = {c: read_image(pred / case / f"{case}_{c}.nii.gz")[0][0] for c in ("t2", *CONTRASTS)}
    z = int(np.argmax((vols["t2"] > 0).sum((0, 1))))
    fig, axes = plt.subplots(1, 4, figsize=(9, 2.6))
    for ax, c in zip(axes, ("t2", *CONTRASTS)):
        ax.imshow(np.rot90(vols[c][:, :, z]), cmap="gray")
        ax.set_title(("T2 (input)" if c == "t2" else f"{_NAMES[c]} (written)"), fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    pred_png = save_figure(fig, out / "figures" / "predicted_case.png")
    samples = sorted((tc_run / "figures").glob("test_samples.png"))
    sections = [
        Section("pix2pix x3 vs MGAN vs TC-MGAN", "Same phantoms, case split and seed; test slices (32 px, [0, 1]). "
                "Brain PSNR, tumour MAE, and the whole-tumour Dice of an independent segmenter trained only on real "
                "slices of other phantoms, applied to each synthesised contrast (tumour-bearing slices). MGAN and "
                "TC-MGAN train one generator for the three contrasts: a third of pix2pix x3's generator updates "
                "per contrast.", [bars], table=(header, table)),
        Section("TC-MGAN test slices", "Rows: test slices with the most tumour; T2 input, tumour mask, then "
                "synthesised next to real per contrast.", samples),
        Section("medlearn predict on T2-only cases", f"Three new phantom cases with only their T2 file; predict "
                f"wrote {int(checks['predicted_volumes'])} volumes (FLAIR, T1ce, T1) on each T2's grid and affine, "
                f"beside a copy of the T2 (predict/<case>/). Brain MAE against the withheld real contrasts (each "
                f"volume scaled by its maximum): {checks['predicted_mae_brain']:.3f}. Middle slice of the first case:",
                [pred_png]),
    ]
    for arm, r in rows.items():
        for key, run in r["runs"].items():
            sections.append(Section(f"Training: {arm} {'' if key == 'all' else key}".strip(),
                                    f"details: {Path(run).name}/report.html",
                                    sorted((Path(run) / "figures").glob("gan_losses.png"))))
    write_report(out, "medlearn demo: MGAN / TC-MGAN missing MR contrast synthesis", sections)


# ------------------------------------------------------------------------------------ reproduce
def reproduce(out_dir: str | Path = "runs/reproduce/mgan", seeds: tuple[int, ...] = (0, 1, 2), n_cases: int = 40,
              epochs: int = 15, results_md: str | Path | None = "docs/results.md", threads: int | None = None,
              resume: bool = False) -> str:
    """The spec's CPU-scale comparison (section 6); returns the markdown (also written to ``results_md``).

    One phantom GAN set and one case split; per seed, every arm trains from that seed on the same data;
    one independent evaluator (trained once on separate phantoms) scores every arm.
    """
    set_cpu_threads(threads)
    out = Path(out_dir)
    root = _data(out, "brats-gan", n_cases, seed=0)
    evaluator = _evaluator(out, _data(out, "brats-eval", max(10, n_cases // 2), seed=1000), epochs=EVALUATOR_EPOCHS)
    exp = Experiment(out, resume, meta={"seeds": list(seeds), "n_cases": n_cases, "epochs": epochs})

    def one(arm: str, seed: int) -> dict[str, Any]:
        row = _train_arm(arm, seed, root, evaluator, epochs, out, val_every=5)
        for run in row["runs"].values():
            shutil.rmtree(Path(run) / "tb", ignore_errors=True)
        return row

    exp.grid(seeds, ARMS, one)
    return exp.publish("mgan", table_from_results, results_md)


def table_from_results(run: dict[str, Any]) -> str:
    """The markdown table and readings of a reproduction from its ``results.json`` content."""
    rows, seeds = run["rows"], run["seeds"]
    lines = [f"Test slices of the synthetic BraTS-layout phantoms (32 px, [0, 1]); mean ± sd over seeds {seeds}, "
             "per-seed values in brackets. Dice: the independent evaluator (trained on real slices of other "
             "phantoms) on tumour-bearing synthesised slices.", "",
             "| arm | contrast | PSNR brain dB | SSIM brain | tumour MAE | tumour PSNR dB | evaluator Dice |",
             "|---|---|---|---|---|---|---|"]
    for arm, label in ARMS.items():
        for c in (*CONTRASTS, None):
            sfx = f"_{c}" if c else ""
            name = _NAMES[c] if c else "**mean**"
            cells = [mean_sd_cell(select(rows, f"{k}{sfx}", arm=arm), d) for k, d in
                     (("psnr_brain", 2), ("ssim_brain", 3), ("mae_tumour", 3), ("psnr_tumour", 2))]
            cells.append(mean_sd_cell(select(rows, f"dice{sfx}", arm=arm), 3))
            lines.append(f"| {label if c in (CONTRASTS[0],) else ''} | {name} | " + " | ".join(cells) + " |")
    t2 = select(rows, "dice_t2", arm="tcmgan")
    real = select(rows, "dice_real", arm="tcmgan")
    lines += ["", f"Evaluator Dice references: T2 alone {mean_sd_cell(t2, 3)}; the real contrasts "
              f"{mean_sd_cell(real, 3)}.", "",
              "| arm | generator parameters | train + test time, s (all its models) |", "|---|---|---|"]
    for arm, label in ARMS.items():
        lines.append(f"| {label} | {int(np.mean(select(rows, 'generator_params', arm=arm)))} | "
                     f"{np.mean(select(rows, 'seconds', arm=arm)):.0f} |")

    def diff(a: str, b: str, k: str, lower: bool = False) -> Any:
        return paired(rows, k, {"arm": a}, {"arm": b}, lower_is_better=lower)

    d_psnr = diff("mgan", "pix2pix", "psnr_brain")
    d_ssim = diff("mgan", "pix2pix", "ssim_brain")
    d_dice = diff("tcmgan", "mgan", "dice")
    d_mae = diff("tcmgan", "mgan", "mae_tumour", lower=True)
    d_tpsnr = diff("tcmgan", "mgan", "psnr_brain")
    gain_t2 = select(rows, "dice", arm="tcmgan") - t2
    gain_real = select(rows, "dice", arm="tcmgan") - real
    within = d_psnr.n > 0 and d_psnr.mean > -1.0
    t2_verdict = ("the synthesised contrasts give the evaluator tumour information T2 alone does not"
                  if gain_t2.size and (gain_t2 > 0).all() else "no reliable gain over T2 alone")
    lines += ["", "Paired differences (same data, split and seed):", "",
              "| comparison | brain PSNR dB | brain SSIM | tumour MAE | evaluator Dice |", "|---|---|---|---|---|"]
    for a, b in (("mgan", "pix2pix"), ("tcmgan", "mgan"), ("tcmgan", "pix2pix")):
        lines.append(f"| {a} − {b} | {diff(a, b, 'psnr_brain').cell(2)} | {diff(a, b, 'ssim_brain').cell(3)} | "
                     f"{diff(a, b, 'mae_tumour', True).cell(3)} | {diff(a, b, 'dice').cell(3)} |")
    lines += ["", "Reading (computed from the rows above; wins count seeds where the first arm is better):", "",
              f"- One conditional generator vs three pix2pix models at a third of the generator updates per contrast: "
              f"brain PSNR {d_psnr.mean:+.2f} dB ({d_psnr.wins}/{d_psnr.n} seeds higher with MGAN) -> "
              + ("within 1 dB of pix2pix x3, as the spec expects at this scale" if within
                 else "more than 1 dB below pix2pix x3: the efficiency claim does not hold at this scale") + ".",
              d_psnr.reading("The paper's 'MGAN images are better than pix2pix' on brain PSNR", 0.0, 2, " dB"),
              d_ssim.reading("The same on brain SSIM", 0.0, 3),
              d_dice.reading("TC-MGAN's tumour-consistency loss raises the evaluator's tumour Dice over MGAN", 0.01),
              d_mae.reading("It lowers the tumour-region MAE (sign: positive = TC-MGAN lower)", 0.0, 3),
              f"- Its cost in whole-brain PSNR vs MGAN: {d_tpsnr.mean:+.2f} dB ({d_tpsnr.wins}/{d_tpsnr.n} seeds "
              "higher with TC-MGAN).",
              f"- Synthesised contrasts vs T2 alone for the evaluator: TC-MGAN Dice minus T2-alone Dice "
              f"{float(np.mean(gain_t2)) if gain_t2.size else math.nan:+.3f} "
              f"({int((gain_t2 > 0).sum())}/{gain_t2.size} seeds higher) "
              f"-> {t2_verdict}." + (" The evaluator reads one contrast at a time, and on these phantoms the "
                                      "tumour is most conspicuous in T2 itself (its T2 Dice is above its Dice on the "
                                      "real contrasts), so this design cannot show the paper's gain of T2 + "
                                      "synthesised contrasts over T2 alone, which needs a multi-channel downstream "
                                      "segmenter (not built)." if t2.size and real.size and t2.mean() > real.mean()
                                      else ""),
              f"- TC-MGAN's synthesised contrasts vs the real ones for the evaluator: Dice "
              f"{float(np.mean(gain_real)) if gain_real.size else math.nan:+.3f} "
              f"({int((gain_real > 0).sum())}/{gain_real.size} seeds higher on synthesised slices)"
              + (": the co-trained loss makes the tumour at least as readable as in the real slices, a sign to "
                 "watch (the spec's collusion pitfall), although this evaluator never saw a synthesised slice."
                 if gain_real.size and (gain_real > 0).all() else "."),
              "- The paper's own numbers (BraTS 2018, 128 px; per-slice PSNR / SSIM, Dice table) could not be "
              "retrieved and need the BraTS data, which is not available here.", "",
              f"Setup: {run['n_cases']} phantom cases of 48^3 voxels (BraTS layout), case split 70 / 10 / 20 %, "
              "axial slices with brain in every contrast resized to 32 px, per-slice max scaling; U-Net generator "
              "(4 levels, ngf 8, InstanceNorm), conditional PatchGAN (2 layers, ndf 8), LSGAN + 100 x per-pixel "
              f"L1, Adam 2e-4 (0.5, 0.999), batch 16, {run['epochs']} epochs per model; TC-MGAN: lambda_tc 10, "
              "segmentor pre-trained 1 epoch on real slices (an extra epoch: as many GAN iterations as MGAN), "
              f"co-trained 0.7 fake / 0.3 real; evaluator: conditional U-Net (ndf 16) trained {EVALUATOR_EPOCHS} "
              "epochs on real FLAIR / T1ce / T1 / T2 slices of "
              f"{max(10, run['n_cases'] // 2)} other phantoms; total wall time {run['seconds'] / 60:.1f} min, "
              f"{run.get('threads', '?')} thread(s)."]
    return "\n".join(lines)
