"""Keypoint localisation metrics: Euclidean distance statistics and hit rates.

The AGE challenge (Fu et al., MedIA 2020) scores scleral-spur localisation by the average Euclidean
distance (AED) between predicted and annotated points **in pixels of the original image**, over the
annotated angles; medlearn adds the median, the 95th percentile (outliers) and the fraction of points
within given radii (e.g. 3 and 5 px; "percentage of correct keypoints" at a pixel threshold). Points
that are absent (NaN in the target, the AGE ``-1`` spurs) are left out. Map predictions back to the
original image first (:func:`medlearn.data.image_view.views_to_source`).

:class:`KeypointDistance` accumulates per-point distances in a MONAI ``Cumulative`` buffer (gathered
across DDP ranks); :func:`keypoint_summary` summarises a vector of distances. The percentile is
NumPy's default (linear interpolation between order statistics).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from medlearn.metrics.buffer import CaseBuffer

__all__ = ["KeypointDistance", "KeypointResult", "keypoint_summary", "point_distances"]


@dataclass
class KeypointResult:
    """Distance statistics of ``n`` points: mean (AED), median, 95th percentile, max, fraction within radii."""

    aed: float
    median: float
    p95: float
    max: float
    n: int
    within: dict[float, float] = field(default_factory=dict)

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        """Flat ``{prefix + "aed": ..., prefix + "within3": ...}`` (radii written with ``g`` format)."""
        out = {f"{prefix}{k}": float(getattr(self, k)) for k in ("aed", "median", "p95", "max")}
        out.update({f"{prefix}within{r:g}": v for r, v in self.within.items()})
        return out


def point_distances(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> np.ndarray:
    """Euclidean distances ``(N,)`` between ``(N, D)`` point sets, in float64; NaN where either is absent."""
    p = np.asarray(pred.detach().cpu() if isinstance(pred, torch.Tensor) else pred, dtype=np.float64)
    t = np.asarray(target.detach().cpu() if isinstance(target, torch.Tensor) else target, dtype=np.float64)
    if p.shape != t.shape or p.ndim != 2:
        raise ValueError(f"expected two (N, D) point sets of one shape, got {p.shape} and {t.shape}")
    return np.sqrt(((p - t) ** 2).sum(axis=1))


def keypoint_summary(distances: np.ndarray | Sequence[float], radii: Sequence[float] = (3.0, 5.0)) -> KeypointResult:
    """Summarise distances (NaN entries, i.e. absent points, are dropped); all NaN when none is left."""
    d = np.asarray(distances, dtype=np.float64).reshape(-1)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return KeypointResult(math.nan, math.nan, math.nan, math.nan, 0, {float(r): math.nan for r in radii})
    return KeypointResult(float(d.mean()), float(np.median(d)), float(np.percentile(d, 95)), float(d.max()),
                          int(d.size), {float(r): float((d <= r).mean()) for r in radii})


class KeypointDistance:
    """Accumulate predicted and target points ``(B, D)``; :meth:`compute` a :class:`KeypointResult`.

    Args:
        radii: distances for the "fraction within" rates.

    Examples:
        >>> m = KeypointDistance(radii=(1.0,))
        >>> m.update(torch.tensor([[0.0, 0.0], [3.0, 4.0]]), torch.tensor([[0.0, 0.5], [0.0, 0.0]]))
        >>> r = m.compute(); (r.aed, r.within[1.0])
        (2.75, 0.5)
    """

    def __init__(self, radii: Sequence[float] = (3.0, 5.0)) -> None:
        self.radii = tuple(float(r) for r in radii)
        self._buffer = CaseBuffer()

    def reset(self) -> None:
        """Forget the accumulated distances."""
        self._buffer.reset()

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch; rows whose target (or prediction) is NaN count as absent."""
        d = point_distances(pred, target)
        self._buffer.extend(torch.from_numpy(d))

    def distances(self) -> np.ndarray:
        """Every accumulated distance (NaN for absent points), gathered across ranks."""
        buf = self._buffer.get_buffer()  # None before any update, else one tensor
        return np.zeros(0) if buf is None else np.asarray(buf, dtype=np.float64)

    def compute(self) -> KeypointResult:
        """Distance summary over every accumulated point."""
        return keypoint_summary(self.distances(), self.radii)
