"""Fundus metrics: the vertical cup-to-disc ratio (vCDR) and its absolute error per image.

The vertical cup-to-disc ratio is the glaucoma screening measure the REFUGE challenge scores next
to the optic disc and cup Dice (Orlando et al., "REFUGE Challenge: A unified framework for
evaluating automated methods for glaucoma assessment from fundus photographs", MedIA 2020): the
vertical diameter of the cup divided by the vertical diameter of the disc, each measured on a
segmentation; the error of an image is ``|vCDR(prediction) - vCDR(truth)|``.

Diameter: the vertical extent of the region, ``last row - first row + 1`` of the rows holding a
region pixel (REFUGE's evaluation takes the height of the region's bounding box). Regions are
unions of stored label values (:class:`~medlearn.metrics.segmentation.RegionSet` conventions:
disc = {1, 2}, cup = {2} for the 0 background / 1 rim / 2 cup encoding). Conventions: an empty
cup in a non-empty disc gives vCDR 0; an empty disc leaves the vCDR undefined (NaN): such an
image's error is left out of the mean and counted in ``vcdr_undefined``.

:class:`VerticalCDRError` accumulates per-image errors over an epoch in a
:class:`~medlearn.metrics.buffer.CaseBuffer` (gathered across DDP ranks). No Lightning, no
matplotlib. Written by hand: MONAI and scikit-image have no cup-to-disc ratio.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from medlearn.metrics.buffer import CaseBuffer

__all__ = ["vertical_diameter", "vertical_cdr", "VerticalCDRError"]

#: Label values of the optic disc (rim + cup) and of the cup in the 0 / 1 rim / 2 cup encoding.
DISC_VALUES: tuple[int, ...] = (1, 2)
CUP_VALUES: tuple[int, ...] = (2,)


def vertical_diameter(region: torch.Tensor) -> torch.Tensor:
    """Vertical extent of a binary region per image.

    Args:
        region: ``(B, H, W)`` (or ``(B, 1, H, W)``) boolean / 0-1 masks; rows = first spatial axis.

    Returns:
        ``(B,)`` float: ``last row - first row + 1`` of the rows holding a region pixel; 0 when empty.

    Examples:
        >>> m = torch.zeros(1, 6, 5, dtype=torch.bool); m[0, 1:4, 2] = True
        >>> vertical_diameter(m).tolist()
        [3.0]
    """
    r = region.bool()
    if r.ndim == 4:
        if r.shape[1] != 1:
            raise ValueError(f"region must be (B, H, W) or (B, 1, H, W), got {tuple(region.shape)}")
        r = r[:, 0]
    if r.ndim != 3:
        raise ValueError(f"region must be (B, H, W) or (B, 1, H, W), got {tuple(region.shape)}")
    rows = r.any(dim=2)  # (B, H)
    h = rows.shape[1]
    idx = torch.arange(h, device=rows.device).expand_as(rows)
    first = torch.where(rows, idx, torch.full_like(idx, h)).min(dim=1).values
    last = torch.where(rows, idx, torch.full_like(idx, -1)).max(dim=1).values
    return torch.where(rows.any(dim=1), (last - first + 1).float(), torch.zeros_like(first, dtype=torch.float32))


def vertical_cdr(labels: torch.Tensor, disc_values: Sequence[int] = DISC_VALUES,
                 cup_values: Sequence[int] = CUP_VALUES) -> torch.Tensor:
    """Vertical cup-to-disc ratio of label maps.

    Args:
        labels: ``(B, 1, H, W)`` or ``(B, H, W)`` stored label values.
        disc_values: label values forming the disc (rim and cup).
        cup_values: label values forming the cup.

    Returns:
        ``(B,)`` float: vertical cup diameter / vertical disc diameter; NaN where the disc is empty.

    Examples:
        >>> lab = torch.zeros(1, 1, 10, 10, dtype=torch.long)
        >>> lab[0, 0, 2:8, 2:8] = 1; lab[0, 0, 4:7, 4:6] = 2
        >>> vertical_cdr(lab).tolist()
        [0.5]
    """
    lab = labels.long()
    disc = torch.isin(lab, torch.tensor(list(disc_values), device=lab.device))
    cup = torch.isin(lab, torch.tensor(list(cup_values), device=lab.device))
    d, c = vertical_diameter(disc), vertical_diameter(cup)
    return torch.where(d > 0, c / d.clamp(min=1.0), torch.full_like(d, float("nan")))


class VerticalCDRError:
    """Absolute vertical cup-to-disc ratio error per image, averaged over an epoch.

    ``update(pred_labels, true_labels)`` takes label values ``(B, 1, H, W)``; ``compute()`` returns
    ``{"vcdr_err": mean |vCDR_pred - vCDR_true| over images where both are defined,
    "vcdr_undefined": images left out (an empty disc in prediction or truth)}``.

    Args:
        disc_values: label values of the disc.
        cup_values: label values of the cup.
    """

    def __init__(self, disc_values: Sequence[int] = DISC_VALUES, cup_values: Sequence[int] = CUP_VALUES) -> None:
        self.disc_values = tuple(int(v) for v in disc_values)
        self.cup_values = tuple(int(v) for v in cup_values)
        self._err = CaseBuffer()
        self.count = 0

    def reset(self) -> None:
        """Forget every accumulated image."""
        self._err.reset()
        self.count = 0

    @torch.no_grad()
    def update(self, pred_labels: torch.Tensor, true_labels: torch.Tensor) -> torch.Tensor:
        """Add a batch; returns its per-image errors ``(B,)`` (NaN where undefined)."""
        if pred_labels.shape != true_labels.shape:
            raise ValueError(f"prediction {tuple(pred_labels.shape)} and truth {tuple(true_labels.shape)} differ")
        err = (vertical_cdr(pred_labels, self.disc_values, self.cup_values)
               - vertical_cdr(true_labels, self.disc_values, self.cup_values)).abs().float().cpu()
        self._err.extend(err.view(-1, 1))
        self.count += int(err.numel())
        return err

    def compute(self) -> dict[str, float]:
        """Mean error over images with a defined vCDR, and how many were undefined."""
        vals = self._err.get_buffer()
        if vals is None or (isinstance(vals, torch.Tensor) and vals.numel() == 0):
            return {"vcdr_err": float("nan"), "vcdr_undefined": 0.0}
        v = (vals if isinstance(vals, torch.Tensor) else torch.stack(list(vals))).reshape(-1).float()
        ok = ~torch.isnan(v)
        mean = float(v[ok].mean()) if bool(ok.any()) else float("nan")
        return {"vcdr_err": mean, "vcdr_undefined": float((~ok).sum())}
