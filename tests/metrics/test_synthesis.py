"""Oracle tests: PSNR / SSIM against scikit-image, MAE / NMSE and the masked variants against numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from medlearn.metrics.synthesis import SynthesisMetrics, synthesis_scores


def _pair(seed: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(3, 1, size, size, generator=g, dtype=torch.float64)
    p = (t + 0.1 * torch.randn(3, 1, size, size, generator=g, dtype=torch.float64)).clamp(0, 1)
    return p, t


@pytest.mark.parametrize("seed,size", [(0, 16), (1, 32), (2, 45)])
def test_whole_image_scores_match_skimage_and_numpy(seed, size):
    p, t = _pair(seed, size)
    s = synthesis_scores(p, t)
    for b in range(3):
        pn, tn = p[b, 0].numpy(), t[b, 0].numpy()
        assert s["psnr"][b].item() == pytest.approx(peak_signal_noise_ratio(tn, pn, data_range=1.0), rel=1e-9)
        want_ssim = structural_similarity(tn, pn, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False)
        assert s["ssim"][b].item() == pytest.approx(want_ssim, abs=1e-6)
        assert s["mae"][b].item() == pytest.approx(np.abs(pn - tn).mean(), rel=1e-12)
        assert s["nmse"][b].item() == pytest.approx(((pn - tn) ** 2).sum() / (tn**2).sum(), rel=1e-12)


def test_masked_scores_match_numpy_and_skimage_full_map():
    p, t = _pair(3, 32)
    mask = torch.zeros_like(t)
    mask[:, :, 8:24, 4:20] = 1
    mask[2] = 0  # empty mask -> NaN
    s = synthesis_scores(p, t, mask)
    for b in range(2):
        pn, tn, m = p[b, 0].numpy(), t[b, 0].numpy(), mask[b, 0].numpy() > 0
        mse = ((pn - tn) ** 2)[m].mean()
        assert s["mae"][b].item() == pytest.approx(np.abs(pn - tn)[m].mean(), rel=1e-12)
        assert s["psnr"][b].item() == pytest.approx(10 * math.log10(1 / mse), rel=1e-12)
        assert s["nmse"][b].item() == pytest.approx(((pn - tn) ** 2)[m].sum() / (tn[m] ** 2).sum(), rel=1e-12)
        _, full = structural_similarity(tn, pn, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False, full=True)
        inner = np.zeros_like(m)
        inner[5:-5, 5:-5] = True  # skimage's mean is over the window-valid region, as ours
        assert s["ssim"][b].item() == pytest.approx(full[m & inner].mean(), abs=1e-6)
    assert all(math.isnan(s[k][2].item()) for k in ("psnr", "ssim", "mae", "nmse"))


def test_identical_images_and_errors():
    t = torch.rand(2, 1, 16, 16)
    s = synthesis_scores(t, t)
    assert torch.isinf(s["psnr"]).all() and torch.allclose(s["ssim"], torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="shape"):
        synthesis_scores(t, t[:, :, :8])
    with pytest.raises(ValueError, match="window"):
        synthesis_scores(t[:, :, :8, :8], t[:, :, :8, :8])


def test_accumulator_means_over_batches_and_outputs():
    p, t = _pair(5, 16)
    m = SynthesisMetrics()
    brain = torch.ones_like(t)
    m.update("flair", p[:2], t[:2], {"brain": brain[:2], "tumour": None})
    m.update("flair", p[2:], t[2:], {"brain": brain[2:]})
    m.update("t1", t, t, {"brain": brain})
    r = m.compute()
    whole = synthesis_scores(p, t)
    assert r["n_flair"] == 3.0 and r["n_t1"] == 3.0
    assert r["flair/mae"] == pytest.approx(whole["mae"].mean().item(), rel=1e-6)
    assert r["flair/ssim_brain"] == pytest.approx(whole["ssim"].mean().item(), rel=1e-6)
    assert math.isnan(r["t1/psnr"])  # identical images: every PSNR is inf, skipped -> NaN
    assert r["mae"] == pytest.approx((r["flair/mae"] + 0.0) / 2, rel=1e-6)
    assert "flair/mae_tumour" not in r
