"""Progress and quiet runs: bars on a terminal only, lines with counts and the time left, --quiet everywhere."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from medlearn import console
from medlearn.console import QUIET_ENV, Countdown, format_duration, is_quiet, set_quiet, track


@pytest.fixture(autouse=True)
def _not_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts with quiet off (a user's MEDLEARN_QUIET would change what they see)."""
    monkeypatch.delenv(QUIET_ENV, raising=False)


def _screen() -> Console:
    return Console(file=io.StringIO(), force_terminal=True, width=100)


class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


# ------------------------------------------------------------------------------------------ track
def test_track_yields_every_item_in_order_and_draws_nothing_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    log = Console(file=io.StringIO(), width=100)  # a file, not a terminal
    assert list(track(range(5), description="cases", console=log)) == [0, 1, 2, 3, 4]
    assert log.file.getvalue() == ""
    items = iter("abc")  # no len(), default console: standard error, which pytest captures (no terminal)
    assert list(track(items, description="cases")) == ["a", "b", "c"]
    assert capsys.readouterr() == ("", "")


def test_track_draws_counts_elapsed_and_time_left_on_a_terminal() -> None:
    screen = _screen()
    assert list(track(range(7), description="head CT volumes", console=screen)) == list(range(7))
    text = screen.file.getvalue()
    assert "head CT volumes" in text and "7/7" in text
    assert "elapsed" in text and "left" in text and re.search(r"\d:\d\d:\d\d", text)
    screen = _screen()
    assert list(track(iter(range(3)), description="masks", console=screen)) == [0, 1, 2]
    assert "3/?" in screen.file.getvalue()  # no total: the count without one
    screen = _screen()
    assert list(track(iter(range(3)), total=3, description="masks", console=screen)) == [0, 1, 2]
    assert "3/3" in screen.file.getvalue()


def test_track_is_silent_in_quiet_mode_even_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(QUIET_ENV, "1")
    screen = _screen()
    assert list(track(range(4), description="cases", console=screen)) == [0, 1, 2, 3]
    assert screen.file.getvalue() == ""


def test_a_loop_left_early_closes_its_bar() -> None:
    screen = _screen()
    for i in track(range(10), description="first", console=screen):
        if i == 2:
            break
    assert list(track(range(2), description="second", console=screen)) == [0, 1]
    assert "2/2" in screen.file.getvalue()


def test_a_synth_writer_draws_its_bar_on_a_terminal_stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from medlearn.synth import get_synth

    tty = _TTY()
    monkeypatch.setattr(sys, "stderr", tty)
    monkeypatch.setattr(console, "_stderr_console", None)  # a fresh console on the replaced stderr
    get_synth("chestxray")(out=tmp_path / "cxr", n_images=12, size=16, seed=1)
    text = tty.getvalue()
    assert "chest radiographs" in text and "12/12" in text
    assert capsys.readouterr().out == ""


# ------------------------------------------------------------------------------------------ quiet
def test_set_quiet_reaches_a_child_process(monkeypatch: pytest.MonkeyPatch) -> None:
    code = "from medlearn.console import is_quiet; print(is_quiet())"
    set_quiet(True)
    try:
        assert is_quiet()
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
        assert out.stdout.strip() == "True"
    finally:
        set_quiet(False)
    assert not is_quiet()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "False"


def test_the_quiet_flag_reaches_child_processes_of_a_command_and_is_undone_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medlearn import cli

    seen: list[str] = []

    def child(_: object) -> int:
        code = "from medlearn.console import is_quiet; print(is_quiet())"
        seen.append(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                   timeout=120).stdout.strip())
        return 0

    monkeypatch.setattr(cli, "_cmd_index", child)
    assert cli.main(["index", str(tmp_path), "--quiet"]) == 0
    assert cli.main(["index", str(tmp_path)]) == 0
    assert seen == ["True", "False"] and not is_quiet()


def test_synth_quiet_prints_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from medlearn.cli import main

    args = ["synth", "chestxray", "--n-images", "12", "--size", "16", "--seed", "1"]
    assert main([*args, "--out", str(tmp_path / "quiet"), "--quiet"]) == 0
    assert capsys.readouterr() == ("", "")
    assert (tmp_path / "quiet" / "Data_Entry_2017.csv").is_file()
    assert main([*args, "--out", str(tmp_path / "loud")]) == 0
    assert "wrote chestxray data" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "quiet" / "images").iterdir()) == \
        sorted(p.name for p in (tmp_path / "loud" / "images").iterdir())


@pytest.mark.parametrize("command", ["synth chestxray", "reproduce ccl", "demo", "oneshot", "corrupt-masks", "index",
                                     "export"])
def test_every_command_takes_quiet(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    from medlearn.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args([*command.split(), "--help"])
    assert "--quiet" in capsys.readouterr().out


def test_lightning_commands_take_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    from medlearn.cli import main
    from medlearn.registry import config_dir

    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", str(config_dir("c2l") / "chestxray14.yaml"), "--print_config", "--quiet"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "queue_size: 16384" in out and "quiet" not in out  # taken out before LightningCLI parses
    assert not is_quiet()


def test_quiet_turns_lightning_progress_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.pytorch.callbacks import RichProgressBar

    from medlearn.engine.trainer import EpochLine, RunFolder, trainer_arguments

    for stage in ("fit", "predict"):
        folder = RunFolder(tmp_path, stage, tmp_path)
        args = trainer_arguments(folder, progress="rich", precision="32-true", report=False)
        assert args["enable_progress_bar"] and any(isinstance(c, RichProgressBar) for c in args["callbacks"])
        monkeypatch.setenv(QUIET_ENV, "1")
        for progress in ("rich", "line", "auto"):
            args = trainer_arguments(folder, progress=progress, precision="32-true", report=False)
            assert not args["enable_progress_bar"]
            assert not any(isinstance(c, (RichProgressBar, EpochLine)) for c in args["callbacks"])
        monkeypatch.delenv(QUIET_ENV)


# -------------------------------------------------------------------------------------- countdown
def test_countdown_estimates_the_time_left_from_the_steps_timed() -> None:
    clock = Countdown(total=5, noun="run")
    assert clock.left(clock.next(), finished=False) is None  # nothing timed yet
    clock.timed(10.0)
    clock.timed(20.0)
    clock.next()
    assert clock.left(2, finished=True) == pytest.approx(45.0)  # 3 more at the mean of 15 s
    assert clock.left(2, finished=False) == pytest.approx(60.0)
    assert clock.position(2) == "2 of 5" and clock.position(6) == "6" and clock.left(6, True) is None
    line = clock.line(2, "arm=ccl seed=0", "done", seconds=20.0)
    assert line.startswith("[run 2 of 5] arm=ccl seed=0: done in 20 s; ") and line.endswith("about 45 s left")
    assert "left" not in clock.line(5, "arm=ccl seed=3", "done", seconds=20.0)  # the last one: nothing left
    assert "left" not in Countdown(None).line(1, "x", "done", seconds=1.0)  # no total, no estimate


def test_format_duration() -> None:
    assert [format_duration(s) for s in (4.4, 89.0, 250.0, 5400.0)] == ["4 s", "89 s", "4.2 min", "1.5 h"]


# ------------------------------------------------------------------------------------- experiment
def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("[run ")]


def test_experiment_prints_a_line_per_run_with_its_count_and_the_time_left(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from medlearn.engine.experiment import Experiment

    exp = Experiment(tmp_path, total_runs=3)
    for seed in range(3):
        exp.run({"arm": "a", "seed": seed}, lambda: {"v": 1.0})
    lines = _lines(capsys.readouterr().out)
    assert [ln.split(":")[0] for ln in lines] == [f"[run {k} of 3] arm=a seed={k - 1}" for k in (1, 1, 2, 2, 3, 3)]
    assert lines[0].endswith("started; 0 s so far")  # nothing timed yet: no estimate
    assert "done in" in lines[1] and lines[1].endswith("s left")
    assert "started" in lines[2] and lines[2].endswith("s left") and "about" in lines[3]
    assert "left" not in lines[5]
    # resumed: the stored runs are counted and said to be kept; the grid counts its cells
    again = Experiment(tmp_path, resume=True)
    again.grid([0, 1, 2, 3], ["a"], lambda arm, seed: {"v": 2.0})
    lines = _lines(capsys.readouterr().out)
    assert lines[0].startswith("[run 1 of 4] arm=a seed=0: kept from results.json")
    assert [ln.split(":")[0] for ln in lines[3:]] == ["[run 4 of 4] arm=a seed=3"] * 2
    assert "about" in lines[3]  # estimated from the stored runs' times


def test_experiment_is_silent_in_quiet_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from medlearn.engine.experiment import Experiment

    monkeypatch.setenv(QUIET_ENV, "1")
    exp = Experiment(tmp_path)
    rows = exp.grid([0, 1], ["a", "b"], lambda arm, seed: {"v": float(seed)})
    assert len(rows) == 4 and capsys.readouterr().out == ""


# ---------------------------------------------------------------------------------------- predict
def test_predict_draws_a_bar_with_counts_on_a_terminal_and_nothing_with_quiet(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from medlearn.cli import main
    from medlearn.engine.config import load_config
    from medlearn.engine.run import fit_from_config
    from medlearn.registry import config_dir

    data = tmp_path / "cxr"
    main(["synth", "chestxray", "--out", str(data), "--n-images", "24", "--size", "16", "--seed", "3", "--quiet"])
    config = config_dir("c2l") / "demo_finetune.yaml"
    over = {"data.init_args.root": str(data), "data.init_args.num_train": 12, "data.init_args.image_size": 16,
            "trainer.max_epochs": 1}
    run = tmp_path / "run"
    fit_from_config(load_config(config, over), run, test=False, progress="none")
    predict = ["predict", "--config", str(config), "--data.init_args.root", str(data),
               "--data.init_args.num_train", "12", "--data.init_args.image_size", "16",
               "--ckpt_path", str(run / "checkpoints" / "best.ckpt"), "--trainer.default_root_dir", str(run)]
    capsys.readouterr()
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # what the command tests to draw its bar
    assert main([*predict, "--quiet"]) in (0, None)
    out = capsys.readouterr().out
    assert (run / "predict" / "predictions.csv").is_file()
    assert "Predicting" not in out and "wrote" not in out and not re.search(r"\d+/\d+", out), out
    assert main(predict) in (0, None)
    out = capsys.readouterr().out
    assert (run / "predict-2" / "predictions.csv").is_file()
    assert "Predicting" in out and re.search(r"\b(\d+)/\1\b", out), out  # batches done / batches


# ------------------------------------------------------------------------------------------ epochs
def test_epoch_lines_show_the_time_left_and_nothing_in_quiet_mode(monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import torch
    from lightning.pytorch import LightningModule, Trainer

    from medlearn.engine.trainer import EpochLine

    class Tiny(LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Linear(2, 1)

        def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
            loss = self.w(batch[0]).pow(2).mean()
            self.log("train/loss", loss, on_step=False, on_epoch=True)
            self.log("train/n", float(len(batch[0])), on_step=False, on_epoch=True, reduce_fx="sum")
            self.log("loss", loss, on_step=True, on_epoch=False, prog_bar=True, logger=False)  # the bar's step value
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    def fit() -> list[str]:
        data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)), batch_size=4)
        trainer = Trainer(max_epochs=3, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False, callbacks=[EpochLine("[tiny] ")])
        trainer.fit(Tiny(), data)
        return [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[tiny] epoch")]

    lines = fit()
    assert [ln.split(" (")[0] for ln in lines] == ["[tiny] epoch 1/3", "[tiny] epoch 2/3", "[tiny] epoch 3/3"]
    assert "s left)" in lines[0] and "s left)" in lines[1] and "left" not in lines[2]
    assert re.search(r"train/loss=\d\.\d{4}\b", lines[0]) and "train/n=8  " in lines[0] + "  "  # a count reads as one
    assert " loss=" not in lines[0]  # the bar's step value is not repeated beside its epoch mean
    monkeypatch.setenv(QUIET_ENV, "1")
    assert fit() == []
