"""Experiments as a reproduction runs them: arms x seeds, paired differences, a results file that resumes.

A reproduction compares a method with its baselines over several seeds, paired: the arms of one
seed share the data draw, split and initialisation seed, so the per-seed difference removes most
of the seed-to-seed noise. :class:`Experiment` runs the cells of that grid, stores each finished
run as a row of ``results.json`` right away (atomically), and on a rerun with ``resume=True`` skips
every row already there, so an interrupted reproduction continues where it stopped. Each run
prints a line when it starts and when it finishes (``[run 7 of 25] arm=ccl seed=2: done in 40 s;
12.0 min so far, about 4.1 min left``; the count and the estimate need the number of runs, which
the recipe declares with ``total_runs`` or :meth:`Experiment.grid` counts); quiet mode
(:mod:`medlearn.console`) drops these lines. Tables are
read from the rows: :meth:`Experiment.values` (one metric, seed order), :meth:`Experiment.paired`
(a :class:`Paired` difference with its win count, markdown cell and verdict), :func:`mean_sd_cell`.
:func:`write_section` puts a markdown block between markers in ``docs/results.md`` or
``docs/benchmarks.md``, leaving the rest of the file as it was.

Examples:
    >>> exp = Experiment("runs/reproduce/ccl")  # doctest: +SKIP
    >>> for seed in (0, 1, 2):  # doctest: +SKIP
    ...     for arm in ("hard", "ccl"):
    ...         exp.run({"arm": arm, "seed": seed}, lambda: train_and_test(arm, seed))
    >>> exp.paired("bal_acc", {"arm": "ccl"}, {"arm": "hard"}).reading("CCL beats hard labels", 0.01)  # doctest: +SKIP
    '- CCL beats hard labels: mean +0.021, 3/3 seeds -> reproduced.'
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from medlearn.console import Countdown, say
from medlearn.io import atomic_write_text

__all__ = ["Experiment", "Paired", "mean_sd_cell", "paired", "select", "verdict", "write_section",
           "write_results_section", "RESULTS_INTRO"]

#: Intro of ``docs/results.md`` when a reproduction creates it.
RESULTS_INTRO = "# Reproductions\n\nTables as measured.\n"


# ------------------------------------------------------------------------------------- markdown
def write_section(path: str | Path, key: str, body: str, intro: str = RESULTS_INTRO) -> Path:
    """Put ``body`` between ``<!-- key:start -->`` and ``<!-- key:end -->`` in ``path``.

    The file is created with ``intro`` if absent; a missing section is appended; the rest of the
    file is left as it is. Written atomically.
    """
    path = Path(path)
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else intro.rstrip() + "\n"
    i, j = text.find(start), text.find(end)
    if i >= 0 and j > i:
        text = text[:i] + block + text[j + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    return atomic_write_text(path, text)


def write_results_section(path: str | Path, method: str, body: str, command: str | None = None,
                          threads: int | None = None) -> Path:
    """The ``## method`` section of ``docs/results.md``: heading, command, date, threads, then ``body``."""
    command = command or f"medlearn reproduce {method}"
    where = f"measured {time.strftime('%Y-%m-%d')}" + (f", {threads} torch thread(s)" if threads else "")
    return write_section(path, method, f"## {method}\n\nCommand: `{command}` ({where}).\n\n{body}")


# ---------------------------------------------------------------------------------- statistics
def mean_sd_cell(values: np.ndarray, digits: int = 3) -> str:
    """``mean ± sd [v1, v2, ...]`` (sample sd), ``-`` when empty."""
    if values.size == 0:
        return "-"
    sd = values.std(ddof=1) if values.size > 1 else 0.0
    return f"{values.mean():.{digits}f} ± {sd:.{digits}f} [{', '.join(f'{v:.{digits}f}' for v in values)}]"


def verdict(diff: np.ndarray, margin: float) -> str:
    """Reading of a paired difference oriented so that positive = the claim holds: every seed won
    and the mean above ``margin`` -> reproduced.
    """
    if diff.size == 0:
        return "not measured"
    if (diff > 0).all() and diff.mean() > margin:
        return "reproduced"
    return "same direction, within noise" if diff.mean() > 0 else "not reproduced"


@dataclass
class Paired:
    """A paired difference ``a - b`` over seeds.

    Attributes:
        diff: per-seed ``a - b`` (seed order).
        lower_is_better: the metric is an error (NLL, distance): a seed is won when ``a < b``.
    """

    diff: np.ndarray
    lower_is_better: bool = False

    @property
    def gain(self) -> np.ndarray:
        """The difference oriented so that positive = ``a`` is better."""
        return -self.diff if self.lower_is_better else self.diff

    @property
    def mean(self) -> float:
        """Mean of ``a - b``."""
        return float(self.diff.mean()) if self.diff.size else float("nan")

    @property
    def wins(self) -> int:
        """Seeds where ``a`` is better."""
        return int((self.gain > 0).sum())

    @property
    def n(self) -> int:
        """Seeds compared."""
        return int(self.diff.size)

    def cell(self, digits: int = 3) -> str:
        """``+0.012 (2/3)``: mean of ``a - b`` and how many seeds ``a`` won; ``-`` when empty."""
        return "-" if self.n == 0 else f"{self.mean:+.{digits}f} ({self.wins}/{self.n})"

    def verdict(self, margin: float) -> str:
        """:func:`verdict` of the oriented difference."""
        return verdict(self.gain, margin)

    def reading(self, claim: str, margin: float, digits: int = 3, unit: str = "") -> str:
        """The reading line of a claim: ``- claim: mean +0.021, 3/3 seeds -> reproduced.``"""
        if self.n == 0:
            return f"- {claim}: not measured."
        return (f"- {claim}: mean {self.mean:+.{digits}f}{unit}, {self.wins}/{self.n} seeds "
                f"-> {self.verdict(margin)}.")


# ---------------------------------------------------------------------------------- experiment
def _key(cell: Mapping[str, Any]) -> str:
    return json.dumps({k: cell[k] for k in sorted(cell)}, sort_keys=True, default=str)


class Experiment:
    """The runs of a reproduction, stored in ``out_dir/results.json`` as they finish.

    Args:
        out_dir: the reproduction's folder.
        resume: keep the rows of an existing ``results.json`` and skip their cells; ``False``
            starts afresh (the old file is replaced at the first finished run).
        meta: settings recorded with the rows (epochs, sizes ...).
        total_runs: how many cells the recipe will pass to :meth:`run` (stored ones included), for
            the count and the time left of the progress lines; ``None``: :meth:`grid` counts its
            cells, and the lines of other runs carry no total.

    Attributes:
        rows: finished runs: each is its cell (``arm``, ``seed`` ...) plus what the run returned.
        meta: settings, plus ``seconds`` (wall time over all sessions) and ``threads``.
    """

    def __init__(self, out_dir: str | Path, resume: bool = False, meta: Mapping[str, Any] | None = None,
                 total_runs: int | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / "results.json"
        self.rows: list[dict[str, Any]] = []
        self.meta: dict[str, Any] = {}
        self._seconds_before = 0.0
        if resume and self.path.is_file():
            stored = json.loads(self.path.read_text(encoding="utf-8"))
            self.rows = list(stored.get("rows", []))
            self.meta = {k: v for k, v in stored.items() if k != "rows"}
            self._seconds_before = float(self.meta.get("seconds", 0.0))
        self.meta.update(meta or {})
        self._t0 = time.perf_counter()
        self.resumed = len(self.rows)
        self.countdown = Countdown(total_runs, noun="run")
        self._declared = total_runs is not None

    # --- running ---
    def find(self, **cell: Any) -> dict[str, Any] | None:
        """The finished row of ``cell`` (exact match of the cell's keys), or ``None``."""
        key = _key(cell)
        return next((r for r in self.rows if _key({k: r.get(k) for k in cell}) == key), None)

    def run(self, cell: Mapping[str, Any], fn: Callable[[], Mapping[str, Any]],
            valid: Callable[[Mapping[str, Any]], bool] | None = None) -> dict[str, Any]:
        """The row of ``cell``: stored if finished (and ``valid``), else ``fn()`` run now and stored.

        Args:
            cell: what identifies the run (``{"arm": "ccl", "seed": 0}``); JSON-serialisable.
            fn: runs it; returns the measured values (JSON-serialisable).
            valid: a stored row is reused only if this holds (e.g. its checkpoint file still exists).
        """
        index = self.countdown.next()
        what = " ".join(f"{k}={v}" for k, v in cell.items())
        row = self.find(**cell)
        if row is not None and (valid is None or valid(row)):
            if isinstance(row.get("seconds"), (int, float)):
                self.countdown.timed(float(row["seconds"]))
            say(self.countdown.line(index, what, f"kept from {self.path.name}", finished=True))
            return row
        if row is not None:
            self.rows.remove(row)
        say(self.countdown.line(index, what, "started"))
        t0 = time.perf_counter()
        result = dict(fn())
        took = time.perf_counter() - t0
        result.setdefault("seconds", took)
        row = {**dict(cell), **result}
        self.rows.append(row)
        self.save()
        self.countdown.timed(took)
        say(self.countdown.line(index, what, "done", seconds=took))
        return row

    def grid(self, seeds: Iterable[int], arms: Iterable[str], fn: Callable[[str, int], Mapping[str, Any]],
             **fixed: Any) -> list[dict[str, Any]]:
        """Every ``(seed, arm)`` cell, seeds outer (a seed's arms run together, sharing its data).

        Without a declared ``total_runs``, the grid's cells (after the runs counted so far) are the total.
        """
        seeds, arms = list(seeds), list(arms)
        if not self._declared:
            self.countdown.total = self.countdown.index + len(seeds) * len(arms)
        return [self.run({**fixed, "arm": arm, "seed": seed}, partial(fn, arm, seed))
                for seed in seeds for arm in arms]

    def save(self, **meta: Any) -> Path:
        """Write ``results.json`` (rows and meta; wall time and threads updated)."""
        import torch

        self.meta.update(meta)
        self.meta["seconds"] = self._seconds_before + time.perf_counter() - self._t0
        self.meta["threads"] = torch.get_num_threads()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(self.path, json.dumps({**self.meta, "rows": self.rows}, indent=1, default=str))

    def publish(self, method: str, table: Callable[[dict[str, Any]], str],
                results_md: str | Path | None = "docs/results.md") -> str:
        """Save, render the markdown with ``table(results)`` and write it as ``method``'s section of
        ``results_md`` (``None``: not written); returns the markdown.
        """
        self.save()
        md = table({**self.meta, "rows": self.rows})
        if results_md:
            write_results_section(Path(results_md), method, md, threads=self.meta["threads"])
        return md

    # --- reading ---
    def values(self, metric: str, **match: Any) -> np.ndarray:
        """``metric`` of the rows whose fields equal ``match``, in seed order."""
        return select(self.rows, metric, **match)

    def paired(self, metric: str, a: Mapping[str, Any], b: Mapping[str, Any], lower_is_better: bool = False,
               **match: Any) -> Paired:
        """``metric`` of cells ``a`` minus cells ``b`` (both also matching ``match``), seed by seed."""
        return paired(self.rows, metric, a, b, lower_is_better, **match)


def paired(rows: Iterable[Mapping[str, Any]], metric: str, a: Mapping[str, Any], b: Mapping[str, Any],
           lower_is_better: bool = False, **match: Any) -> Paired:
    """``metric`` of the rows matching ``a`` minus those matching ``b`` (both also ``match``), paired by seed."""
    rows = list(rows)
    va = {r.get("seed", 0): float(r[metric]) for r in rows if all(r.get(k) == v for k, v in {**match, **a}.items())}
    vb = {r.get("seed", 0): float(r[metric]) for r in rows if all(r.get(k) == v for k, v in {**match, **b}.items())}
    seeds = sorted(set(va) & set(vb))
    return Paired(np.array([va[s] - vb[s] for s in seeds], dtype=float), lower_is_better)


def select(rows: Iterable[Mapping[str, Any]], metric: str, **match: Any) -> np.ndarray:
    """``metric`` of the rows whose fields equal ``match``, in seed order."""
    chosen = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    return np.array([r[metric] for r in sorted(chosen, key=lambda r: r.get("seed", 0))], dtype=float)
