"""A network view of an image: optional horizontal flip, crop window, resize; exact point maps both ways.

Keypoint methods train on a *view* of the acquired image (one half of an AS-OCT B-scan, mirrored so
that both anterior chamber angles share one orientation, then resized to the network input) but must
report points in the pixels of the original file. :class:`ImageView` is that view: it cuts the
pixels (:meth:`ImageView.apply`) and maps points forward (:meth:`ImageView.to_view`) and back
(:meth:`ImageView.to_source`, or :func:`views_to_source` for a batch of torch tensors) with the same
arithmetic, so a prediction returns to the file's pixel grid exactly.

Conventions (those of PyTorch's ``interpolate`` / ``grid_sample`` with ``align_corners=False``):

- a point is ``(x, y)`` = (column, row) in pixels; pixel ``(row i, column j)`` has its centre at
  ``(j, i)`` and covers ``[j - 0.5, j + 0.5] x [i - 0.5, i + 0.5]``;
- the flip mirrors the whole source image: ``x' = (W - 1) - x`` (``W - 1``, not ``W``: pixel 0 and
  pixel ``W - 1`` trade places);
- the crop window is ``width x height`` pixels starting at pixel ``(x0, y0)`` of the (flipped) image;
  it may reach outside the image, which is then zero-padded;
- the resize scales each axis on its own (``sx = out_width / width``, ``sy = out_height / height``;
  the aspect ratio is not kept) about pixel edges: ``u = (x' - x0 + 0.5) * sx - 0.5``.

Written by hand: MONAI's and torchvision's spatial transforms move images, not the points of them.

Examples:
    >>> v = ImageView(source_width=2130, source_height=998, flip=True, x0=0, y0=0, width=1065, height=998,
    ...               out_width=512, out_height=512)
    >>> v.to_source(v.to_view([1870.80, 451.59])).round(6).tolist()
    [1870.8, 451.59]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike

__all__ = ["ImageView", "views_to_source", "VIEW_FIELDS"]

#: Order of the numbers in :meth:`ImageView.as_tensor` (what :func:`views_to_source` reads).
VIEW_FIELDS: tuple[str, ...] = ("source_width", "flip", "x0", "y0", "sx", "sy")


@dataclass(frozen=True)
class ImageView:
    """Flip (optional), crop, resize: a view of a ``source_height x source_width`` image.

    Attributes:
        source_width: width ``W`` of the source image in pixels (the flip is about it).
        source_height: height of the source image.
        flip: mirror horizontally first (``x' = W - 1 - x``).
        x0: first column of the crop window in the (flipped) source.
        y0: first row of the crop window.
        width: columns of the crop window.
        height: rows of the crop window.
        out_width: columns of the view.
        out_height: rows of the view.

    Raises:
        ValueError: a non-positive size.
    """

    source_width: int
    source_height: int
    flip: bool
    x0: int
    y0: int
    width: int
    height: int
    out_width: int
    out_height: int

    def __post_init__(self) -> None:
        sizes = (self.source_width, self.source_height, self.width, self.height, self.out_width, self.out_height)
        if min(sizes) < 1:
            raise ValueError(f"image, window and view sizes must be >= 1, got {sizes}")

    @property
    def sx(self) -> float:
        """Horizontal scale, view pixels per source pixel."""
        return self.out_width / self.width

    @property
    def sy(self) -> float:
        """Vertical scale, view pixels per source pixel."""
        return self.out_height / self.height

    def to_view(self, points: ArrayLike) -> np.ndarray:
        """Source points ``(..., 2)`` as ``(x, y)`` -> view points (float64)."""
        p = np.asarray(points, dtype=np.float64)
        x = (self.source_width - 1) - p[..., 0] if self.flip else p[..., 0]
        u = (x - self.x0 + 0.5) * self.sx - 0.5
        v = (p[..., 1] - self.y0 + 0.5) * self.sy - 0.5
        return np.stack([u, v], axis=-1)

    def to_source(self, points: ArrayLike) -> np.ndarray:
        """View points ``(..., 2)`` -> source points (float64); the inverse of :meth:`to_view`."""
        p = np.asarray(points, dtype=np.float64)
        x = (p[..., 0] + 0.5) / self.sx - 0.5 + self.x0
        y = (p[..., 1] + 0.5) / self.sy - 0.5 + self.y0
        if self.flip:
            x = (self.source_width - 1) - x
        return np.stack([x, y], axis=-1)

    def apply(self, image: torch.Tensor) -> torch.Tensor:
        """Cut the view out of ``image (C, H, W)`` (H, W must be the source size): ``(C, out_height, out_width)``.

        The window is zero-padded where it leaves the image; the resize is bilinear with
        antialiasing (``align_corners=False``), whose sampling positions are those of :meth:`to_view`.

        Raises:
            ValueError: the image is not ``(C, source_height, source_width)``.
        """
        if image.ndim != 3 or tuple(image.shape[1:]) != (self.source_height, self.source_width):
            raise ValueError(f"expected an image (C, {self.source_height}, {self.source_width}), "
                             f"got {tuple(image.shape)}")
        x = image.flip(-1) if self.flip else image
        h, w = x.shape[1:]
        pad_l, pad_t = max(0, -self.x0), max(0, -self.y0)
        pad_r, pad_b = max(0, self.x0 + self.width - w), max(0, self.y0 + self.height - h)
        if pad_l or pad_t or pad_r or pad_b:
            x = F.pad(x, (pad_l, pad_r, pad_t, pad_b))
        x0, y0 = self.x0 + pad_l, self.y0 + pad_t
        x = x[:, y0:y0 + self.height, x0:x0 + self.width]
        if (self.height, self.width) != (self.out_height, self.out_width):
            x = F.interpolate(x[None].float(), size=(self.out_height, self.out_width), mode="bilinear",
                              align_corners=False, antialias=True)[0]
        return x

    def as_tensor(self) -> torch.Tensor:
        """The numbers :func:`views_to_source` needs, ``(6,)`` float64 in :data:`VIEW_FIELDS` order."""
        return torch.tensor([self.source_width, float(self.flip), self.x0, self.y0, self.sx, self.sy],
                            dtype=torch.float64)


def views_to_source(points: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
    """Batched :meth:`ImageView.to_source`: view points ``(B, 2)`` with views ``(B, 6)`` -> source ``(B, 2)``.

    ``views`` rows are :meth:`ImageView.as_tensor` (a DataLoader stacks them); computed in float64.
    """
    p = points.to(torch.float64)
    v = views.to(device=p.device, dtype=torch.float64)
    x = (p[:, 0] + 0.5) / v[:, 4] - 0.5 + v[:, 2]
    y = (p[:, 1] + 0.5) / v[:, 5] - 0.5 + v[:, 3]
    x = torch.where(v[:, 1] > 0.5, (v[:, 0] - 1) - x, x)
    return torch.stack([x, y], dim=1)
