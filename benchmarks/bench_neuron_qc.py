"""Neuron QC benchmark: per-node blocks read around the nodes vs the whole volume loaded first.

Usage::

    python benchmarks/bench_neuron_qc.py [--quick] [--out docs/benchmarks.md] [--json PATH] [--threads N]

A *step* = the blocks (image normalised per block + traced tubes) of every node of one traced neuron, as the
data module cuts them: ``node_blocks`` with a memory-mapped ``BlockReader`` on the stack file (method) against
reading the whole stack with ``tifffile`` into memory and cutting the same blocks from the array (peer).
The volume is a neuron phantom scaled up to ``--size`` voxels a side in x and y (z half), so the whole
volume is much larger than the blocks touched. Nodes/s counts scored nodes.
"""

from __future__ import annotations

import sys
import tempfile
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

PRELOAD = ["torch", "medlearn.data.neurons", "tifffile"]
SECTION = "neuron_qc"


def make_qc_step(spec: dict[str, Any]) -> StepBench:
    import numpy as np
    import tifffile

    from medlearn.data.neurons import node_blocks
    from medlearn.io.blocks import BlockReader
    from medlearn.io.swc import read_swc, resample_swc
    from medlearn.synth.neurons import write_neurons

    tmp = Path(tempfile.mkdtemp(prefix="bench-nq-"))
    root = write_neurons(tmp / "n", n_neurons=1, seed=0)
    small = tifffile.imread(root / "images" / "neuron_000.tif")
    f = spec["size"] // small.shape[1]
    big = np.zeros((small.shape[0] * f, small.shape[1] * f, small.shape[2] * f), np.uint16)
    big[: small.shape[0], : small.shape[1], : small.shape[2]] = small  # the neuron in one corner of a big stack
    path = tmp / "big.tif"
    tifffile.imwrite(path, big)
    tree = resample_swc(read_swc(root / "traced" / "neuron_000.swc"), 2.0)

    if spec["mode"] == "blocks":
        def step() -> Any:
            with BlockReader(path) as reader:
                return node_blocks(reader, tree, (8, 16, 16))
    else:
        def step() -> Any:
            return node_blocks(BlockReader.from_array(tifffile.imread(path)), tree, (8, 16, 16))

    return StepBench(step, len(tree), {"nodes": len(tree), "volume_mb": big.nbytes / 2**20})


def plan(threads: int, quick: bool, size: int) -> tuple[list[BenchConfig], list[Comparison]]:
    configs = [BenchConfig(m, make_qc_step, {"mode": m, "size": size}, threads=threads) for m in ("blocks", "whole")]
    comps = [Comparison(f"node blocks of one neuron, stack {size} x {size} x {size // 2}", "blocks", "whole",
                        "< 1 when the stack is much larger than the blocks", "BlockReader (memory-mapped)",
                        "whole stack read first")]
    return configs, comps


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, "neuron_qc", "smoke: 1 warm-up + 2 timed steps, 1 repeat, a 384-voxel stack")
    parser.add_argument("--size", type=int, default=768, help="stack side in x and y (z: half)")
    budget = Budget(parser.parse_args(argv))
    size = 384 if budget.args.quick else budget.args.size
    warmup, iters, repeats = budget.pick("warmup", 1, 1), budget.pick("iters", 2, 5), budget.pick("repeats", 1, 3)
    cmd = command_line("benchmarks/bench_neuron_qc.py", argv)
    t0 = time.perf_counter()
    machine = machine_info()
    configs, comps = plan(budget.threads, budget.args.quick, size)
    results = run_interleaved(configs, warmup, iters, repeats, preload=PRELOAD)
    rows = compare(results, comps)
    meta = run_meta(cmd, t0, machine, budget)
    s = meta["settings"]
    info = results["blocks"]["info"]
    lines = section_header("Neuron QC (per-node blocks: block reader vs whole volume)", meta,
                           f"{s['warmup']} warm-up + {s['iters']} timed steps per repeat, {s['repeats']} interleaved "
                           f"repeat(s), median; torch threads {s['threads']}")
    lines += [f"A step = the 2-channel 8 x 16 x 16 blocks of all {info['nodes']} nodes of one traced phantom neuron "
              f"in a {info['volume_mb']:.0f} MiB uint16 TIFF stack. Method: `node_blocks` on a memory-mapped "
              "`BlockReader`; peer: the stack read whole with tifffile, the same blocks cut from the array. "
              "Images/s here = nodes/s.", "", comparison_table(rows)]
    return finish(budget, SECTION, meta, "\n".join(lines), {"configs": results, "comparisons": rows})


if __name__ == "__main__":
    sys.exit(main())
