"""Image-synthesis quality: PSNR, SSIM, MAE and NMSE per image, on the whole image or inside a mask.

This module owns the image-to-image translation metrics (MR contrast synthesis, domain
translation): :func:`synthesis_scores` gives per-image values, :class:`SynthesisMetrics`
accumulates them per output (e.g. per synthesised contrast) and per region over an epoch and
gathers them under DDP (:class:`~medlearn.metrics.buffer.CaseBuffer`).

Definitions, for a prediction ``p`` and a target ``t`` of value range ``R`` (``data_range``) over
the pixels selected by a mask ``m`` (all pixels without a mask):

- MAE = mean |p - t|;  MSE = mean (p - t)^2;  PSNR = 10 log10(R^2 / MSE) (inf when MSE = 0);
- NMSE = sum (p - t)^2 / sum t^2 (NaN when the target is 0 inside the mask);
- SSIM (Wang et al., IEEE TIP 2004) from MONAI's ``compute_ssim_and_cs``: Gaussian window 11,
  sigma 1.5, K1 0.01, K2 0.03, population covariance, computed where the whole window fits (as
  scikit-image's ``structural_similarity(gaussian_weights=True, use_sample_covariance=False)``);
  the masked SSIM averages the SSIM map over the mask's pixels inside that valid region.

An empty mask gives NaN for that image, and the epoch means skip NaN (count in ``n_<region>``).
Masked PSNR / SSIM are not in MONAI (its metrics take whole images), hence the masked reductions
here; background zeros otherwise inflate PSNR and SSIM of skull-stripped MR (MGAN spec, pitfalls).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from monai.metrics.regression import compute_ssim_and_cs

from medlearn.metrics.buffer import CaseBuffer

__all__ = ["SYNTHESIS_METRICS", "SynthesisMetrics", "synthesis_scores"]

#: The metrics of :func:`synthesis_scores`, in table order.
SYNTHESIS_METRICS = ("psnr", "ssim", "mae", "nmse")
_WIN, _SIGMA = 11, 1.5


def _masked_mean(v: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Per-sample mean of ``v`` over ``m`` (``(B, ...)``); NaN where the mask is empty."""
    num = (v * m).reshape(v.shape[0], -1).sum(1)
    den = m.reshape(m.shape[0], -1).sum(1)
    return torch.where(den > 0, num / den.clamp_min(1e-12), torch.full_like(num, float("nan")))


def synthesis_scores(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                     data_range: float = 1.0) -> dict[str, torch.Tensor]:
    """PSNR, SSIM, MAE and NMSE of each image of a batch (see the module docstring).

    Args:
        pred: ``(B, C, H, W[, D])`` predictions (C is averaged: use one channel per metric call).
        target: same shape, the reference.
        mask: ``None`` (whole image) or a ``(B, 1 or C, ...)`` binary mask of the pixels to score.
        data_range: ``R``, the intensity range (1 for images in [0, 1]).

    Returns:
        ``{"psnr", "ssim", "mae", "nmse"}`` -> ``(B,)`` float64 tensors (NaN for an empty mask).

    Raises:
        ValueError: shapes differ, or the image is smaller than the 11-pixel SSIM window.

    Examples:
        >>> t = torch.rand(2, 1, 32, 32)
        >>> s = synthesis_scores(t, t)
        >>> float(s["ssim"][0]), float(s["mae"][0]), bool(torch.isinf(s["psnr"][0]))
        (1.0, 0.0, True)
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    spatial = pred.ndim - 2
    if spatial < 1 or min(pred.shape[2:]) < _WIN:
        raise ValueError(f"images of spatial size {tuple(pred.shape[2:])} are smaller than the SSIM window {_WIN}")
    p, t = pred.detach().double(), target.detach().double()
    m = torch.ones_like(p) if mask is None else (mask.detach() > 0.5).double().expand_as(p)
    diff = p - t
    mae = _masked_mean(diff.abs(), m)
    mse = _masked_mean(diff**2, m)
    psnr = 10.0 * torch.log10(data_range**2 / mse)
    t_energy = _masked_mean(t**2, m)
    nmse = torch.where(t_energy > 0, mse / t_energy.clamp_min(1e-300), torch.full_like(mse, float("nan")))
    ssim_map, _ = compute_ssim_and_cs(p, t, spatial, [_WIN] * spatial, [_SIGMA] * spatial, data_range)
    r = _WIN // 2
    crop = (slice(None), slice(None), *[slice(r, s - r) for s in p.shape[2:]])
    ssim = _masked_mean(ssim_map, m[crop])
    return {"psnr": psnr, "ssim": ssim, "mae": mae, "nmse": nmse}


class SynthesisMetrics:
    """Epoch means of :func:`synthesis_scores` per output and region.

    Args:
        data_range: intensity range of the images given to :meth:`update`.

    Examples:
        >>> m = SynthesisMetrics()
        >>> t = torch.rand(3, 1, 16, 16)
        >>> m.update("flair", t, t, {"brain": torch.ones_like(t)})
        >>> r = m.compute()
        >>> r["flair/mae"], r["flair/mae_brain"], r["n_flair"]
        (0.0, 0.0, 3.0)
    """

    def __init__(self, data_range: float = 1.0) -> None:
        self.data_range = float(data_range)
        self._buffers: dict[tuple[str, str], CaseBuffer] = {}

    def reset(self) -> None:
        """Forget every accumulated image."""
        self._buffers.clear()

    def update(self, name: str, pred: torch.Tensor, target: torch.Tensor,
               masks: Mapping[str, torch.Tensor | None] | None = None) -> None:
        """Score a batch of output ``name`` on the whole image and inside each mask.

        Args:
            name: the output (e.g. ``"flair"``).
            pred: ``(B, 1, ...)`` predictions in the ``data_range`` scale.
            target: the references.
            masks: ``{region: (B, 1, ...) mask}``; a ``None`` mask is skipped.
        """
        given = {k: v for k, v in (masks or {}).items() if v is not None}
        regions: dict[str, torch.Tensor | None] = {"": None, **given}
        for region, mask in regions.items():
            s = synthesis_scores(pred, target, mask, self.data_range)
            rows = torch.stack([s[k] for k in SYNTHESIS_METRICS], 1).float().cpu()
            self._buffers.setdefault((name, region), CaseBuffer()).extend(rows)

    def values(self, name: str, region: str = "") -> np.ndarray:
        """Per-image rows ``(N, 4)`` (columns :data:`SYNTHESIS_METRICS`) of ``name`` in ``region``."""
        buf = self._buffers.get((name, region))
        if buf is None:
            return np.zeros((0, len(SYNTHESIS_METRICS)))
        got = buf.aggregate()
        t = got if isinstance(got, torch.Tensor) else torch.cat(list(got))
        return t.reshape(-1, len(SYNTHESIS_METRICS)).double().numpy()

    def compute(self) -> dict[str, float]:
        """``{"<name>/<metric>[_<region>]": mean}`` over images (NaN skipped; PSNR means skip inf),
        ``n_<name>`` images, and ``<metric>[_<region>]`` averaged over the outputs.
        """
        out: dict[str, float] = {}
        per_metric: dict[str, list[float]] = {}
        for (name, region), _ in sorted(self._buffers.items()):
            v = self.values(name, region)
            if region == "":
                out[f"n_{name}"] = float(v.shape[0])
            for j, metric in enumerate(SYNTHESIS_METRICS):
                col = v[:, j]
                col = col[np.isfinite(col)]
                key = metric + (f"_{region}" if region else "")
                mean = float(col.mean()) if col.size else float("nan")
                out[f"{name}/{key}"] = mean
                per_metric.setdefault(key, []).append(mean)
        for key, means in per_metric.items():
            finite = [m for m in means if np.isfinite(m)]
            out[key] = float(np.mean(finite)) if finite else float("nan")
        return out
