"""What the dataset check before training costs a recipe: seconds in it against a whole demo.

Usage::

    MEDLEARN_QUIET=1 python benchmarks/bench_check_before_fit.py ccl [c2l ...] [--out-dir DIR]

Runs each method's demo (``medlearn demo NAME``) with :func:`medlearn.data.check.check_before_fit`
timed where :func:`medlearn.engine.run.fit_from_config` calls it, and prints one JSON line per
demo: the demo's seconds, the runs it trained, the seconds of each check and the fraction of the
demo they took. The numbers are in ``docs/reliability.md`` ("Dataset integrity").
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import medlearn.engine.run as run
import medlearn.methods  # noqa: F401  (registers the methods)
from medlearn.registry import get_method


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("methods", nargs="+")
    parser.add_argument("--out-dir", default=None, help="where the demos write (default: a temporary folder)")
    args = parser.parse_args()
    out = Path(args.out_dir or tempfile.mkdtemp(prefix="bench-check-"))
    spent: list[float] = []
    check = run.check_before_fit

    def timed(datamodule: Any, *a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return check(datamodule, *a, **k)
        finally:
            spent.append(time.perf_counter() - t)

    run.check_before_fit = timed
    for name in args.methods:
        spent.clear()
        t0 = time.perf_counter()
        get_method(name).demo(out_dir=out / name)
        total = time.perf_counter() - t0
        print(json.dumps({"method": name, "demo_s": round(total, 2), "runs": len(spent),
                          "check_s": [round(s, 4) for s in spent], "check_total_s": round(sum(spent), 4),
                          "fraction": round(sum(spent) / total, 5)}), flush=True)


if __name__ == "__main__":
    main()
