"""Oracle tests: the queue contrastive losses against naive loops written here."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medlearn.losses import InfoNCELoss, MomentumQueue, NCEQueueLoss, info_nce


def naive_info_nce(q, k, neg, t):
    total = 0.0
    for i in range(q.shape[0]):
        pos = math.exp(float(q[i] @ k[i]) / t)
        den = pos + sum(math.exp(float(q[i] @ n) / t) for n in neg)
        total += -math.log(pos / den)
    return total / q.shape[0]


@pytest.mark.parametrize("b,d,kq,t", [(1, 4, 3, 0.07), (5, 16, 20, 0.2), (8, 128, 64, 1.0)])
def test_info_nce_matches_naive(b, d, kq, t):
    g = torch.Generator().manual_seed(b * 100 + d)
    q = F.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=1)
    k = F.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=1)
    neg = F.normalize(torch.randn(kq, d, generator=g, dtype=torch.float64), dim=1)
    got = info_nce(q, k, neg, t).item()
    assert got == pytest.approx(naive_info_nce(q, k, neg, t), rel=1e-6)
    loss, logits = InfoNCELoss(t)(q, k, neg)
    assert loss.item() == pytest.approx(got, rel=1e-6)
    assert logits.shape == (b, kq + 1)


def test_info_nce_perfect_positive_is_small_and_gradient_flows():
    q1 = F.normalize(torch.randn(1, 8), dim=1)
    assert info_nce(q1, q1, -q1.repeat(3, 1), 0.1).item() < 1e-6  # log(1 + 3 exp(-20))
    q = F.normalize(torch.randn(4, 8), dim=1).requires_grad_(True)
    neg = F.normalize(torch.randn(6, 8), dim=1)
    info_nce(q, torch.roll(q.detach(), 1, 0), neg, 0.1).backward()
    assert q.grad is not None and torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0


def naive_nce(q, k, neg, t, n_data, z, eps=1e-7):
    m = neg.shape[0]
    pn = 1.0 / n_data
    total = 0.0
    for i in range(q.shape[0]):
        p0 = math.exp(float(q[i] @ k[i]) / t) / z
        s = math.log(p0 / (p0 + m * pn + eps))
        for n in neg:
            pj = math.exp(float(q[i] @ n) / t) / z
            s += math.log(m * pn / (pj + m * pn + eps))
        total += -s
    return total / q.shape[0]


def test_nce_matches_naive_and_freezes_z():
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(6, 16, generator=g, dtype=torch.float64), dim=1)
    k = F.normalize(torch.randn(6, 16, generator=g, dtype=torch.float64), dim=1)
    neg = F.normalize(torch.randn(10, 16, generator=g, dtype=torch.float64), dim=1)
    crit = NCEQueueLoss(n_data=500, temperature=0.2)
    loss, logits = crit(q, k, neg)
    z = float(torch.exp(logits.double()).mean() * 500)
    assert float(crit.z) == pytest.approx(z, rel=1e-5)
    assert loss.item() == pytest.approx(naive_nce(q, k, neg, 0.2, 500, z), rel=1e-5)
    crit(q * 0.5, k, neg)  # a second batch must not change Z
    assert float(crit.z) == pytest.approx(z, rel=1e-5)


def test_queue_fifo_wraps_and_keeps_order():
    mq = MomentumQueue(size=5, dim=2, init="normal")
    mq.enqueue(torch.arange(6.0).view(3, 2), gather=False)
    assert int(mq.ptr) == 3
    assert torch.equal(mq.queue[:3], torch.arange(6.0).view(3, 2))
    mq.enqueue(torch.full((4, 2), 9.0), gather=False)  # wraps: slots 3, 4, 0, 1
    assert int(mq.ptr) == 2
    assert torch.equal(mq.queue[2], torch.tensor([4.0, 5.0]))
    assert (mq.queue[[0, 1, 3, 4]] == 9.0).all()
    mq.enqueue(torch.arange(14.0).view(7, 2), gather=False)  # more than the queue: keep the newest
    assert torch.equal(mq.queue, torch.arange(4.0, 14.0).view(5, 2)) and int(mq.ptr) == 0


def test_queue_negatives_is_a_copy():
    mq = MomentumQueue(size=4, dim=3)
    neg = mq.negatives()
    mq.enqueue(torch.ones(4, 3), gather=False)
    assert not torch.equal(neg, mq.queue)


def test_queue_uniform_init_range():
    mq = MomentumQueue(size=1000, dim=128, init="uniform")
    s = 1 / math.sqrt(128 / 3)
    assert mq.queue.abs().max() <= s and mq.queue.abs().max() > 0.9 * s
