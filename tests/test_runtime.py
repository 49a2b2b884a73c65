"""The CPU threading policy (medlearn.runtime): OpenMP wait policy, usable cores, thread counts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import medlearn
import medlearn.runtime as rt

SRC = str(Path(medlearn.__file__).resolve().parents[1])


def _python(code: str, **env: str | None) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter importing this checkout's medlearn; ``env`` values of
    ``None`` remove the variable (the test process itself already has the policy set)."""
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_DISPLAY_ENV")}
    base["PYTHONPATH"] = SRC + os.pathsep + base.get("PYTHONPATH", "")
    for k, v in env.items():
        if v is None:
            base.pop(k, None)
        else:
            base[k] = v
    return subprocess.run([sys.executable, "-c", code], env=base, capture_output=True, text=True, timeout=120,
                          check=True)


# -- the OpenMP wait policy ----------------------------------------------------------------------
@pytest.fixture
def busy_core():
    """Another process keeping a core busy (as another user's job would)."""
    import time

    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.5)  # scheduled before the child under test measures the load
    yield proc
    proc.kill()
    proc.wait()


def test_import_medlearn_sets_passive_wait_when_a_core_is_busy(busy_core) -> None:
    out = _python("import medlearn, os, sys; print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)",
                  MEDLEARN_THREADS="2")
    assert out.stdout.split() == ["PASSIVE", "False"]  # set, and without loading torch
    assert "RuntimeWarning" not in out.stderr


def test_one_thread_never_needs_passive_wait() -> None:
    out = _python("import medlearn, os; from medlearn.runtime import openmp_decision as d; "
                  "print(os.environ.get('OMP_WAIT_POLICY'), '|', d())", MEDLEARN_THREADS="1")
    assert out.stdout.startswith("None |") and "1 thread(s)" in out.stdout


def test_users_own_wait_policy_is_kept(busy_core) -> None:
    out = _python("import medlearn, os; print(os.environ['OMP_WAIT_POLICY'])", OMP_WAIT_POLICY="ACTIVE",
                  MEDLEARN_THREADS="2")
    assert out.stdout.strip() == "ACTIVE"
    out = _python("import medlearn, os; print(os.environ.get('OMP_WAIT_POLICY'))", GOMP_SPINCOUNT="300000",
                  MEDLEARN_THREADS="2")
    assert out.stdout.strip() == "None"  # an explicit spin count is a choice too


def test_the_decision_from_free_cores() -> None:
    assert rt.wants_passive_wait(2, 2, 0.0) is False  # idle: spinning is the fast choice
    assert rt.wants_passive_wait(2, 2, 0.2) is False  # noise of a short reading
    assert rt.wants_passive_wait(2, 2, 0.9) is True  # a core taken
    assert rt.wants_passive_wait(2, 8, 5.0) is False  # 3 free cores for 2 threads
    assert rt.wants_passive_wait(2, 8, 6.5) is True
    assert rt.wants_passive_wait(2, 2, None) is True  # unknown: the safe side
    assert rt.wants_passive_wait(1, 2, 2.0) is False  # one thread waits for nobody


def test_busy_cores_from_proc_stat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stat = tmp_path / "stat"
    lines = iter([
        "cpu  0 0 0 0\ncpu0 100 0 0 900 0 0 0 0\ncpu1 100 0 0 900 0 0 0 0\n",
        "cpu  0 0 0 0\ncpu0 190 0 0 910 0 0 0 0\ncpu1 105 0 5 990 0 0 0 0\n",  # cpu0 busy 90 %, cpu1 10 %
    ])
    monkeypatch.setattr(rt, "_read", lambda path: next(lines))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert rt.busy_cores(0.0, stat) == pytest.approx(2 * 100 / 200)
    monkeypatch.setattr(rt, "_read", lambda path: None)
    assert rt.busy_cores(0.0, stat) is None


def _spincount(stderr: str) -> str:
    """GNU OpenMP's spin count as ``OMP_DISPLAY_ENV=VERBOSE`` prints it when torch loads it."""
    for line in stderr.splitlines():
        if line.strip().startswith("GOMP_SPINCOUNT"):
            return line.split("=", 1)[1].strip().strip("'")
    pytest.skip("torch's OpenMP runtime is not GNU OpenMP (no GOMP_SPINCOUNT in OMP_DISPLAY_ENV)")


def test_policy_reaches_openmp_when_medlearn_is_imported_first(busy_core) -> None:
    out = _python("import medlearn, torch; torch.ones(1)", OMP_DISPLAY_ENV="VERBOSE", MEDLEARN_THREADS="2")
    assert _spincount(out.stderr) == "0"  # passive: sleep at once instead of spinning


def test_torch_imported_first_keeps_openmp_default_and_warns_once() -> None:
    out = _python("import torch, medlearn, medlearn.runtime as rt; rt.configure_openmp({'X_MEDLEARN_T': '1'})",
                  OMP_DISPLAY_ENV="VERBOSE")
    assert _spincount(out.stderr) == "300000"  # OpenMP read its settings at `import torch`
    assert out.stderr.count("RuntimeWarning") == 1
    assert "torch was imported before medlearn" in out.stderr


def test_torch_imported_first_with_users_policy_does_not_warn() -> None:
    out = _python("import torch, medlearn", OMP_WAIT_POLICY="PASSIVE")
    assert "RuntimeWarning" not in out.stderr


def test_configure_openmp_follows_the_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rt, "_warned", True)  # torch may be loaded in this process; the warning is tested above
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.setenv("MEDLEARN_THREADS", "2")
    monkeypatch.setattr(rt, "usable_cores", lambda: 2)
    monkeypatch.setattr(rt, "busy_cores", lambda: 0.0)
    assert rt.configure_openmp() == {} and "OMP_WAIT_POLICY" not in os.environ
    assert rt.openmp_decision().startswith("OpenMP default wait")
    monkeypatch.setattr(rt, "busy_cores", lambda: 1.0)
    assert rt.configure_openmp() == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE" and "1.00 busy" in rt.openmp_decision()
    assert rt.configure_openmp() == {}  # set once: the user's (or an earlier) choice stays
    monkeypatch.setenv("OMP_WAIT_POLICY", "active")
    assert rt.configure_openmp() == {} and os.environ["OMP_WAIT_POLICY"] == "active"


def test_configure_openmp_warns_when_torch_is_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rt, "_warned", False)
    monkeypatch.setitem(sys.modules, "torch", sys.modules.get("torch", object()))
    monkeypatch.delenv("X_MEDLEARN_T", raising=False)
    with pytest.warns(RuntimeWarning, match="torch was imported before medlearn"):
        rt.configure_openmp({"X_MEDLEARN_T": "1"})
    monkeypatch.delenv("X_MEDLEARN_T")


# -- cores ----------------------------------------------------------------------------------------
def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n", encoding="ascii")


def test_cgroup_v2_quota_tightest_on_the_path(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    _write(root / "cpu.max", "max 100000")
    _write(root / "jobs" / "cpu.max", "300000 100000")
    _write(root / "jobs" / "me" / "cpu.max", "150000 100000")
    _write(tmp_path / "self", "0::/jobs/me")
    assert rt.cgroup_cpu_limit(root, tmp_path / "self") == pytest.approx(1.5)
    _write(root / "jobs" / "cpu.max", "50000 100000")  # a parent's quota binds its children too
    assert rt.cgroup_cpu_limit(root, tmp_path / "self") == pytest.approx(0.5)


def test_cgroup_v2_unlimited_and_unreadable(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    _write(root / "cpu.max", "max 100000")
    _write(tmp_path / "self", "0::/")
    assert rt.cgroup_cpu_limit(root, tmp_path / "self") is None
    _write(root / "cpu.max", "garbage")
    assert rt.cgroup_cpu_limit(root, tmp_path / "self") is None
    assert rt.cgroup_cpu_limit(tmp_path / "absent", tmp_path / "absent-self") is None


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    _write(root / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1")
    _write(root / "cpu,cpuacct" / "cpu.cfs_period_us", "100000")
    _write(root / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us", "200000")
    _write(root / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_period_us", "100000")
    _write(tmp_path / "self", "5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/")
    assert rt.cgroup_cpu_limit(root, tmp_path / "self") == pytest.approx(2.0)
    _write(tmp_path / "self", "4:cpu,cpuacct:/")  # only the unlimited root is visible
    assert rt.cgroup_cpu_limit(root, tmp_path / "self") is None


@pytest.mark.parametrize(("affinity", "limit", "expected"), [
    (8, None, 8), (8, 2.0, 2), (8, 1.5, 1), (8, 0.25, 1), (2, 6.0, 2), (1, None, 1)])
def test_usable_cores_affinity_capped_by_quota(monkeypatch: pytest.MonkeyPatch, affinity: int,
                                               limit: float | None, expected: int) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(affinity)), raising=False)
    monkeypatch.setattr(rt, "cgroup_cpu_limit", lambda: limit)
    assert rt.usable_cores() == expected


def test_usable_cores_without_affinity_falls_back_to_cpu_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    monkeypatch.setattr(rt, "cgroup_cpu_limit", lambda: None)
    assert rt.usable_cores() == 3


# -- threads ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["0", "-2", "abc", "1.5", "2 threads"])
def test_malformed_medlearn_threads_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("MEDLEARN_THREADS", value)
    with pytest.raises(ValueError, match="MEDLEARN_THREADS=.*positive integer"):
        rt.default_threads()


def test_default_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDLEARN_THREADS", " 3 ")
    assert rt.default_threads() == 3
    monkeypatch.setattr(rt, "usable_cores", lambda: 16)
    for unset in ("", None):
        if unset is None:
            monkeypatch.delenv("MEDLEARN_THREADS")
        else:
            monkeypatch.setenv("MEDLEARN_THREADS", unset)
        assert rt.default_threads() == rt.DEFAULT_MAX_THREADS
    monkeypatch.setattr(rt, "usable_cores", lambda: 1)
    assert rt.default_threads() == 1


def test_cli_rejects_malformed_medlearn_threads_before_any_work(monkeypatch: pytest.MonkeyPatch) -> None:
    from medlearn.cli import main

    monkeypatch.setenv("MEDLEARN_THREADS", "many")
    with pytest.raises(ValueError, match="MEDLEARN_THREADS='many'"):
        main(["list"])


def test_set_cpu_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import medlearn.engine
    import medlearn.engine.trainer

    assert medlearn.engine.trainer.set_cpu_threads is rt.set_cpu_threads
    assert medlearn.engine.set_cpu_threads is rt.set_cpu_threads
    before = torch.get_num_threads()
    try:
        assert rt.set_cpu_threads(2) == 2 == torch.get_num_threads()
        monkeypatch.setenv("MEDLEARN_THREADS", "1")
        assert rt.set_cpu_threads() == 1 == torch.get_num_threads()
        assert rt.set_cpu_threads(1) == 1  # again: the inter-op pool may be set only once, no error
        with pytest.raises(ValueError, match="threads must be >= 1"):
            rt.set_cpu_threads(0)
    finally:
        torch.set_num_threads(before)


def test_set_cpu_threads_sets_interop_threads_in_a_fresh_process() -> None:
    out = _python("import medlearn.runtime as rt, torch; print(rt.set_cpu_threads(1), torch.get_num_interop_threads())")
    assert out.stdout.split() == ["1", "1"]
