"""CPU threading policy: the OpenMP wait policy and how many torch threads a process uses.

This module owns two decisions that every medlearn entry point (the ``medlearn`` command, the demo
and reproduction recipes, the tests, the benchmarks) shares:

* **OpenMP threads wait passively** (``OMP_WAIT_POLICY=PASSIVE``). After each parallel region,
  torch's OpenMP threads otherwise spin on their core for a while (GNU OpenMP, which the PyPI
  torch wheels bundle: 300,000 spins, about 3 ms) waiting for the next region. On idle cores that
  saves a wake-up per region; when another process holds one of the cores, a spinning thread burns
  the time its partner needs, and every region waits for the thread that has no core. With one of
  two cores busy, ``medlearn demo c2l`` once took about 100 s per pretraining epoch instead of
  about 2 s, and a small CNN step 217 ms on 2 threads against 33 ms on 1 thread and 36 ms on 2
  threads with ``OMP_WAIT_POLICY=PASSIVE``.

  Passive waiting is not free. ``benchmarks/bench_threads.py`` (``docs/benchmarks.md``, section
  "Threads"; 2-core VM, nothing else running) measured, new / old default: the C2L demo step
  0.45x with one core busy but 1.97x on idle cores (178 vs 395 ms, 252 vs 128 ms), a demo
  pretraining epoch 0.56x busy and 1.98x idle (3.3 vs 6.0 s, 4.0 vs 2.0 s), a ResNet-18 C2L step
  0.60x busy and 1.29x idle. medlearn takes the bounded slowdown on idle cores over the unbounded
  one on shared machines (3x to 50x above). No spin count in between serves both: 10,000 spins
  keep the idle speed (1.14x) and lose the busy one (401 ms), 1,000 spins lose some of each.

  On a machine of your own, set ``GOMP_SPINCOUNT=300000`` (GNU OpenMP: the old behaviour exactly;
  an explicit spin count overrides the wait policy) or ``OMP_WAIT_POLICY=ACTIVE``.
* **Threads per process**: ``MEDLEARN_THREADS`` if set, else ``min(2, usable_cores())``: the
  cores this process may run on (CPU affinity, capped by a cgroup CPU quota), not the machine's.

OpenMP reads its environment once, when its runtime is loaded, and torch loads it at
``import torch``; setting ``os.environ`` afterwards changes nothing in this process (only in its
children). ``import medlearn`` therefore applies the policy (:func:`configure_openmp`, called from
``medlearn/__init__.py``), and this module never imports torch at import time. A user's own
``OMP_WAIT_POLICY`` always wins. If torch was imported before medlearn and no policy was set, the
policy cannot take effect in this process and a :class:`RuntimeWarning` says so (once).

Intel/LLVM OpenMP builds of torch read the same variable: ``PASSIVE`` sets their block time to 0
unless ``KMP_BLOCKTIME`` is set, so no ``KMP_*`` setting is needed.

Example:
    >>> import medlearn  # first: sets OMP_WAIT_POLICY=PASSIVE unless the user set it
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
           "default_threads", "set_cpu_threads"]

#: Environment medlearn sets for OpenMP (with ``setdefault``: a user's value wins).
OPENMP_ENV: Mapping[str, str] = {"OMP_WAIT_POLICY": "PASSIVE"}

#: Most threads the default picks. Measured on 2 cores only, with passive waiting the second thread
#: gives no consistent gain (against 1 thread: C2L demo step 1.25x idle, 0.82x with a core busy;
#: ResNet-18 step 0.84x idle, 1.25x busy); 2 stays, so the documented reproductions keep their
#: arithmetic (float sums depend on the thread count). More threads are not measured.
DEFAULT_MAX_THREADS = 2

_warned = False


def configure_openmp(env: Mapping[str, str] = OPENMP_ENV) -> dict[str, str]:
    """Set the OpenMP environment medlearn runs with, unless already set; returns what was set.

    Must run before torch is imported to act on this process (``import medlearn`` does it); child
    processes started later inherit it either way. If torch is already imported and a variable was
    not set before, a :class:`RuntimeWarning` says that this process keeps OpenMP's default (once
    per process).

    Args:
        env: variables and values (default :data:`OPENMP_ENV`).

    Returns:
        The variables this call set (empty when the user, or an earlier call, set them all).
    """
    global _warned
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
