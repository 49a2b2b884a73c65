"""Siamese-Octad network, Rubik's cube losses and pretext accuracies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medlearn.methods.rubik.losses import pretext_accuracy, rubik_loss
from medlearn.methods.rubik.model import SiameseOctad
from medlearn.methods.rubik.puzzle import RubikPuzzle
from medlearn.nn import build_backbone


def small(**kw) -> SiameseOctad:
    args = dict(encoder="plaincnn", in_channels=1, k=100, head_hidden=64)
    args.update(kw)
    return SiameseOctad(**args)


@pytest.mark.parametrize("mask_head", [False, True])
def test_output_shapes(mask_head):
    torch.manual_seed(0)
    net = SiameseOctad("plaincnn", in_channels=1, k=100, mask_head=mask_head)  # paper-sized heads (1024)
    out = net(torch.randn(2, 8, 1, 16, 16, 16))
    assert set(out) == ({"order", "hor", "ver", "mask"} if mask_head else {"order", "hor", "ver"})
    assert out["order"].shape == (2, 100)
    for key in set(out) - {"order"}:
        assert out[key].shape == (2, 8)
    # shallow rotation heads (FC-1024-8), deeper order head (FC-1024-1024-K)
    assert [m.out_features for m in net.hor_head if isinstance(m, torch.nn.Linear)] == [1024, 8]
    assert [m.out_features for m in net.order_head if isinstance(m, torch.nn.Linear)] == [1024, 1024, 100]
    assert net.order_head[0].in_features == 8 * 64


def test_anisotropic_two_channel_cubes_and_bad_shapes():
    net = small(in_channels=2, k=10).eval()
    out = net(torch.randn(1, 8, 2, 8, 16, 12))
    assert out["order"].shape == (1, 10)
    with pytest.raises(ValueError):
        net(torch.randn(1, 7, 2, 8, 8, 8))
    with pytest.raises(ValueError):
        net(torch.randn(1, 8, 1, 8, 8, 8))


def test_features_are_concatenated_in_slot_order():
    torch.manual_seed(0)
    net = small().eval()  # eval BN: a cube's feature does not depend on the other cubes
    cubes = torch.randn(2, 8, 1, 16, 16, 16)
    perm = torch.tensor([3, 0, 7, 1, 6, 2, 5, 4])
    with torch.no_grad():
        ref = net.cube_features(cubes).view(2, 8, -1)
        shuffled = net.cube_features(cubes[:, perm]).view(2, 8, -1)
    assert torch.allclose(shuffled, ref[:, perm], atol=1e-5)


def test_gradients_reach_the_encoder_end_to_end():
    torch.manual_seed(0)
    puzzle = RubikPuzzle(k=100, cube_size=(16, 16, 16), mask=True)
    batch = puzzle.batch(torch.randn(2, 1, 36, 34, 32), np.random.default_rng(0))
    net = small(mask_head=True).train()
    loss, parts = rubik_loss(net(batch["cubes"]), batch)
    loss.backward()
    assert torch.isfinite(loss) and set(parts) == {"order", "hor", "ver", "rot", "mask"}
    grads = [p.grad for p in net.encoder.parameters()]
    assert all(g is not None for g in grads) and all(g.abs().sum() > 0 for g in grads)


def test_encoder_keys_transfer_to_a_factory_backbone():
    net = small()
    keys = [k for k in net.state_dict() if k.startswith("encoder.")]
    assert keys and all(k.startswith("encoder.body.") for k in keys)
    assert not any("encoder" in k for k in net.state_dict() if not k.startswith("encoder."))
    target = build_backbone("plaincnn", 3, 1)  # what load_pretrained maps "encoder." onto
    state = {k[len("encoder."):]: v for k, v in net.state_dict().items() if k.startswith("encoder.")}
    target.load_state_dict(state, strict=True)


# --------------------------------------------------------------------------- losses


def naive_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    total = 0.0
    for row, c in zip(logits.tolist(), target.tolist()):
        z = sum(np.exp(v) for v in row)
        total += -np.log(np.exp(row[c]) / z)
    return torch.tensor(total / len(target), dtype=torch.float64)


def naive_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    terms = []
    for x, y in zip(logits.flatten().tolist(), target.flatten().tolist()):
        p = 1.0 / (1.0 + np.exp(-x))
        terms.append(-(y * np.log(p) + (1 - y) * np.log(1 - p)))
    return torch.tensor(np.mean(terms), dtype=torch.float64)


@pytest.mark.parametrize("b,k", [(1, 4), (3, 100), (5, 10)])
@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("weights", [(0.5, 0.5, 1.0), (1.0, 1.0, 1.0), (0.3, 2.0, 0.1)])
def test_loss_matches_naive_reference(b, k, with_mask, weights):
    g = torch.Generator().manual_seed(b * 1000 + k)
    out = {"order": 2 * torch.randn(b, k, generator=g, dtype=torch.float64)}
    targets = {"order": torch.randint(k, (b,), generator=g)}
    keys = ("hor", "ver", "mask") if with_mask else ("hor", "ver")
    for key in keys:
        out[key] = 2 * torch.randn(b, 8, generator=g, dtype=torch.float64)
        targets[key] = torch.randint(2, (b, 8), generator=g).float()
    w_order, w_rot, w_mask = weights
    total, parts = rubik_loss(out, targets, w_order, w_rot, w_mask)
    ref = {"order": naive_ce(out["order"], targets["order"])}
    for key in keys:
        ref[key] = naive_bce(out[key], targets[key])
    expected = w_order * ref["order"] + w_rot * (ref["hor"] + ref["ver"])
    if with_mask:
        expected = expected + w_mask * ref["mask"]
    assert torch.allclose(total, expected, atol=1e-10)
    for key in ref:
        assert torch.allclose(parts[key], ref[key], atol=1e-10)
    assert torch.allclose(parts["rot"], ref["hor"] + ref["ver"], atol=1e-10)
    assert ("mask" in parts) == with_mask


def test_mask_head_without_mask_targets_raises():
    out = {"order": torch.zeros(1, 3), "hor": torch.zeros(1, 8), "ver": torch.zeros(1, 8), "mask": torch.zeros(1, 8)}
    targets = {"order": torch.zeros(1, dtype=torch.long), "hor": torch.zeros(1, 8), "ver": torch.zeros(1, 8)}
    with pytest.raises(KeyError, match="mask"):
        rubik_loss(out, targets)


def test_pretext_accuracy_hand_worked():
    out = {
        "order": torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 1.0]]),  # argmax 1, 0
        "hor": torch.tensor([[2.0, -1.0, 0.0, -3.0, 1.0, 1.0, -1.0, -1.0],
                             [-2.0, -2.0, -2.0, -2.0, -2.0, -2.0, -2.0, -2.0]]),
        "ver": torch.full((2, 8), 5.0),
    }
    targets = {
        "order": torch.tensor([1, 2]),  # 1 of 2 right
        # row 0: predictions 1 0 1(logit 0 -> p = 0.5 counts as positive) 0 1 1 0 0 vs targets below: 7 of 8 right
        "hor": torch.tensor([[1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0],
                             [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]]),  # row 1: 6 of 8 right
        "ver": torch.tensor([[1.0] * 8, [0.0] * 8]),  # 8 + 0 right
    }
    acc = pretext_accuracy(out, targets)
    assert set(acc) == {"order_acc", "hor_acc", "ver_acc"}
    assert acc["order_acc"].item() == pytest.approx(0.5)
    assert acc["hor_acc"].item() == pytest.approx(13 / 16)
    assert acc["ver_acc"].item() == pytest.approx(0.5)
    out["mask"] = torch.tensor([[-1.0] * 8, [1.0] * 8])
    targets["mask"] = torch.tensor([[0.0] * 4 + [1.0] * 4, [1.0] * 8])
    assert pretext_accuracy(out, targets)["mask_acc"].item() == pytest.approx(12 / 16)


def test_order_only_ablation_has_no_rotation_heads_and_loss():
    net = SiameseOctad("smallcnn", 1, k=10, head_hidden=32, rotation_heads=False)
    out = net(torch.rand(2, 8, 1, 8, 8, 8))
    assert set(out) == {"order"}
    targets = {"order": torch.tensor([1, 2]), "hor": torch.zeros(2, 8), "ver": torch.zeros(2, 8)}
    total, parts = rubik_loss(out, targets, w_order=0.5)
    assert set(parts) == {"order"} and torch.allclose(total, 0.5 * parts["order"])
    total.backward()
    assert all(p.grad is not None for p in net.parameters())
