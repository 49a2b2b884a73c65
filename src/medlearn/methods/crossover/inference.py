"""Dense inference: every pixel of a full image classified from its own patch, in bounded chunks; post-processing.

Crossover-Net segments by classifying each pixel from its crossover patch (Yu et al.,
arXiv:2004.01397): one forward per pixel. :func:`dense_logits` does exactly that for a batch of full
images, in chunks of ``chunk`` centres, so that memory is bounded by the chunk whatever the image size:
the patches of a chunk are gathered from the image (:mod:`medlearn.methods.crossover.patches`: no
padded copy, no full patch tensor), classified, and their logits written into the output map. The
result does not depend on the chunking: it equals classifying each pixel alone (up to the floating
point reordering of a batched convolution).

``stride > 1`` classifies the pixels of a ``stride``-spaced grid (rows and columns ``0, s, 2s ...``)
and gives every pixel the logits of its nearest grid point (``floor(y / s + 0.5)``, clamped to the
last grid row / column): the spec's quick "stride-2 grid + nearest upsampling" evaluation.

:func:`postprocess_labels` is Crossbar-Net's post-processing (Yu et al., IEEE TIP 2019, official
MATLAB code ``proprocess_seg1.m`` / ``maxConnectDomain.m``), reused for Crossover-Net as the spec
suggests: a morphological closing with a disk of radius 3, hole filling, and the largest connected
component, each optional, applied to every foreground class (scikit-image and SciPy do the work).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy import ndimage
from skimage.measure import label as connected_components
from skimage.morphology import disk

__all__ = ["POSTPROCESS_STEPS", "grid_positions", "nearest_grid_index", "dense_logits", "postprocess_labels"]

#: Post-processing steps, in the order they are applied.
POSTPROCESS_STEPS = ("close", "fill", "largest")


def grid_positions(size: int, stride: int, device: torch.device | None = None) -> torch.Tensor:
    """Classified positions along an axis: ``0, stride, 2 stride, ... < size``."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    return torch.arange(0, size, stride, device=device)


def nearest_grid_index(size: int, stride: int, device: torch.device | None = None) -> torch.Tensor:
    """For each position ``0 .. size - 1``, the index of its nearest grid position (ties go up, clamped)."""
    n = len(range(0, size, stride))
    pos = torch.arange(size, device=device)
    return torch.div(2 * pos + stride, 2 * stride, rounding_mode="floor").clamp(max=n - 1)


@torch.no_grad()
def dense_logits(patch_logits: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], images: torch.Tensor,
                 stride: int = 1, chunk: int = 4096) -> torch.Tensor:
    """Logits of every pixel of full images, each pixel classified from its own patch.

    Args:
        patch_logits: ``(images, centres (N, 3) rows (batch index, row, column)) -> (N, K)`` logits; it
            extracts the centres' patches from ``images`` and classifies them.
        images: ``(B, C, H, W)`` full images.
        stride: classify every ``stride``-th row and column and copy the logits of the nearest
            classified pixel (1: every pixel).
        chunk: centres per call of ``patch_logits`` (bounds the memory of a call).

    Returns:
        ``(B, K, H, W)`` float32 logits.

    Examples:
        >>> f = lambda imgs, c: imgs[c[:, 0], :, c[:, 1], c[:, 2]]  # "classify" = the pixel's own values
        >>> x = torch.rand(2, 3, 5, 4)
        >>> bool(torch.equal(dense_logits(f, x, chunk=7), x))
        True
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got {tuple(images.shape)}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    b, _, h, w = images.shape
    dev = images.device
    ys, xs = grid_positions(h, stride, dev), grid_positions(w, stride, dev)
    gy, gx = len(ys), len(xs)
    total = b * gy * gx
    grid: torch.Tensor | None = None
    for start in range(0, total, chunk):
        i = torch.arange(start, min(start + chunk, total), device=dev)
        centres = torch.stack([i // (gy * gx), ys[(i // gx) % gy], xs[i % gx]], dim=1)
        out = patch_logits(images, centres).float()
        if grid is None:
            grid = torch.empty(total, out.shape[1], dtype=torch.float32, device=dev)
        grid[start:start + len(i)] = out
    assert grid is not None
    grid = grid.view(b, gy, gx, -1).permute(0, 3, 1, 2)
    if stride == 1:
        return grid.contiguous()
    ry, rx = nearest_grid_index(h, stride, dev), nearest_grid_index(w, stride, dev)
    return grid[:, :, ry][:, :, :, rx].contiguous()


def postprocess_labels(classes: np.ndarray | torch.Tensor, steps: Sequence[str] = POSTPROCESS_STEPS,
                       radius: int = 3) -> np.ndarray:
    """Crossbar-Net's post-processing of a 2D class map, per foreground class.

    Each foreground class's mask gets, in this order and if listed: a closing with a disk of
    ``radius`` (dilation then erosion; SciPy, the image treated as zero outside), hole filling, and
    only its largest 8-connected component kept. Classes are processed in increasing order; a pixel
    claimed by a later class takes that class, a pixel a class gives up goes to the background.

    Args:
        classes: ``(H, W)`` integer class indices (0 = background).
        steps: a subset of :data:`POSTPROCESS_STEPS` (empty: unchanged).
        radius: closing disk radius.

    Returns:
        ``(H, W)`` int64 class indices.
    """
    lab = np.asarray(classes.cpu() if isinstance(classes, torch.Tensor) else classes).astype(np.int64)
    unknown = set(steps) - set(POSTPROCESS_STEPS)
    if unknown:
        raise ValueError(f"unknown post-processing steps {sorted(unknown)}; known: {POSTPROCESS_STEPS}")
    if lab.ndim != 2:
        raise ValueError(f"a 2D class map is expected, got shape {lab.shape}")
    if not steps:
        return lab
    out = np.zeros_like(lab)
    for k in (int(v) for v in np.unique(lab) if v != 0):
        m = lab == k
        if "close" in steps and radius > 0:
            fp = disk(radius)
            pad = radius + 1  # closing of the mask in an image that is background outside
            m = ndimage.binary_closing(np.pad(m, pad), structure=fp)[pad:-pad, pad:-pad]
        if "fill" in steps:
            m = ndimage.binary_fill_holes(m)
        if "largest" in steps and m.any():
            cc = connected_components(m, connectivity=2)
            sizes = np.bincount(cc.ravel())
            sizes[0] = 0
            m = cc == int(sizes.argmax())
        out[m] = k
    return out
