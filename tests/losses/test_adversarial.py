"""Oracle tests: the adversarial losses against naive per-element loops, the gradient penalty by hand."""

from __future__ import annotations

import math

import pytest
import torch

from medlearn.losses.adversarial import AdversarialLoss, gradient_penalty, interpolate


def _naive(kind: str, out: torch.Tensor, real: bool, reduction: str) -> float:
    per_sample = []
    for b in range(out.shape[0]):
        vals = []
        for v in out[b].flatten().tolist():
            if kind == "wgan":
                vals.append(-v if real else v)
            elif kind == "lsgan":
                vals.append((v - (1.0 if real else 0.0)) ** 2)
            else:  # BCE with logits against 1 / 0
                p = 1 / (1 + math.exp(-v))
                vals.append(-math.log(p) if real else -math.log(1 - p))
        per_sample.append(sum(vals) / (len(vals) if reduction == "mean" else 1))
    return sum(per_sample) / len(per_sample)


@pytest.mark.parametrize("kind", ["vanilla", "lsgan", "wgan"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("shape", [(3, 1), (2, 1, 4, 4), (4, 1, 3, 2, 2)])
def test_losses_match_naive(kind, reduction, shape):
    g = torch.Generator().manual_seed(len(shape) * 7)
    real_out, fake_out = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    loss = AdversarialLoss(kind, reduction)
    assert loss.generator(fake_out).item() == pytest.approx(_naive(kind, fake_out, True, reduction), rel=1e-5)
    want_d = _naive(kind, real_out, True, reduction) + _naive(kind, fake_out, False, reduction)
    assert loss.discriminator(real_out, fake_out).item() == pytest.approx(want_d, rel=1e-5)


def test_hand_cases_and_bf16_inputs_give_float32():
    loss = AdversarialLoss("lsgan")
    assert loss.discriminator(torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)).item() == 0.0
    assert loss.generator(torch.zeros(2, 1, 2, 2)).item() == 1.0
    w = AdversarialLoss("wgan", "sum")
    # official TC-MGAN: d_real = -mean_b(sum_patch D) = -(4*1 + 4*3) / 2
    assert w(torch.tensor([[1.0] * 4, [3.0] * 4]), real=True).item() == -8.0
    v = AdversarialLoss("vanilla").generator(torch.zeros(3, 1, 2, 2, dtype=torch.bfloat16))
    assert v.dtype == torch.float32 and v.item() == pytest.approx(math.log(2), rel=1e-6)
    with pytest.raises(ValueError, match="kind"):
        AdversarialLoss("hinge")


def test_gradient_penalty_linear_critic_by_hand():
    # D(x) = sum(w * x): the gradient is w everywhere, so GP = (||w|| - 1)^2 whatever alpha is
    w = torch.tensor([[[[3.0, 0.0], [0.0, 4.0]]]])
    critic = lambda x: (w * x).sum((1, 2, 3))  # noqa: E731
    real, fake = torch.rand(5, 1, 2, 2), torch.rand(5, 1, 2, 2)
    assert gradient_penalty(critic, real, fake).item() == pytest.approx((5.0 - 1.0) ** 2)


def test_gradient_penalty_quadratic_critic_with_condition_and_known_alpha():
    # D(x, c) = sum(x^2) + sum(c): grad = 2 x_hat; the condition is not interpolated
    real = torch.tensor([[[[1.0, 2.0]]], [[[0.0, 1.0]]]])
    fake = torch.tensor([[[[3.0, 0.0]]], [[[2.0, 1.0]]]])
    alpha = torch.tensor([0.25, 0.5])
    cond = torch.full((2, 1, 1, 2), 7.0)

    def critic(x, c):
        assert torch.equal(c, cond)
        return ((x**2).sum((1, 2, 3)) + c.sum((1, 2, 3)), torch.zeros(2, 3))  # with an auxiliary head

    x_hat = [[0.25 * 1 + 0.75 * 3, 0.25 * 2 + 0], [0.5 * 0 + 0.5 * 2, 1.0]]  # [[2.5, 0.5], [1, 1]]
    norms = [2 * math.hypot(*x_hat[0]), 2 * math.hypot(*x_hat[1])]
    want = sum((n - 1) ** 2 for n in norms) / 2
    got = gradient_penalty(critic, real, fake, (cond,), alpha=alpha)
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_gradient_penalty_reaches_critic_parameters_and_interpolate_is_between():
    net = torch.nn.Conv2d(2, 1, 3, padding=1)
    real, fake = torch.rand(3, 1, 8, 8), torch.rand(3, 1, 8, 8)
    cond = torch.rand(3, 1, 8, 8)
    gp = gradient_penalty(lambda x, c: net(torch.cat([x, c], 1)), real, fake, (cond,))
    gp.backward()
    assert net.weight.grad is not None and net.weight.grad.abs().sum() > 0
    x = interpolate(real, fake, torch.tensor([0.0, 1.0, 0.5]))
    assert torch.allclose(x[0], fake[0]) and torch.allclose(x[1], real[1])
    assert torch.allclose(x[2], (real[2] + fake[2]) / 2)
