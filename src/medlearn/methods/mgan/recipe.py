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
import torch

from medlearn.console import say
from medlearn.engine.config import load_config
from medlearn.engine.experiment import Experiment, Paired, mean_sd_cell, paired, select
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


# ------------------------------------------------------------------- downstream segmentation (spec 3.3, step 4)
#: Epochs of the downstream whole-tumour segmenters.
DOWNSTREAM_EPOCHS = 30


class Downstream:
    """The spec's downstream test: whole-tumour segmenters on the segmentation cases, scored on the GAN's test slices.

    :class:`~medlearn.tasks.segmentation.Segmenter` U-Nets (``medlearn.tasks.downstream``) on the
    evaluation phantoms (disjoint from the GAN's), trained once on *real* slices: one on the four
    contrasts (channels FLAIR, T1ce, T1, T2), one on T2 alone. :meth:`scores` reads the GAN's test
    slices with inputs {T2 only (the T2 segmenter), T2 + the three synthesised contrasts, all four
    real}; with ``generate`` it also trains a four-channel segmenter on T2 + the arm's synthesised
    contrasts of the segmentation cases (the input set it is tested on; the spec's reading of the
    paper's design) and scores it on the same test input. Mean per-slice Dice and IoU (+1
    smoothing) on tumour-bearing slices.
    """

    def __init__(self, out: Path, root: Path, epochs: int = DOWNSTREAM_EPOCHS) -> None:
        from medlearn.data.mr_slices import MRSliceDataModule
        from medlearn.tasks.downstream import fit_binary_segmenter

        dm = MRSliceDataModule(str(root), source="t2", targets=list(CONTRASTS), image_size=32, val_fraction=0.0,
                               test_fraction=0.0)
        dm.setup("fit")
        assert dm.train_set is not None
        t = dm.train_set.tensors
        fit: dict[str, Any] = {"epochs": epochs, "seed": 0, "batch_size": 32, "lr": 1e-3, "reuse": True}
        self.out, self.epochs, self.train = out, epochs, t
        self.all4 = fit_binary_segmenter(torch.cat([t["targets"], t["source"]], 1), t["mask"],
                                         out / "downstream-4ch", **fit)
        self.t2 = fit_binary_segmenter(t["source"], t["mask"], out / "downstream-t2", **fit)

    def scores(self, test: dict[str, torch.Tensor], fakes: dict[str, torch.Tensor],
               generate: Any = None, tag: str = "", seed: int = 0) -> dict[str, float]:
        """``seg_dice`` / ``seg_iou`` (T2 + synthesised), ``seg_dice_t2`` (T2 only), ``seg_dice_real`` (all
        real) and, with ``generate(contrast, t2_slices)``, ``seg_dice_synth`` (trained on T2 + synthesised).
        """
        from medlearn.tasks.downstream import fit_binary_segmenter, score_segmenter

        x, m = test["source"], test["mask"]
        synth = torch.cat([*(fakes[c] for c in CONTRASTS), x], 1)
        row: dict[str, float] = {}
        runs = [("", self.all4, synth), ("_t2", self.t2, x), ("_real", self.all4, torch.cat([test["targets"], x], 1))]
        if generate is not None:
            src = self.train["source"]
            own = fit_binary_segmenter(torch.cat([*(generate(c, src) for c in CONTRASTS), src], 1), self.train["mask"],
                                       self.out / f"downstream-synth-{tag}-s{seed}", epochs=self.epochs, seed=seed,
                                       batch_size=32, lr=1e-3)
            runs.append(("_synth", own, synth))
        for key, model, img in runs:
            r = score_segmenter(model, img, m, positive_only=True)
            row[f"seg_dice{key}"], row[f"seg_iou{key}"] = r["dice"], r["iou"]
        return row


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
               val_every: int = 1, downstream: Downstream | None = None) -> dict[str, Any]:
    """Train one arm (pix2pix: its three models) and return its test readings, time and size.

    ``val_every``: validate every that many epochs (the GAN keeps its last checkpoint, so validation
    only feeds the curves; the reproduction validates rarely to save time).
    """
    over = {"trainer.max_epochs": epochs, "model.init_args.evaluator": str(evaluator),
            "trainer.check_val_every_n_epoch": val_every}
    row: dict[str, float] = {}
    seconds, params, last = 0.0, 0, {}
    fakes: dict[str, torch.Tensor] = {}
    test: dict[str, torch.Tensor] = {}
    models: dict[str, Any] = {}

    def synthesise(r: Any) -> None:
        if downstream is not None:
            test.update(r.datamodule.test_set.tensors)
            for c in r.model.hparams.synthesise:
                models[c] = r.model.eval()
                fakes[c] = models[c].synthesise(test["source"], c).cpu()

    if arm == "pix2pix":
        for c in CONTRASTS:
            r = fit_from_config(_cfg("demo_pix2pix.yaml", root, seed, **over, **{"model.init_args.synthesise": [c]}),
                                out / f"pix2pix-{c}-s{seed}", prefix=f"[pix2pix {c} s={seed}] ")
            row.update(_row(r.test))
            seconds += r.seconds
            params += _generator_params(r.model)
            last[c] = r.run_dir
            synthesise(r)
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
        synthesise(r)
    if downstream is not None:
        row.update(downstream.scores(test, fakes, lambda c, x: models[c].synthesise(x, c).cpu(), arm, seed))
        say(f"[{arm} s={seed}] downstream whole-tumour Dice: T2 + synthesised {row['seg_dice']:.3f} (segmenter "
            f"trained on real; {row['seg_dice_synth']:.3f} trained on T2 + synthesised), T2 only "
            f"{row['seg_dice_t2']:.3f}, all four real {row['seg_dice_real']:.3f}")
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
    eval_root = _data(out, "brats-eval", max(10, n_cases // 2), seed=1000)
    evaluator = _evaluator(out, eval_root, epochs=EVALUATOR_EPOCHS)
    downstream = Downstream(out, eval_root)
    rows = {arm: _train_arm(arm, 0, root, evaluator, epochs, out, downstream=downstream) for arm in ARMS}
    cases = _t2_only_cases(out, 3)
    tc_run = Path(rows["tcmgan"]["runs"]["all"])
    pred = _predict(tc_run / "checkpoints" / "last.ckpt", cases, out / "predict")
    checks = _check_predictions(pred, cases, out / "data" / "t2-only-reference")
    m = {f"{k}_{arm}": float(v) for arm, r in rows.items() for k, v in r.items()
         if isinstance(v, (int, float))}
    m.update(checks)
    _demo_report(out, rows, checks, tc_run, pred)
    headline = (f"downstream whole-tumour Dice, T2 + synthesised: TC-MGAN {m['seg_dice_tcmgan']:.3f}, MGAN "
                f"{m['seg_dice_mgan']:.3f}, pix2pix x3 {m['seg_dice_pix2pix']:.3f} (T2 only "
                f"{m['seg_dice_t2_tcmgan']:.3f}, all four real {m['seg_dice_real_tcmgan']:.3f}); evaluator Dice "
                f"on synthesised slices {m['dice_tcmgan']:.3f} / {m['dice_mgan']:.3f} / {m['dice_pix2pix']:.3f}; "
                f"brain PSNR {m['psnr_brain_tcmgan']:.1f} / "
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
        ax.set_ylabel(label.split(",")[0], fontsize=8)
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
    sections = []
    if "seg_dice" in rows["tcmgan"]:
        labels = ["T2 only", *[f"T2 + {n}" for n in ("pix2pix x3", "MGAN", "TC-MGAN")], "all four real"]
        t2r = rows["tcmgan"]

        def pick(key: str) -> list[float]:
            return [t2r[f"seg_{key}_t2"], *[rows[a][f"seg_{key}"] for a in ("pix2pix", "mgan", "tcmgan")],
                    t2r[f"seg_{key}_real"]]

        def own(key: str) -> list[float]:
            return [t2r[f"seg_{key}_t2"], *[rows[a].get(f"seg_{key}_synth", math.nan)
                                             for a in ("pix2pix", "mgan", "tcmgan")], t2r[f"seg_{key}_real"]]

        vals, ious, vals_own, ious_own = pick("dice"), pick("iou"), own("dice"), own("iou")
        fig, ax = plt.subplots(figsize=(8, 3.4))
        x5 = np.arange(len(vals))
        ax.bar(x5 - 0.2, vals, 0.38, color="#4477aa", label="segmenter trained on real contrasts")
        ax.bar(x5 + 0.2, vals_own, 0.38, color="#ccbb44", label="segmenter trained on this input")
        ax.set_xticks(x5, labels, fontsize=8)
        ax.set_ylabel("whole-tumour Dice")
        ax.set_ylim(0, 1.15)
        ax.legend(fontsize=8, loc="upper center", ncol=2, frameon=False)
        ax.set_title("Downstream whole-tumour segmentation of the test slices, by input", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        seg_png = save_figure(fig, out / "figures" / "downstream.png")
        sections.append(Section(
            "Downstream tumour segmentation (the paper's test)",
            "A four-channel U-Net (FLAIR, T1ce, T1, T2; medlearn.tasks.Segmenter) and a T2-only one, both trained "
            "on real slices of separate phantoms, segment the whole tumour on the GAN's test slices; the missing "
            "contrasts are filled by each arm's synthesis. A second four-channel U-Net per arm is trained on T2 + "
            "that arm's synthesised contrasts of the same separate phantoms. Mean per-slice Dice and IoU on "
            "tumour-bearing slices.",
            [seg_png], table=(["input", "Dice (trained on real)", "IoU", "Dice (trained on this input)", "IoU"],
                              [[lab, round(v, 3), round(i, 3), round(vo, 3), round(io, 3)]
                               for lab, v, i, vo, io in zip(labels, vals, ious, vals_own, ious_own)])))
    sections += [
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
    eval_root = _data(out, "brats-eval", max(10, n_cases // 2), seed=1000)
    evaluator = _evaluator(out, eval_root, epochs=EVALUATOR_EPOCHS)
    downstream = Downstream(out, eval_root)
    exp = Experiment(out, resume, meta={"seeds": list(seeds), "n_cases": n_cases, "epochs": epochs,
                                        "downstream_epochs": DOWNSTREAM_EPOCHS})

    def one(arm: str, seed: int) -> dict[str, Any]:
        row = _train_arm(arm, seed, root, evaluator, epochs, out, val_every=5, downstream=downstream)
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
              f"{mean_sd_cell(real, 3)}.", ""]
    downstream = bool(rows) and "seg_dice" in rows[0]
    if downstream:
        lines += ["Downstream whole-tumour segmentation (the spec's step 4): a four-channel U-Net (FLAIR, T1ce, T1, "
                  "T2) and a T2-only U-Net (medlearn.tasks.Segmenter, "
                  f"{run.get('downstream_epochs', DOWNSTREAM_EPOCHS)} epochs), trained once on real slices of the "
                  "evaluation phantoms, segment the GAN's test slices; missing contrasts filled by each arm. Last "
                  "two columns: a four-channel U-Net trained (seeded like the arm) on T2 + the arm's synthesised "
                  "contrasts of the same evaluation phantoms, tested on the same input. Mean per-slice Dice / IoU "
                  "(+1 smoothing) on tumour-bearing slices.", "",
                  "| input | Dice, trained on real | IoU | Dice, trained on this input | IoU |",
                  "|---|---|---|---|---|"]

        def dice_iou(dice: str, iou: str, arm: str) -> str:
            return f"{mean_sd_cell(select(rows, dice, arm=arm), 3)} | {mean_sd_cell(select(rows, iou, arm=arm), 3)}"

        lines.append(f"| T2 only | {dice_iou('seg_dice_t2', 'seg_iou_t2', 'tcmgan')} | "
                     f"{dice_iou('seg_dice_t2', 'seg_iou_t2', 'tcmgan')} |")
        for arm, label in ARMS.items():
            lines.append(f"| T2 + {label} | {dice_iou('seg_dice', 'seg_iou', arm)} | "
                         f"{dice_iou('seg_dice_synth', 'seg_iou_synth', arm)} |")
        lines += [f"| all four real | {dice_iou('seg_dice_real', 'seg_iou_real', 'tcmgan')} | "
                  f"{dice_iou('seg_dice_real', 'seg_iou_real', 'tcmgan')} |", ""]
    lines += [
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
              *([Paired(select(rows, "seg_dice", arm="tcmgan") - select(rows, "seg_dice_t2", arm="tcmgan")).reading(
                  "The paper's downstream claim: T2 + TC-MGAN's synthesised contrasts segment the tumour better "
                  "than T2 alone (segmenter trained on real contrasts)", 0.01),
                 Paired(select(rows, "seg_dice_synth", arm="tcmgan")
                        - select(rows, "seg_dice_t2", arm="tcmgan")).reading(
                     "The same with a segmenter trained on T2 + TC-MGAN's synthesised contrasts", 0.01),
                 Paired(select(rows, "seg_dice", arm="mgan") - select(rows, "seg_dice_t2", arm="mgan")).reading(
                     "MGAN's contrasts over T2 alone (trained on real)", 0.01),
                 diff("tcmgan", "mgan", "seg_dice").reading(
                     "TC-MGAN vs MGAN on downstream Dice (the tumour loss's effect)", 0.0),
                 diff("mgan", "pix2pix", "seg_dice").reading("MGAN vs pix2pix x3 on downstream Dice", 0.0),
                 Paired(select(rows, "seg_dice_real", arm="tcmgan") - select(rows, "seg_dice", arm="tcmgan")).reading(
                     "All four real contrasts remain above T2 + TC-MGAN's (the gap synthesis leaves)", 0.0)]
                if downstream else []),
              f"- Synthesised contrasts vs T2 alone for the evaluator: TC-MGAN Dice minus T2-alone Dice "
              f"{float(np.mean(gain_t2)) if gain_t2.size else math.nan:+.3f} "
              f"({int((gain_t2 > 0).sum())}/{gain_t2.size} seeds higher) "
              f"-> {t2_verdict}." + (" The evaluator reads one contrast at a time, and on these phantoms the "
                                      "tumour is most conspicuous in T2 itself (its T2 Dice is above its Dice on the "
                                      "real contrasts); the gain of T2 + synthesised contrasts over T2 alone is the "
                                      "downstream segmenter's reading above." if t2.size and real.size
                                      and t2.mean() > real.mean() else ""),
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
