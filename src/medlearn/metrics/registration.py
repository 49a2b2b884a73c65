"""Registration and label-transfer metrics: Dice per label, Jacobian determinant, folding, inverse consistency.

Displacement fields follow :mod:`medlearn.nn.registration`: ``(B, D, *spatial)`` in voxels, channel
``d`` displacing array axis ``2 + d``, the map being ``phi(p) = p + f(p)``. Every function takes numpy
arrays or torch tensors (moved to the CPU) and computes in float64 numpy.

* :func:`dice_per_label`: ``2 |P = l and T = l| / (|P = l| + |T = l|)`` per label value. A label absent
  from both maps scores NaN (undefined, left out of :func:`mean_dice`); a label absent from exactly
  one map scores 0.
* :func:`jacobian_determinant`: ``det(I + grad f)`` per voxel, derivatives by :func:`numpy.gradient`
  (central differences inside, one-sided at the edges; exact for affine fields).
* :func:`folding_fraction`: fraction of voxels with a non-positive determinant (folds).
* :func:`inverse_consistency_error`: ``mean_p ||dB(p) + dF(p + dB(p))||_2`` in voxels, with ``dF``
  linearly interpolated by :func:`scipy.ndimage.map_coordinates` (edge values outside the grid: the
  ``border`` padding of :func:`medlearn.nn.registration.compose`, computed independently of it).

No Lightning, no matplotlib.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from scipy.ndimage import map_coordinates

__all__ = ["dice_per_label", "mean_dice", "jacobian_determinant", "folding_fraction", "inverse_consistency_error"]


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def dice_per_label(pred: Any, target: Any, labels: Iterable[int] | None = None) -> dict[int, float]:
    """Dice of every label value between two integer label maps.

    Args:
        pred: label map (numpy or torch, any shape; several cases may be stacked, they are pooled).
        target: label map of the same shape.
        labels: label values to score; default every non-zero value present in either map, sorted.

    Returns:
        ``{label: dice}``; NaN for a label absent from both maps, 0 for one absent from exactly one.

    Raises:
        ValueError: shapes differ.

    Examples:
        >>> dice_per_label(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), labels=[1, 2, 3])
        {1: 0.6666666666666666, 2: 0.6666666666666666, 3: nan}
    """
    p, t = _numpy(pred), _numpy(target)
    if p.shape != t.shape:
        raise ValueError(f"label maps differ in shape: {p.shape} and {t.shape}")
    if labels is None:
        labels = sorted(int(v) for v in np.union1d(np.unique(p), np.unique(t)) if v != 0)
    out: dict[int, float] = {}
    for lab in labels:
        pm, tm = p == lab, t == lab
        total = int(pm.sum()) + int(tm.sum())
        out[int(lab)] = 2.0 * int(np.logical_and(pm, tm).sum()) / total if total else math.nan
    return out


def mean_dice(scores: Mapping[int, float] | Sequence[float]) -> float:
    """Mean of the defined (non-NaN) Dice values of :func:`dice_per_label`; NaN when none is defined."""
    vals = [float(v) for v in (scores.values() if isinstance(scores, Mapping) else scores)]
    vals = [v for v in vals if not math.isnan(v)]
    return float(np.mean(vals)) if vals else math.nan


def _fields(ddf: Any, what: str = "ddf") -> np.ndarray:
    f = _numpy(ddf).astype(np.float64, copy=False)
    nd = f.ndim - 2
    if nd not in (2, 3) or f.shape[1] != nd:
        raise ValueError(f"{what} must be (B, D, *spatial) with D = 2 or 3 spatial axes, got {f.shape}")
    return f


def jacobian_determinant(ddf: Any) -> np.ndarray:
    """``det(I + grad f)(p)`` of the map ``p -> p + f(p)``: 1 for no deformation, <= 0 where it folds.

    Args:
        ddf: ``(B, D, *spatial)`` displacement fields in voxels, ``D`` = 2 or 3.

    Returns:
        ``(B, *spatial)`` float64 determinants.

    Raises:
        ValueError: not ``(B, D, *spatial)`` with ``D`` the number of spatial axes.
    """
    f = _fields(ddf)
    nd = f.ndim - 2
    out = np.empty((f.shape[0], *f.shape[2:]), dtype=np.float64)
    for b in range(f.shape[0]):
        # jac[i][j] = d(p_i + f_i) / d p_j
        jac = [[np.gradient(f[b, i], axis=j) + (1.0 if i == j else 0.0) for j in range(nd)] for i in range(nd)]
        if nd == 2:
            out[b] = jac[0][0] * jac[1][1] - jac[0][1] * jac[1][0]
        else:
            out[b] = (jac[0][0] * (jac[1][1] * jac[2][2] - jac[1][2] * jac[2][1])
                      - jac[0][1] * (jac[1][0] * jac[2][2] - jac[1][2] * jac[2][0])
                      + jac[0][2] * (jac[1][0] * jac[2][1] - jac[1][1] * jac[2][0]))
    return out


def folding_fraction(ddf: Any) -> float:
    """Fraction of voxels whose Jacobian determinant is <= 0 (over every voxel of every field given).

    Args:
        ddf: ``(B, D, *spatial)`` displacement fields in voxels (equal sizes, so the pooled fraction is the
            mean of the per-case fractions).
    """
    return float(np.mean(jacobian_determinant(ddf) <= 0))


def inverse_consistency_error(forward: Any, backward: Any) -> float:
    """``mean_p ||dB(p) + dF(p + dB(p))||_2`` in voxels: how far ``dB`` is from inverting ``dF``.

    ``dF`` is sampled at ``p + dB(p)`` by linear interpolation, edge values outside the grid.

    Args:
        forward: ``dF`` ``(B, D, *spatial)``.
        backward: ``dB`` of the same shape.

    Returns:
        The mean Euclidean norm over every voxel of every case.

    Raises:
        ValueError: shapes differ or are not fields.
    """
    f, g = _fields(forward, "forward"), _fields(backward, "backward")
    if f.shape != g.shape:
        raise ValueError(f"forward {f.shape} and backward {g.shape} fields differ in shape")
    nd = f.ndim - 2
    grid = np.stack(np.meshgrid(*(np.arange(s, dtype=np.float64) for s in f.shape[2:]), indexing="ij"))
    norms = []
    for b in range(f.shape[0]):
        coords = grid + g[b]
        sampled = np.stack([map_coordinates(f[b, d], coords, order=1, mode="nearest") for d in range(nd)])
        c = g[b] + sampled
        norms.append(np.sqrt((c * c).sum(axis=0)))
    return float(np.mean(norms))
