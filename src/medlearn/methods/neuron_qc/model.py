"""Per-node classifiers of tracing QC: a small 3D CNN on the block, and a 2.5-D variant on its projections.

The spec's CPU-scale network (methods/neuron_qc.md section 5, model B): 3x3x3 convolutions with 16, 32
and 32 channels, each followed by BatchNorm, ReLU and 2x max-pooling, global average pooling and a
2-way linear layer. The 2.5-D variant (section 2.3's cheaper alternative) sees the three maximum
intensity projections (xy, xz, yz) of every channel, each through its own 2D CNN of the same widths,
with the pooled features concatenated before the linear layer. Paper scale (section 2.3: a 3D
ResNet-18-style CNN, global average pooling, a linear 2-way head) is ``arch: resnet18``: any 3D
backbone of :func:`medlearn.nn.backbones.build_backbone` (MONAI's ResNets, DenseNets) with a linear
head (``configs/neuron_qc/paper.yaml``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medlearn.nn.backbones import build_backbone, list_backbones

__all__ = ["ARCHS", "NodeCNN", "NodeMIPNet", "NodeBackboneNet", "build_node_classifier"]

#: medlearn's own small networks; any 3D backbone name of :func:`medlearn.nn.backbones.list_backbones` works too
ARCHS = ("cnn3d", "mip")


def _stack(dims: int, in_channels: int, widths: Sequence[int]) -> nn.Sequential:
    conv, bn, pool = (nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d) if dims == 3 else (nn.Conv2d, nn.BatchNorm2d,
                                                                                     nn.MaxPool2d)
    layers: list[nn.Module] = []
    c = in_channels
    for w in widths:
        layers += [conv(c, w, 3, padding=1, bias=False), bn(w), nn.ReLU(inplace=True),
                   pool(2, ceil_mode=True)]
        c = w
    return nn.Sequential(*layers)


class NodeCNN(nn.Module):
    """3D CNN on per-node blocks ``(B, C, z, y, x)`` -> logits ``(B, 2)`` (correct, wrong).

    Args:
        in_channels: block channels (image, trace, centre path).
        widths: channels of the conv stages (each halves the block; ``ceil_mode`` pooling keeps
            thin z extents alive).
    """

    def __init__(self, in_channels: int = 2, widths: Sequence[int] = (16, 32, 32)) -> None:
        super().__init__()
        self.features = _stack(3, in_channels, widths)
        self.head = nn.Linear(widths[-1], 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the blocks."""
        return self.head(self.features(x).mean(dim=(2, 3, 4)))


class NodeMIPNet(nn.Module):
    """2.5-D classifier: the xy, xz and yz maximum projections of a block, one 2D CNN each.

    Args:
        in_channels: block channels.
        widths: channels of each view's conv stages.
    """

    def __init__(self, in_channels: int = 2, widths: Sequence[int] = (16, 32, 32)) -> None:
        super().__init__()
        self.views = nn.ModuleList([_stack(2, in_channels, widths) for _ in range(3)])
        self.head = nn.Linear(3 * widths[-1], 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the blocks ``(B, C, z, y, x)``."""
        mips = (x.amax(dim=2), x.amax(dim=3), x.amax(dim=4))  # xy, xz, yz
        feats = [net(m).mean(dim=(2, 3)) for net, m in zip(self.views, mips)]
        return self.head(torch.cat(feats, dim=1))


class NodeBackboneNet(nn.Module):
    """A 3D backbone (pooled features) and a linear 2-way head: the paper-scale per-node classifier.

    Args:
        name: a :func:`medlearn.nn.backbones.build_backbone` name (``resnet18`` ...).
        in_channels: block channels.
    """

    def __init__(self, name: str = "resnet18", in_channels: int = 2) -> None:
        super().__init__()
        self.backbone = build_backbone(name, spatial_dims=3, in_channels=in_channels)
        self.head = nn.Linear(self.backbone.out_features, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the blocks ``(B, C, z, y, x)``."""
        return self.head(self.backbone(x))


def build_node_classifier(arch: str, in_channels: int, widths: Sequence[int]) -> nn.Module:
    """The classifier named ``arch``: :data:`ARCHS` (``widths`` apply) or a 3D backbone name."""
    if arch == "cnn3d":
        return NodeCNN(in_channels, widths)
    if arch == "mip":
        return NodeMIPNet(in_channels, widths)
    if arch in list_backbones():
        return NodeBackboneNet(arch, in_channels)
    raise ValueError(f"arch must be one of {ARCHS} or a backbone ({', '.join(list_backbones())}), got {arch!r}")
