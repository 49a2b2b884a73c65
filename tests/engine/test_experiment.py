"""The experiment runner: resumable rows, paired readings, markdown sections."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medlearn.engine.experiment import Experiment, Paired, mean_sd_cell, paired, verdict, write_section


def test_runs_are_stored_as_they_finish_and_resumed(tmp_path):
    calls = []

    def run(arm, seed):
        calls.append((arm, seed))
        if (arm, seed) == ("b", 1):
            raise KeyboardInterrupt  # the reproduction is stopped half way
        return {"acc": {"a": 0.5, "b": 0.6}[arm] + 0.01 * seed}

    exp = Experiment(tmp_path, meta={"epochs": 3})
    with pytest.raises(KeyboardInterrupt):
        exp.grid((0, 1), ("a", "b"), run)
    stored = json.loads((tmp_path / "results.json").read_text())
    assert [(r["arm"], r["seed"]) for r in stored["rows"]] == [("a", 0), ("b", 0), ("a", 1)]
    assert stored["epochs"] == 3 and stored["threads"] >= 1

    calls.clear()
    again = Experiment(tmp_path, resume=True)
    again.grid((0, 1), ("a", "b"), lambda arm, seed: {"acc": {"a": 0.5, "b": 0.6}[arm] + 0.01 * seed})
    assert calls == [] and len(again.rows) == 4 and again.resumed == 3
    np.testing.assert_allclose(again.values("acc", arm="b"), [0.6, 0.61])
    fresh = Experiment(tmp_path)  # without resume: starts afresh
    assert fresh.rows == [] and fresh.find(arm="a", seed=0) is None


def test_a_stored_row_is_rerun_when_it_is_no_longer_valid(tmp_path):
    exp = Experiment(tmp_path)
    exp.run({"stage": "pretrain"}, lambda: {"ckpt": str(tmp_path / "gone.ckpt")})
    n = []
    row = Experiment(tmp_path, resume=True).run(
        {"stage": "pretrain"}, lambda: n.append(1) or {"ckpt": "new"}, valid=lambda r: r["ckpt"] == "new")
    assert n == [1] and row["ckpt"] == "new"


def test_paired_readings():
    rows = [{"arm": a, "seed": s, "acc": v, "nll": 1 - v}
            for s, (x, y) in enumerate([(0.80, 0.70), (0.75, 0.74), (0.90, 0.60)])
            for a, v in (("m", x), ("base", y))]
    d = paired(rows, "acc", {"arm": "m"}, {"arm": "base"})
    np.testing.assert_allclose(d.diff, [0.10, 0.01, 0.30])
    assert d.cell() == "+0.137 (3/3)" and d.verdict(0.02) == "reproduced"
    assert d.reading("m beats base", 0.02) == "- m beats base: mean +0.137, 3/3 seeds -> reproduced."
    nll = paired(rows, "nll", {"arm": "m"}, {"arm": "base"}, lower_is_better=True)
    assert nll.cell() == "-0.137 (3/3)" and nll.verdict(0.02) == "reproduced"
    assert Paired(np.array([0.05, -0.01])).verdict(0.02) == "same direction, within noise"
    assert verdict(np.array([-0.1, 0.02]), 0.0) == "not reproduced" and Paired(np.array([])).cell() == "-"
    assert mean_sd_cell(np.array([0.5, 0.7])) == "0.600 ± 0.141 [0.500, 0.700]"


def test_write_section_replaces_only_its_block(tmp_path):
    md = tmp_path / "results.md"
    write_section(md, "a", "first")
    write_section(md, "b", "other")
    write_section(md, "a", "second")
    text = md.read_text()
    assert text.startswith("# Reproductions") and "first" not in text
    assert text.index("<!-- a:start -->\nsecond\n<!-- a:end -->") < text.index("other")
