"""The segmenter each cross-denoising peer is: a small MONAI U-Net on CPU, a factory-encoder U-Net at scale.

The paper's backbone is not stated in the readable text (``methods/cross_denoise.md`` 2.2); the
optic disc / cup domain-adaptation work of its year uses DeepLabv3+ on MobileNetV2 (pOSAL, BEAL),
for which a U-Net is the spec's accepted substitute. Two families, chosen by ``backbone``:

* ``"unet"``: MONAI's :class:`~monai.networks.nets.UNet` with ``channels`` per level (the spec's
  CPU experiment: 3 levels, 8 / 16 / 32 channels, batch normalisation, strided convolutions
  down and transposed convolutions up, one residual unit per block by default);
* any encoder of :class:`medlearn.nn.unet.BackboneUNet` (``resnet34``, ``efficientnet-b0`` ...):
  a U-Net decoder on a factory backbone, for the paper-scale configs.

Both map ``(B, in_channels, H, W)`` to logits ``(B, num_classes, H, W)``.

Examples:
    >>> import torch
    >>> net = build_segmenter("unet", in_channels=3, num_classes=3, channels=(8, 16, 32))
    >>> net(torch.zeros(2, 3, 48, 48)).shape
    torch.Size([2, 3, 48, 48])
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.layers import Norm
from monai.networks.nets import UNet
from torch import nn

from medlearn.nn.unet import BackboneUNet

__all__ = ["build_segmenter", "input_multiple"]


def build_segmenter(backbone: str, in_channels: int, num_classes: int, channels: Sequence[int] = (8, 16, 32),
                    num_res_units: int = 1) -> nn.Module:
    """One peer network.

    Args:
        backbone: ``"unet"`` (MONAI U-Net with ``channels``) or a :class:`~medlearn.nn.unet.BackboneUNet`
            encoder name.
        in_channels: image channels.
        num_classes: output classes (3: background, rim, cup).
        channels: ``"unet"``: channels per level (len >= 2).
        num_res_units: ``"unet"``: residual units per block (0: one plain convolution per level, whose
            stride-2 transposed output convolution left stripes in the predicted cups of our pilot;
            1, the default: a residual unit after each, which removes them at the same speed here).

    Returns:
        The network.
    """
    if backbone == "unet":
        chans = tuple(int(c) for c in channels)
        if len(chans) < 2:
            raise ValueError(f"a U-Net needs at least 2 levels, got channels={chans}")
        return UNet(spatial_dims=2, in_channels=in_channels, out_channels=num_classes, channels=chans,
                    strides=(2,) * (len(chans) - 1), num_res_units=num_res_units, norm=Norm.BATCH)
    return BackboneUNet(backbone, 2, in_channels, num_classes)


def input_multiple(net: nn.Module, channels: Sequence[int] = (8, 16, 32)) -> int:
    """The side every input must be a multiple of (the network's total stride)."""
    if isinstance(net, BackboneUNet):
        return int(net.total_stride)
    return 2 ** (len(tuple(channels)) - 1)
