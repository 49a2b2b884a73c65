"""Pyramid pooling module (PPM) of PSPNet.

Zhao, Shi, Qi, Wang, Jia: "Pyramid Scene Parsing Network", CVPR 2017 (arXiv:1612.01105). The
feature map is average-pooled to a few grid sizes (bins, e.g. 1, 2, 3, 6), each pooled map is
projected by a 1x1 conv-norm-ReLU to ``C / reduction`` channels and upsampled back (bilinear), and
the input and the upsampled maps are concatenated and fused by a 3x3 conv-norm-ReLU. It gives every
position of a low-resolution bottleneck the context of the whole image at several scales; the AS-OCT
spur localiser of Yuan et al. (arXiv:1910.10414) puts it at the bottleneck of its U-Net.

Written by hand (MONAI has no PPM); the layout follows ``hszhao/semseg`` (``model/pspnet.py``) and
``segmentation_models_pytorch`` (``decoders/pspnet/decoder.py``), with MONAI's ``Convolution`` blocks
so that it serves 2D and 3D through ``spatial_dims``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn

__all__ = ["PyramidPooling"]


class PyramidPooling(nn.Module):
    """``(B, C, *spatial) -> (B, out_channels, *spatial)``: input + pooled context at ``bins`` grid sizes.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels ``C`` of the input.
        bins: output sizes of the adaptive average pooling (PSPNet: 1, 2, 3, 6).
        reduction: each branch has ``max(C // reduction, 1)`` channels (PSPNet: 4, with 4 bins).
        out_channels: channels of the fused output (default ``C``, so the module drops into an
            existing network).
        norm: MONAI norm name of the conv blocks.

    Note: a branch pooled to one position normalises over the batch only; with BatchNorm, training
    needs batches of at least 2 (the medlearn loaders drop the last incomplete training batch).

    Examples:
        >>> ppm = PyramidPooling(2, 64, bins=(1, 2, 4))
        >>> ppm(torch.zeros(2, 64, 8, 8)).shape
        torch.Size([2, 64, 8, 8])
    """

    def __init__(self, spatial_dims: int, in_channels: int, bins: Sequence[int] = (1, 2, 3, 6), reduction: int = 4,
                 out_channels: int | None = None, norm: str = "batch") -> None:
        super().__init__()
        if not bins or min(bins) < 1:
            raise ValueError(f"bins must be positive grid sizes, got {list(bins)}")
        self.spatial_dims = spatial_dims
        self.bins = tuple(int(b) for b in bins)
        branch = max(in_channels // reduction, 1)
        pool = nn.AdaptiveAvgPool2d if spatial_dims == 2 else nn.AdaptiveAvgPool3d
        self.branches = nn.ModuleList(
            nn.Sequential(pool(b), Convolution(spatial_dims, in_channels, branch, kernel_size=1, norm=norm, act="relu"))
            for b in self.bins)
        self.out_channels = int(out_channels or in_channels)
        self.fuse = Convolution(spatial_dims, in_channels + branch * len(self.bins), self.out_channels, kernel_size=3,
                                norm=norm, act="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, *spatial)`` -> ``(B, out_channels, *spatial)``: input fused with its pooled context."""
        size = x.shape[2:]
        mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
        pooled = [F.interpolate(b(x), size=size, mode=mode, align_corners=False) for b in self.branches]
        return self.fuse(torch.cat([x, *pooled], dim=1))
