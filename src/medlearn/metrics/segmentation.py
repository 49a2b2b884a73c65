"""Segmentation metrics per evaluated region: Dice, 95th-percentile Hausdorff distance, mean surface distance.

What is scored is a :class:`RegionSet`: named regions, each the union of some stored label values,
given as data. BraTS scores nested tumour regions, not its labels (Menze et al., "The Multimodal
Brain Tumor Image Segmentation Benchmark (BRATS)", IEEE TMI 2015): whole tumour WT = {1, 2, 4},
tumour core TC = {1, 4}, enhancing tumour ET = {4} (:data:`BRATS`). Glaucoma screening scores the
optic disc (rim and cup) and the cup (:data:`OPTIC_DISC_CUP`, labels 1 = rim, 2 = cup). Any label
set can be scored label by label (:meth:`RegionSet.per_label`).

:class:`SegmentationMetrics` accumulates per-case values over an epoch and averages them over cases
(DDP: MONAI's :class:`~monai.metrics.Cumulative` gathers every process's cases). Conventions:

* Dice (MONAI ``compute_dice``): a case whose region is empty in the ground truth scores 1 if the
  prediction is empty too, else 0 (the BraTS challenge convention; MONAI ``ignore_empty=False``).
* HD95 and mean symmetric surface distance (MONAI ``compute_hausdorff_distance`` /
  ``compute_average_surface_distance``), in voxels unless ``spacing`` is given: 0 when both
  masks are empty, undefined (NaN, left out of the mean and counted in ``<name>_undefined``) when
  only one is.

The true-positive fraction and the centroid distance (Crossbar-Net / Crossover-Net's extra measures)
are in a block at the end: :func:`true_positive_fraction`, :func:`centroid_distance` and
:class:`TPFCentroidMetrics`; :func:`segmentation_per_case` gives the per-case values behind the means.

No Lightning, no matplotlib: usable in plain PyTorch and in any training loop.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance

from medlearn.metrics.buffer import CaseBuffer

__all__ = ["RegionSet", "BRATS", "OPTIC_DISC_CUP", "REGION_SETS", "SegmentationMetrics", "region_set",
           "labels_to_classes", "classes_to_labels",
           "true_positive_fraction", "region_centroids", "centroid_distance", "TPFCentroidMetrics",
           "segmentation_per_case"]


@dataclass(frozen=True)
class RegionSet:
    """Named regions of a label map, each the union of some stored label values.

    Attributes:
        regions: ``((name, (value, ...)), ...)`` in report order.
        label_names: optional names of the label values (for legends).

    Examples:
        >>> rs = RegionSet((("WT", (1, 2, 4)), ("ET", (4,))))
        >>> rs.masks(torch.tensor([[[0, 1, 4]]])).tolist()
        [[[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]]]
    """

    regions: tuple[tuple[str, tuple[int, ...]], ...]
    label_names: tuple[tuple[int, str], ...] = field(default=())

    def __post_init__(self) -> None:
        names = [n for n, _ in self.regions]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"a region set needs distinct region names, got {names}")
        if any(not vals for _, vals in self.regions):
            raise ValueError("every region needs at least one label value")

    @classmethod
    def from_mapping(cls, regions: Mapping[str, Sequence[int]]) -> RegionSet:
        """From ``{"WT": [1, 2, 4], ...}`` (a config's ``regions:``)."""
        return cls(tuple((str(k), tuple(int(v) for v in vals)) for k, vals in regions.items()))

    @classmethod
    def per_label(cls, label_values: Sequence[int], names: Sequence[str] | None = None) -> RegionSet:
        """One region per non-background label (the first value is the background)."""
        values = [int(v) for v in label_values]
        names = list(names) if names is not None else [f"label_{v}" for v in values]
        return cls(tuple((n, (v,)) for n, v in zip(names[1:], values[1:])), tuple(zip(values, names)))

    @property
    def names(self) -> list[str]:
        """Region names, in order."""
        return [n for n, _ in self.regions]

    @property
    def values(self) -> set[int]:
        """Every label value some region uses."""
        return {v for _, vals in self.regions for v in vals}

    def masks(self, labels: torch.Tensor) -> torch.Tensor:
        """``(B, 1, *spatial)`` stored label values -> ``(B, R, *spatial)`` float32 region masks."""
        if labels.ndim < 2 or labels.shape[1] != 1:
            raise ValueError(f"labels must be (B, 1, *spatial), got {tuple(labels.shape)}")
        lab = labels.long()
        chans = [torch.isin(lab, torch.tensor(vals, device=lab.device)) for _, vals in self.regions]
        return torch.cat(chans, dim=1).to(torch.float32)


#: BraTS: whole tumour, tumour core, enhancing tumour from labels 0/1/2/4.
BRATS = RegionSet((("WT", (1, 2, 4)), ("TC", (1, 4)), ("ET", (4,))),
                  ((0, "background"), (1, "necrotic_core"), (2, "oedema"), (4, "enhancing")))
#: Optic disc (rim + cup) and cup, from labels 0 = background, 1 = rim, 2 = cup.
OPTIC_DISC_CUP = RegionSet((("disc", (1, 2)), ("cup", (2,))), ((0, "background"), (1, "rim"), (2, "cup")))
#: Region sets by name (``regions: brats`` in a config).
REGION_SETS: dict[str, RegionSet] = {"brats": BRATS, "disc_cup": OPTIC_DISC_CUP}


def region_set(spec: str | Mapping[str, Sequence[int]] | RegionSet, label_values: Sequence[int],
               class_names: Sequence[str] | None = None) -> RegionSet:
    """The :class:`RegionSet` of a config value, checked against the label values.

    Args:
        spec: a name of :data:`REGION_SETS`, ``"labels"`` (one region per non-background label),
            a ``{region: [values]}`` mapping, or a :class:`RegionSet`.
        label_values: the stored label values, background first.
        class_names: names of the label values (for ``"labels"``).

    Raises:
        ValueError: an unknown name, or a region using a value outside ``label_values``.
    """
    if isinstance(spec, RegionSet):
        rs = spec
    elif isinstance(spec, str):
        if spec == "labels":
            return RegionSet.per_label(label_values, class_names)
        if spec not in REGION_SETS:
            raise ValueError(f"regions must be 'labels', one of {sorted(REGION_SETS)} or a mapping, got {spec!r}")
        rs = REGION_SETS[spec]
    else:
        rs = RegionSet.from_mapping(spec)
    missing = sorted(rs.values - {int(v) for v in label_values})
    if missing:
        raise ValueError(f"regions use label values {missing} that are not in label_values {list(label_values)}")
    return rs


def labels_to_classes(seg: torch.Tensor, label_values: Sequence[int]) -> torch.Tensor:
    """Stored label values -> class indices (the position of each value in ``label_values``).

    Args:
        seg: integer label map, any shape (e.g. ``(B, 1, D, H, W)`` with BraTS values 0/1/2/4).
        label_values: the label values in class order (``[0, 1, 2, 4]`` -> classes 0..3).

    Returns:
        ``int64`` class indices, same shape.

    Raises:
        ValueError: ``seg`` holds a value not in ``label_values``.
    """
    values = torch.as_tensor(list(label_values), dtype=torch.long, device=seg.device)
    lut = torch.full((int(values.max()) + 1,), -1, dtype=torch.long, device=seg.device)
    lut[values] = torch.arange(len(values), device=seg.device)
    s = seg.long()
    outside = (s < 0) | (s >= lut.numel())
    out = lut[s.clamp(0, lut.numel() - 1)]
    bad = outside | (out < 0)
    if bool(bad.any()):
        found = sorted(int(v) for v in torch.unique(s[bad]).tolist())[:10]
        raise ValueError(f"label values {found} are not in label_values {list(label_values)}")
    return out


def classes_to_labels(classes: torch.Tensor, label_values: Sequence[int]) -> torch.Tensor:
    """Class indices -> stored label values (inverse of :func:`labels_to_classes`)."""
    return torch.as_tensor(list(label_values), dtype=torch.long, device=classes.device)[classes.long()]


class SegmentationMetrics:
    """Per-region Dice (and optionally HD95 and mean surface distance) over an epoch.

    ``update`` takes predicted and true *label values* ``(B, 1, *spatial)`` (2D or 3D);
    ``compute`` returns ``{"dice/<region>": mean over cases, "dice_mean": mean over regions, ...}``
    (with ``distances``: ``hd95/<region>``, ``hd95_mean``, ``asd/<region>``, ``asd_mean``, and
    ``hd95_undefined``, the cases x regions where only one mask was empty).

    Args:
        regions: what is scored.
        distances: also compute the surface distances (costlier: a distance transform per region
            and case).
        percentile: the Hausdorff percentile (95).
        spacing: voxel spacing per spatial axis for the distances (``None``: voxel units).
    """

    def __init__(self, regions: RegionSet, distances: bool = False, percentile: float = 95.0,
                 spacing: Sequence[float] | None = None) -> None:
        self.regions = regions
        self.distances = distances
        self.percentile = float(percentile)
        self.spacing = list(spacing) if spacing is not None else None
        self._dice = CaseBuffer()
        self._hd = CaseBuffer()
        self._asd = CaseBuffer()
        self.count = 0

    def reset(self) -> None:
        """Forget every accumulated case."""
        for c in (self._dice, self._hd, self._asd):
            c.reset()
        self.count = 0

    @torch.no_grad()
    def update(self, pred_labels: torch.Tensor, true_labels: torch.Tensor) -> None:
        """Add a batch of cases (label values ``(B, 1, *spatial)``)."""
        if pred_labels.shape != true_labels.shape:
            raise ValueError(f"prediction {tuple(pred_labels.shape)} and truth {tuple(true_labels.shape)} differ")
        p = self.regions.masks(pred_labels)
        t = self.regions.masks(true_labels)
        self._dice.extend(compute_dice(p, t, include_background=True, ignore_empty=False).float())
        if self.distances:
            hd = torch.full(p.shape[:2], float("nan"))
            asd = torch.full(p.shape[:2], float("nan"))
            for b in range(p.shape[0]):
                for r in range(p.shape[1]):
                    pe, te = not bool(p[b, r].any()), not bool(t[b, r].any())
                    if pe and te:
                        hd[b, r] = asd[b, r] = 0.0
                    elif not pe and not te:
                        pb, tb = p[b:b + 1, r:r + 1], t[b:b + 1, r:r + 1]
                        with warnings.catch_warnings():
                            # MONAI >= 1.5 passes its own deprecated argument to get_mask_edges on every call
                            warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*",
                                                    category=FutureWarning)
                            hd[b, r] = float(compute_hausdorff_distance(pb, tb, include_background=True,
                                                                        percentile=self.percentile,
                                                                        spacing=self.spacing))
                            asd[b, r] = float(compute_average_surface_distance(
                                pb, tb, include_background=True, symmetric=True, spacing=self.spacing))
            self._hd.extend(hd)
            self._asd.extend(asd)
        self.count += int(p.shape[0])

    def compute(self) -> dict[str, float]:
        """Means over cases per region, and over regions."""
        out: dict[str, float] = {}
        names = self.regions.names
        for key, buf in (("dice", self._dice), ("hd95", self._hd), ("asd", self._asd)):
            if key != "dice" and not self.distances:
                continue
            vals = buf.get_buffer()
            if vals is None or (isinstance(vals, torch.Tensor) and vals.numel() == 0):
                continue
            v = vals if isinstance(vals, torch.Tensor) else torch.stack(list(vals))
            v = v.reshape(-1, len(names)).float().cpu()
            per = [float(x) for x in _nanmean0(v)]
            for n, x in zip(names, per):
                out[f"{key}/{n}"] = x
            finite = [x for x in per if not np.isnan(x)]
            out[f"{key}_mean"] = float(np.mean(finite)) if finite else float("nan")
            if key == "hd95":
                out["hd95_undefined"] = float(torch.isnan(v).sum())
        return out


def _nanmean0(v: torch.Tensor) -> torch.Tensor:
    """Mean over dim 0 ignoring NaN (as MONAI's ``mean_batch`` reduction)."""
    nans = torch.isnan(v)
    total = torch.where(nans, torch.zeros_like(v), v).sum(dim=0)
    n = (~nans).float().sum(dim=0)
    return torch.where(n > 0, total / n.clamp(min=1), torch.full_like(total, float("nan")))


# ------------------------------------------------------------ true-positive fraction and centroid distance
# Crossbar-Net (Yu et al., IEEE TIP 28(8), 2019) and Crossover-Net (Yu et al., arXiv:2004.01397) report, next
# to Dice and the Hausdorff distance, the true-positive fraction TPF = |P and G| / |G| and the distance between
# the centroids of the predicted and the true region (CD). Written by hand: MONAI has neither.


def true_positive_fraction(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Fraction of the true region that the prediction covers, per case and region.

    Args:
        pred: ``(B, R, *spatial)`` predicted region masks (non-zero = inside).
        true: ``(B, R, *spatial)`` true region masks, same shape.

    Returns:
        ``(B, R)`` float32: ``|P and G| / |G|``; NaN where the true region is empty (undefined).

    Examples:
        >>> p = torch.tensor([[[[1, 1, 0, 0]]]]); g = torch.tensor([[[[0, 1, 1, 0]]]])
        >>> true_positive_fraction(p, g).tolist()
        [[0.5]]
    """
    if pred.shape != true.shape or pred.ndim < 3:
        raise ValueError(f"pred {tuple(pred.shape)} and true {tuple(true.shape)} must be equal (B, R, *spatial)")
    p, g = pred.flatten(2) != 0, true.flatten(2) != 0
    hit = (p & g).sum(-1).to(torch.float64)
    size = g.sum(-1).to(torch.float64)
    out = torch.where(size > 0, hit / size.clamp(min=1), torch.full_like(hit, float("nan")))
    return out.to(torch.float32)


def region_centroids(masks: torch.Tensor, spacing: Sequence[float] | None = None) -> torch.Tensor:
    """Centroid (mean pixel / voxel coordinate) of each mask.

    Args:
        masks: ``(B, R, *spatial)`` masks (non-zero = inside).
        spacing: size of a pixel along each spatial axis (``None``: pixel units).

    Returns:
        ``(B, R, ndim)`` float64 coordinates in array-axis order (times ``spacing``); NaN for an
        empty mask.
    """
    spatial = masks.shape[2:]
    m = (masks != 0).to(torch.float64)
    n = m.flatten(2).sum(-1)
    coords = []
    for axis, size in enumerate(spatial):
        shape = [1] * len(spatial)
        shape[axis] = size
        grid = torch.arange(size, dtype=torch.float64, device=masks.device).view(*shape)
        total = (m * grid).flatten(2).sum(-1)
        step = 1.0 if spacing is None else float(spacing[axis])
        coords.append(torch.where(n > 0, step * total / n.clamp(min=1), torch.full_like(total, float("nan"))))
    return torch.stack(coords, dim=-1)


def centroid_distance(pred: torch.Tensor, true: torch.Tensor, spacing: Sequence[float] | None = None) -> torch.Tensor:
    """Euclidean distance between the centroids of the predicted and the true region, per case and region.

    Args:
        pred: ``(B, R, *spatial)`` predicted region masks.
        true: ``(B, R, *spatial)`` true region masks, same shape.
        spacing: size of a pixel along each spatial axis (``None``: pixel units).

    Returns:
        ``(B, R)`` float32; NaN where either region is empty (undefined).

    Examples:
        >>> p = torch.zeros(1, 1, 5, 5); p[0, 0, 0, 0] = 1
        >>> g = torch.zeros(1, 1, 5, 5); g[0, 0, 3, 4] = 1
        >>> centroid_distance(p, g).tolist()
        [[5.0]]
    """
    if pred.shape != true.shape or pred.ndim < 3:
        raise ValueError(f"pred {tuple(pred.shape)} and true {tuple(true.shape)} must be equal (B, R, *spatial)")
    if spacing is not None and len(spacing) != pred.ndim - 2:
        raise ValueError(f"spacing needs {pred.ndim - 2} values, got {list(spacing)}")
    d = region_centroids(pred, spacing) - region_centroids(true, spacing)
    return d.pow(2).sum(-1).sqrt().to(torch.float32)


class TPFCentroidMetrics:
    """Per-region true-positive fraction and centroid distance over an epoch, kept per case.

    ``update`` takes predicted and true *label values* ``(B, 1, *spatial)``, as
    :class:`SegmentationMetrics` does; ``compute`` returns ``{"tpf/<region>", "tpf_mean",
    "cd/<region>", "cd_mean", "tpf_undefined", "cd_undefined"}``: means over the cases where the
    value is defined (TPF needs a non-empty true region, CD two non-empty regions), and how many
    cases x regions were undefined. :meth:`per_case` gives every case's values (DDP: gathered).

    Args:
        regions: what is scored.
        spacing: pixel / voxel spacing for the centroid distance (``None``: pixel units).
    """

    def __init__(self, regions: RegionSet, spacing: Sequence[float] | None = None) -> None:
        self.regions = regions
        self.spacing = list(spacing) if spacing is not None else None
        self._tpf = CaseBuffer()
        self._cd = CaseBuffer()
        self.count = 0

    def reset(self) -> None:
        """Forget every accumulated case."""
        self._tpf.reset()
        self._cd.reset()
        self.count = 0

    @torch.no_grad()
    def update(self, pred_labels: torch.Tensor, true_labels: torch.Tensor) -> None:
        """Add a batch of cases (label values ``(B, 1, *spatial)``)."""
        if pred_labels.shape != true_labels.shape:
            raise ValueError(f"prediction {tuple(pred_labels.shape)} and truth {tuple(true_labels.shape)} differ")
        p, t = self.regions.masks(pred_labels), self.regions.masks(true_labels)
        self._tpf.extend(true_positive_fraction(p, t).cpu())
        self._cd.extend(centroid_distance(p, t, self.spacing).cpu())
        self.count += int(p.shape[0])

    def per_case(self) -> dict[str, torch.Tensor]:
        """``{"tpf": (N, R), "cd": (N, R)}`` for every case seen, in update order (NaN = undefined)."""
        out = {}
        for key, buf in (("tpf", self._tpf), ("cd", self._cd)):
            vals = buf.get_buffer()
            if vals is None or (isinstance(vals, torch.Tensor) and vals.numel() == 0):
                out[key] = torch.zeros(0, len(self.regions.names))
                continue
            v = vals if isinstance(vals, torch.Tensor) else torch.stack(list(vals))
            out[key] = v.reshape(-1, len(self.regions.names)).float().cpu()
        return out

    def compute(self) -> dict[str, float]:
        """Means over the defined cases per region, and over regions."""
        out: dict[str, float] = {}
        for key, v in self.per_case().items():
            if v.shape[0] == 0:
                continue
            per = [float(x) for x in _nanmean0(v)]
            for n, x in zip(self.regions.names, per):
                out[f"{key}/{n}"] = x
            finite = [x for x in per if not np.isnan(x)]
            out[f"{key}_mean"] = float(np.mean(finite)) if finite else float("nan")
            out[f"{key}_undefined"] = float(torch.isnan(v).sum())
        return out


def segmentation_per_case(metrics: SegmentationMetrics) -> dict[str, torch.Tensor]:
    """Every case's values of a :class:`SegmentationMetrics` (its means are over these).

    Returns:
        ``{"dice": (N, R)}``, plus ``"hd95"`` and ``"asd"`` when it computes distances; cases in
        update order (DDP: gathered), regions in :attr:`RegionSet.names` order.
    """
    names = metrics.regions.names
    out: dict[str, torch.Tensor] = {}
    for key, buf in (("dice", metrics._dice), ("hd95", metrics._hd), ("asd", metrics._asd)):
        if key != "dice" and not metrics.distances:
            continue
        vals = buf.get_buffer()
        if vals is None or (isinstance(vals, torch.Tensor) and vals.numel() == 0):
            out[key] = torch.zeros(0, len(names))
            continue
        v = vals if isinstance(vals, torch.Tensor) else torch.stack(list(vals))
        out[key] = v.reshape(-1, len(names)).float().cpu()
    return out
