"""LT-Net benchmark: the LT-Net training step against the VoxelMorph-style step (same generator).

Usage::

    python benchmarks/bench_ltnet.py [--quick] [--out docs/benchmarks.md] [--json PATH] [--threads N]

A *step* = ``LTNet.losses`` on a fixed random (atlas, image) batch + backward + Adam, called directly (no
Trainer, no data loading). LT-Net runs the generator twice (forward pair, then warped atlas -> atlas) and
warps the one-hot labels twice, so about 2x the VoxelMorph-style step is expected. Two scales:
``configs/ltnet/demo.yaml`` (2D, 64 x 64, batch 4, widths 8-16-16-16) and ``configs/ltnet/oneshot.yaml``
(3D, 64 x 64 x 64, batch 2: what ``medlearn oneshot`` trains per step by default).
"""

from __future__ import annotations

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
    compare,
    comparison_table,
    finish,
    machine_info,
    run_interleaved,
    run_meta,
    section_header,
)

PRELOAD = ["torch", "medlearn.methods.ltnet.module"]
SECTION = "ltnet"


def make_ltnet_step(spec: dict[str, Any]) -> StepBench:
    import torch

    from medlearn.methods.ltnet.module import LTNet

    torch.manual_seed(0)
    size = [spec["size"]] * spec["dims"]
    model = LTNet(spatial_dims=spec["dims"], backward=spec["backward"], label_values=[0, 1, 2, 3, 4])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    atlas = torch.rand(spec["batch"], 1, *size)
    image = torch.rand(spec["batch"], 1, *size)
    labels = (atlas[:, 0] * 5).long().clamp(max=4)

    def step() -> Any:
        opt.zero_grad(set_to_none=True)
        loss = model.losses(atlas, labels, image, 1.0)["total"]
        loss.backward()
        opt.step()

    return StepBench(step, spec["batch"], {"params": sum(p.numel() for p in model.parameters())})


def plan(threads: int, quick: bool) -> tuple[list[BenchConfig], list[Comparison]]:
    scales = [(2, 64, 4, "2D 64 x 64, batch 4 (demo)")]
    if not quick:
        scales.append((3, 64, 2, "3D 64^3, batch 2 (medlearn oneshot default)"))
    configs, comps = [], []
    for dims, size, batch, title in scales:
        for backward in (True, False):
            name = f"{dims}d-{'ltnet' if backward else 'vm'}"
            configs.append(BenchConfig(name, make_ltnet_step, {"dims": dims, "size": size, "batch": batch,
                                                               "backward": backward}, threads=threads))
        comps.append(Comparison(f"LT-Net step: {title}", f"{dims}d-ltnet", f"{dims}d-vm",
                                "~2: a second generator pass and two more warps", "LT-Net", "VoxelMorph-style"))
    return configs, comps


def render(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    s = meta["settings"]
    lines = section_header("LT-Net (LT-Net step vs VoxelMorph-style step)", meta,
                           f"{s['warmup']} warm-up + {s['iters']} timed steps per repeat, {s['repeats']} interleaved "
                           f"repeat(s), median; torch threads {s['threads']}")
    lines += ["A step = `LTNet.losses` (MSE + smoothness; LT-Net adds the backward pass through the shared generator "
              "and the image, transformation and anatomy cycles) + backward + Adam on a fixed random batch. Peer: "
              "the same module with `backward=False` (VoxelMorph-style). Time ratio = method ms / peer ms (medians).",
              "", comparison_table(rows)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    budget = Budget(bench_parser(__doc__, "ltnet", "smoke: 2D only, 2 warm-up + 3 timed steps, 1 repeat")
                    .parse_args(argv))
    warmup, iters, repeats = budget.pick("warmup", 2, 3), budget.pick("iters", 3, 10), budget.pick("repeats", 1, 3)
    cmd = command_line("benchmarks/bench_ltnet.py", argv)
    t0 = time.perf_counter()
    machine = machine_info()
    configs, comps = plan(budget.threads, budget.args.quick)
    results = run_interleaved(configs, warmup, iters, repeats, preload=PRELOAD)
    rows = compare(results, comps)
    meta = run_meta(cmd, t0, machine, budget)
    return finish(budget, SECTION, meta, render(meta, rows), {"configs": results, "comparisons": rows})


if __name__ == "__main__":
    sys.exit(main())
