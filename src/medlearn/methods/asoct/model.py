"""Scleral-spur localisers: the heatmap U-Net with pyramid pooling, and the direct-regression baseline.

Yuan, Bian et al., "Identification of primary angle-closure on AS-OCT images with Convolutional
Neural Networks", arXiv:1910.10414 (AGE challenge, MICCAI 2019): an EfficientNet encoder, skip
connections and a pyramid pooling module predict the spur's heatmap. The paper's decoder details are
not known (``methods/asoct.md`` section 2.2); medlearn uses :class:`~medlearn.nn.BackboneUNet` (U-Net
levels: upsample x2, concatenate the encoder skip, two 3x3 conv-BN-ReLU) with a PSPNet PPM on the
deepest features and a 1x1 head to one channel, no activation (MSE-type targets).

The baseline regresses the coordinates directly from the same encoder: global average pooling, a
linear layer to 2 outputs, a sigmoid (coordinates as fractions of the view, pixel edges at 0 and 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medlearn.nn import BackboneUNet, build_backbone

__all__ = ["CoordinateRegressor", "HEADS", "build_localizer"]

#: Localiser heads: ``"heatmap"`` (U-Net + PPM, one map) or ``"regression"`` (pooled features -> (x, y)).
HEADS: tuple[str, ...] = ("heatmap", "regression")


class CoordinateRegressor(nn.Module):
    """Factory encoder -> global average pooling -> Linear(F, 2) -> sigmoid: ``(B, C, H, W) -> (B, 2)`` in (0, 1).

    Args:
        encoder: backbone factory name.
        in_channels: input channels.
    """

    def __init__(self, encoder: str, in_channels: int = 1) -> None:
        super().__init__()
        self.backbone = build_backbone(encoder, 2, in_channels)
        self.fc = nn.Linear(self.backbone.out_features, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Spur coordinates ``(B, 2)`` as fractions of the view, from images ``(B, C, H, W)``."""
        return torch.sigmoid(self.fc(self.backbone(x)))


def build_localizer(head: str, encoder: str, in_channels: int = 1, ppm_bins: Sequence[int] | None = (1, 2, 3, 6),
                    decoder_channels: Sequence[int] | None = None) -> nn.Module:
    """The localiser network of ``head`` on the factory encoder ``encoder``.

    ``"heatmap"``: ``BackboneUNet(encoder, out_channels=1, ppm_bins=...)``, a map at the input resolution;
    ``"regression"``: :class:`CoordinateRegressor`.

    Raises:
        ValueError: an unknown head (or an encoder the U-Net cannot cut into stages).
    """
    if head == "heatmap":
        return BackboneUNet(encoder, 2, in_channels, 1, decoder_channels=decoder_channels, ppm_bins=ppm_bins)
    if head == "regression":
        return CoordinateRegressor(encoder, in_channels)
    raise ValueError(f"head must be one of {HEADS}, got {head!r}")
