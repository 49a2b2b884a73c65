"""MGAN benchmark: one conditional generator for three contrasts vs three pix2pix models, and bf16 vs fp32.

Usage::

    python benchmarks/bench_mgan.py [--quick] [--out docs/benchmarks.md] [--json PATH] [--threads N]

A *step* is one training iteration of :meth:`medlearn.methods.mgan.module.MGAN.training_step` (critic
step, generator step, and for TC-MGAN the segmentor step, each with its Adam update) on a fixed batch
of random slices, called directly (no Trainer, no data loading; ``manual_step`` bound to plain torch
optimisers). What an epoch costs follows from it: MGAN draws one target per slice and trains one
generator, so an epoch over N slices is N / batch MGAN steps for all three contrasts, while pix2pix
x3 needs N / batch steps of *each* of its three models. The pix2pix-x3 configuration therefore runs
the three models' steps back to back per timed step, holding the three models in memory.

Comparisons (ratios of medians over interleaved repeats, each configuration in its own process,
``benchmarks/harness.py``):

* demo scale (``configs/mgan/demo.yaml``, 32 px, batch 16): MGAN vs pix2pix x3; TC-MGAN vs MGAN;
* paper scale (``configs/mgan/brats_tcmgan.yaml`` / ``brats_pix2pix.yaml``: unet_128, 128 px, batch
  ``--paper-batch``): MGAN (StarGAN critic, WGAN-GP) vs pix2pix x3; MGAN under bf16 autocast vs fp32.

``--quick``: 1 repeat of 1 + 2 steps (smoke). Default: 3 interleaved repeats of 2 + 8 steps (demo) and
2 repeats of 1 + 2 steps at paper scale, batch 2 (a CPU step of unet_128 takes seconds).
The section between ``<!-- mgan:start -->`` and ``<!-- mgan:end -->`` of
``--out`` is replaced; the full results go to ``--json``.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    BenchConfig,
    Budget,
    Comparison,
    StepBench,
    bench_parser,
    bf16_expectation,
    command_line,
    comparison_table,
    finish,
    machine_info,
    run_meta,
    run_scales,
    section_header,
)

ROOT = Path(__file__).resolve().parents[1]
_CFG = ROOT / "configs" / "mgan"
CONFIGS = {"demo": _CFG / "demo.yaml", "demo-pix2pix": _CFG / "demo_pix2pix.yaml", "paper": _CFG / "brats_tcmgan.yaml",
           "paper-pix2pix": _CFG / "brats_pix2pix.yaml"}
PRELOAD = ["torch", "medlearn.methods.mgan.module", "medlearn.engine.config"]
SECTION = "mgan"
CONTRASTS = ("flair", "t1ce", "t1")


def _model(config: str, overrides: dict[str, Any]) -> Any:
    import torch

    from medlearn.engine.config import instantiate_class, load_config
    from medlearn.engine.module import build_optimizer

    cfg = load_config(CONFIGS[config], overrides)
    model = instantiate_class(cfg["model"])
    model.train()
    opts = {p.name: build_optimizer(p.groups, p.spec) for p in model.optimizer_plans()}

    def manual_step(name: str, loss: torch.Tensor) -> None:
        opts[name].zero_grad()
        loss.backward()
        opts[name].step()

    model.manual_step = manual_step
    model.log = lambda *a, **k: None
    return model, int(cfg["data"]["init_args"]["image_size"])


def make_train_step(spec: dict[str, Any]) -> StepBench:
    """Harness factory: ``spec = {scale, arm, batch, bf16}``; arm ``mgan``, ``tcmgan`` or ``pix2pix3``."""
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    scale, arm, b = spec["scale"], spec["arm"], spec["batch"]
    models = []
    if arm == "pix2pix3":
        for c in CONTRASTS:
            models.append(_model(f"{scale}-pix2pix", {"model.init_args.synthesise": [c]}))
    else:
        over = {"model.init_args.lambda_tc": 0.0, "model.init_args.seg_pretrain_epochs": 0} if arm == "mgan" \
            else {"model.init_args.seg_pretrain_epochs": 0, "model.init_args.lambda_tc": 1.0}
        models.append(_model(scale, over))
    size = models[0][1]
    g = torch.Generator().manual_seed(1)
    batch = {"source": torch.rand(b, 1, size, size, generator=g) * 2 - 1,
             "targets": torch.rand(b, 3, size, size, generator=g) * 2 - 1,
             "mask": (torch.rand(b, 1, size, size, generator=g) > 0.9).float(),
             "brain": torch.ones(b, 1, size, size)}
    bf16 = bool(spec.get("bf16"))

    def step() -> None:
        for m, _ in models:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                m.training_step(batch, 0)

    params = sum(p.numel() for m, _ in models for p in m.generator.parameters())
    return StepBench(step, b, {"generator_params": params, "image_size": size, "models": len(models)})


def plan(threads: int, paper_batch: int) -> tuple[list[BenchConfig], list[Comparison], list[BenchConfig],
                                                  list[Comparison]]:
    demo = [BenchConfig(f"demo-{a}", make_train_step, {"scale": "demo", "arm": a, "batch": 16}, threads=threads)
            for a in ("mgan", "pix2pix3", "tcmgan")]
    demo_cmp = [Comparison("demo scale (32 px, batch 16): an epoch's cost per step", "demo-mgan", "demo-pix2pix3",
                           "~1/3: one generator serves the three contrasts", "MGAN (1 generator, 3 contrasts)",
                           "pix2pix x3 (3 models, 1 step each)"),
                Comparison("tumour-consistency loss (demo scale)", "demo-tcmgan", "demo-mgan",
                           "> 1: segmentor forward in G's step + its own step", "TC-MGAN", "MGAN")]
    paper = [BenchConfig(f"paper-{a}", make_train_step, {"scale": "paper", "arm": a, "batch": paper_batch,
                                                          "bf16": bf16}, threads=threads)
             for a, bf16 in (("mgan", False), ("pix2pix3", False))]
    paper.append(BenchConfig("paper-mgan-bf16", make_train_step,
                             {"scale": "paper", "arm": "mgan", "batch": paper_batch, "bf16": True}, threads=threads))
    paper_cmp = [Comparison(f"paper scale (unet_128, 128 px, batch {paper_batch})", "paper-mgan", "paper-pix2pix3",
                            "~1/3 (MGAN's critic has a GP double backward)", "MGAN (StarGAN critic, WGAN-GP)",
                            "pix2pix x3 (PatchGAN, vanilla)"),
                 Comparison("bf16 autocast vs fp32 (paper scale, CPU)", "paper-mgan-bf16", "paper-mgan",
                            bf16_expectation(), "MGAN bf16-mixed", "MGAN fp32")]
    return demo, demo_cmp, paper, paper_cmp


def render(meta: dict[str, Any], rows: list[dict[str, Any]], results: dict[str, Any]) -> str:
    s = meta["settings"]
    lines = section_header(
        "MGAN (one conditional generator vs three pix2pix models; bf16 vs fp32)", meta,
        f"demo scale {s['warmup']} warm-up + {s['iters']} timed steps, paper scale {s['paper_warmup']} + "
        f"{s['paper_iters']}, per repeat; {s['repeats']} (paper scale {s['paper_repeats']}) interleaved repeat(s), "
        f"median; torch threads {s['threads']}")
    params = {k: v["info"]["generator_params"] for k, v in results.items()}
    lines += [
        "A step = `MGAN.training_step` on one fixed batch (critic step, generator step, TC-MGAN's segmentor step, "
        "each with its Adam update), no Trainer, no data loading. pix2pix x3 = the three per-contrast models' "
        "steps back to back: what one epoch over the same slices costs them per MGAN step. Time ratio = method "
        "ms/step / peer ms/step (medians; per-repeat range in brackets); peak MiB = the process's peak resident "
        "set above the one after the build. Generator parameters: "
        + ", ".join(f"{k} {v / 1e6:.3f} M" for k, v in params.items()) + ".",
        "",
        comparison_table(rows),
        "",
        "Median of the per-repeat ratios: "
        + "; ".join(f"{r['title']}: {statistics.median(r['ratio_per_repeat']):.2f}" for r in rows) + ".",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = bench_parser(__doc__, "mgan", "smoke: 1 repeat, a few steps")
    p.add_argument("--paper-batch", type=int, default=2)
    p.add_argument("--paper-repeats", type=int, default=2, help="interleaved repeats at paper scale")
    args = p.parse_args(argv)
    budget = Budget(args)
    warmup, iters, repeats = budget.pick("warmup", 1, 2), budget.pick("iters", 2, 8), budget.pick("repeats", 1, 3)
    paper_warmup, paper_iters = (1, 1) if args.quick else (1, 2)
    paper_repeats = 1 if args.quick else args.paper_repeats
    threads = budget.threads
    budget.settings.update(paper_warmup=paper_warmup, paper_iters=paper_iters, paper_batch=args.paper_batch,
                           paper_repeats=paper_repeats)
    cmd = command_line("benchmarks/bench_mgan.py", argv)
    t0 = time.perf_counter()
    machine = machine_info()
    demo, demo_cmp, paper, paper_cmp = plan(threads, args.paper_batch)
    results, rows = run_scales([(demo, demo_cmp, warmup, iters, repeats),
                                (paper, paper_cmp, paper_warmup, paper_iters, paper_repeats)], preload=PRELOAD)
    meta = run_meta(cmd, t0, machine, budget)
    return finish(budget, SECTION, meta, render(meta, rows, results), {"configs": results, "comparisons": rows})


if __name__ == "__main__":
    sys.exit(main())
