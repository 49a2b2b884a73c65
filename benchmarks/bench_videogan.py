"""VideoGAN benchmark: the VideoGAN step vs a frame-wise CycleGAN step, the histogram loss's cost, bf16 vs fp32.

Usage::

    python benchmarks/bench_videogan.py [--quick] [--out docs/benchmarks.md] [--json PATH] [--threads N]

A *step* is one :meth:`medlearn.methods.videogan.module.VideoGAN.training_step` (both generators with
their cycle / identity / histogram losses and Adam update, then both discriminators on pooled fakes) on a
fixed batch of random frame pairs, called directly (no Trainer, no data loading; ``manual_step`` bound to
plain torch optimisers). Both arms see the same frames (pairs of two frames per item in each domain).

Comparisons (ratios of medians over interleaved repeats, each configuration in its own process,
``benchmarks/harness.py``):

* demo scale (``configs/videogan/demo.yaml``, 32 px, batch 4 pairs): VideoGAN vs frame-wise CycleGAN
  (``demo_cyclegan.yaml``); VideoGAN vs VideoGAN without L_hist;
* paper scale (``configs/videogan/cvc_etis.yaml``: ResNet-9 arms, 256 px, batch ``--paper-batch`` pairs):
  VideoGAN vs the frame-wise CycleGAN of the same width; VideoGAN under bf16 autocast vs fp32.

The section between ``<!-- videogan:start -->`` and ``<!-- videogan:end -->`` of ``--out`` is replaced;
the full results go to ``--json``.
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
_CFG = ROOT / "configs" / "videogan"
CONFIGS = {"demo": _CFG / "demo.yaml", "demo-cyclegan": _CFG / "demo_cyclegan.yaml", "paper": _CFG / "cvc_etis.yaml"}
PRELOAD = ["torch", "medlearn.methods.videogan.module", "medlearn.engine.config"]
SECTION = "videogan"
ARMS: dict[str, tuple[str, dict[str, Any]]] = {
    "videogan": ("", {}),
    "no_hist": ("", {"model.init_args.lambda_hist": 0.0}),
    "cyclegan": ("-cyclegan", {}),
}


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
    """Harness factory: ``spec = {scale, arm, batch, bf16}``; arm ``videogan``, ``no_hist`` or ``cyclegan``."""
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    scale, arm, b = spec["scale"], spec["arm"], spec["batch"]
    suffix, over = ARMS[arm]
    if scale == "paper" and arm == "cyclegan":  # the paper config with the frame-wise generator, same width
        suffix, over = "", {"model.init_args.generator": "resnet", "model.init_args.lambda_hist": 0.0}
    model, size = _model(scale + suffix, over)
    g = torch.Generator().manual_seed(1)
    batch = {k: torch.rand(b, 3, size, size, generator=g) * 2 - 1 for k in ("a_i", "a_j", "b_i", "b_j")}
    batch.update({f"border_{k}": torch.ones(b, 1, size, size) for k in ("a_i", "a_j", "b_i", "b_j")})
    bf16 = bool(spec.get("bf16"))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model.training_step(batch, 0)

    params = sum(p.numel() for p in model.g_ab.parameters())
    return StepBench(step, b, {"generator_params": params, "image_size": size})


def plan(threads: int, paper_batch: int) -> tuple[list[BenchConfig], list[Comparison], list[BenchConfig],
                                                  list[Comparison]]:
    demo = [BenchConfig(f"demo-{a}", make_train_step, {"scale": "demo", "arm": a, "batch": 4}, threads=threads)
            for a in ARMS]
    demo_cmp = [Comparison("demo scale (32 px, batch 4 pairs): VideoGAN vs frame-wise CycleGAN", "demo-videogan",
                           "demo-cyclegan", "~1: the crossing adds one conv; L_hist adds kernel histograms",
                           "VideoGAN (X-shape + L_hist)", "CycleGAN (ResNet, frame-wise)"),
                Comparison("colour-histogram loss (demo scale)", "demo-videogan", "demo-no_hist",
                           "> 1: soft histograms of every translated frame", "VideoGAN", "without L_hist")]
    paper = [BenchConfig(f"paper-{a}", make_train_step, {"scale": "paper", "arm": a, "batch": paper_batch,
                                                          "bf16": bf16}, threads=threads)
             for a, bf16 in (("videogan", False), ("cyclegan", False), ("videogan", True))]
    paper[-1] = BenchConfig("paper-videogan-bf16", make_train_step,
                            {"scale": "paper", "arm": "videogan", "batch": paper_batch, "bf16": True}, threads=threads)
    paper_cmp = [Comparison(f"paper scale (ResNet-9 arms, 256 px, batch {paper_batch} pair(s))", "paper-videogan",
                            "paper-cyclegan", "~1-1.3: skips, fusion conv and 64-bin histograms",
                            "VideoGAN", "CycleGAN (frame-wise)"),
                 Comparison("bf16 autocast vs fp32 (paper scale, CPU)", "paper-videogan-bf16", "paper-videogan",
                            bf16_expectation(), "VideoGAN bf16-mixed", "VideoGAN fp32")]
    return demo, demo_cmp, paper, paper_cmp


def render(meta: dict[str, Any], rows: list[dict[str, Any]], results: dict[str, Any]) -> str:
    s = meta["settings"]
    lines = section_header(
        "VideoGAN (VideoGAN step vs frame-wise CycleGAN step; L_hist; bf16 vs fp32)", meta,
        f"demo scale {s['warmup']} warm-up + {s['iters']} timed steps, paper scale {s['paper_warmup']} + "
        f"{s['paper_iters']}, per repeat; {s['repeats']} (paper scale {s['paper_repeats']}) interleaved repeat(s), "
        f"median; torch threads {s['threads']}")
    params = {k: v["info"]["generator_params"] for k, v in results.items()}
    lines += [
        "A step = `VideoGAN.training_step` on one fixed batch of frame pairs (generators with cycle, identity and "
        "histogram losses, then discriminators on pooled fakes; each with its Adam update), no Trainer, no data "
        "loading. Time ratio = method ms/step / peer ms/step (medians; per-repeat range in brackets); peak MiB = "
        "the process's peak resident set above the one after the build. Parameters of one generator: "
        + ", ".join(f"{k} {v / 1e6:.3f} M" for k, v in params.items()) + ".",
        "",
        comparison_table(rows),
        "",
        "Median of the per-repeat ratios: "
        + "; ".join(f"{r['title']}: {statistics.median(r['ratio_per_repeat']):.2f}" for r in rows) + ".",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = bench_parser(__doc__, "videogan", "smoke: 1 repeat, a few steps")
    p.add_argument("--paper-batch", type=int, default=1)
    p.add_argument("--paper-repeats", type=int, default=2, help="interleaved repeats at paper scale")
    args = p.parse_args(argv)
    budget = Budget(args)
    warmup, iters, repeats = budget.pick("warmup", 1, 2), budget.pick("iters", 2, 8), budget.pick("repeats", 1, 3)
    paper_warmup, paper_iters = (1, 1) if args.quick else (1, 2)
    paper_repeats = 1 if args.quick else args.paper_repeats
    threads = budget.threads
    budget.settings.update(paper_warmup=paper_warmup, paper_iters=paper_iters, paper_batch=args.paper_batch,
                           paper_repeats=paper_repeats)
    cmd = command_line("benchmarks/bench_videogan.py", argv)
    t0 = time.perf_counter()
    machine = machine_info()
    demo, demo_cmp, paper, paper_cmp = plan(threads, args.paper_batch)
    results, rows = run_scales([(demo, demo_cmp, warmup, iters, repeats),
                                (paper, paper_cmp, paper_warmup, paper_iters, paper_repeats)], preload=PRELOAD)
    meta = run_meta(cmd, t0, machine, budget)
    return finish(budget, SECTION, meta, render(meta, rows, results), {"configs": results, "comparisons": rows})


if __name__ == "__main__":
    sys.exit(main())
