"""Backbone factory over MONAI networks.

Every method in medlearn asks this factory for a feature extractor: a network that maps an image
``(B, C, H, W[, D])`` to a pooled feature vector ``(B, F)``. The networks are MONAI's
dimension-agnostic implementations (He et al. ResNet, CVPR 2016; Huang et al. DenseNet, CVPR 2017;
Tan & Le EfficientNet, ICML 2019), so the same name gives a 2D or 3D model through ``spatial_dims``
and any input channel count through ``in_channels``. Pooling is adaptive, so any input size works
(the original C2L code used a fixed 7x7 pool that only accepted 224 px inputs).

Two small networks are written here by hand because no library has them: ``plaincnn`` and
``smallcnn``, the plain conv-BN-ReLU encoders of the CPU-scale experiments in the method specs
(``smallcnn-w16``: widths 16-32-64-64, the encoder of the AS-OCT spec's CPU experiment).

Examples:
    >>> import torch
    >>> net = build_backbone("resnet18", spatial_dims=2, in_channels=1)
    >>> net(torch.zeros(2, 1, 64, 64)).shape
    torch.Size([2, 512])
    >>> net.out_features
    512
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.networks.nets import DenseNet121, DenseNet169, EfficientNetBN, resnet
from torch import nn

__all__ = ["Backbone", "build_backbone", "list_backbones", "PlainCNN", "SmallCNN"]


class Backbone(nn.Module):
    """A feature extractor: ``(B, C, *spatial) -> (B, out_features)``.

    Args:
        body: the network without its classifier; must return ``(B, out_features)``.
        out_features: width of the returned features.
        name: registry name of the architecture.
        spatial_dims: 2 or 3.
        in_channels: input channels.
    """

    def __init__(self, body: nn.Module, out_features: int, name: str, spatial_dims: int, in_channels: int) -> None:
        super().__init__()
        self.body = body
        self.out_features = out_features
        self.name = name
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(B, out_features)`` of ``(B, in_channels, *spatial)`` (checks the shape)."""
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{self.name} expects input (B, {self.in_channels}, {'x'.join(['*'] * self.spatial_dims)}), "
                f"got {tuple(x.shape)}"
            )
        return self.body(x)


class PlainCNN(nn.Module):
    """Small plain (residual-free) encoder for CPU-scale experiments.

    A 3x3 stride-2 stem then four stages of two conv-BN-ReLU blocks (widths ``w, w, 2w (stride 2),
    4w (stride 2), 8w``), global average pooling. With ``width=16`` it is the encoder of the C2L
    spec's CPU experiment (~0.3 M parameters). Written by hand: no library ships this exact net.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        width: channels of the first stage.
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, width: int = 16) -> None:
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        norm = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d
        pool = nn.AdaptiveAvgPool2d(1) if spatial_dims == 2 else nn.AdaptiveAvgPool3d(1)

        def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [conv(cin, cout, 3, stride=stride, padding=1, bias=False), norm(cout), nn.ReLU(inplace=True)]

        widths = [width, width, 2 * width, 4 * width, 8 * width]
        layers: list[nn.Module] = block(in_channels, widths[0], 2)
        strides = [1, 2, 2, 1]
        for i, s in enumerate(strides):
            layers += block(widths[i], widths[i + 1], s) + block(widths[i + 1], widths[i + 1], 1)
        self.features = nn.Sequential(*layers)
        self.pool = pool
        self.out_features = widths[-1]
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(B, out_features)``."""
        return torch.flatten(self.pool(self.features(x)), 1)


class SmallCNN(nn.Module):
    """Tiny encoder for CPU-scale experiments: one [conv3 - BN - ReLU] per width, max-pool between, GAP.

    Widths 8/16/32/64 by default (~73 k parameters in 3D), full resolution in the first layer: the
    encoder of the Rubik's-cube spec's CPU experiment (``smallcnn``); ``smallcnn3`` (16/32/64) and
    ``smallcnn-w16`` (16/32/64/64) are the CCL-Net and AS-OCT specs' CPU encoders. Needs inputs of at
    least ``2 ** (len(widths) - 1)`` pixels per axis. Written by hand: no library ships this exact net.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        widths: channels of the four stages.
    """

    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, widths: tuple[int, ...] = (8, 16, 32, 64)) -> None:
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        norm = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d
        maxpool = nn.MaxPool2d if spatial_dims == 2 else nn.MaxPool3d
        layers: list[nn.Module] = []
        c = in_channels
        for i, w in enumerate(widths):
            if i:
                layers.append(maxpool(2))
            layers += [conv(c, w, 3, padding=1, bias=False), norm(w), nn.ReLU(inplace=True)]
            c = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1) if spatial_dims == 2 else nn.AdaptiveAvgPool3d(1)
        self.out_features = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(B, out_features)``."""
        return torch.flatten(self.pool(self.features(x)), 1)


def _monai_resnet(depth: int) -> Callable[[int, int], tuple[nn.Module, int]]:
    def make(spatial_dims: int, in_channels: int) -> tuple[nn.Module, int]:
        fn = getattr(resnet, f"resnet{depth}")
        # feed_forward=False drops the fc: forward returns the flattened adaptive-pooled features.
        net = fn(spatial_dims=spatial_dims, n_input_channels=in_channels, feed_forward=False, num_classes=1,
                 conv1_t_size=7, conv1_t_stride=2)
        width = 512 if depth in (10, 18, 34) else 2048
        return net, width

    return make


def _monai_densenet(cls: type[nn.Module], width: int) -> Callable[[int, int], tuple[nn.Module, int]]:
    def make(spatial_dims: int, in_channels: int) -> tuple[nn.Module, int]:
        net = cls(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=1)
        head = net.get_submodule("class_layers")
        head.add_module("out", nn.Identity())  # keep relu -> pool -> flatten
        return net, width

    return make


def _monai_efficientnet(variant: str) -> Callable[[int, int], tuple[nn.Module, int]]:
    def make(spatial_dims: int, in_channels: int) -> tuple[nn.Module, int]:
        net = EfficientNetBN(variant, pretrained=False, spatial_dims=spatial_dims, in_channels=in_channels,
                             num_classes=1)
        width = net._fc.in_features
        net.add_module("_fc", nn.Identity())  # pooled features, no classifier
        return net, width

    return make


def _plaincnn(width: int) -> Callable[[int, int], tuple[nn.Module, int]]:
    def make(spatial_dims: int, in_channels: int) -> tuple[nn.Module, int]:
        net = PlainCNN(spatial_dims, in_channels, width)
        return net, net.out_features

    return make


def _smallcnn(widths: tuple[int, ...] = (8, 16, 32, 64)) -> Callable[[int, int], tuple[nn.Module, int]]:
    def make(spatial_dims: int, in_channels: int) -> tuple[nn.Module, int]:
        net = SmallCNN(spatial_dims, in_channels, widths)
        return net, net.out_features

    return make


_FACTORIES: dict[str, Callable[[int, int], tuple[nn.Module, int]]] = {
    **{f"resnet{d}": _monai_resnet(d) for d in (10, 18, 34, 50, 101, 152)},
    "densenet121": _monai_densenet(DenseNet121, 1024),
    "densenet169": _monai_densenet(DenseNet169, 1664),
    **{f"efficientnet-b{i}": _monai_efficientnet(f"efficientnet-b{i}") for i in range(8)},
    "plaincnn": _plaincnn(16),
    "smallcnn": _smallcnn(),
    # three conv blocks 16/32/64 with max-pooling: the CCL-Net spec's CPU experiment
    "smallcnn3": _smallcnn((16, 32, 64)),
    # 16-32-64-64: the AS-OCT spec's CPU encoder
    "smallcnn-w16": _smallcnn((16, 32, 64, 64)),
    "plaincnn-w32": _plaincnn(32),
}


def list_backbones() -> list[str]:
    """Names accepted by :func:`build_backbone`."""
    return sorted(_FACTORIES)


def build_backbone(name: str, spatial_dims: int = 2, in_channels: int = 1) -> Backbone:
    """Build a randomly initialised feature extractor.

    Args:
        name: one of :func:`list_backbones` (``resnet10..152``, ``densenet121/169``,
            ``efficientnet-b0..b7``, ``plaincnn``).
        spatial_dims: 2 for images, 3 for volumes.
        in_channels: input channel count (1 for radiographs, 4 for BraTS, ...).

    Returns:
        A :class:`Backbone` whose ``forward`` maps ``(B, in_channels, *spatial)`` to ``(B, out_features)``.

    Raises:
        ValueError: unknown name or unsupported ``spatial_dims``.
    """
    if name not in _FACTORIES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(list_backbones())}")
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    body, width = _FACTORIES[name](spatial_dims, in_channels)
    return Backbone(body, width, name, spatial_dims, in_channels)
