"""VideoGAN demo on two-scope colonoscopy phantom videos written in the CVC-ClinicDB / ETIS layouts.

The demo writes scope-A clips in the CVC-ClinicDB layout and scope-B clips in the ETIS-LaribPolypDB
layout (``medlearn synth endoscopy-cvc`` / ``endoscopy-etis``; the ETIS reader cuts them into
pseudo-sequences by frame difference, as for the real data), reads them back through the layouts
(:class:`~medlearn.data.video_pairs.VideoPairDataModule`, split by video) and trains, on the same
data, split and seed, VideoGAN (``configs/videogan/demo.yaml``) and the frame-wise CycleGAN
(``demo_cyclegan.yaml``); "no adaptation" is the untranslated input. Readings per arm on the
held-out scope-A videos translated to scope B: colour distance to scope B (W1), flicker, and,
because phantoms can render the same geometry in scope B's style, PSNR, tdiff and drift to that
ground truth.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from medlearn.console import say
from medlearn.data.video_pairs import VideoPairDataModule
from medlearn.engine.config import load_config
from medlearn.engine.experiment import Experiment, Paired, mean_sd_cell, paired, select
from medlearn.engine.run import fit_from_config
from medlearn.engine.trainer import set_cpu_threads
from medlearn.methods.videogan.segmentation import SEGMENTER_EPOCHS, polyp_segmentation
from medlearn.registry import DemoResult, config_dir
from medlearn.synth.endoscopy import write_cvc_phantom, write_etis_phantom

__all__ = ["ARMS", "REPRODUCE_ARMS", "demo", "reproduce", "table_from_results", "write_contract_data",
           "write_two_scopes"]

#: Arm -> (config, overrides).
ARMS: dict[str, tuple[str, dict[str, Any]]] = {
    "videogan": ("demo.yaml", {}),
    "cyclegan": ("demo_cyclegan.yaml", {}),
}


#: The reproduction's trained arms -> (label, config, overrides); "no adaptation" is read from every run's input.
REPRODUCE_ARMS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "cyclegan": ("frame-wise CycleGAN", "demo_cyclegan.yaml", {}),
    "no_hist": ("VideoGAN without L_hist", "demo.yaml", {"model.init_args.lambda_hist": 0.0}),
    "no_x": ("VideoGAN without X-shape", "demo.yaml", {"model.init_args.xshape": False}),
    "videogan": ("VideoGAN", "demo.yaml", {}),
}
_READINGS = ("w1_ab", "psnr_ab", "drift_ab", "tdiff_ab", "flicker_ab", "w1_ba", "psnr_ba")


def write_two_scopes(root: Path, n_videos: int, n_frames: int, size: int, seed: int) -> Path:
    """Scope A in ``root/CVC-ClinicDB`` and scope B in ``root/ETIS-LaribPolypDB`` (phantoms)."""
    write_cvc_phantom(root / "CVC-ClinicDB", n_videos=n_videos, n_frames=n_frames, size=size, seed=seed,
                      overwrite=True)
    write_etis_phantom(root / "ETIS-LaribPolypDB", n_videos=n_videos, n_frames=n_frames, size=size,
                       seed=seed + 1000, overwrite=True)
    return root


def write_contract_data(folder: Path) -> Path:
    """A tiny two-scope set for the contract tests."""
    return write_two_scopes(Path(folder) / "endo", n_videos=4, n_frames=4, size=32, seed=1)


def _seg_line(prefix: str, seg: dict[str, float]) -> str:
    nan = float("nan")
    return (f"{prefix}polyp Dice on scope B: no adaptation {seg['dice_none']:.3f}, B->A translated "
            f"{seg.get('dice_b2a', nan):.3f}, trained on A->B translated {seg.get('dice_a2b', nan):.3f}, "
            f"trained on labelled B {seg['dice_target']:.3f}")


def _cfg(config: str, root: Path, seed: int, **over: Any) -> dict[str, Any]:
    return load_config(config_dir("videogan") / config, {"data.init_args.root": str(root), "seed_everything": seed,
                                                         **over})


def demo(out_dir: str | Path = "runs/demo/videogan", n_videos: int = 24, n_frames: int = 12, epochs: int = 8,
         threads: int | None = None) -> DemoResult:
    """VideoGAN vs frame-wise CycleGAN vs no adaptation on two-scope phantom videos.

    Args:
        out_dir: where the data and the run folders go.
        n_videos: clips per scope (a quarter held out for testing).
        n_frames: frames per clip.
        epochs: training epochs of each arm.
        threads: torch threads (default: :func:`medlearn.runtime.default_threads`).
    """
    set_cpu_threads(threads)
    out = Path(out_dir)
    t0 = time.perf_counter()
    root = write_two_scopes(out / "data", n_videos, n_frames, 32, seed=0)
    m: dict[str, float] = {}
    for arm, (config, over) in ARMS.items():
        r = fit_from_config(_cfg(config, root, 0, **{"trainer.max_epochs": epochs, **over}), out / arm,
                            prefix=f"[{arm}] ")
        for k, v in (r.test or {}).items():
            if isinstance(v, (int, float)):
                m[f"{k.split('/')[-1]}_{arm}"] = float(v)
        assert isinstance(r.datamodule, VideoPairDataModule)
        seg = polyp_segmentation(r.model, r.datamodule, out / "segmentation", seed=0, tag=f"-{arm}")
        say(_seg_line(f"[{arm}] ", seg))
        m.update({f"{k}_{arm}": v for k, v in seg.items()})
    _demo_report(out, m, n_videos, n_frames, epochs)
    def g(key: str) -> float:
        return m.get(key, float("nan"))

    headline = (f"polyp Dice on scope B (segmenter trained on A): no adaptation {g('dice_none_videogan'):.3f}, "
                f"B->A translated VideoGAN {g('dice_b2a_videogan'):.3f} / CycleGAN {g('dice_b2a_cyclegan'):.3f}, "
                f"trained on A->B translated {g('dice_a2b_videogan'):.3f} / {g('dice_a2b_cyclegan'):.3f}; "
                f"colour distance W1 to scope B {g('w1_ab_videogan'):.4f} / {g('w1_ab_cyclegan'):.4f} "
                f"(no adaptation {g('w1_identity_ab_videogan'):.4f})")
    passed = (m.get("dice_b2a_videogan", 0.0) > m.get("dice_none_videogan", 1.0)
              and m.get("w1_ab_videogan", 1.0) < m.get("w1_identity_ab_videogan", 0.0))
    return DemoResult("videogan", headline, passed, time.perf_counter() - t0, out, m)


def _demo_report(out: Path, m: dict[str, float], n_videos: int, n_frames: int, epochs: int) -> None:
    import matplotlib.pyplot as plt

    from medlearn.engine.report import Section, save_figure, write_report

    arms = {"none": ("no adaptation", "#999999"), "cyclegan": ("frame-wise CycleGAN", "#bb5566"),
            "videogan": ("VideoGAN", "#228833")}

    def val(key: str, arm: str) -> float:
        if arm == "none":
            return 0.0 if key == "flicker_ab" else m.get(key.replace("_ab", "_identity_ab") + "_videogan", float("nan"))
        return m.get(f"{key}_{arm}", float("nan"))

    readings = (("w1_ab", "colour distance W1 to scope B (lower better)"), ("psnr_ab", "PSNR to scope-B truth, dB"),
                ("drift_ab", "intra-video colour drift (lower better)"), ("tdiff_ab", "frame-difference error tdiff"))
    fig, axes = plt.subplots(1, len(readings), figsize=(13, 3.2))
    for ax, (key, title) in zip(axes, readings):
        ax.bar(range(len(arms)), [val(key, a) for a in arms], color=[c for _, c in arms.values()])
        ax.set_xticks(range(len(arms)), [label for label, _ in arms.values()], fontsize=8, rotation=12)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel(title.split(" (")[0], fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Scope A -> B translations per arm (test videos)", fontsize=10)
    fig.tight_layout()
    bars = save_figure(fig, out / "figures" / "arms.png")
    header = ["arm", "W1 A→B", "PSNR A→B dB", "drift A→B", "tdiff A→B", "flicker A→B", "W1 B→A"]
    table = [[label, *[round(val(k, a), 4) for k in ("w1_ab", "psnr_ab", "drift_ab", "tdiff_ab", "flicker_ab")],
              round(m.get("w1_identity_ba_videogan", float("nan")) if a == "none" else val("w1_ba", a), 4)]
             for a, (label, _) in arms.items()]
    sections = []
    if "dice_none_videogan" in m:
        seg_arms = ("none", "cyclegan", "videogan")
        fig, ax = plt.subplots(figsize=(7.5, 3.4))
        x = np.arange(2)
        for i, a in enumerate(seg_arms):
            vals = ([m["dice_none_videogan"]] * 2 if a == "none"
                    else [m.get(f"dice_b2a_{a}", float("nan")), m.get(f"dice_a2b_{a}", float("nan"))])
            ax.bar(x + (i - 1) * 0.26, vals, 0.25, color=arms[a][1], label=arms[a][0])
        ax.axhline(m["dice_target_videogan"], color="k", ls="--", lw=1, label="trained on labelled scope B")
        ax.set_xticks(x, ["direction 1: B frames translated to A,\nsegmenter trained on A",
                          "direction 2: segmenter trained on\nA frames translated to B"], fontsize=8)
        ax.set_ylabel("polyp Dice on scope-B test frames")
        ax.set_title("Polyp segmentation on scope B through the translations", fontsize=9)
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="center right")
        fig.tight_layout()
        seg_png = save_figure(fig, out / "figures" / "segmentation.png")
        seg_table = [["no adaptation", round(m["dice_none_videogan"], 3), round(m["iou_none_videogan"], 3),
                      round(m["dice_none_videogan"], 3), round(m["iou_none_videogan"], 3)]]
        seg_table += [[arms[a][0], *[round(m.get(f"{k}_{a}", float("nan")), 3)
                                     for k in ("dice_b2a", "iou_b2a", "dice_a2b", "iou_a2b")]]
                      for a in ("cyclegan", "videogan")]
        seg_table.append(["trained on labelled scope B (upper bound)", *[round(m[f"{k}_target_videogan"], 3)
                                                                         for k in ("dice", "iou")] * 2])
        sections.append(Section(
            "Polyp segmentation at the second endoscope (the paper's test)",
            "A U-Net polyp segmenter (medlearn.tasks.Segmenter) is trained on labelled scope-A frames and tested on "
            "the held-out scope-B videos: as they are (no adaptation), or translated to scope A by each arm "
            "(direction 1). Direction 2 trains the segmenter on scope-A frames translated to scope B and tests it "
            "on the real scope-B frames. Mean per-frame Dice and IoU.", [seg_png],
            table=(["arm", "Dice dir. 1", "IoU dir. 1", "Dice dir. 2", "IoU dir. 2"], seg_table)))
    sections += [
        Section("Scope A -> scope B on held-out phantom videos",
                f"{n_videos} clips x {n_frames} frames per scope (32 px), written in the CVC-ClinicDB and ETIS "
                "layouts and read back (ETIS pseudo-sequences by frame difference); a quarter of the videos held "
                f"out; {epochs} epochs per arm, same data, split and seed. W1: per-channel Wasserstein distance of "
                "tissue pixels to real scope-B test videos; PSNR / drift / tdiff against the same geometry rendered "
                "in scope B's style (only a phantom has it); flicker: frame-to-frame change added by the "
                "translation.", [bars], table=(header, table)),
        Section("VideoGAN translations", "Middle frame of test videos: input (scope A), VideoGAN's translation, "
                "and the scope-B-style truth.", sorted((out / "videogan" / "figures").glob("translations.png"))),
        Section("CycleGAN translations", "The same frames through the frame-wise CycleGAN.",
                sorted((out / "cyclegan" / "figures").glob("translations.png"))),
    ]
    for arm in ("videogan", "cyclegan"):
        sections.append(Section(f"Training: {arms[arm][0]}", f"details: {arm}/report.html",
                                sorted((out / arm / "figures").glob("gan_losses.png"))))
    write_report(out, "medlearn demo: VideoGAN endoscopy video translation (two-scope phantoms)", sections)


def reproduce(out_dir: str | Path = "runs/reproduce/videogan", seeds: tuple[int, ...] = (0, 1, 2),
              n_videos: int = 30, n_frames: int = 12, epochs: int = 8,
              results_md: str | Path | None = "docs/results.md", threads: int | None = None,
              resume: bool = False) -> str:
    """The spec's CPU-scale check (section 6); returns the markdown (also written to ``results_md``).

    One two-scope phantom set (``n_videos`` clips per scope, a quarter held out, 32 px) and one
    video split; per seed every arm trains from that seed on the same data. Claims: (a) L_hist
    lowers the colour distance to the target scope; (b) the X-shape generator lowers intra-video
    colour drift and flicker.
    """
    set_cpu_threads(threads)
    out = Path(out_dir)
    root = write_two_scopes(out / "data", n_videos, n_frames, 32, seed=0)
    exp = Experiment(out, resume, meta={"seeds": list(seeds), "n_videos": n_videos, "n_frames": n_frames,
                                        "epochs": epochs, "seg_epochs": SEGMENTER_EPOCHS})

    def one(arm: str, seed: int) -> dict[str, Any]:
        _, config, over = REPRODUCE_ARMS[arm]
        r = fit_from_config(_cfg(config, root, seed, **{"trainer.max_epochs": epochs, **over}),
                            out / f"{arm}-s{seed}", prefix=f"[{arm} s={seed}] ")
        shutil.rmtree(r.run_dir / "tb", ignore_errors=True)
        row = {k.split("/")[-1]: float(v) for k, v in (r.test or {}).items() if isinstance(v, (int, float))}
        row["seconds"] = r.seconds
        t0 = time.perf_counter()
        assert isinstance(r.datamodule, VideoPairDataModule)
        seg = polyp_segmentation(r.model, r.datamodule, out / "segmentation", seed=seed, tag=f"-{arm}")
        say(_seg_line(f"[{arm} s={seed}] ", seg))
        row.update(seg)
        row["seg_seconds"] = time.perf_counter() - t0
        return row

    exp.grid(seeds, REPRODUCE_ARMS, one)
    return exp.publish("videogan", table_from_results, results_md)


def table_from_results(run: dict[str, Any]) -> str:
    """The markdown table and readings of a reproduction from its ``results.json`` content."""
    rows, seeds = run["rows"], run["seeds"]
    lines = [f"Held-out scope-A phantom videos translated to scope B (32 px, [0, 1] scale); mean ± sd over seeds "
             f"{seeds}. W1: colour distance to real scope-B test videos; PSNR, drift, tdiff: against the same "
             "geometry rendered in scope B's style; flicker: added frame-to-frame change.", "",
             "| arm | W1 A→B | PSNR dB | drift | tdiff | flicker | W1 B→A |", "|---|---|---|---|---|---|---|"]
    ident = [mean_sd_cell(select(rows, k, arm="videogan"), 4) for k in
             ("w1_identity_ab", "psnr_identity_ab", "drift_identity_ab", "tdiff_identity_ab")]
    lines.append(f"| no adaptation | {ident[0]} | {ident[1]} | {ident[2]} | {ident[3]} | 0 | "
                 f"{mean_sd_cell(select(rows, 'w1_identity_ba', arm='videogan'), 4)} |")
    for arm, (label, _, _) in REPRODUCE_ARMS.items():
        cells = [mean_sd_cell(select(rows, k, arm=arm), 2 if k.startswith("psnr") else 4)
                 for k in ("w1_ab", "psnr_ab", "drift_ab", "tdiff_ab", "flicker_ab", "w1_ba")]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    seg = "dice_b2a" in rows[0] if rows else False
    if seg:
        lines += ["", "Polyp segmentation on the held-out scope-B videos (mean per-frame Dice / IoU, +1 smoothing; "
                  f"U-Net segmenters of medlearn.tasks.Segmenter, {run.get('seg_epochs', SEGMENTER_EPOCHS)} epochs, "
                  "batch 16, Adam 3e-3, seeded like the arm). Direction 1: the segmenter trained on real scope-A "
                  "frames, tested on scope-B frames translated to A. Direction 2: a segmenter trained on scope-A "
                  "frames translated to B (A's masks), tested on real scope-B frames.", "",
                  "| arm | Dice dir. 1 (B→A at test) | IoU dir. 1 | Dice dir. 2 (A→B at training) | IoU dir. 2 |",
                  "|---|---|---|---|---|"]
        none = [mean_sd_cell(select(rows, k, arm="videogan"), 3) for k in ("dice_none", "iou_none")]
        lines.append(f"| no adaptation | {none[0]} | {none[1]} | {none[0]} | {none[1]} |")
        for arm, (label, _, _) in REPRODUCE_ARMS.items():
            cells = [mean_sd_cell(select(rows, k, arm=arm), 3) for k in ("dice_b2a", "iou_b2a", "dice_a2b", "iou_a2b")]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        target = [mean_sd_cell(select(rows, k, arm="videogan"), 3) for k in ("dice_target", "iou_target")]
        lines.append(f"| trained on labelled scope-B frames (upper bound) | {target[0]} | {target[1]} | {target[0]} | "
                     f"{target[1]} |")

    def diff(a: str, b: str, k: str, lower: bool = True) -> Any:
        return paired(rows, k, {"arm": a}, {"arm": b}, lower_is_better=lower)

    def over_none(arm: str, k: str) -> Paired:
        return Paired(select(rows, k, arm=arm) - select(rows, "dice_none", arm=arm))

    lines += ["", "Reading (paired by seed; computed from the rows):", "",
              diff("videogan", "no_hist", "w1_ab").reading("(a) L_hist lowers the A→B colour distance W1 "
                                                           "(VideoGAN vs without L_hist)", 0.0, 4),
              diff("cyclegan", "no_hist", "w1_ab").reading("A frame-wise CycleGAN reaches a lower W1 than the "
                                                           "X-shape generator (both without L_hist)", 0.0, 4),
              diff("videogan", "no_x", "drift_ab").reading("(b) the X-shape lowers intra-video colour drift "
                                                           "(VideoGAN vs without X-shape)", 0.0, 4),
              diff("videogan", "no_x", "tdiff_ab").reading("(b) ... and the frame-difference error tdiff", 0.0, 4),
              diff("videogan", "cyclegan", "psnr_ab", lower=False).reading(
                  "VideoGAN vs frame-wise CycleGAN on PSNR to the scope-B truth", 0.0, 2, " dB"),
              *([over_none("videogan", "dice_b2a").reading(
                  "The paper's headline, direction 1: translating scope-B frames to A raises the A-trained "
                  "segmenter's polyp Dice over no adaptation", 0.01),
                 over_none("videogan", "dice_a2b").reading(
                     "Direction 2: a segmenter trained on A frames translated to B beats no adaptation", 0.01),
                 diff("videogan", "cyclegan", "dice_b2a", lower=False).reading(
                     "VideoGAN vs frame-wise CycleGAN, direction 1 Dice", 0.0),
                 diff("videogan", "cyclegan", "dice_a2b", lower=False).reading(
                     "VideoGAN vs frame-wise CycleGAN, direction 2 Dice", 0.0),
                 diff("videogan", "no_hist", "dice_b2a", lower=False).reading(
                     "L_hist's effect on direction 1 Dice (VideoGAN vs without L_hist)", 0.0),
                 diff("videogan", "no_x", "dice_b2a", lower=False).reading(
                     "The X-shape's effect on direction 1 Dice (VideoGAN vs without X-shape)", 0.0)] if seg else []),
              "", f"Setup: {run['n_videos']} clips x {run['n_frames']} frames per scope, a quarter held out by "
              f"video; {run['epochs']} epochs per arm, batch 4 pairs; configs/videogan/demo*.yaml; total "
              f"{run['seconds'] / 60:.1f} min, {run.get('threads', '?')} thread(s); mean seconds per run "
              f"{np.mean([r['seconds'] for r in rows]):.0f}."]
    return "\n".join(lines)
