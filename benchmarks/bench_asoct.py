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

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    BenchConfig,
    Comparison,
    StepBench,
    compare,
    comparison_table,
    default_threads,
    machine_info,
    machine_markdown,
    run_interleaved,
    update_section,
    utc_now,
    write_json,
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
    lines = [
        "## AS-OCT (scleral-spur localisation inference)",
        "",
        f"Command: `{meta['command']}`  ",
        f"Date: {meta['date']}  ",
        f"Settings: demo scale {s['warmup']} warm-up + {s['iters']} timed steps, paper scale {s['paper_warmup']} + "
        f"{s['paper_iters']}, per repeat; {s['repeats']} interleaved repeat(s), median; torch threads {s['threads']}; "
        f"wall time {meta['wall_s']:.0f} s.",
    ]
    if s["quick"]:
        lines += ["", "> Smoke run (`--quick`): too few steps for the numbers to mean much."]
    params = {k: v["info"]["params"] for k, v in results.items()}
    lines += [
        "",
        "Machine:",
        "",
        machine_markdown(meta["machine"]),
        "",
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke: 1 repeat, a few steps")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"), help="markdown file to update")
    p.add_argument("--json", default=None, help="results JSON (default: next to --out, '<stem>-asoct.json')")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: MEDLEARN_THREADS or min(2, cores), as set_cpu_threads)")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--paper-batch", type=int, default=2)
    p.add_argument("--no-paper", action="store_true", help="skip the EfficientNet-B3 / 512 px pair")
    p.add_argument("--render", default=None, metavar="JSON",
                   help="only rewrite the section of --out from a results JSON of an earlier run")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        saved = json.loads(Path(args.render).read_text(encoding="utf-8"))
        meta = {k: saved[k] for k in ("command", "date", "machine", "wall_s", "settings")}
        update_section(args.out, SECTION, render(meta, saved["comparisons"], saved["configs"]))
        return 0
    q = args.quick

    def pick(value: int | None, quick: int, full: int) -> int:
        return value if value is not None else (quick if q else full)

    warmup, iters, repeats = pick(args.warmup, 1, 3), pick(args.iters, 2, 20), pick(args.repeats, 1, 5)
    paper_warmup, paper_iters = (1, 2) if q else (1, 4)
    threads = args.threads if args.threads is not None else default_threads()
    out = Path(args.out)
    json_path = Path(args.json) if args.json else out.with_name(out.stem + "-asoct.json")
    env = " ".join(f"{k}={os.environ[k]}" for k in ("MEDLEARN_THREADS",) if k in os.environ)
    cmd = " ".join(x for x in [env, "python benchmarks/bench_asoct.py",
                               shlex.join(sys.argv[1:] if argv is None else argv)] if x)
    t0 = time.perf_counter()
    machine = machine_info()
    demo, demo_cmp, paper, paper_cmp = plan(threads, args.paper_batch, not args.no_paper)
    results = run_interleaved(demo, warmup, iters, repeats, preload=PRELOAD)
    rows = compare(results, demo_cmp)
    if paper:
        paper_res = run_interleaved(paper, paper_warmup, paper_iters, repeats, preload=PRELOAD)
        rows += compare(paper_res, paper_cmp)
        results.update(paper_res)
    try:
        machine["loadavg_end"] = list(os.getloadavg())
    except OSError:
        pass
    meta = {"command": cmd, "date": utc_now(), "machine": machine, "wall_s": time.perf_counter() - t0,
            "settings": {"quick": q, "warmup": warmup, "iters": iters, "paper_warmup": paper_warmup,
                         "paper_iters": paper_iters, "repeats": repeats, "threads": threads,
                         "paper_batch": args.paper_batch}}
    body = render(meta, rows, results)
    update_section(out, SECTION, body)
    write_json(json_path, {**meta, "configs": results, "comparisons": rows})
    print(body)
    print(f"\nwrote {out} (section {SECTION!r}) and {json_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
