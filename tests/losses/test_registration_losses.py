"""Registration losses against direct computations: windowed LNCC (numpy sliding windows), forward-difference
smoothness, soft Dice, and LT-Net's cycle terms on fields with known compositions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from medlearn.losses.registration import (
    LNCCLoss,
    anatomy_cycle_loss,
    gradient_smoothness,
    image_cycle_loss,
    lncc,
    lncc_loss,
    mse,
    soft_dice_loss,
    transformation_cycle_loss,
    warmup_ramp,
)
from medlearn.nn.registration import compose, warp


def _lncc_oracle(a: np.ndarray, b: np.ndarray, win: tuple[int, ...], padding: str, eps: float = 1e-5) -> float:
    """Every window taken out explicitly, centred sums written from the definition."""
    vals = []
    for i_img, j_img in zip(a.reshape(-1, *a.shape[2:]), b.reshape(-1, *b.shape[2:])):
        if padding == "zeros":
            pad = [(w // 2, w // 2) for w in win]
            i_img, j_img = np.pad(i_img, pad), np.pad(j_img, pad)
        wi, wj = sliding_window_view(i_img, win), sliding_window_view(j_img, win)
        axes = tuple(range(-len(win), 0))
        di = wi - wi.mean(axis=axes, keepdims=True)
        dj = wj - wj.mean(axis=axes, keepdims=True)
        cross = (di * dj).sum(axis=axes)
        cc = cross**2 / ((di**2).sum(axis=axes) * (dj**2).sum(axis=axes) + eps)
        vals.append(cc)
    return float(np.mean(vals))


@pytest.mark.parametrize("padding", ["zeros", "valid"])
@pytest.mark.parametrize("shape,window", [((2, 1, 14, 13), 9), ((1, 2, 11, 12), (3, 5)), ((1, 1, 10, 11, 12), 9),
                                          ((2, 1, 7, 8, 9), (3, 5, 1))])
def test_lncc_matches_a_direct_windowed_computation(shape, window, padding):
    rng = np.random.default_rng(sum(shape))
    a = rng.random(shape)
    b = 0.6 * a + 0.4 * rng.random(shape)  # correlated, not perfectly
    win = (window,) * (len(shape) - 2) if isinstance(window, int) else window
    got = float(lncc(torch.from_numpy(a), torch.from_numpy(b), window, padding=padding))
    assert got == pytest.approx(_lncc_oracle(a, b, win, padding), abs=1e-5)
    got32 = float(lncc(torch.from_numpy(a).float(), torch.from_numpy(b).float(), window, padding=padding))
    assert got32 == pytest.approx(got, abs=1e-4)


@pytest.mark.parametrize("shape", [(1, 1, 24, 25), (1, 1, 12, 13, 14)])
def test_lncc_of_an_image_with_itself_is_one_and_ignores_affine_intensity_changes(shape):
    torch.manual_seed(0)
    x, y = torch.rand(shape, dtype=torch.float64), torch.rand(shape, dtype=torch.float64)
    assert float(lncc(x, x)) == pytest.approx(1.0, abs=1e-5)
    assert float(lncc(x, -3.0 * x)) == pytest.approx(1.0, abs=1e-5)  # zero padding: pure scalings only
    # with full windows only, any a x + b on either side
    base = float(lncc(x, y, padding="valid"))
    assert float(lncc(2.5 * x + 7.0, -0.5 * y + 0.3, padding="valid")) == pytest.approx(base, abs=1e-6)
    assert float(lncc(x + 1.0, x * 4.0 - 2.0, padding="valid")) == pytest.approx(1.0, abs=1e-5)
    # independent noise: the mean squared correlation of n = 9^D samples is about 1 / n
    assert base < 0.05
    assert float(lncc_loss(x, y)) == pytest.approx(-float(lncc(x, y)))


def test_lncc_loss_module_and_errors():
    x = torch.rand(2, 1, 16, 16, requires_grad=True)
    y = torch.rand(2, 1, 16, 16)
    loss = LNCCLoss(window=5)(x, y)
    assert float(loss.detach()) == pytest.approx(-float(lncc(x.detach(), y, 5)))
    loss.backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="odd"):
        lncc(x, y, window=4)
    with pytest.raises(ValueError, match="larger"):
        lncc(x, y, window=17, padding="valid")
    with pytest.raises(ValueError):
        lncc(x, y[:, :, :8])


def test_mse_and_image_cycle_match_numpy():
    rng = np.random.default_rng(3)
    a, b = rng.random((2, 1, 5, 6)), rng.random((2, 1, 5, 6))
    assert float(mse(torch.from_numpy(a), torch.from_numpy(b))) == pytest.approx(np.mean((a - b) ** 2))
    assert float(image_cycle_loss(torch.from_numpy(a), torch.from_numpy(b))) == pytest.approx(np.mean(np.abs(a - b)))


@pytest.mark.parametrize("penalty", ["l2", "l1"])
@pytest.mark.parametrize("shape", [(2, 2, 7, 9), (1, 3, 5, 6, 7)])
def test_gradient_smoothness_is_voxelmorph_grad(shape, penalty):
    rng = np.random.default_rng(len(shape))
    f = rng.normal(size=shape)
    nd = len(shape) - 2
    per_axis = []
    for axis in range(2, 2 + nd):  # forward differences written with explicit slices
        hi = [slice(None)] * len(shape)
        lo = [slice(None)] * len(shape)
        hi[axis], lo[axis] = slice(1, None), slice(None, -1)
        d = f[tuple(hi)] - f[tuple(lo)]
        per_axis.append(np.mean(d**2 if penalty == "l2" else np.abs(d)))
    got = float(gradient_smoothness(torch.from_numpy(f), penalty))
    assert got == pytest.approx(np.mean(per_axis), rel=1e-10)
    assert float(gradient_smoothness(torch.from_numpy(f), penalty, loss_mult=2.0)) == pytest.approx(2 * got)
    # an affine field: the differences along axis j are the column A[:, j]
    a = rng.normal(size=(nd, nd))
    p = np.stack(np.meshgrid(*(np.arange(s, dtype=np.float64) for s in shape[2:]), indexing="ij"))
    lin = torch.from_numpy(np.einsum("ij,j...->i...", a, p)[None] + 3.0)
    want = np.mean([np.mean(a[:, j] ** 2 if penalty == "l2" else np.abs(a[:, j])) for j in range(nd)])
    assert float(gradient_smoothness(lin, penalty)) == pytest.approx(want, rel=1e-10)
    assert float(gradient_smoothness(torch.full((1, nd, *shape[2:]), 4.0), penalty)) == 0.0


def _onehot(lab: torch.Tensor, c: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(lab, c).movedim(-1, 1).double()


def test_soft_dice_against_a_per_channel_computation():
    torch.manual_seed(0)
    lab = torch.randint(0, 4, (2, 10, 11))
    oh = _onehot(lab, 4)
    assert float(soft_dice_loss(oh, oh)) == pytest.approx(0.0, abs=1e-6)
    assert float(soft_dice_loss(oh, oh, include_background=True)) == pytest.approx(0.0, abs=1e-6)
    probs = torch.softmax(torch.randn(2, 4, 10, 11, dtype=torch.float64), dim=1)
    for bg in (False, True):
        dices = [2 * float((probs[b, c] * oh[b, c]).sum()) / (float(probs[b, c].sum() + oh[b, c].sum()) + 1e-5)
                 for b in range(2) for c in range(0 if bg else 1, 4)]
        assert float(soft_dice_loss(probs, oh, include_background=bg)) == pytest.approx(1 - np.mean(dices))
    # disjoint foregrounds: loss 1; half overlap of equal areas: Dice 1/2
    a, b = torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4)
    a[0, 1, :2], b[0, 1, 2:] = 1, 1
    assert float(soft_dice_loss(a, b)) == pytest.approx(1.0)
    b[0, 1] = 0
    b[0, 1, 1:3] = 1
    assert float(soft_dice_loss(a, b)) == pytest.approx(0.5, abs=1e-6)
    with pytest.raises(ValueError, match="no channel"):
        soft_dice_loss(a[:, :1], b[:, :1])


@pytest.mark.parametrize("shape", [(12, 13), (8, 9, 10)])
def test_transformation_cycle_of_known_shifts(shape):
    d = len(shape)
    sv, tv = torch.tensor([1.25, -2.0, 0.5][:d], dtype=torch.float64), torch.tensor([0.5, 1.0, -1.5][:d])
    s = sv.view(1, d, *([1] * d)).expand(2, d, *shape)
    t = tv.double().view(1, d, *([1] * d)).expand(2, d, *shape)
    assert float(transformation_cycle_loss(s, -s)) == 0.0
    assert float(transformation_cycle_loss(s, t)) == pytest.approx(float(((sv + tv) ** 2).sum()))
    # the forward field is read at p + dB(p): a ramp dF_0 = alpha p_0 with dB = t gives t + alpha (p + t)
    alpha = 0.1
    ramp = torch.zeros(1, d, *shape, dtype=torch.float64)
    p0 = torch.arange(shape[0], dtype=torch.float64).view(-1, *([1] * (d - 1)))
    ramp[0, 0] = alpha * p0
    tt = t[:1].clone()
    tt[0, 0] = 2.0
    inside = (slice(None), slice(None), slice(0, shape[0] - 2))  # p_0 + 2 inside the grid
    c0 = tt[0, 0] + alpha * (p0 + 2.0)
    want = (c0**2 + (tt[0, 1:] ** 2).sum(dim=0)).expand(*shape)[inside[2:]].mean()
    got = (compose(ramp, tt)[inside] ** 2).sum(dim=1).mean()
    assert float(got) == pytest.approx(float(want), rel=1e-10)
    full = float(transformation_cycle_loss(ramp, tt))
    assert full == pytest.approx(float((compose(ramp, tt) ** 2).sum(dim=1).mean()))


def test_anatomy_cycle_is_soft_dice_of_the_reconstructed_labels():
    torch.manual_seed(2)
    lab = torch.zeros(1, 16, 16, dtype=torch.long)
    lab[0, 4:12, 3:9], lab[0, 6:10, 10:14] = 1, 2
    oh = _onehot(lab, 3)
    assert float(anatomy_cycle_loss(oh, oh)) == pytest.approx(0.0, abs=1e-6)
    shift = torch.zeros(1, 2, 16, 16, dtype=torch.float64)
    shift[:, 1] = 1.0
    back = warp(warp(oh, shift), -shift)  # exact inverse away from the border: labels come back
    assert float(anatomy_cycle_loss(back, oh)) == pytest.approx(0.0, abs=1e-6)
    moved = warp(oh, shift)  # not brought back: each structure is off by one column
    # structure 1 (8 x 6) and 2 (4 x 4) shifted by one column: Dice 2*8*5/96 and 2*4*3/32
    assert float(anatomy_cycle_loss(moved, oh)) == pytest.approx(1 - (80 / 96 + 24 / 32) / 2, abs=1e-6)


def test_warmup_ramp_values():
    assert [warmup_ramp(s, 300, 600) for s in (-5, 0, 300, 375, 450, 600, 601, 10_000)] == \
        [0.0, 0.0, 0.0, 0.25, 0.5, 1.0, 1.0, 1.0]
    assert [warmup_ramp(s, 100, 100) for s in (99, 100, 101)] == [0.0, 1.0, 1.0]
    assert warmup_ramp(0, 0, 10) == 0.0 and warmup_ramp(10, 0, 10) == 1.0
