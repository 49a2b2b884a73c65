"""The medlearn side of benchmarks/bench_ltnet_peer.py: scoring, section placement, readings, the missing peer."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_ltnet_peer", BENCH / "bench_ltnet_peer.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_ltnet_peer"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("bench_ltnet_peer", None)
    sys.path.remove(str(BENCH))


def test_score_hand_case(bench):
    true = np.zeros((2, 8, 8), np.int64)
    true[:, 2:6, 2:6] = 1
    true[:, 0, 0] = 2
    pred = true.copy()
    pred[1, 2:6, 2:4] = 0  # image 1: label 1 half found; label 2 missed
    pred[1, 0, 0] = 0
    zero = np.zeros((2, 2, 8, 8), np.float32)
    s = bench.score(pred, true, zero, zero, [0, 1, 2])
    d1 = 2 * 8 / (8 + 16)
    assert s["dice/1"] == pytest.approx((1 + d1) / 2)
    assert s["dice/2"] == pytest.approx(0.5)
    assert s["dice"] == pytest.approx((1.0 + (d1 + 0.0) / 2) / 2)
    assert s["folding"] == 0.0 and s["inverse_consistency"] == 0.0


def test_score_counts_folds_and_inverse_error(bench):
    lab = np.ones((1, 6, 6), np.int64)
    fold = np.zeros((1, 2, 6, 6), np.float32)
    fold[0, 0] = -2.0 * np.arange(6)[:, None]  # p + f(p) runs backwards along axis 0: every voxel folds
    shift = np.ones((1, 2, 6, 6), np.float32)
    s = bench.score(lab, lab, fold, np.zeros_like(fold), [0, 1])
    assert s["folding"] == 1.0
    s = bench.score(lab, lab, np.zeros_like(shift), shift, [0, 1])
    assert s["inverse_consistency"] == pytest.approx(np.sqrt(2.0))


def test_place_after_keeps_the_anchor_and_its_trailing_text(bench, tmp_path):
    md = tmp_path / "doc.md"
    md.write_text("# T\n\n<!-- a:start -->\nA\n<!-- a:end -->\n\nnote on a\n\n<!-- b:start -->\nB\n<!-- b:end -->\n")
    bench.place_after(md, "a", "p", "# T\n")
    text = md.read_text()
    assert text.index("note on a") < text.index("<!-- p:start -->") < text.index("<!-- b:start -->")
    bench.update_section(md, "p", "P body")
    bench.place_after(md, "a", "p", "# T\n")  # already there: untouched
    assert md.read_text().count("<!-- p:start -->") == 1 and "P body" in md.read_text()
    end = tmp_path / "end.md"
    end.write_text("# T\n\n<!-- a:start -->\nA\n<!-- a:end -->\n")
    bench.place_after(end, "a", "p", "# T\n")
    assert end.read_text().rstrip().endswith("<!-- p:end -->")


def test_match_reading(bench):
    from medlearn.engine.experiment import Paired

    assert "-> matched" in bench.match_reading(Paired(np.array([0.004, -0.006, 0.001])), "c", 0.01)
    line = bench.match_reading(Paired(np.array([0.004, -0.02, 0.001])), "c", 0.01)
    assert "not matched (largest difference 0.020" in line


def test_missing_peer_env_prints_how_to_make_it(tmp_path):
    out = subprocess.run([sys.executable, str(BENCH / "bench_ltnet_peer.py"), "--peer-venv", str(tmp_path / "none"),
                          "--out", str(tmp_path / "b.md"), "--results", str(tmp_path / "r.md")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "skipped" in out.stdout and "pip install voxelmorph==0.2 neurite==0.3.4" in out.stdout
    assert not (tmp_path / "b.md").exists() and not (tmp_path / "r.md").exists()


def test_peer_smoothness_equals_medlearn_in_2d_and_3d(bench, tmp_path):
    py = bench.peer_python()
    if py is None:
        pytest.skip("the peer environment .peer-venv is absent (see benchmarks/bench_ltnet_peer.py)")
    import torch

    from medlearn.losses.registration import gradient_smoothness

    torch.manual_seed(0)
    fields = {2: torch.randn(2, 2, 12, 9), 3: torch.randn(1, 3, 6, 7, 5)}
    code = ("import sys, numpy as np, torch; sys.path.insert(0, sys.argv[1]); import vxm_runner as r\n"
            "for a in sys.argv[2:]:\n"
            "    f = torch.from_numpy(np.load(a)); print(float(r.Loss(f.ndim - 2, 0.01).smooth(f)))")
    paths = []
    for dims, f in fields.items():
        paths.append(tmp_path / f"f{dims}.npy")
        np.save(paths[-1], f.numpy())
    out = subprocess.run([str(py), "-c", code, str(BENCH / "peer"), *map(str, paths)], capture_output=True,
                         text=True, env=bench.peer_env(1), timeout=120, check=True)
    got = [float(v) for v in out.stdout.split()]
    want = [float(gradient_smoothness(f)) for f in fields.values()]
    assert got == pytest.approx(want, rel=1e-5)
