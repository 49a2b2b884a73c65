"""CCL-Net training-step benchmark: the CCL block vs the same backbone with a plain head.

Usage::

    python benchmarks/bench_ccl.py [--quick] [--out docs/benchmarks.md] [--json PATH] [--threads N]

A *step* is what one Lightning training step of :class:`medlearn.methods.ccl.module.CCLClassifier`
does, called directly on the module (no Trainer): ``training_step`` (augmentation or evaluation view,
backbone, linear head, and for CCL the CCL block with its soft labels, metric and correlation losses),
``zero_grad`` + ``backward`` + an Adam step over the module's parameter groups (the CCL block at
10x lr, as ``configure_optimizers``). The model comes from ``configs/ccl/demo.yaml`` with the row's
backbone, image size and ``soft_labels``; the batch is a fixed random ``(B, 3, S, S)`` tensor in
[0, 1] with random labels of 7 classes. The peer is the identical step with ``soft_labels="hard"``
(plain cross-entropy head, no CCL block): the ratio is what the block costs.

Comparisons (each timed against its peer in the same run, repeats interleaved, see ``harness.py``):
ResNet-18 at 64 px batch 32, EfficientNet-B0 at 64 px batch 32, DenseNet-121 at 64 px batch 16, and
the demo's 3-block CNN at 24 px batch 64; plus label smoothing vs hard labels on ResNet-18 (should
be ~1, the same work).

``--quick`` (smoke): 2 warm-up + 3 timed steps, 1 repeat. Default: 5 warm-up + 20 timed steps,
3 interleaved repeats. The section between ``<!-- ccl:start -->`` and ``<!-- ccl:end -->`` of
``--out`` is replaced; the full results go to ``--json``.
"""

from __future__ import annotations

import sys
import time
import warnings
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
    compare,
    comparison_table,
    finish,
    machine_info,
    run_interleaved,
    run_meta,
    section_header,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "ccl" / "demo.yaml"
PRELOAD = ["torch", "medlearn.methods.ccl.module", "medlearn.engine.config"]
SECTION = "ccl"
NOTE = ("Reading: the label-smoothing row times the same work as its peer, so its distance from 1 is the spread "
        "between two processes of the same step on this shared machine; CCL ratios within that spread mean the "
        "block costs nothing measurable on the real backbones. On the demo's tiny CNN (a step of ~20 ms) the "
        "block's dozen extra small ops are a visible share.")


# -- the step (runs in the child processes) -----------------------------------------------------
def make_ccl_step(spec: dict[str, Any]) -> StepBench:
    """Harness factory: one CCLClassifier training step for ``spec`` (backbone, size, batch, soft_labels)."""
    import torch

    from medlearn.engine.config import instantiate_class, load_config

    warnings.filterwarnings("ignore", message=r".*self\.log\(\)")
    torch.manual_seed(spec.get("seed", 0))
    cfg = load_config(CONFIG)
    model = instantiate_class(cfg["model"], backbone=spec["backbone"], image_size=spec["size"],
                              soft_labels=spec["soft_labels"], augment=spec.get("augment", True))
    model.train()
    h = model.hparams
    ccl_ids = set(map(id, model.ccl.parameters())) if model.ccl is not None else set()
    groups = [{"params": [p for p in model.parameters() if id(p) not in ccl_ids]}]
    if model.ccl is not None:
        groups.append({"params": list(model.ccl.parameters()), "lr": h.lr * h.ccl_lr_mult})
    opt = torch.optim.Adam(groups, lr=h.lr, weight_decay=h.weight_decay)
    g = torch.Generator().manual_seed(1234)
    batch = {"image": torch.rand(spec["batch"], 3, spec["size"], spec["size"], generator=g),
             "label": torch.randint(0, 7, (spec["batch"],), generator=g)}

    def step() -> Any:
        opt.zero_grad(set_to_none=True)
        loss = model.training_step(batch, 0)
        loss.backward()
        opt.step()
        return loss.detach()

    n_ccl = sum(p.numel() for p in model.ccl.parameters()) if model.ccl is not None else 0
    return StepBench(step, spec["batch"], {"params": sum(p.numel() for p in model.parameters()), "ccl_params": n_ccl})


# -- the plan (parent) ----------------------------------------------------------------------------
def plan(threads: int, quick: bool) -> tuple[list[BenchConfig], list[Comparison]]:
    rows = [("resnet18", 64, 32, "ResNet-18, 64 px, batch 32"),
            ("efficientnet-b0", 64, 32, "EfficientNet-B0, 64 px, batch 32"),
            ("densenet121", 64, 16, "DenseNet-121, 64 px, batch 16"),
            ("smallcnn3", 24, 64, "3-block CNN (demo), 24 px, batch 64")]
    if quick:
        rows = [rows[0], rows[3]]
    configs: list[BenchConfig] = []
    comps: list[Comparison] = []
    for backbone, size, batch, title in rows:
        base = {"backbone": backbone, "size": size, "batch": batch, "augment": backbone != "smallcnn3"}
        for mode in ("ccl", "hard"):
            configs.append(BenchConfig(f"{backbone}-{mode}", make_ccl_step, {**base, "soft_labels": mode},
                                       threads=threads))
        comps.append(Comparison(f"CCL block: {title}", f"{backbone}-ccl", f"{backbone}-hard", "~1: the block is a "
                                "d=4 projection + K embeddings on pooled features", "CCL-Net", "plain head (hard)"))
    configs.append(BenchConfig("resnet18-smoothing", make_ccl_step, {"backbone": "resnet18", "size": 64, "batch": 32,
                                                                     "augment": True, "soft_labels": "smoothing"},
                               threads=threads))
    comps.append(Comparison("label smoothing: ResNet-18, 64 px, batch 32", "resnet18-smoothing", "resnet18-hard",
                            "~1: same work", "label smoothing", "plain head (hard)"))
    return configs, comps


def render(meta: dict[str, Any], rows: list[dict[str, Any]], results: dict[str, Any]) -> str:
    s = meta["settings"]
    ccl_params = {k.removesuffix("-ccl"): v["info"] for k, v in results.items() if k.endswith("-ccl")}
    lines = section_header(
        "CCL-Net (CCL block vs plain head)", meta,
        f"{s['warmup']} warm-up + {s['iters']} timed steps per repeat, {s['repeats']} interleaved repeat(s), "
        f"median; torch threads {s['threads']}")
    lines += [
        "A step = `CCLClassifier.training_step` (training view, backbone, linear head; for CCL-Net also the CCL "
        "block: projection to d=4, 7 class embeddings, correlation-derived soft labels, KL + metric + correlation "
        "losses) + backward + Adam, called directly (no Trainer, no data loading), model from "
        "`configs/ccl/demo.yaml` with the row's backbone and size, 3-channel input. Peer: the same step with "
        "`soft_labels=hard`. Images/s = training images per second. Time ratio = method ms/step / peer ms/step "
        "(medians; per-repeat range in brackets). Peak MiB = the process's peak resident set above the one after "
        "imports and model build.",
        "",
        comparison_table(rows),
        "",
        "CCL block parameters: " + ", ".join(f"{k}: {v['ccl_params']:,} of {v['params']:,}"
                                             for k, v in ccl_params.items()) + ".",
        "",
        NOTE,
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    budget = Budget(bench_parser(__doc__, "ccl", "smoke: 2 warm-up + 3 timed steps, 1 repeat").parse_args(argv))
    warmup, iters, repeats = budget.pick("warmup", 2, 5), budget.pick("iters", 3, 20), budget.pick("repeats", 1, 3)
    threads = budget.threads
    cmd = command_line("benchmarks/bench_ccl.py", argv)
    t0 = time.perf_counter()
    machine = machine_info()
    configs, comps = plan(threads, budget.args.quick)
    results = run_interleaved(configs, warmup, iters, repeats, preload=PRELOAD)
    rows = compare(results, comps)
    meta = run_meta(cmd, t0, machine, budget)
    return finish(budget, SECTION, meta, render(meta, rows, results), {"configs": results, "comparisons": rows})


if __name__ == "__main__":
    sys.exit(main())
