"""Crash safety of `medlearn fit | test | predict | export`, driven through the command line.

The runs that must die (SIGKILL in the middle of an epoch, SIGKILL half-way through writing
last.ckpt, a full disk) are real `python -m medlearn` processes, stopped at a chosen moment by
tests/cli_crash_hooks.py (a callback given with --trainer.callbacks). Runs that only need to finish
or be refused go through `medlearn.cli.main` in this process, which is what the entry point calls.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import medlearn
from medlearn.cli import main
from medlearn.engine.checkpoint import safe_load
from medlearn.methods.c2l.recipe import write_contract_data as c2l_data
from medlearn.methods.ccl.recipe import write_contract_data as ccl_data
from medlearn.registry import config_dir

SRC = Path(medlearn.__file__).resolve().parents[1]
HOOKS = Path(__file__).resolve().parent  # cli_crash_hooks.py
HOOK = "--trainer.callbacks+=cli_crash_hooks.CrashHook"
SHORT = ["--trainer.max_epochs", "3", "--trainer.limit_train_batches", "4"]
# main(argv) inside pytest: LightningCLI notes that pytest's own sys.argv is not what it parses
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")


def _fit_args(method: str, folder: Path) -> list[str]:
    """A 3-epoch, 4-batch fit of a method on its contract data (written once per folder)."""
    if method == "c2l":  # a momentum queue of 48 keys, 32 keys per epoch: the queue pointer wraps mid-epoch
        root = folder / "cxr" if (folder / "cxr").is_dir() else c2l_data(folder)
        return ["--config", str(config_dir("c2l") / "demo.yaml"), "--data.init_args.root", str(root),
                "--data.init_args.batch_size", "8", "--model.init_args.queue_size", "48", *SHORT]
    root = folder / "isic" if (folder / "isic").is_dir() else ccl_data(folder)  # class-balanced draws
    return ["--config", str(config_dir("ccl") / "demo.yaml"), "--data.init_args.root", str(root),
            "--data.init_args.batch_size", "8", "--data.init_args.sampler", "balanced", *SHORT]


def _env(cwd: Path, hook: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(HOOKS), *filter(None, [env.get("PYTHONPATH")])])
    env["MEDLEARN_THREADS"] = "1"
    env.pop("CRASH_HOOK", None)
    if hook:
        env["CRASH_HOOK"] = hook
        env["CRASH_HOOK_MARKER"] = str(cwd / "hook.marker")
    return env


def _start(args: list[str], cwd: Path, hook: str | None = None) -> subprocess.Popen[str]:
    """`python -m medlearn ARGS` in the background (output in cwd/child.out, child.err)."""
    (cwd / "hook.marker").unlink(missing_ok=True)
    with (cwd / "child.out").open("w") as out, (cwd / "child.err").open("w") as err:
        return subprocess.Popen([sys.executable, "-m", "medlearn", *args], cwd=cwd, env=_env(cwd, hook),
                                stdout=out, stderr=err, text=True)


def _run(args: list[str], cwd: Path, hook: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "medlearn", *args], cwd=cwd, env=_env(cwd, hook),
                          capture_output=True, text=True, timeout=300)


def _wait_for_hook(proc: subprocess.Popen[str], cwd: Path, timeout: float = 240) -> None:
    marker = cwd / "hook.marker"
    t0 = time.monotonic()
    while not marker.is_file():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (status {proc.returncode}) before the hook fired:\n"
                        f"{(cwd / 'child.err').read_text()[-3000:]}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            pytest.fail("the hook did not fire in time")
        time.sleep(0.1)


def _sigkill(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL


def _one_line(err: str) -> str:
    """The one medlearn line of a refused command's stderr; no traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("medlearn:")]
    assert len(lines) == 1, err
    return lines[0]


def _assert_same_run(a: Path, b: Path) -> None:
    ca, cb = safe_load(a), safe_load(b)
    assert (ca["epoch"], ca["global_step"]) == (cb["epoch"], cb["global_step"])
    sa, sb = ca["state_dict"], cb["state_dict"]
    assert sa.keys() == sb.keys()
    differ = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not differ, f"resumed weights differ from the uninterrupted run's in {differ[:5]}"
    oa, ob = ca["optimizer_states"][0]["state"], cb["optimizer_states"][0]["state"]
    for i in oa:
        for k, v in oa[i].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(ob[i][k])), (i, k)


# ------------------------------------------------------------------------------ SIGKILL and resume
@pytest.mark.parametrize("method", ["c2l", "ccl_balanced"])
def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_weights(method, tmp_path, capsys):
    args = _fit_args(method.split("_")[0], tmp_path)
    killed = tmp_path / "killed"
    proc = _start(["fit", *args, "--trainer.default_root_dir", str(killed), HOOK], tmp_path, hook="pause:1:1")
    _wait_for_hook(proc, tmp_path)  # two batches into epoch 2 (of 3)
    _sigkill(proc)
    last = killed / "checkpoints" / "last.ckpt"
    assert safe_load(last)["epoch"] == 0  # what survives: the checkpoint written at the end of epoch 1

    assert main(["fit", *args, "--trainer.default_root_dir", str(killed), "--ckpt_path", str(last)]) == 0
    assert f"left by PID {proc.pid}" in capsys.readouterr().out  # the dead run's lock was taken over
    assert main(["fit", *args, "--trainer.default_root_dir", str(tmp_path / "full")]) == 0
    _assert_same_run(tmp_path / "full" / "checkpoints" / "last.ckpt", last)


@pytest.fixture(scope="module")
def killed_while_writing(tmp_path_factory):
    """A c2l fit SIGKILLed half-way through writing last.ckpt after epoch 2, and a second fit started
    on the same run folder while the first was still alive."""
    tmp = tmp_path_factory.mktemp("killed-while-writing")
    args = _fit_args("c2l", tmp)
    run = tmp / "run"
    first = _start(["fit", *args, "--trainer.default_root_dir", str(run), HOOK], tmp, hook="kill_in_write:1")
    _wait_for_hook(first, tmp)
    second = _run(["fit", *args, "--trainer.default_root_dir", str(run)], tmp)
    evaluation = _run(["validate", *args, "--trainer.default_root_dir", str(run),
                       "--ckpt_path", str(run / "checkpoints" / "last.ckpt")], tmp)
    _sigkill(first)
    partial = sorted((run / "checkpoints").glob(".last.ckpt.*.tmp"))
    last = run / "checkpoints" / "last.ckpt"
    return SimpleNamespace(args=args, run=run, pid=first.pid, second=second, evaluation=evaluation, partial=partial,
                           partial_sizes=[p.stat().st_size for p in partial], last=last,
                           last_epoch=safe_load(last)["epoch"], last_size=last.stat().st_size)


def test_sigkill_while_writing_last_ckpt_keeps_the_previous_one(killed_while_writing):
    k = killed_while_writing
    assert len(k.partial) == 1 and 0 < k.partial_sizes[0] < k.last_size  # the write was cut short ...
    assert k.last_epoch == 0  # ... and last.ckpt is still epoch 1's, whole


def test_a_second_run_on_a_busy_run_folder_is_refused_naming_the_holder(killed_while_writing):
    k = killed_while_writing
    line = _one_line(k.second.stderr)
    assert k.second.returncode == 2
    assert "run folder busy" in line and str(k.run) in line and f"PID {k.pid}" in line


def test_an_evaluation_of_a_folder_still_training_runs_beside_it(killed_while_writing):
    k = killed_while_writing
    assert k.evaluation.returncode == 0, k.evaluation.stderr[-3000:]
    assert f"records go to {k.run / 'validate'}" in k.evaluation.stdout
    assert (k.run / "validate" / "config.yaml").is_file()  # its own records, beside the training's


def test_a_dead_runs_lock_is_taken_over_and_its_partial_write_removed(killed_while_writing, capsys):
    k = killed_while_writing
    assert main(["fit", *k.args, "--trainer.default_root_dir", str(k.run), "--ckpt_path", str(k.last)]) == 0
    out = capsys.readouterr().out
    assert f"took over the lock of {k.run} left by PID {k.pid}" in out
    assert f"removed {k.partial[0]}" in out and not k.partial[0].exists()
    assert safe_load(k.last)["epoch"] == 2
    assert (k.run / ".medlearn.lock").read_text() == ""  # released


def test_a_checkpoint_write_that_fails_keeps_the_previous_last_ckpt(tmp_path):
    args = _fit_args("c2l", tmp_path)
    run = tmp_path / "run"
    res = _run(["fit", *args, "--trainer.default_root_dir", str(run), HOOK], tmp_path, hook="full_disk:1")
    line = _one_line(res.stderr)
    assert res.returncode == 1
    assert "checkpoint not saved" in line and "No space left on device" in line and "is kept unchanged" in line
    assert str(run / "checkpoints") in line
    assert safe_load(run / "checkpoints" / "last.ckpt")["epoch"] == 0
    assert not list((run / "checkpoints").glob(".*.tmp"))


# ------------------------------------------------------------------------------ bad checkpoints
class _RunsCode:
    """Unpickling this calls exec(), which writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory):
    """Checkpoints medlearn must refuse, and the c2l command lines they are given to."""
    tmp = tmp_path_factory.mktemp("bad-checkpoints")
    args = _fit_args("c2l", tmp)
    other = tmp / "ccl-run"  # a real checkpoint of another method
    assert main(["fit", *_fit_args("ccl", tmp), "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
                 "--trainer.limit_val_batches", "1", "--trainer.default_root_dir", str(other)]) == 0
    good = other / "checkpoints" / "last.ckpt"
    ckpt = safe_load(good)
    files = {"other_method": good}
    data = good.read_bytes()
    (tmp / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    torch.save(ckpt["state_dict"], tmp / "plain_state_dict.ckpt")
    (tmp / "not_torch.ckpt").write_text("name,label\nimg1.png,1\n")
    torch.save({**ckpt, "hyper_parameters": {"lr": _RunsCode(tmp / "code-ran.marker")}}, tmp / "malicious.ckpt")
    # a checkpoint naming a module outside medlearn that would run code when imported
    (tmp / "crash_payload.py").write_text(f"open({str(tmp / 'module-imported.marker')!r}, 'w').close()\n"
                                          "class Model:\n    pass\n")
    foreign = {**ckpt, "hyper_parameters": {**ckpt["hyper_parameters"], "_class_path": "crash_payload.Model"},
               "medlearn": {**ckpt["medlearn"], "module": "crash_payload.Model"}}
    torch.save(foreign, tmp / "foreign_module.ckpt")
    for kind in ("truncated", "plain_state_dict", "not_torch", "malicious", "foreign_module"):
        files[kind] = tmp / f"{kind}.ckpt"
    markers = [tmp / "code-ran.marker", tmp / "module-imported.marker"]
    return SimpleNamespace(tmp=tmp, args=args, files=files, markers=markers)


REASONS = {
    "truncated": "truncated or corrupt",
    "other_method": "written by medlearn.methods.ccl.module.CCLClassifier, but this run's model is "
                    "medlearn.methods.c2l.module.C2L",
    "plain_state_dict": "no 'state_dict' of tensors (it holds a plain state dict",
    "not_torch": "not a PyTorch checkpoint",
    "malicious": "exec: it could run code, so it was not loaded",
    "foreign_module": "it was written by 'crash_payload.Model', not by a medlearn module",
}
CASES = [(kind, command) for kind in REASONS for command in ("fit", "test", "predict", "export")
         if not (command == "export" and kind == "other_method")]  # export takes any method's checkpoint


@pytest.mark.parametrize(("kind", "command"), CASES)
def test_a_bad_checkpoint_is_refused_in_one_line_naming_the_file(kind, command, bad_checkpoints, capsys,
                                                                  monkeypatch):
    b = bad_checkpoints
    monkeypatch.syspath_prepend(str(b.tmp))  # crash_payload.py is importable: it must not be imported
    path = b.files[kind]
    run = b.tmp / f"run-{kind}-{command}"
    if command == "export":
        argv = ["export", "--ckpt", str(path), "--format", "torchscript"]
    else:
        argv = [command, *b.args, "--trainer.default_root_dir", str(run), "--ckpt_path", str(path)]
    assert main(argv) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"{path}: " in line and REASONS[kind] in line
    assert not any(m.exists() for m in b.markers), "the checkpoint ran code"
    assert "crash_payload" not in sys.modules
    assert not run.exists() and not path.with_suffix(".pt").exists()  # nothing written


def test_a_malicious_checkpoint_is_refused_by_the_command(bad_checkpoints):
    b = bad_checkpoints
    res = _run(["test", *b.args, "--trainer.default_root_dir", str(b.tmp / "run-cli"),
                "--ckpt_path", str(b.files["malicious"])], b.tmp)
    line = _one_line(res.stderr)
    assert res.returncode == 2 and str(b.files["malicious"]) in line and REASONS["malicious"] in line
    assert not any(m.exists() for m in b.markers)


def test_a_checkpoint_whose_weights_do_not_fit_the_model_is_refused_in_one_line(bad_checkpoints, capsys):
    """Without hyper-parameters to rebuild its model from, a checkpoint meets the configured model."""
    b = bad_checkpoints
    ckpt = safe_load(b.files["other_method"])
    del ckpt["hyper_parameters"]
    path = b.tmp / "no_hparams.ckpt"
    torch.save(ckpt, path)
    argv = ["test", *_fit_args("ccl", b.tmp), "--model.init_args.emb_dim", "8",
            "--trainer.default_root_dir", str(b.tmp / "run-misfit"), "--ckpt_path", str(path)]
    assert main(argv) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"{path}: its weights do not fit CCLClassifier: " in line and "shapes differ" in line
