"""``docs/results.md``: one section per method, replaced in place by ``medlearn reproduce NAME``."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_results_section", "select", "mean_sd_cell", "paired_cell", "verdict"]


def write_results_section(path: Path, method: str, body: str, command: str | None = None) -> None:
    """Replace (or add) the ``## method`` section of ``docs/results.md`` between markers."""
    command = command or f"medlearn reproduce {method}"
    start, end = f"<!-- {method}:start -->", f"<!-- {method}:end -->"
    block = f"{start}\n## {method}\n\nCommand: `{command}` (measured {time.strftime('%Y-%m-%d')}).\n\n{body}\n{end}"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Reproductions\n\nTables as measured.\n"
    if start in text and end in text:
        pre, _, rest = text.partition(start)
        _, _, post = rest.partition(end)
        text = pre + block + post
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


# --- paired multi-seed tables ------------------------------------------------------------------
def select(rows: Sequence[Mapping[str, Any]], metric: str, **match: Any) -> np.ndarray:
    """``metric`` of the rows whose fields equal ``match``, in seed order."""
    chosen = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    return np.array([r[metric] for r in sorted(chosen, key=lambda r: r.get("seed", 0))], dtype=float)


def mean_sd_cell(values: np.ndarray, digits: int = 3) -> str:
    """``mean ± sd [v1, v2, ...]`` (sample sd), ``-`` when empty."""
    if values.size == 0:
        return "-"
    sd = values.std(ddof=1) if values.size > 1 else 0.0
    return f"{values.mean():.{digits}f} ± {sd:.{digits}f} [{', '.join(f'{v:.{digits}f}' for v in values)}]"


def paired_cell(diff: np.ndarray) -> str:
    """``+0.012 (2/3)``: mean paired difference and how many seeds the first arm won."""
    if diff.size == 0:
        return "-"
    return f"{diff.mean():+.3f} ({int((diff > 0).sum())}/{diff.size})"


def verdict(diff: np.ndarray, margin: float) -> str:
    """Reading of a paired difference: every seed won and the mean above ``margin``."""
    if diff.size == 0:
        return "not measured"
    if (diff > 0).all() and diff.mean() > margin:
        return "reproduced"
    return "same direction, within noise" if diff.mean() > 0 else "not reproduced"
