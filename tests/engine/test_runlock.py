"""The run-folder lock: one holder at a time, named in the refusal; a dead holder's lock is taken over."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from medlearn.engine.runlock import LOCK_FILE, RunLock, RunLockedError


def test_a_second_claim_is_refused_naming_the_holder(tmp_path):
    with RunLock(tmp_path / "run") as first:
        assert first.held and f"pid={os.getpid()}" in (tmp_path / "run" / LOCK_FILE).read_text()
        with pytest.raises(RunLockedError, match=f"PID {os.getpid()} on ") as e:
            RunLock(tmp_path / "run").acquire()
        assert str(tmp_path / "run") in str(e.value) and e.value.holder["pid"] == str(os.getpid())
    assert (tmp_path / "run" / LOCK_FILE).read_text() == ""  # released: free for the next run
    with RunLock(tmp_path / "run") as again:
        assert again.held and again.taken_over == {} and again.describe_takeover() is None


def test_the_lock_of_a_process_that_died_holding_it_is_taken_over(tmp_path):
    run = tmp_path / "run"
    child = ("import os, sys; from medlearn.engine.runlock import RunLock; RunLock(sys.argv[1]).acquire(); "
             "os._exit(0)")  # ends without releasing, as a killed run does
    subprocess.run([sys.executable, "-c", child, str(run)], check=True, env={**os.environ})
    left = (run / LOCK_FILE).read_text()
    assert "pid=" in left
    with RunLock(run) as lock:
        dead = lock.taken_over["pid"]
        assert dead != str(os.getpid()) and f"left by PID {dead}" in lock.describe_takeover()
        assert "which has ended" in lock.describe_takeover()
