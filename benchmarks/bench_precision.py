"""Precision: every method's demo under fp32 and under bf16 autocast (``precision: auto``'s choice here).

Usage::

    python benchmarks/bench_precision.py [--quick] [--out docs/benchmarks.md] [--json PATH] [--threads N]
                                         [--methods NAME ...] [--repeats N]

Each method's built-in demo (``medlearn demo NAME``: its configs, data, seed and test split) runs in
a fresh process once with ``MEDLEARN_PRECISION=32-true`` and once with ``MEDLEARN_PRECISION=bf16-mixed``
(what ``precision: auto`` picks on a CPU with AVX-512 BF16 or AMX), one after the other per method,
so both share the machine state. The table lists each demo's numbers under both, the difference,
and the wall-time ratio bf16 / fp32 (the demo's own timer: data synthesis, training, evaluation).
Whether a method's result holds under bf16 is judged against its seed noise, which the
reproductions in ``docs/results.md`` measure; a method whose demo does not hold sets
``bf16_autocast = False`` and ``precision: auto`` keeps fp32 for it.

``--repeats N`` alternates fp32/bf16 N times per method (wall-time spread; the numbers are
deterministic per precision). ``--quick``: the first two methods only.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    Budget,
    bench_parser,
    command_line,
    finish,
    machine_info,
    markdown_table,
    run_isolated,
    run_meta,
    section_header,
)

SECTION = "precision"
PRECISIONS = ("32-true", "bf16-mixed")


def run_demo(name: str, precision: str, out: str) -> dict[str, Any]:
    """One demo in this (child) process under ``precision``; its numbers, verdict and seconds."""
    import os

    os.environ["MEDLEARN_PRECISION"] = precision
    from medlearn.registry import get_method

    r = get_method(name).demo(out_dir=Path(out))
    return {"metrics": {k: float(v) for k, v in r.metrics.items()}, "headline": r.headline,
            "passed": bool(r.passed), "seconds": float(r.seconds)}


def _fmt(x: float) -> str:
    return f"{x:.4g}" if abs(x) < 1000 else f"{x:.0f}"


def render(meta: dict[str, Any], runs: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
    lines = section_header("Precision: each demo under fp32 and bf16 autocast", meta,
                           "each demo as `medlearn demo NAME` runs it (same seed, data and epochs), "
                           "fp32 then bf16-mixed per method in fresh processes")
    summary = []
    for name, by_prec in runs.items():
        a, b = by_prec["32-true"][0], by_prec["bf16-mixed"][0]
        ta = sorted(r["seconds"] for r in by_prec["32-true"])
        tb = sorted(r["seconds"] for r in by_prec["bf16-mixed"])
        ratio = (tb[len(tb) // 2] / ta[len(ta) // 2]) if ta[len(ta) // 2] > 0 else float("nan")
        summary.append([name, "yes" if a["passed"] else "NO", "yes" if b["passed"] else "NO",
                        f"{ta[len(ta) // 2]:.0f}", f"{tb[len(tb) // 2]:.0f}", f"**{ratio:.2f}**"])
    lines += ["Demo verdict (beats its baseline) and wall time per precision:", "",
              markdown_table(["method", "fp32 passes", "bf16 passes", "fp32 s", "bf16 s", "bf16 / fp32 time"], summary,
                             "lccrrr"), ""]
    failed = [f"- {name} under {prec}: {r['error']}" for name, by_prec in runs.items()
              for prec, rs in by_prec.items() for r in rs if "error" in r]
    if failed:
        lines += ["Demos that failed:", "", *failed, ""]
    lines += ["Each demo's numbers (first run of each precision):", ""]
    rows = []
    for name, by_prec in runs.items():
        a, b = by_prec["32-true"][0]["metrics"], by_prec["bf16-mixed"][0]["metrics"]
        for key in sorted(set(a) | set(b)):
            va, vb = a.get(key, float("nan")), b.get(key, float("nan"))
            rows.append([name, key, _fmt(va), _fmt(vb), f"{vb - va:+.4g}"])
    lines += [markdown_table(["method", "number", "fp32", "bf16", "bf16 - fp32"], rows, "llrrr"), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = bench_parser(__doc__, SECTION, "smoke: the first two methods only")
    p.add_argument("--methods", nargs="+", default=None, help="methods (default: every registered one)")
    budget = Budget(p.parse_args(argv))
    from medlearn.registry import list_methods

    names = budget.args.methods or [m.name for m in list_methods()]
    if budget.args.quick and not budget.args.methods:
        names = names[:2]
    repeats = budget.pick("repeats", 1, 1)
    threads = budget.threads
    machine = machine_info()
    t0 = time.perf_counter()
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-precision-") as tmp:
        for name in names:
            runs[name] = {p: [] for p in PRECISIONS}
            for rep in range(repeats):
                for prec in PRECISIONS:
                    out = Path(tmp) / f"{name}-{prec}-{rep}"
                    try:
                        res = run_isolated(run_demo, name, prec, str(out), threads=threads, preload=("torch",))
                    except RuntimeError as exc:  # a demo that fails under one precision is a finding, not a crash
                        res = {"error": str(exc).strip().splitlines()[-1], "metrics": {}, "headline": "failed",
                               "passed": False, "seconds": float("nan")}
                    runs[name][prec].append(res)
                    print(f"{name} {prec}: {res['headline']} ({res['seconds']:.0f} s)", file=sys.stderr, flush=True)
    meta = run_meta(command_line("benchmarks/bench_precision.py", argv), t0, machine, budget, methods=names)
    return finish(budget, SECTION, meta, render(meta, runs), {"runs": runs})


if __name__ == "__main__":
    raise SystemExit(main())
