"""AS-OCT benchmark: spur-localisation inference speed, heatmap model vs the direct-regression peer.

Usage::

    python benchmarks/bench_asoct.py [--quick] [--out docs/benchmarks.md] [--json PATH] [--threads N]

A *step* is the inference of one batch of angle views as ``medlearn predict`` runs it:
``SpurLocalizer.predict_points`` (resize to the network input, normalise, forward, decode to
sub-pixel coordinates) under ``torch.no_grad`` in eval mode, called directly (no Trainer, no data
loading) on a fixed random batch in [0, 1]. Two scales, each the method against its peer built
from the same config with ``head="regression"`` (same encoder, global pooling -> FC(2) -> sigmoid):

* demo (``configs/asoct/demo_localize.yaml``): smallcnn-w16 U-Net + PPM (bins 1, 2, 4), 48 px,
  batch 32;
* paper (``configs/asoct/age_localize.yaml``): EfficientNet-B3 U-Net + PPM (bins 1, 2, 3, 6),
  512 px, batch ``--paper-batch`` (default 2).

Plus, at demo scale, the heatmap model with ``decode="argmax"`` as a second peer: what the
log-quadratic sub-pixel refinement costs. Results are ratios (method ms / peer ms) of medians over
interleaved repeats, each configuration in its own process (``benchmarks/harness.py``).

``--render JSON`` rewrites the section from a saved results file without timing anything.
``--quick``: 1 repeat of 1 + 2 steps (smoke). Default: 5 interleaved repeats of 3 + 20 steps at demo
scale and 1 + 4 steps at paper scale. The section between ``<!-- asoct:start -->`` and
``<!-- asoct:end -->`` of ``--out`` is replaced; the full results go to ``--json``.
"""

from __future__ import annotations

import json
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
    command_line,
    comparison_table,
    finish,
    machine_info,
    run_meta,
    run_scales,
    section_header,
    update_section,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"demo": ROOT / "configs" / "asoct" / "demo_localize.yaml",
           "paper": ROOT / "configs" / "asoct" / "age_localize.yaml"}
PRELOAD = ["torch", "medlearn.methods.asoct.module", "medlearn.engine.config"]
SECTION = "asoct"


def make_infer_step(spec: dict[str, Any]) -> StepBench:
    """Harness factory: ``predict_points`` of one batch for ``spec = {scale, head, decode, batch}``."""
    import warnings

    import torch

    from medlearn.engine.config import instantiate_class, load_config

    warnings.filterwarnings("ignore", message=r".*self\.log\(\)")
    torch.manual_seed(0)
    cfg = load_config(CONFIGS[spec["scale"]], {"model.init_args.head": spec["head"],
                                               "model.init_args.decode": spec.get("decode", "log_quadratic")})
    model = instantiate_class(cfg["model"])
    model.eval()
    size = int(cfg["model"]["init_args"]["image_size"])
    batch = torch.rand(spec["batch"], 1, size, size, generator=torch.Generator().manual_seed(1))

    def step() -> Any:
        with torch.no_grad():
            return model.predict_points(batch)

    params = sum(p.numel() for p in model.parameters())
    return StepBench(step, spec["batch"], {"params": params, "image_size": size,
                                           "encoder": cfg["model"]["init_args"]["encoder"]})


def plan(threads: int, paper_batch: int, with_paper: bool) -> tuple[list[BenchConfig], list[Comparison],
                                                                     list[BenchConfig], list[Comparison]]:
    demo = [BenchConfig("demo-heatmap", make_infer_step, {"scale": "demo", "head": "heatmap", "batch": 32},
                        threads=threads),
            BenchConfig("demo-regression", make_infer_step, {"scale": "demo", "head": "regression", "batch": 32},
                        threads=threads),
            BenchConfig("demo-heatmap-argmax", make_infer_step,
                        {"scale": "demo", "head": "heatmap", "decode": "argmax", "batch": 32}, threads=threads)]
    demo_cmp = [Comparison("demo scale: smallcnn-w16, 48 px, batch 32", "demo-heatmap", "demo-regression",
                           "> 1: the decoder, PPM and full-resolution map cost more than GAP + FC",
                           "heatmap U-Net + PPM (log-quadratic decode)", "direct regression"),
                Comparison("sub-pixel decoding (demo scale)", "demo-heatmap", "demo-heatmap-argmax",
                           "~1: the refinement reads 5 pixels per map", "log-quadratic decode", "argmax decode")]
    paper = [BenchConfig("paper-heatmap", make_infer_step, {"scale": "paper", "head": "heatmap",
                                                            "batch": paper_batch}, threads=threads),
             BenchConfig("paper-regression", make_infer_step, {"scale": "paper", "head": "regression",
                                                               "batch": paper_batch}, threads=threads)]
    paper_cmp = [Comparison(f"paper scale: EfficientNet-B3, 512 px, batch {paper_batch}", "paper-heatmap",
                            "paper-regression", "> 1: U-Net decoder + PPM at 512 px",
                            "heatmap U-Net + PPM (log-quadratic decode)", "direct regression")]
    return demo, demo_cmp, (paper if with_paper else []), (paper_cmp if with_paper else [])


def render(meta: dict[str, Any], rows: list[dict[str, Any]], results: dict[str, Any]) -> str:
    s = meta["settings"]
    lines = section_header(
        "AS-OCT (scleral-spur localisation inference)", meta,
        f"demo scale {s['warmup']} warm-up + {s['iters']} timed steps, paper scale {s['paper_warmup']} + "
        f"{s['paper_iters']}, per repeat; {s['repeats']} interleaved repeat(s), median; torch threads {s['threads']}")
    params = {k: v["info"]["params"] for k, v in results.items()}
    lines += [
        "A step = `SpurLocalizer.predict_points` on one batch of angle views (resize to the network input, "
        "normalise, forward, decode to sub-pixel coordinates), eval mode, `torch.no_grad`, no Trainer and no data "
        "loading; img/s = angle views per second. The peer is the same config with `head: regression` (same "
        "encoder, global average pooling -> FC(2) -> sigmoid). Time ratio = method ms/step / peer ms/step (medians; "
        "per-repeat range in brackets). Peak MiB = the process's peak resident set during the steps above the one "
        "after the build. Parameters: "
        + ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in params.items()) + ".",
        "",
        comparison_table(rows),
        "",
        "Median of the per-repeat ratios (each round times method and peer back to back, so a load change "
        "between rounds cancels out): "
        + "; ".join(f"{r['title']}: {statistics.median(r['ratio_per_repeat']):.2f}" for r in rows) + ".",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = bench_parser(__doc__, "asoct", "smoke: 1 repeat, a few steps")
    p.add_argument("--paper-batch", type=int, default=2)
    p.add_argument("--no-paper", action="store_true", help="skip the EfficientNet-B3 / 512 px pair")
    p.add_argument("--render", default=None, metavar="JSON",
                   help="only rewrite the section of --out from a results JSON of an earlier run")
    args = p.parse_args(argv)
    if args.render:
        saved = json.loads(Path(args.render).read_text(encoding="utf-8"))
        meta = {k: saved[k] for k in ("command", "date", "machine", "wall_s", "settings")}
        update_section(args.out, SECTION, render(meta, saved["comparisons"], saved["configs"]))
        return 0
    budget = Budget(args)
    warmup, iters, repeats = budget.pick("warmup", 1, 3), budget.pick("iters", 2, 20), budget.pick("repeats", 1, 5)
    paper_warmup, paper_iters = (1, 2) if args.quick else (1, 4)
    threads = budget.threads
    budget.settings.update(paper_warmup=paper_warmup, paper_iters=paper_iters, paper_batch=args.paper_batch)
    cmd = command_line("benchmarks/bench_asoct.py", argv)
    t0 = time.perf_counter()
    machine = machine_info()
    demo, demo_cmp, paper, paper_cmp = plan(threads, args.paper_batch, not args.no_paper)
    results, rows = run_scales([(demo, demo_cmp, warmup, iters, repeats),
                                (paper, paper_cmp, paper_warmup, paper_iters, repeats)], preload=PRELOAD)
    meta = run_meta(cmd, t0, machine, budget)
    return finish(budget, SECTION, meta, render(meta, rows, results), {"configs": results, "comparisons": rows})


if __name__ == "__main__":
    sys.exit(main())
