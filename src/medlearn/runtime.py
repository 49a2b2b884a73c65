"""CPU threading policy: the OpenMP wait policy and how many torch threads a process uses.

This module owns two decisions that every medlearn entry point (the ``medlearn`` command, the demo
and reproduction recipes, the tests, the benchmarks) shares:

* **OpenMP threads wait passively when the cores are shared** (``OMP_WAIT_POLICY=PASSIVE``).
  After each parallel region, torch's OpenMP threads otherwise spin on their core for a while (GNU
  OpenMP, which the PyPI torch wheels bundle: 300,000 spins, about 3 ms) waiting for the next
  region. On idle cores that saves a wake-up per region; when another process holds one of the
  cores, a spinning thread burns the time its partner needs, and every region waits for the thread
  that has no core. With one of two cores busy, ``medlearn demo c2l`` once took about 100 s per
  pretraining epoch instead of about 2 s.

  Neither policy serves both cases. ``benchmarks/bench_threads.py`` (``docs/benchmarks.md``,
  section "Threads"; 2-core VM) measured the C2L demo step at 128 ms spinning and 252 ms passive on
  idle cores, but 395 ms spinning and 178 ms passive with one core busy (a demo pretraining epoch:
  2.0 vs 4.0 s idle, 6.0 vs 3.3 s busy); no spin count in between keeps both. So
  :func:`configure_openmp` decides when medlearn is imported: it measures how many of the cores
  this process may use are busy with other processes (:func:`busy_cores`, 0.1 s of
  ``/proc/stat``) and sets ``OMP_WAIT_POLICY=PASSIVE`` when fewer are free than the threads it will
  run (:func:`wants_passive_wait`), or when it cannot tell; on free cores OpenMP keeps its own
  default. The policy only changes speed, never results (the thread count, which does change float
  sums, does not depend on the load). What it cannot see is load that starts after the process
  did: on a machine other jobs come and go on, set ``OMP_WAIT_POLICY=PASSIVE`` yourself; on a
  machine of your own, ``OMP_WAIT_POLICY=ACTIVE``. A user's ``OMP_WAIT_POLICY`` or
  ``GOMP_SPINCOUNT`` always wins.
* **Threads per process**: ``MEDLEARN_THREADS`` if set, else ``min(2, usable_cores())``: the
  cores this process may run on (CPU affinity, capped by a cgroup CPU quota), not the machine's.

OpenMP reads its environment once, when its runtime is loaded, and torch loads it at
``import torch``; setting ``os.environ`` afterwards changes nothing in this process (only in its
children). ``import medlearn`` therefore applies the policy (:func:`configure_openmp`, called from
``medlearn/__init__.py``), and this module never imports torch at import time. If torch was
imported before medlearn and the passive policy was wanted, it cannot take effect in this process
and a :class:`RuntimeWarning` says so (once).

Intel/LLVM OpenMP builds of torch read the same variable: ``PASSIVE`` sets their block time to 0
unless ``KMP_BLOCKTIME`` is set, so no ``KMP_*`` setting is needed.

Example:
    >>> import medlearn  # first: sets OMP_WAIT_POLICY=PASSIVE on busy cores, unless the user set a policy
    >>> import torch
    >>> from medlearn.runtime import default_threads, set_cpu_threads
    >>> set_cpu_threads() == default_threads()
    True
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path

__all__ = ["OPENMP_ENV", "DEFAULT_MAX_THREADS", "configure_openmp", "usable_cores", "cgroup_cpu_limit",
           "default_threads", "set_cpu_threads", "busy_cores", "wants_passive_wait", "openmp_decision",
           "cpu_bf16_supported", "PRECISION_ENV"]

#: Environment medlearn sets for OpenMP when the cores are shared (a user's value wins).
OPENMP_ENV: Mapping[str, str] = {"OMP_WAIT_POLICY": "PASSIVE"}
#: Variables by which a user has chosen the wait behaviour already.
_USER_WAIT = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")

#: Most threads the default picks. On 2 idle cores the second (spinning) thread makes the C2L demo
#: step 1.6x faster than 1 thread (128 vs 202 ms); with a core busy and passive waiting it still
#: helps a little (178 vs 216 ms). 2 also keeps the documented reproductions' arithmetic (float sums
#: depend on the thread count). More threads are not measured here.
DEFAULT_MAX_THREADS = 2

_warned = False
_decision = "not decided"


def _cpu_times(cpus: set[int] | None, stat: Path) -> tuple[float, float] | None:
    """(busy, total) jiffies of ``cpus`` (all when ``None``) from ``/proc/stat``; ``None`` if unreadable."""
    text = _read(stat)
    if text is None:
        return None
    busy = total = 0.0
    seen = False
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu" or not name[3:].isdigit():
            continue
        if cpus is not None and int(name[3:]) not in cpus:
            continue
        f = [float(x) for x in rest.split()]
        if len(f) < 4:
            continue
        idle = f[3] + (f[4] if len(f) > 4 else 0.0)  # idle + iowait
        busy += sum(f[:8]) - idle  # user nice system idle iowait irq softirq steal
        total += sum(f[:8])
        seen = True
    return (busy, total) if seen else None


def busy_cores(sample_s: float = 0.1, stat: str | Path = "/proc/stat") -> float | None:
    """How many of the cores this process may run on other processes keep busy right now.

    Two readings of ``/proc/stat`` ``sample_s`` apart, over the CPUs of this process's affinity; this
    process sleeps in between, so all busy time is someone else's (steal time, another VM's use of
    the host, counts as busy). ``None`` where ``/proc/stat`` is missing.
    """
    try:
        cpus: set[int] | None = set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = None
    path = Path(stat)
    first = _cpu_times(cpus, path)
    if first is None:
        return None
    import time

    time.sleep(sample_s)
    second = _cpu_times(cpus, path)
    if second is None or second[1] <= first[1]:
        return None
    n = len(cpus) if cpus is not None else (os.cpu_count() or 1)
    return n * (second[0] - first[0]) / (second[1] - first[1])


def wants_passive_wait(threads: int, cores: int, busy: float | None) -> bool:
    """Whether threads should wait passively: the free cores (``cores - busy``) do not hold the
    ``threads`` that will run (with a quarter core of slack for the noise of a 0.1 s reading), or the
    load is unknown. One thread never waits for a partner, so it never needs to.
    """
    if threads <= 1:
        return False
    if busy is None:
        return True
    return cores - busy < threads - 0.25


def openmp_decision() -> str:
    """What :func:`configure_openmp` decided in this process, and why (for logs and benchmarks)."""
    return _decision


def configure_openmp(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Set the OpenMP environment medlearn runs with; returns what was set.

    With ``env`` ``None`` (what ``import medlearn`` does): nothing when the user chose a wait
    behaviour (``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``), else :data:`OPENMP_ENV` when
    :func:`wants_passive_wait` (the cores are shared, see the module docstring). With ``env``: those
    variables, each unless already set.

    Must run before torch is imported to act on this process; child processes started later inherit
    it either way. If torch is already imported and a variable had to be set, a
    :class:`RuntimeWarning` says that this process keeps OpenMP's default (once per process).

    Returns:
        The variables this call set.
    """
    global _warned, _decision
    if env is None:
        user = [k for k in _USER_WAIT if k in os.environ]
        if user:
            _decision = f"left to the user ({', '.join(f'{k}={os.environ[k]}' for k in user)})"
            return {}
        try:
            threads = default_threads()
        except ValueError:
            threads = DEFAULT_MAX_THREADS  # the malformed variable is reported where threads are set
        cores = usable_cores()
        busy = busy_cores() if threads > 1 else None
        if not wants_passive_wait(threads, cores, busy):
            _decision = (f"OpenMP default wait: {threads} thread(s) on {cores} usable core(s)"
                         + (f", {busy:.2f} busy with other processes" if busy is not None else ""))
            return {}
        _decision = (f"OMP_WAIT_POLICY=PASSIVE: {threads} threads on {cores} usable core(s), "
                     + (f"{busy:.2f} busy with other processes" if busy is not None else "load unknown"))
        env = OPENMP_ENV
    applied = {k: v for k, v in env.items() if k not in os.environ}
    for k, v in applied.items():
        os.environ[k] = v
    if applied and "torch" in sys.modules and not _warned:
        _warned = True
        warnings.warn(
            f"torch was imported before medlearn, so OpenMP in this process already read its settings "
            f"and {', '.join(f'{k}={v}' for k, v in applied.items())} only reaches child processes. "
            "Training can run many times slower when another process holds a core. Import medlearn "
            "before torch, or set OMP_WAIT_POLICY=PASSIVE in the environment.", RuntimeWarning, stacklevel=2)
    return applied


# -- cores --------------------------------------------------------------------------------------
def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _ancestors(mount: Path, rel: str) -> list[Path]:
    """``mount/rel`` and its parents up to ``mount`` (a cgroup's limit is the tightest on its path)."""
    parts = [p for p in rel.strip("/").split("/") if p and p != ".."]
    return [mount.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def cgroup_cpu_limit(root: str | Path = "/sys/fs/cgroup",
                     self_cgroup: str | Path = "/proc/self/cgroup") -> float | None:
    """CPUs this process's cgroup may use per scheduling period (CFS quota / period), or ``None``.

    Reads cgroup v2 ``cpu.max`` (``"<quota> <period>"`` or ``"max <period>"``) and v1
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota ``-1``: unlimited) for the process's cgroup
    (from ``self_cgroup``) and each of its ancestors, and returns the tightest quota. Containers
    commonly set one (``docker run --cpus``) while showing every host core in the CPU affinity.

    Args:
        root: the cgroup file system's mount point.
        self_cgroup: the process's cgroup membership file.

    Returns:
        The limit in CPUs (may be fractional, e.g. 1.5), ``None`` when there is none or it cannot be read.
    """
    root = Path(root)
    v2_rel, v1_rel = "/", "/"
    for line in (_read(Path(self_cgroup)) or "").splitlines():
        hier, _, rest = line.partition(":")
        controllers, _, rel = rest.partition(":")
        if hier == "0" and controllers == "":
            v2_rel = rel
        elif "cpu" in controllers.split(","):
            v1_rel = rel
    limits: list[float] = []
    for mount in (root, root / "unified"):
        for d in _ancestors(mount, v2_rel):
            fields = (_read(d / "cpu.max") or "").split()
            if len(fields) == 2 and fields[0] != "max":
                try:
                    quota, period = int(fields[0]), int(fields[1])
                except ValueError:
                    continue
                if quota > 0 and period > 0:
                    limits.append(quota / period)
    for mount in (root / "cpu", root / "cpu,cpuacct", root / "cpuacct,cpu"):
        for d in _ancestors(mount, v1_rel):
            quota_s, period_s = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
            try:
                quota, period = int(quota_s or ""), int(period_s or "")
            except ValueError:
                continue
            if quota > 0 and period > 0:
                limits.append(quota / period)
    return min(limits) if limits else None


def usable_cores() -> int:
    """Cores this process may actually run on (at least 1).

    The CPU affinity (``os.sched_getaffinity``, e.g. set by ``taskset`` or a batch scheduler) where
    available, else ``os.cpu_count()``; capped by the cgroup CPU quota (:func:`cgroup_cpu_limit`),
    rounded down: threads beyond the quota only get throttled together, in every period.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, max(1, math.floor(limit)))
    return max(1, cores)


# -- threads ------------------------------------------------------------------------------------
def default_threads() -> int:
    """Torch threads per process: ``MEDLEARN_THREADS`` if set, else ``min(2, usable_cores())``.

    An empty ``MEDLEARN_THREADS`` counts as unset.

    Raises:
        ValueError: ``MEDLEARN_THREADS`` is not a positive integer.
    """
    raw = os.environ.get("MEDLEARN_THREADS", "").strip()
    if raw:
        try:
            n = int(raw)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"MEDLEARN_THREADS={raw!r}: expected a positive integer (torch threads per process)")
        return n
    return min(DEFAULT_MAX_THREADS, usable_cores())


def set_cpu_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads to ``n`` (default :func:`default_threads`); returns torch's count.

    Also sets the inter-op pool to ``n`` threads when torch still allows it (only before its first
    inter-op work, and only once per process; later calls leave it as it is). Small CNNs on a few
    cores gain little from more threads, and processes that each start a thread per core
    oversubscribe the machine; medlearn's demos and tests therefore choose the count on purpose.

    Raises:
        ValueError: ``n`` < 1, or ``MEDLEARN_THREADS`` is malformed (when ``n`` is ``None``).
    """
    n = default_threads() if n is None else int(n)
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    import torch

    torch.set_num_threads(n)
    try:
        if torch.get_num_interop_threads() != n:
            torch.set_num_interop_threads(n)
    except RuntimeError:  # inter-op pool already started, or set before: torch permits it once
        pass
    return torch.get_num_threads()


#: Environment variable that overrides ``precision: auto`` for every run of a process and its
#: children (``32-true``, ``bf16-mixed`` ...; ``medlearn demo/reproduce --precision`` set it).
PRECISION_ENV = "MEDLEARN_PRECISION"

#: CPU flags (``/proc/cpuinfo``) of native bfloat16 arithmetic: AVX-512 BF16 or AMX tiles.
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_bf16_supported(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX), so bf16 autocast is faster.

    torch runs bf16 on any x86 CPU, but without these instructions it converts to fp32 and back,
    which makes bf16 autocast slower than fp32, not faster. Read from ``/proc/cpuinfo`` (Linux);
    where that file is missing (macOS, Windows) the answer is ``False`` and ``precision: auto``
    keeps fp32.
    """
    text = _read(Path(cpuinfo))
    if not text:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[-1].split())
            return any(f in flags for f in _BF16_FLAGS)
    return False
