"""Crossover patches: extraction of cross-shaped (vertical + horizontal strip) patches and their sampling.

Crossover-Net (Yu et al., "Crossover-Net: Leveraging the Vertical-Horizontal Crossover Relation for Robust
Segmentation", arXiv:2004.01397, 2020) classifies a pixel from two strips that share its centre: a
vertical patch ``V`` of ``long x short`` pixels (rows x columns) and a horizontal patch of ``short x long``.
The horizontal patch is transposed to ``long x short`` before it enters the network, so both arms have
one tensor shape and the central ``short x short`` overlap square holds the same pixels in both arms
(transposed in the horizontal one). This module owns, on batch tensors:

* extraction (:func:`cross_patches`, :func:`strip_patches`, :func:`square_patches`) by index
  gathering, never materialising a padded image: indices that fall outside the image are mapped
  back in by ``pad_mode`` (``"reflect"``, numpy's mirror without repeating the edge, for any pad
  width; ``"edge"``; ``"zeros"``), so every pixel, border pixels included, has a patch;
* the packed form the official code stores (``(N, C, long, 2 short)``: columns ``0..short-1`` the
  vertical patch, the rest the transposed horizontal one): :func:`pack_cross` / :func:`unpack_cross`;
* geometry helpers: :func:`patch_offsets` (centre at index ``size // 2``), :func:`equal_area_side`
  (the square baseline with the cross's pixel count);
* training-centre sampling (:func:`sample_centres`), seeded by a ``torch.Generator``: the spec's
  CPU-scale scheme, a third of the centres inside the object, a third outside, a third on the
  boundary band (pixels whose ``band x band`` neighbourhood holds more than one label), each pool
  excluding the band; an empty pool's share goes to the others.

Written by hand: MONAI's patch samplers crop rectangles, not crosses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["PAD_MODES", "cross_patches", "strip_patches", "square_patches", "pack_cross", "unpack_cross",
           "patch_offsets", "equal_area_side", "overlap_rows", "map_indices", "boundary_band", "sample_centres"]

#: How indices outside the image are mapped back in.
PAD_MODES = ("reflect", "edge", "zeros")


def patch_offsets(size: int, device: torch.device | None = None) -> torch.Tensor:
    """Offsets of a patch side from its centre: ``-(size // 2) .. size - size // 2 - 1`` (centre at ``size // 2``)."""
    return torch.arange(size, device=device) - size // 2


def equal_area_side(long: int, short: int) -> int:
    """Side of the square patch with the crossover patch's pixel count: ``floor(sqrt(2 L S - S^2))``.

    Rounded down, as the spec's equal-area squares (24 x 24 for 40 x 8 strips, 26 x 26 for 48 x 8): the
    square never sees more pixels than the cross.

    Examples:
        >>> equal_area_side(48, 8), equal_area_side(40, 8), equal_area_side(100, 20)
        (26, 24, 60)
    """
    return math.isqrt(2 * long * short - short * short)


def overlap_rows(long: int, short: int) -> slice:
    """Rows of a ``long x short`` arm that hold the overlap square (``short`` rows around the centre)."""
    start = long // 2 - short // 2
    return slice(start, start + short)


def map_indices(idx: torch.Tensor, n: int, mode: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Map indices along an axis of length ``n`` into ``[0, n)``.

    Args:
        idx: integer indices, any shape, any values.
        n: the axis length.
        mode: ``"reflect"`` (mirror without repeating the edge, numpy's ``reflect``, for any distance),
            ``"edge"`` (clamp) or ``"zeros"`` (clamp, plus a validity mask).

    Returns:
        ``(indices in range, valid)``: ``valid`` is a bool mask of the in-range entries for ``"zeros"``,
        else ``None``.
    """
    if mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {mode!r}")
    if mode == "reflect":
        if n == 1:
            return torch.zeros_like(idx), None
        period = 2 * n - 2
        m = idx.abs() % period
        return torch.where(m >= n, period - m, m), None
    inside = (idx >= 0) & (idx < n)
    return idx.clamp(0, n - 1), (inside if mode == "zeros" else None)


def _gather(images: torch.Tensor, b: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
            pad_mode: str) -> torch.Tensor:
    """``images[b, :, rows, cols]`` with broadcast ``rows`` / ``cols`` of shape ``(N, P, Q)``, out-of-range
    indices mapped by ``pad_mode``; returns ``(N, C, P, Q)``.
    """
    h, w = images.shape[-2:]
    r, vr = map_indices(rows, h, pad_mode)
    c, vc = map_indices(cols, w, pad_mode)
    r, c = torch.broadcast_tensors(r, c)
    out = images[b.view(-1, 1, 1), :, r, c]  # (N, P, Q, C): advanced indices first
    if vr is not None and vc is not None:
        out = out * (vr & vc).unsqueeze(-1).to(out.dtype)
    return out.permute(0, 3, 1, 2)


def _check(images: torch.Tensor, centres: torch.Tensor) -> None:
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got {tuple(images.shape)}")
    if centres.ndim != 2 or centres.shape[1] != 3:
        raise ValueError(f"centres must be (N, 3) rows of (batch index, row, column), got {tuple(centres.shape)}")


def strip_patches(images: torch.Tensor, centres: torch.Tensor, long: int, short: int,
                  pad_mode: str = "reflect") -> torch.Tensor:
    """Vertical patches: ``long`` rows x ``short`` columns centred on each centre.

    Args:
        images: ``(B, C, H, W)``.
        centres: ``(N, 3)`` integer rows ``(batch index, row, column)``.
        long: rows of the patch.
        short: columns of the patch.
        pad_mode: see :func:`map_indices`.

    Returns:
        ``(N, C, long, short)``; ``V[n, :, i, j] = image[b, :, y - long // 2 + i, x - short // 2 + j]``.
    """
    _check(images, centres)
    centres = centres.to(images.device).long()
    y, x = centres[:, 1:2], centres[:, 2:3]
    rows = (y + patch_offsets(long, images.device)).unsqueeze(2)  # (N, L, 1)
    cols = (x + patch_offsets(short, images.device)).unsqueeze(1)  # (N, 1, S)
    return _gather(images, centres[:, 0], rows, cols, pad_mode)


def cross_patches(images: torch.Tensor, centres: torch.Tensor, long: int, short: int,
                  pad_mode: str = "reflect") -> tuple[torch.Tensor, torch.Tensor]:
    """The crossover patch of each centre: the vertical patch and the transposed horizontal patch.

    Args:
        images: ``(B, C, H, W)``.
        centres: ``(N, 3)`` integer rows ``(batch index, row, column)``.
        long: the strips' long side (100 in the official 100 x 20 network).
        short: the strips' short side (20).
        pad_mode: see :func:`map_indices`.

    Returns:
        ``(V, Ht)``, both ``(N, C, long, short)``: ``V`` as :func:`strip_patches`; ``Ht`` the
        horizontal ``short x long`` patch transposed, ``Ht[n, :, i, j] = image[b, :, y - short // 2 + j,
        x - long // 2 + i]``. Their overlap rows (:func:`overlap_rows`) are transposes of each other.

    Examples:
        >>> img = torch.arange(64.0).view(1, 1, 8, 8)
        >>> v, ht = cross_patches(img, torch.tensor([[0, 4, 4]]), 6, 2)
        >>> v.shape, bool(torch.equal(v[0, 0, 2:4], ht[0, 0, 2:4].T))
        (torch.Size([1, 1, 6, 2]), True)
    """
    v = strip_patches(images, centres, long, short, pad_mode)
    centres = centres.to(images.device).long()
    y, x = centres[:, 1:2], centres[:, 2:3]
    rows = (y + patch_offsets(short, images.device)).unsqueeze(1)  # (N, 1, S): image rows along Ht's columns
    cols = (x + patch_offsets(long, images.device)).unsqueeze(2)  # (N, L, 1): image columns along Ht's rows
    return v, _gather(images, centres[:, 0], rows, cols, pad_mode)


def square_patches(images: torch.Tensor, centres: torch.Tensor, side: int, pad_mode: str = "reflect") -> torch.Tensor:
    """Square ``side x side`` patches centred on each centre (the equal-pixel-count baseline).

    Returns:
        ``(N, C, side, side)``.
    """
    return strip_patches(images, centres, side, side, pad_mode)


def pack_cross(v: torch.Tensor, ht: torch.Tensor) -> torch.Tensor:
    """``(N, C, L, S)`` x 2 -> ``(N, C, L, 2S)``: the official storage (vertical, then transposed horizontal)."""
    if v.shape != ht.shape:
        raise ValueError(f"arms differ in shape: {tuple(v.shape)} vs {tuple(ht.shape)}")
    return torch.cat([v, ht], dim=-1)


def unpack_cross(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`pack_cross`."""
    s = packed.shape[-1]
    if s % 2:
        raise ValueError(f"a packed crossover patch has an even width, got {s}")
    return packed[..., : s // 2], packed[..., s // 2:]


def boundary_band(classes: torch.Tensor, band: int) -> torch.Tensor:
    """Pixels whose ``band x band`` neighbourhood holds more than one label (within ``band // 2`` px of a boundary).

    Args:
        classes: ``(B, 1, H, W)`` integer labels.
        band: odd window side (an even one is rounded up); 1 or less: no band.

    Returns:
        ``(B, 1, H, W)`` bool.
    """
    if band <= 1:
        return torch.zeros_like(classes, dtype=torch.bool)
    k = band + 1 - band % 2
    c = classes.float()
    hi = F.max_pool2d(c, k, stride=1, padding=k // 2)
    lo = -F.max_pool2d(-c, k, stride=1, padding=k // 2)
    return hi != lo


def sample_centres(classes: torch.Tensor, n_per_image: int, fractions: Sequence[float] = (1 / 3, 1 / 3, 1 / 3),
                   band: int = 5, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Training centres per image: inside the object, outside it, and on the boundary band.

    The spec's CPU-scale sampler (methods/crossover.md section 5): of ``n_per_image`` centres,
    ``fractions[0]`` lie inside the object (non-zero class, off the band), ``fractions[1]`` outside
    (class 0, off the band) and ``fractions[2]`` on the boundary band (:func:`boundary_band`). Counts
    are rounded down and the remainder goes to the pools in order; an empty pool's share is split
    among the non-empty ones (an image without object: all outside). Within a pool centres are drawn
    without replacement while the pool is large enough, else with replacement.

    Args:
        classes: ``(B, 1, H, W)`` class indices (0 = background).
        n_per_image: centres per image.
        fractions: shares of the inside, outside and band pools (normalised to sum 1).
        band: band window side (see :func:`boundary_band`).
        generator: random source (seed it for reproducible draws); CPU.

    Returns:
        ``(centres (N, 3) int64 rows (batch index, row, column), targets (N,) int64 class at each centre)``,
        on the CPU, images in batch order.
    """
    if classes.ndim != 4 or classes.shape[1] != 1:
        raise ValueError(f"classes must be (B, 1, H, W), got {tuple(classes.shape)}")
    if n_per_image < 1:
        raise ValueError(f"n_per_image must be >= 1, got {n_per_image}")
    if len(fractions) != 3 or min(fractions) < 0 or sum(fractions) <= 0:
        raise ValueError(f"fractions must be three non-negative shares, got {list(fractions)}")
    cls = classes.detach().cpu().long()
    in_band = boundary_band(cls, band)
    shares = [float(f) / float(sum(fractions)) for f in fractions]
    w = cls.shape[-1]
    out: list[torch.Tensor] = []
    for b in range(cls.shape[0]):
        c, e = cls[b, 0].flatten(), in_band[b, 0].flatten()
        pools = [torch.nonzero((c != 0) & ~e).flatten(), torch.nonzero((c == 0) & ~e).flatten(),
                 torch.nonzero(e).flatten()]
        live = [i for i, p in enumerate(pools) if p.numel() > 0 and shares[i] > 0]
        if not live:  # every share on an empty pool: take any pixel
            live, pools = [0], [torch.arange(c.numel())]
            counts = {0: n_per_image}
        else:
            total = sum(shares[i] for i in live)
            counts = {i: int(n_per_image * shares[i] / total) for i in live}
            for i in live[: n_per_image - sum(counts.values())]:
                counts[i] += 1
        for i in live:
            pool, k = pools[i], counts[i]
            if k == 0:
                continue
            if k <= pool.numel():
                pick = pool[torch.randperm(pool.numel(), generator=generator)[:k]]
            else:
                pick = pool[torch.randint(pool.numel(), (k,), generator=generator)]
            out.append(torch.stack([torch.full_like(pick, b), pick // w, pick % w], dim=1))
    centres = torch.cat(out)
    targets = cls[centres[:, 0], 0, centres[:, 1], centres[:, 2]]
    return centres, targets
