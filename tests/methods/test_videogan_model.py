"""VideoGAN's X-shape generator and CycleGAN's image pool."""

from __future__ import annotations

import pytest
import torch

from medlearn.engine.gan import ImagePool
from medlearn.methods.videogan.model import XShapeGenerator


def test_each_output_sees_the_other_frame_only_through_the_crossing() -> None:
    torch.manual_seed(0)
    x_i, x_j, x_k = (torch.rand(2, 3, 16, 16) * 2 - 1 for _ in range(3))
    g = XShapeGenerator(ngf=4, n_blocks=1).eval()
    y_i, y_j = g(x_i, x_j)
    assert y_i.shape == (2, 3, 16, 16) and y_j.shape == (2, 3, 16, 16) and y_i.abs().max() <= 1
    y_i2, _ = g(x_i, x_k)
    assert not torch.allclose(y_i, y_i2)  # the partner frame changes the output: joint processing
    swapped_j, swapped_i = g(x_j, x_i)  # the arms are shared: swapping the inputs swaps the outputs
    assert torch.allclose(swapped_i, y_i, atol=1e-6) and torch.allclose(swapped_j, y_j, atol=1e-6)
    alone = XShapeGenerator(ngf=4, n_blocks=1, xshape=False).eval()
    a_i, _ = alone(x_i, x_j)
    b_i, _ = alone(x_i, x_k)
    assert torch.allclose(a_i, b_i)  # without the crossing, a frame is translated alone
    # and per-sample: batch item 0's output ignores batch item 1
    x_k2 = x_k.clone()
    x_k2[1] = 0.0
    assert torch.allclose(g(x_i, x_k)[0][0], g(x_i, x_k2)[0][0], atol=1e-6)


def test_without_x_shape_the_capacity_differs_only_in_the_fusion_input() -> None:
    with_x, without = XShapeGenerator(ngf=8, n_blocks=2), XShapeGenerator(ngf=8, n_blocks=2, xshape=False)
    diff = sum(p.numel() for p in with_x.parameters()) - sum(p.numel() for p in without.parameters())
    assert diff == 4 * 8 * 4 * 8 * 9  # the fusion conv's extra 4ngf input channels (3x3 kernel)
    with pytest.raises(ValueError, match="divisible by 4"):
        with_x(torch.zeros(1, 3, 10, 12))


def test_image_pool_returns_history_and_survives_a_checkpoint() -> None:
    torch.manual_seed(0)
    pool = ImagePool(3)
    first = torch.arange(3.0).view(3, 1, 1, 1)
    assert torch.equal(pool.query(first), first)  # filling: the new ones
    torch.manual_seed(1)
    out = pool.query(torch.full((20, 1, 1, 1), 9.0))
    old = (out != 9.0).sum().item()
    assert 0 < old <= 3  # some come from the history, each stored image at most once before replacement
    copy = ImagePool(3)
    copy.load_state_dict(pool.state_dict())
    torch.manual_seed(2)
    a = pool.query(torch.full((5, 1, 1, 1), 7.0))
    torch.manual_seed(2)
    b = copy.query(torch.full((5, 1, 1, 1), 7.0))
    assert torch.equal(a, b)
    assert torch.equal(ImagePool(0).query(first), first)
