"""Oracle tests of VideoGAN's colour-histogram loss: numpy histograms, hand cases, finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medlearn.losses.colour_histogram import ColourHistogramLoss, histogram_distance, soft_histogram


def test_narrow_gaussian_kernels_give_numpy_histograms() -> None:
    # values at bin centres (with a jitter far below the kernel width): a narrow Gaussian then puts
    # each pixel in its own bin with weight ~1, i.e. numpy's hard histogram
    rng = np.random.default_rng(0)
    bins = 16
    width = 2 / bins
    idx = rng.integers(0, bins, (2, 3, 9, 7))
    x = -1 + (idx + 0.5) * width + rng.uniform(-1e-3, 1e-3, idx.shape) * width
    h = soft_histogram(torch.tensor(x), bins=bins, sigma=width / 10).numpy()
    for b in range(2):
        for c in range(3):
            ref, _ = np.histogram(x[b, c], bins=bins, range=(-1, 1))
            np.testing.assert_allclose(h[b, c], ref / ref.sum(), atol=1e-5)


def test_the_mask_removes_the_border_from_the_histogram() -> None:
    x = torch.full((1, 3, 4, 4), 0.25)  # bin centres of 4 bins: -0.75, -0.25, 0.25, 0.75
    x[..., 0, :] = -0.75  # a dark border row
    mask = torch.ones(1, 1, 4, 4)
    mask[..., 0, :] = 0.0
    h = soft_histogram(x, mask, bins=4, sigma=0.05)
    assert torch.allclose(h[0, 0], torch.tensor([0.0, 0.0, 1.0, 0.0]), atol=1e-6)
    full = soft_histogram(x, None, bins=4, sigma=0.05)
    assert torch.allclose(full[0, 1], torch.tensor([0.25, 0.0, 0.75, 0.0]), atol=1e-6)
    assert torch.allclose(soft_histogram(x, torch.zeros(1, 1, 4, 4), bins=4).sum(), torch.tensor(0.0))


def test_triangular_kernel_is_exact_soft_binning() -> None:
    # bins of width 0.5 with centres -0.75, -0.25, 0.25, 0.75: 0.0 is half-way between two centres
    h = soft_histogram(torch.tensor([[[0.0, 0.75]]]), bins=4, kernel="triangular")
    assert torch.allclose(h[0, 0], torch.tensor([0.0, 0.25, 0.25, 0.5]))


def test_distances_by_hand() -> None:
    a = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    b = torch.tensor([[0.0, 0.0, 0.0, 1.0]])
    # CDFs 1,1,1,1 and 0,0,0,1: mean |diff| = 3/4 (a shift of three bins over four)
    assert histogram_distance(a, b, "emd").item() == pytest.approx(0.75)
    assert histogram_distance(a, b, "l1").item() == pytest.approx(2.0)
    assert histogram_distance(a, b, "l2").item() == pytest.approx(2.0)
    assert histogram_distance(a, b, "chi2").item() == pytest.approx(2.0)
    near = torch.tensor([[0.0, 1.0, 0.0, 0.0]])
    assert histogram_distance(a, near, "emd") < histogram_distance(a, b, "emd")  # shift aware
    assert histogram_distance(a, near, "l1") == histogram_distance(a, b, "l1")  # L1 is not
    # (C=3, K): summed over channels, 2 + 0 + 2
    assert histogram_distance(torch.cat([a, b, b]), torch.cat([b, b, a]), "l1").item() == pytest.approx(4.0)


def test_loss_gradient_matches_finite_differences() -> None:
    torch.manual_seed(0)
    fake = (torch.rand(2, 3, 5, 4, dtype=torch.float64) * 1.6 - 0.8).requires_grad_(True)
    real = torch.rand(2, 3, 5, 4, dtype=torch.float64) * 1.6 - 0.8
    mask = (torch.rand(2, 1, 5, 4, dtype=torch.float64) > 0.2).double()
    for distance in ("emd", "l2", "chi2"):
        def f(x: torch.Tensor, d: str = distance) -> torch.Tensor:
            hf = soft_histogram(x, mask, bins=8, sigma=0.3).double()
            hr = soft_histogram(real, None, bins=8, sigma=0.3).double()
            return histogram_distance(hf, hr, d).mean()
        assert torch.autograd.gradcheck(f, (fake,), eps=1e-6, atol=1e-4)


def test_loss_pulls_colours_towards_the_reference() -> None:
    torch.manual_seed(0)
    loss = ColourHistogramLoss(bins=32, reference="batch")
    real = torch.randn(4, 3, 8, 8).mul(0.2).add(0.4).clamp(-1, 1)
    fake = torch.randn(4, 3, 8, 8).mul(0.2).sub(0.3).clamp(-1, 1).requires_grad_(True)
    opt = torch.optim.Adam([fake], lr=0.02)
    first = loss(fake, real).item()
    for _ in range(100):
        opt.zero_grad()
        value = loss(fake, real)
        value.backward()
        opt.step()
    assert loss(fake, real).item() < 0.5 * first
    assert fake.mean().item() > 0.0  # moved towards the reference colours (mean 0.4)
    with pytest.raises(ValueError, match="as many real frames"):
        ColourHistogramLoss()(fake, real[:2])
