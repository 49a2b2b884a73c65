"""Crossover-Net's networks and loss: shapes and parameter counts, the loss against a naive reference in
both modes, and, where the official repository is on this machine, the same tensors through the official
``CrossLoss`` / ``hvCNN`` (imported from the repository, nothing of it re-implemented here)."""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medlearn.methods.crossover.losses import CrossoverLoss, nonoverlap_positions, overlap_positions, profile_terms
from medlearn.methods.crossover.model import CrossoverNet, SquareNet, StripNet, build_branch

#: A clone or bare mirror of github.com/Qianyu1226/Crossover-Net (set MEDLEARN_CROSSOVER_OFFICIAL to point elsewhere).
OFFICIAL = Path(os.environ.get("MEDLEARN_CROSSOVER_OFFICIAL", "/work/.mirror/Qianyu1226+Crossover-Net/repo"))


def naive_terms(pv: torch.Tensor, ph: torch.Tensor, o: list[int], n: list[int], mode: str) -> tuple[float, float]:
    """Loops over samples, channels and positions."""
    b_, p_, _ = pv.shape
    if mode == "capped":
        def mean_dist(ts: list[int]) -> float:
            vals = [math.sqrt(sum(float(pv[b, c, t] - ph[b, c, t]) ** 2 for c in range(p_))) for b in range(b_)
                    for t in ts]
            return sum(vals) / len(vals)
        return mean_dist(o), mean_dist(n)

    def normalised(ts: list[int]) -> float:
        vals = [math.sqrt(sum(float(pv[b, c, t] - ph[b, c, t]) ** 2 for b in range(b_))) for c in range(p_)
                for t in ts]
        lo, hi = min(vals), max(vals)
        return sum((v - lo) / (hi - lo) for v in vals) / len(vals)
    return normalised(o), normalised(n)


@pytest.mark.parametrize("mode,b,p,t", [("code", 5, 3, 19), ("code", 7, 4, 24), ("code", 2, 6, 12),
                                        ("capped", 5, 3, 19), ("capped", 7, 4, 24), ("capped", 1, 6, 12)])
def test_loss_terms_against_naive_reference(mode, b, p, t):
    g = torch.Generator().manual_seed(b * 10 + t)
    pv, ph = torch.randn(b, p, t, generator=g), torch.randn(b, p, t, generator=g)
    o, n = overlap_positions(t), nonoverlap_positions(t, t // 5)
    con, div = profile_terms(pv, ph, o, n, mode)
    want = naive_terms(pv, ph, o, n, mode)
    assert float(con) == pytest.approx(want[0], rel=1e-5, abs=1e-6)
    assert float(div) == pytest.approx(want[1], rel=1e-5, abs=1e-6)
    logits, y = torch.randn(b, 3, generator=g), torch.randint(0, 3, (b,), generator=g)
    ce = torch.nn.functional.cross_entropy(logits, y)
    loss = CrossoverLoss(o, n, mode)
    parts = loss(logits, y, pv, ph)
    lc, ld = (1.0, 1.0) if mode == "code" else (0.1, 0.05)
    capped = want[1] if mode == "code" else min(want[1], 5.0)
    assert float(parts.total) == pytest.approx(float(ce) + lc * want[0] - ld * capped, rel=1e-5, abs=1e-6)


def test_cap_bounds_the_diversity_term_and_zero_distance_has_finite_gradients():
    o, n = overlap_positions(12), nonoverlap_positions(12, 3)
    pv = torch.zeros(4, 5, 12, requires_grad=True)
    ph = torch.zeros(4, 5, 12)
    ph[:, :, n] = 100.0  # far apart on the arms: L_div = 100 * sqrt(5) > cap
    loss = CrossoverLoss(o, n, "capped", cap=5.0)
    parts = loss(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), pv, ph)
    assert float(parts.total.detach()) == pytest.approx(math.log(2) - 0.05 * 5.0, rel=1e-6)
    parts.total.backward()
    assert torch.isfinite(pv.grad).all() and float(pv.grad.abs().sum()) == 0.0  # capped, and d = 0 on the overlap
    none = CrossoverLoss(o, n, "none")(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))
    assert float(none.total) == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="intersect"):
        CrossoverLoss([5, 6], [6, 7])
    with pytest.raises(ValueError, match="mode"):
        CrossoverLoss(o, n, "hinge")


def test_position_sets():
    assert overlap_positions(19) == [7, 8, 9, 10] and nonoverlap_positions(19, 3) == [0, 1, 2, 16, 17, 18]
    assert overlap_positions(24) == [10, 11, 12, 13] and nonoverlap_positions(24, 6)[:2] == [0, 1]
    with pytest.raises(ValueError):
        nonoverlap_positions(5, 3)


@pytest.mark.parametrize("arch,long,short,t,params", [("hv100x20", 100, 20, 19, 364_458),
                                                      ("inbreast340x68", 340, 68, 35, 705_098)])
def test_official_architectures_shapes_and_parameter_counts(arch, long, short, t, params):
    net = CrossoverNet(arch, long=long, short=short)
    assert sum(p.numel() for p in net.parameters()) == params  # the official hvCNN's count (shared branch)
    v, h = torch.rand(2, 1, long, short), torch.rand(2, 1, long, short)
    logits, pv, ph = net(v, h)
    assert logits.shape == (2, 2) and pv.shape == ph.shape == (2, 64, t) and net.profile_length == t
    two = CrossoverNet(arch, long=long, short=short, shared=False)
    assert sum(p.numel() for p in two.parameters()) == 2 * params - 2002
    with pytest.raises(ValueError, match="takes"):
        build_branch(arch, 1, long + 2, short)


def test_small_nets_and_baselines():
    net = CrossoverNet("small", long=48, short=8, num_classes=3)
    logits, pv, ph = net(torch.rand(5, 1, 48, 8), torch.rand(5, 1, 48, 8))
    assert logits.shape == (5, 3) and pv.shape == (5, 32, 24)
    split = CrossoverNet("small", long=48, short=8, shared=False)
    x = torch.rand(3, 1, 48, 8)
    a = net.branch_v(x)[0]
    assert split(x, x)[0].shape == (3, 2) and a.shape == (3, 64)
    assert StripNet("small", long=48, short=8)(x).shape == (3, 2)
    sq = SquareNet(side=26, grid=SquareNet.grid_for(48))
    assert sq(torch.rand(3, 1, 26, 26)).shape == (3, 2)


def test_shared_forward_equals_two_separate_passes():
    torch.manual_seed(0)
    net = CrossoverNet("small", long=20, short=4).eval()
    v, h = torch.rand(6, 1, 20, 4), torch.rand(6, 1, 20, 4)
    logits, pv, ph = net(v, h)
    ev, pv2 = net.branch_v(v)
    eh, ph2 = net.branch_v(h)
    torch.testing.assert_close(logits, net.out(torch.relu(torch.cat([ev, eh], 1))), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(pv, pv2, atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------- the official implementation
def _official(tmp_path: Path, name: str):
    """Import ``modules/<name>.py`` of the official repository (a working copy or a bare mirror)."""
    src = OFFICIAL / "modules" / f"{name}.py"
    if src.is_file():
        text = src.read_text(encoding="utf-8-sig")
    elif OFFICIAL.is_dir() and shutil.which("git"):
        res = subprocess.run(["git", "-C", str(OFFICIAL), "show", f"HEAD:modules/{name}.py"], capture_output=True)
        if res.returncode != 0:
            pytest.skip(f"the official repository at {OFFICIAL} has no modules/{name}.py")
        text = res.stdout.decode("utf-8-sig")
    else:
        pytest.skip(f"the official Crossover-Net repository is not at {OFFICIAL} (set MEDLEARN_CROSSOVER_OFFICIAL)")
    path = tmp_path / f"official_{name}.py"
    path.write_text(text, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(f"official_{name}", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_code_mode_equals_the_official_crossloss(tmp_path, capsys):
    official = _official(tmp_path, "CrossLoss")
    g = torch.Generator().manual_seed(0)
    b, t = 200, 19  # the official batch and profile length
    pv, ph = torch.randn(b, 64, t, generator=g), torch.randn(b, 64, t, generator=g)
    logits, y = torch.randn(b, 2, generator=g), torch.randint(0, 2, (b,), generator=g)
    o, n = overlap_positions(t), nonoverlap_positions(t, t // 5)  # 7:11, and 0:3 + 16:19 as train_vh.py slices
    ends = [0, 1, 2], [16, 17, 18]

    def arms(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # common (B, 64, 4); special (B, 128, 3)
        return p[:, :, o], torch.cat([p[:, :, ends[0]], p[:, :, ends[1]]], dim=1)

    vc, vs = arms(pv)
    hc, hs = arms(ph)
    with torch.no_grad():
        theirs = official.MyLoss()(vc, vs, hc, hs, logits, y)
    capsys.readouterr()  # the official loss prints its intermediate tensors
    ours = CrossoverLoss(o, n, "code")(logits, y, pv, ph).total
    assert abs(float(ours) - float(theirs)) < 1e-5, (float(ours), float(theirs))


@pytest.mark.parametrize("module,arch,long,short,t", [("HV_net", "hv100x20", 100, 20, 19),
                                                      ("inbreast_net", "inbreast340x68", 340, 68, 35)])
def test_official_network_weights_load_and_give_the_same_logits(tmp_path, module, arch, long, short, t):
    official = _official(tmp_path, module)
    torch.manual_seed(0)
    theirs = official.hvCNN().eval()
    ours = CrossoverNet(arch, long=long, short=short).eval()
    state = {(k if k.startswith("out.") else f"branch_v.{k}"): v for k, v in theirs.state_dict().items()}
    ours.load_state_dict(state, strict=True)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    v, h = torch.rand(3, 1, long, short), torch.rand(3, 1, long, short)
    with torch.no_grad():
        vx, hx, logits = theirs(v, h)
        mine, pv, ph = ours(v, h)
    torch.testing.assert_close(mine, logits, atol=1e-5, rtol=1e-5)
    # the official flattening is a reinterpretation of our (B, P, T) profile's memory, not a transpose
    assert torch.equal(vx, pv.reshape(-1, 3)) and vx.shape == (64 * t, 3)
    assert not torch.equal(vx.t().reshape(3, 64, t), pv)
