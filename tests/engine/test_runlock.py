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


def _training_run(root):
    (root / "checkpoints").mkdir(parents=True)
    (root / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    return root


def test_an_evaluation_of_a_folder_still_training_gets_its_own_subfolder(tmp_path):
    from medlearn.engine.trainer import open_run_folder

    run = _training_run(tmp_path / "run")
    with RunLock(run):  # the training run holds the folder
        with pytest.raises(RunLockedError):
            open_run_folder(run, "fit", resume=True, lock=True)
        first = open_run_folder(run, "test", lock=True)
        second = open_run_folder(run, "test", lock=True)
        assert first.lock is None and second.lock is None  # an evaluation claims nothing of the run's
        assert (first.records, second.records) == (run / "test", run / "test-2")
        assert first.records.is_dir() and second.records.is_dir()  # taken at once: no two share one
    fresh = open_run_folder(tmp_path / "fresh", "test", lock=True)  # not a training run: claimed as a whole
    assert fresh.records == fresh.root and fresh.lock is not None and fresh.lock.held
    fresh.lock.release()


def test_report_updates_wait_for_each_other(tmp_path):
    import threading
    import time

    from medlearn.engine.report import REPORT_LOCK, Section, update_run_report
    from medlearn.engine.runlock import held_briefly

    run = tmp_path / "run"
    update_run_report(run, "fit", "a run", [Section("Training", "fit part")])
    done = threading.Event()
    writer = threading.Thread(target=lambda: (update_run_report(run, "test", "a run", [Section("Test", "test part")]),
                                              done.set()))
    with held_briefly(run / REPORT_LOCK):  # another process is half-way through its update
        writer.start()
        time.sleep(0.3)
        assert not done.is_set() and "test part" not in (run / "report.html").read_text()
    writer.join(timeout=30)
    page = (run / "report.html").read_text()
    assert done.is_set() and "fit part" in page and "test part" in page  # neither part lost
