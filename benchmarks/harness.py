"""A small, reusable harness for training-step benchmarks (speed and peak memory).

How a benchmark is measured:

* Every configuration runs in its **own fresh process** (a ``forkserver`` child on Linux, whose
  server has only imported the modules named in ``preload``; ``spawn`` elsewhere, and for a
  configuration with its own ``env``). Children run with medlearn's OpenMP settings
  (``medlearn.runtime``: passive wait policy), set in this process before the fork server starts,
  since the server preloads torch and OpenMP reads its environment only when torch loads it. The process
  builds its model and batch once, takes a memory baseline, and then waits for commands, so a
  configuration's peak memory is that process's own: on CPU the peak resident set (``VmHWM``,
  reset via ``/proc/self/clear_refs`` right after the build; ``ru_maxrss`` where that is not
  possible) minus the resident set after imports and build; on CUDA
  ``torch.cuda.max_memory_allocated`` minus the memory allocated after the build.
* Timed repeats of all configurations are **interleaved** (round 1: A B C ..., round 2: ... C B A,
  and so on), so slow drifts in background load hit a method and its peer alike. Each repeat runs
  ``warmup`` untimed steps and then ``iters`` timed steps; a repeat's ``ms_per_step`` is the median
  of its step times, a configuration's the median over repeats.
* Results are reported as **ratios against a peer measured in the same run** (method time /
  peer time), never as absolute thresholds; nothing here belongs in a timed test assertion.

Typical use (see ``bench_c2l.py``)::

    configs = [BenchConfig("a", make_step, {...}, threads=1), BenchConfig("b", make_step, {...}, threads=1)]
    res = run_interleaved(configs, warmup=5, iters=20, repeats=3, preload=["torch", "mypkg.model"])
    rows = compare(res, [Comparison("a vs b", "a", "b")])
    print(comparison_table(rows))

``make_step(spec)`` is a top-level (picklable) function, called in the child process, that returns
a :class:`StepBench`: a zero-argument ``step`` callable (one full training step) and the batch size.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import json
import multiprocessing as mp
import os
import platform
import re
import shlex
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# medlearn's runtime policy (passive OpenMP wait, thread defaults), imported before anything loads
# torch here or in the children: it sets OMP_WAIT_POLICY in os.environ, which they inherit.
from medlearn import runtime as _runtime

__all__ = [
    "StepBench", "BenchConfig", "Comparison", "PeakMemory", "time_step", "run_interleaved",
    "run_isolated", "compare", "run_scales", "default_threads", "machine_info", "machine_markdown", "comparison_table",
    "markdown_table", "update_section", "write_json", "utc_now", "DOC_INTRO",
    "bench_parser", "Budget", "command_line", "drift_summary", "drift_table",
    "section_header", "run_meta", "finish", "child_env", "THREAD_ENV",
]

#: Intro of ``docs/benchmarks.md`` when a benchmark script creates the file.
DOC_INTRO = """# Benchmarks

Speed and memory of medlearn's training steps, one section per method, each written by its
script in `benchmarks/` (`benchmarks/harness.py` is the shared harness).

How they are measured:

* **Ratios against a peer in the same run.** Each method is timed next to a peer (the same step
  without the method's extra, another precision, memory format or thread count) on the same
  machine in the same run, and the ratio method/peer is the number to read. Absolute images/s
  depend on the machine and its load and are given for orientation only.
* **Medians of interleaved repeats.** Every configuration runs in its own fresh process; the
  timed repeats of all configurations alternate (A B A B ...), so background load affects both
  sides alike. A repeat is a few untimed warm-up steps and then timed steps; the reported time is
  the median over steps, then over repeats.
* **Peak memory** is the process's peak resident set (CPU) or peak allocated CUDA memory during
  the steps, minus the baseline after imports and model build.
* **Never timed assertions in tests.** Tests check results, not speed; these numbers are produced
  by running the scripts by hand (each section names its exact command, date and machine).
"""


# -- what is measured -------------------------------------------------------------------------
@dataclass
class StepBench:
    """A built benchmark, returned by a factory in the child process.

    Attributes:
        step: one full training step (forward, backward, optimizer, ...); its return is ignored.
        batch_size: images per step (for images/s).
        info: anything worth recording (parameter count, resolved settings ...).
    """

    step: Callable[[], Any]
    batch_size: int
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class BenchConfig:
    """One configuration to time.

    Attributes:
        name: unique name (used by :class:`Comparison`).
        factory: picklable top-level function ``spec -> StepBench``, run in the child process.
        spec: JSON-serialisable arguments of ``factory``.
        threads: torch intra-op threads in the child (``None``: leave torch's default).
        device: ``"cpu"`` or ``"cuda"`` (selects the memory measure and synchronisation).
        env: environment variables of the child (``None`` as a value: removed), e.g. an OpenMP
            setting. OpenMP reads them once, when the child loads torch, so such a configuration
            runs in a ``spawn`` child (a fresh interpreter started with them) rather than in a
            fork-server child, which inherits the server's OpenMP runtime as it was initialised.
    """

    name: str
    factory: Callable[[dict[str, Any]], StepBench]
    spec: dict[str, Any]
    threads: int | None = None
    device: str = "cpu"
    env: dict[str, str | None] = field(default_factory=dict)


@dataclass
class Comparison:
    """A method configuration timed against its peer (both names of :class:`BenchConfig`).

    ``method_label`` / ``peer_label`` are the texts shown in tables (default: the names).
    """

    title: str
    method: str
    peer: str
    note: str = ""
    method_label: str = ""
    peer_label: str = ""


# -- peak memory --------------------------------------------------------------------------------
_KB = re.compile(r"^(VmRSS|VmHWM):\s+(\d+)\s+kB", re.M)


def _proc_status_kb() -> dict[str, int]:
    with open("/proc/self/status", encoding="ascii") as f:
        return {k: int(v) for k, v in _KB.findall(f.read())}


def _ru_maxrss_mb() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024  # bytes on macOS, KiB on Linux


class PeakMemory:
    """Peak memory of this process above a baseline taken by :meth:`reset`.

    CPU: peak resident set. On Linux the kernel's high-water mark ``VmHWM`` is reset by writing
    ``5`` to ``/proc/self/clear_refs``, so the peak covers exactly the time since :meth:`reset`
    and the baseline is the resident set at that moment. Elsewhere ``ru_maxrss`` is used (a
    lifetime maximum, so the delta is coarse and may read 0 when imports peaked higher).
    CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` minus the memory
    allocated at :meth:`reset`.
    """

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.method = ""
        self.baseline_mb = 0.0

    def reset(self) -> float:
        """Start a new peak window; returns the baseline in MiB."""
        gc.collect()
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.method = "cuda max_memory_allocated"
            self.baseline_mb = torch.cuda.memory_allocated() / 2**20
            return self.baseline_mb
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                f.write("5")
            self.method = "VmHWM (reset via clear_refs) - VmRSS"
            self.baseline_mb = _proc_status_kb()["VmRSS"] / 1024
        except OSError:
            self.method = "ru_maxrss delta (coarse)"
            self.baseline_mb = _ru_maxrss_mb()
        return self.baseline_mb

    def peak_mb(self) -> float:
        """Peak since :meth:`reset` minus the baseline, in MiB (>= 0)."""
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() / 2**20
        elif self.method.startswith("VmHWM"):
            peak = _proc_status_kb()["VmHWM"] / 1024
        else:
            peak = _ru_maxrss_mb()
        return max(0.0, peak - self.baseline_mb)


# -- timing -------------------------------------------------------------------------------------
def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def time_step(fn: Callable[[], Any], warmup: int, iters: int, *, batch_size: int = 1, device: str = "cpu",
              mem: PeakMemory | None = None) -> dict[str, Any]:
    """Time ``fn`` (one training step): ``warmup`` untimed calls, then ``iters`` timed ones.

    Args:
        fn: the step.
        warmup: untimed calls first (allocator, caches, lazy init).
        iters: timed calls (each timed on its own, synchronising CUDA).
        batch_size: images per call, for ``images_per_s``.
        device: ``"cpu"`` or ``"cuda..."``.
        mem: a :class:`PeakMemory` whose baseline to use (a process-wide baseline taken after the
            build); ``None`` starts a fresh window now, covering warm-up and timed calls.

    Returns:
        ``ms_per_step`` (median over the timed calls), ``images_per_s`` (from that median),
        ``peak_mem_mb`` (peak above the baseline), ``ms_mean``, ``ms_min``, ``ms_all``.
    """
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    if mem is None:
        mem = PeakMemory(device)
        mem.reset()
    for _ in range(warmup):
        fn()
    _sync(device)
    times: list[float] = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1000.0)
    ms = statistics.median(times)
    return {"ms_per_step": ms, "images_per_s": batch_size * 1000.0 / ms, "peak_mem_mb": mem.peak_mb(),
            "ms_mean": statistics.fmean(times), "ms_min": min(times), "ms_all": times}


# -- child processes ----------------------------------------------------------------------------
#: environment variables a child reports (``BenchConfig.env`` and the threading variables)
THREAD_ENV = ("MEDLEARN_THREADS", "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def _context(preload: Sequence[str], env: Mapping[str, str | None] | None = None) -> Any:
    """``forkserver`` with preloaded imports on Linux (fresh, cheap children), else ``spawn``;
    ``spawn`` when ``env`` is given (start the child inside :func:`child_env`)."""
    _runtime.configure_openmp()  # before the fork server (which preloads torch) starts
    if env:
        return mp.get_context("spawn")
    if sys.platform.startswith("linux") and "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["__main__", *preload])
        return ctx
    return mp.get_context("spawn")


@contextlib.contextmanager
def child_env(env: Mapping[str, str | None] | None) -> Iterator[None]:
    """Set ``env`` in ``os.environ`` (``None``: remove) while a ``spawn`` child starts, then restore."""
    env = dict(env or {})
    saved = {k: os.environ.get(k) for k in env}
    try:
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _openmp_library() -> str:
    """The OpenMP runtime this process loaded (``libgomp``, ``libiomp5``, ``libomp``), from its maps."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            names = {Path(line.split()[-1]).name for line in f if "omp" in line and "/" in line}
    except OSError:
        return "?"
    libs = sorted(n.split(".so")[0] for n in names if n.startswith(("libgomp", "libiomp", "libomp")))
    return ", ".join(dict.fromkeys(libs)) or "none found"


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(max(1, int(threads)))


def _worker(conn: Any, cfg: BenchConfig) -> None:
    """Child: build once, take the memory baseline, then serve ``time`` commands."""
    try:
        env = {k: os.environ[k] for k in (*THREAD_ENV, *cfg.env) if k in os.environ}  # before torch loads
        _set_threads(cfg.threads)
        import torch

        bench = cfg.factory(dict(cfg.spec))
        mem = PeakMemory(cfg.device)
        base = mem.reset()
        conn.send(("ready", {"threads": torch.get_num_threads(), "baseline_mb": base, "mem_method": mem.method,
                             "batch_size": bench.batch_size, "info": bench.info, "pid": os.getpid(),
                             "env": env, "openmp": _openmp_library()}))
        while True:
            cmd, args = conn.recv()
            if cmd == "stop":
                break
            if cmd == "time":
                conn.send(("ok", time_step(bench.step, args["warmup"], args["iters"],
                                           batch_size=bench.batch_size, device=cfg.device, mem=mem)))
    except BaseException:  # report everything to the parent, which raises
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def _recv(conn: Any, name: str) -> Any:
    kind, payload = conn.recv()
    if kind == "error":
        raise RuntimeError(f"benchmark process {name!r} failed:\n{payload}")
    return payload


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_interleaved(configs: Sequence[BenchConfig], warmup: int, iters: int, repeats: int,
                    preload: Sequence[str] = ("torch",), verbose: bool = True,
                    around: Callable[[BenchConfig], AbstractContextManager[Any]] | None = None,
                    ) -> dict[str, dict[str, Any]]:
    """Time every configuration in its own process, repeats interleaved across configurations.

    The processes are started and built one after another, each once the previous one is ready and
    idle (so what a child measures of the machine as it starts, e.g. the load ``import medlearn``
    reads to choose the OpenMP wait policy, is not the other children's start-up); then ``repeats``
    rounds each time every configuration once, the order reversed every other round (A B C, C B A, ...).

    Args:
        configs: configurations (unique names).
        warmup: untimed steps per repeat.
        iters: timed steps per repeat.
        repeats: rounds.
        preload: modules the fork server imports once (children start with them loaded).
        verbose: progress on stderr.
        around: context entered around each timed repeat of a configuration (warm-up included),
            e.g. a background load that only some configurations run under.

    Returns:
        ``{name: {"spec", "threads", "device", "baseline_mb", "mem_method", "batch_size", "info", "env", "openmp",
        "repeats": [time_step results], "ms_per_step", "images_per_s" (medians over repeats),
        "peak_mem_mb" (max over repeats)}}``.
    """
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ValueError(f"configuration names must be unique: {names}")
    procs: dict[str, tuple[Any, Any]] = {}
    out: dict[str, dict[str, Any]] = {}
    try:
        for c in configs:
            ctx = _context(preload, c.env)
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(child, c), name=f"bench-{c.name}", daemon=True)
            with child_env(c.env):
                p.start()
            child.close()
            procs[c.name] = (p, parent)
            ready = _recv(parent, c.name)
            out[c.name] = {"spec": c.spec, "device": c.device, **ready, "repeats": []}
            if verbose:
                _log(f"[bench] ready {c.name}: threads={ready['threads']} baseline={ready['baseline_mb']:.0f} MiB")
        for r in range(repeats):
            order = list(configs) if r % 2 == 0 else list(reversed(configs))
            for c in order:
                conn = procs[c.name][1]
                with around(c) if around else contextlib.nullcontext():
                    conn.send(("time", {"warmup": warmup, "iters": iters}))
                    res = _recv(conn, c.name)
                out[c.name]["repeats"].append(res)
                if verbose:
                    _log(f"[bench] repeat {r + 1}/{repeats} {c.name}: {res['ms_per_step']:.1f} ms/step, "
                         f"{res['images_per_s']:.1f} img/s, peak +{res['peak_mem_mb']:.0f} MiB")
    finally:
        for _proc, conn in procs.values():
            try:
                conn.send(("stop", None))
            except (OSError, BrokenPipeError):
                pass
        for p, conn in procs.values():
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
                p.join()
            conn.close()
    for rec in out.values():
        reps = rec["repeats"]
        rec["ms_per_step"] = statistics.median(x["ms_per_step"] for x in reps)
        rec["images_per_s"] = rec["batch_size"] * 1000.0 / rec["ms_per_step"]
        rec["peak_mem_mb"] = max(x["peak_mem_mb"] for x in reps)
    return out


def _isolated(conn: Any, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
              threads: int | None) -> None:
    try:
        _set_threads(threads)
        conn.send(("ok", fn(*args, **kwargs)))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def run_isolated(fn: Callable[..., Any], *args: Any, threads: int | None = None,
                 preload: Sequence[str] = ("torch",), env: Mapping[str, str | None] | None = None,
                 **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` (picklable, top level) in a fresh process; return its result.

    ``env``: the child's environment changes, as :attr:`BenchConfig.env` (a ``spawn`` child)."""
    ctx = _context(preload, env)
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_isolated, args=(child, fn, args, kwargs, threads), daemon=True)
    with child_env(env):
        p.start()
    child.close()
    try:
        return _recv(parent, getattr(fn, "__name__", "isolated"))
    finally:
        p.join(timeout=30)
        if p.is_alive():
            p.terminate()
            p.join()
        parent.close()


def compare(results: Mapping[str, Mapping[str, Any]], comparisons: Sequence[Comparison]) -> list[dict[str, Any]]:
    """One row per comparison: both sides' medians, ``ratio`` = method ms / peer ms (of the
    medians) and ``ratio_per_repeat`` (method / peer within each round)."""
    rows = []
    for c in comparisons:
        m, p = results[c.method], results[c.peer]
        per = [a["ms_per_step"] / b["ms_per_step"] for a, b in zip(m["repeats"], p["repeats"])]
        rows.append({**asdict(c), "method_ms": m["ms_per_step"], "peer_ms": p["ms_per_step"],
                     "method_images_per_s": m["images_per_s"], "peer_images_per_s": p["images_per_s"],
                     "method_peak_mb": m["peak_mem_mb"], "peer_peak_mb": p["peak_mem_mb"],
                     "ratio": m["ms_per_step"] / p["ms_per_step"], "ratio_per_repeat": per,
                     "mem_ratio": (m["peak_mem_mb"] / p["peak_mem_mb"]) if p["peak_mem_mb"] > 0 else None})
    return rows


# -- machine ------------------------------------------------------------------------------------
def run_scales(scales: Sequence[tuple[Sequence[BenchConfig], Sequence[Comparison], int, int, int]],
               preload: Sequence[str] = ("torch",)) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Time each scale's configurations (:func:`run_interleaved`) and read its comparisons, scale after
    scale (e.g. the demo pair, then the paper-scale pair); a scale without configurations is skipped.

    Args:
        scales: ``(configs, comparisons, warmup, iters, repeats)`` per scale.
        preload: modules the fork server imports once.

    Returns:
        ``(results of every configuration, comparison rows in scale order)``.
    """
    results: dict[str, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    for configs, comparisons, warmup, iters, repeats in scales:
        if not configs:
            continue
        res = run_interleaved(configs, warmup, iters, repeats, preload=preload)
        rows += compare(res, comparisons)
        results.update(res)
    return results, rows


def default_threads() -> int:
    """Threads as medlearn's ``set_cpu_threads()`` resolves them (``MEDLEARN_THREADS``, else
    min(2, usable cores): :func:`medlearn.runtime.default_threads`), without importing torch here."""
    return _runtime.default_threads()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags(wanted: Sequence[str] = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")) -> list[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [w for w in wanted if w in have]
    except OSError:
        pass
    return []


def bf16_expectation() -> str:
    """The expected bf16-vs-fp32 reading on this CPU: < 1 with bf16 units (AVX-512 BF16 / AMX), > 1 without."""
    units = [f for f in _cpu_flags() if f in ("avx512_bf16", "amx_bf16")]
    if units:
        return f"CPU with bf16 units ({', '.join(units)}): < 1 where matmuls dominate"
    return "CPU without bf16 units: > 1"


def machine_info() -> dict[str, Any]:
    """CPU model and flags, cores (logical / usable), load average, memory, python, torch, GPU."""
    import torch

    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "logical_cores": os.cpu_count(),
        "usable_cores": _runtime.usable_cores(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: "?")(),
        "torch_default_threads": torch.get_num_threads(),
        "env_threads": {k: os.environ[k] for k in THREAD_ENV if k in os.environ},
        "openmp": _openmp_library(),
    }
    try:
        info["loadavg"] = list(os.getloadavg())
    except OSError:
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            kb = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))  # type: ignore[union-attr]
        info["mem_total_gib"] = round(kb / 2**20, 1)
    except (OSError, AttributeError):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def machine_markdown(info: Mapping[str, Any]) -> str:
    """Machine info as a markdown bullet list."""
    lines = [f"- CPU: {info['cpu_model']} ({info['logical_cores']} logical cores, {info['usable_cores']} usable"
             + (f"; flags: {', '.join(info['cpu_flags'])}" if info.get("cpu_flags") else "") + ")"]
    if "mem_total_gib" in info:
        lines.append(f"- Memory: {info['mem_total_gib']} GiB")
    if "gpu" in info:
        lines.append(f"- GPU: {info['gpu']}")
    lines.append(f"- Software: Python {info['python']}, torch {info['torch']} "
                 f"(CPU capability {info['torch_cpu_capability']}), {info['platform']}")
    env = info.get("env_threads") or {}
    lines.append(f"- Threads: torch default {info['torch_default_threads']}"
                 + (", " + ", ".join(f"{k}={v}" for k, v in env.items()) if env else "")
                 + (f"; OpenMP runtime {info['openmp']}" if info.get("openmp") else ""))
    if "loadavg" in info:
        la = info["loadavg"]
        end = info.get("loadavg_end")
        lines.append(f"- Load average (1/5/15 min) at start: {la[0]:.2f}/{la[1]:.2f}/{la[2]:.2f}"
                     + (f"; at end: {end[0]:.2f}/{end[1]:.2f}/{end[2]:.2f}" if end else ""))
    return "\n".join(lines)


# -- output -------------------------------------------------------------------------------------
def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A markdown table; ``align`` is one character per column (``l``/``r``), default left."""
    align = align or "l" * len(header)
    sep = ["---:" if a == "r" else "---" for a in align]
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    out += ["| " + " | ".join(str(v) for v in r) + " |" for r in rows]
    return "\n".join(out)


def comparison_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows of :func:`compare` as a markdown table; the ratio column shows the min-max of the
    per-repeat ratios in brackets when there are several repeats, and a ``reading`` column holds
    the comparisons' notes (if any)."""

    def mb(v: float) -> str:
        return f"{v:.0f}"

    notes = any(r.get("note") for r in rows)
    body = []
    for r in rows:
        per = r["ratio_per_repeat"]
        spread = f" ({min(per):.2f}-{max(per):.2f})" if len(per) > 1 else ""
        body.append([r["title"], r.get("method_label") or r["method"], r.get("peer_label") or r["peer"],
                     f"{r['method_ms']:.1f}", f"{r['peer_ms']:.1f}",
                     f"{r['method_images_per_s']:.1f}", f"{r['peer_images_per_s']:.1f}",
                     f"**{r['ratio']:.2f}**{spread}", mb(r["method_peak_mb"]), mb(r["peer_peak_mb"])]
                    + ([r.get("note", "")] if notes else []))
    header = ["comparison", "method", "peer", "method ms/step", "peer ms/step", "method img/s", "peer img/s",
              "time ratio method/peer", "method peak MiB", "peer peak MiB"]
    return markdown_table(header + (["reading"] if notes else []), body, "lllrrrrrrr" + ("l" if notes else ""))


def update_section(path: str | Path, key: str, body: str, intro: str = DOC_INTRO) -> Path:
    """Put ``body`` between ``<!-- key:start -->`` and ``<!-- key:end -->`` in ``path`` (created with
    ``intro``): medlearn's one markdown section writer, :func:`medlearn.engine.experiment.write_section`."""
    from medlearn.engine.experiment import write_section

    return write_section(path, key, body, intro)


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def utc_now() -> str:
    """The current UTC time, ISO format to the second."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


# -- the driver skeleton every bench_*.py shares -------------------------------------------------
def bench_parser(doc: str | None, name: str, quick_help: str) -> argparse.ArgumentParser:
    """Arguments every benchmark script takes; add the script's own with ``add_argument``.

    ``--quick`` (smoke), ``--out`` (the markdown file), ``--json`` (default next to ``--out``:
    ``<stem>-<name>.json``), ``--threads``, ``--warmup`` / ``--iters`` / ``--repeats`` (timed steps)
    and ``--loss-steps`` (fp32 vs bf16 drift). Step counts default to ``None``: resolve them with
    :class:`Budget`.
    """
    root = Path(__file__).resolve().parents[1]
    p = argparse.ArgumentParser(description=(doc or name).split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--out", default=str(root / "docs" / "benchmarks.md"), help="markdown file to update")
    p.add_argument("--json", default=None, help=f"results JSON (default: next to --out, '<stem>-{name}.json')")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: MEDLEARN_THREADS or min(2, usable cores), as set_cpu_threads)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per repeat")
    p.add_argument("--iters", type=int, default=None, help="timed steps per repeat")
    p.add_argument("--repeats", type=int, default=None, help="interleaved repeats")
    p.add_argument("--loss-steps", type=int, default=None, help="steps of the fp32/bf16 loss comparison")
    p.set_defaults(bench_name=name)
    return p


@dataclass
class Budget:
    """Resolved settings of a benchmark run: an explicit argument, else the quick or the full default."""

    args: argparse.Namespace
    settings: dict[str, Any] = field(default_factory=dict)

    def pick(self, name: str, quick: int, full: int) -> int:
        """``args.<name>`` if given, else ``quick`` under ``--quick``, else ``full``; recorded in ``settings``."""
        value = getattr(self.args, name, None)
        value = value if value is not None else (quick if self.args.quick else full)
        self.settings[name] = value
        return value

    @property
    def threads(self) -> int:
        t = self.args.threads if self.args.threads is not None else default_threads()
        self.settings["threads"] = t
        return t

    @property
    def out(self) -> Path:
        return Path(self.args.out)

    @property
    def json_path(self) -> Path:
        if self.args.json:
            return Path(self.args.json)
        return self.out.with_name(f"{self.out.stem}-{self.args.bench_name}.json")


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """How the benchmark was invoked (with ``MEDLEARN_THREADS`` when set), for the markdown section."""
    env = " ".join(f"{k}={os.environ[k]}" for k in ("MEDLEARN_THREADS",) if k in os.environ)
    args = shlex.join(sys.argv[1:] if argv is None else list(argv))
    return " ".join(x for x in (env, f"python {script}", args) if x)


def drift_summary(fp32: Sequence[float], bf16: Sequence[float]) -> dict[str, Any]:
    """Loss drift of ``bf16`` against ``fp32`` over the same steps (same seed, batch, draws)."""
    a, b = list(map(float, fp32)), list(map(float, bf16))
    diffs = [abs(x - y) for x, y in zip(a, b)]
    return {"steps": len(a), "32": a, "bf16": b, "final_abs_diff": diffs[-1],
            "final_rel_diff": diffs[-1] / max(abs(a[-1]), 1e-12), "max_abs_diff": max(diffs),
            "mean_abs_diff": sum(diffs) / len(diffs)}


def drift_table(drift: Mapping[str, Any]) -> str:
    """:func:`drift_summary` as a one-row markdown table."""
    a, b = drift["32"], drift["bf16"]
    return markdown_table(
        ["steps", "fp32 loss (first -> last)", "bf16 loss (first -> last)", "abs diff (last step)",
         "rel diff (last step)", "mean abs diff", "max abs diff (any step)"],
        [[drift["steps"], f"{a[0]:.4f} -> {a[-1]:.4f}", f"{b[0]:.4f} -> {b[-1]:.4f}",
          f"{drift['final_abs_diff']:.4f}", f"{100 * drift['final_rel_diff']:.2f}%",
          f"{drift['mean_abs_diff']:.4f}", f"{drift['max_abs_diff']:.4f}"]], "rrrrrrr")


def section_header(title: str, meta: Mapping[str, Any], settings: str) -> list[str]:
    """The first lines of a section: title, command, date, ``settings`` and wall time, the machine."""
    lines = [f"## {title}", "", f"Command: `{meta['command']}`  ", f"Date: {meta['date']}  ",
             f"Settings: {settings}; wall time {meta['wall_s']:.0f} s."]
    if meta.get("settings", {}).get("quick"):
        lines += ["", "> Smoke run (`--quick`): too few steps for the numbers to mean much."]
    return lines + ["", "Machine:", "", machine_markdown(meta["machine"]), ""]


def run_meta(command: str, t0: float, machine: dict[str, Any], budget: Budget, **extra: Any) -> dict[str, Any]:
    """What a section's header shows: command, date, machine (with the load average at the end),
    wall time since ``t0`` (``time.perf_counter()``) and the resolved settings."""
    try:
        machine["loadavg_end"] = list(os.getloadavg())
    except OSError:
        pass
    return {"command": command, "date": utc_now(), "machine": machine, "wall_s": time.perf_counter() - t0,
            **extra, "settings": {"quick": budget.args.quick, **budget.settings}}


def finish(budget: Budget, section: str, meta: Mapping[str, Any], body: str, payload: Mapping[str, Any]) -> int:
    """Write the markdown section and the JSON (``meta`` + ``payload``), print the section."""
    update_section(budget.out, section, body)
    write_json(budget.json_path, {**meta, **payload})
    print(body)
    print(f"\nwrote {budget.out} (section {section!r}) and {budget.json_path}", file=sys.stderr)
    return 0
