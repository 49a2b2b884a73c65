"""A U-Net whose encoder is a factory backbone, so that pretrained encoders transfer to segmentation.

The U-Net (Ronneberger, Fischer, Brox, "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015; 3D: Çiçek, Abdulkadir, Lienkamp, Brox, Ronneberger, "3D U-Net:
Learning Dense Volumetric Segmentation from Sparse Annotation", MICCAI 2016) is an encoder that
halves the resolution stage by stage and a decoder that doubles it back, each decoder level
concatenating the encoder's feature map of the same resolution (the skip connection).

:class:`BackboneUNet` takes its encoder from :func:`medlearn.nn.build_backbone` unchanged (the
attribute ``backbone``, so its state-dict keys are ``backbone.body.*``, exactly those of
:class:`medlearn.tasks.ImageClassifier`): a Rubik's-cube, C2L or classifier checkpoint loads into
it with :func:`medlearn.engine.checkpoint.load_pretrained` (``{"octad.encoder.": "backbone."}``)
with no missing key. :func:`encoder_stages` cuts the backbone's body into its resolution stages
(the modules are the backbone's own, not copies); only this glue is written by hand. The decoder
is built from MONAI blocks (``UpSample``, ``Convolution``).

Supported encoders (``spatial_dims`` 2 or 3):

============  ==================================================  =====================
name          stages (channels at stride)                          total stride
============  ==================================================  =====================
``smallcnn``  8 @1, 16 @2, 32 @4, 64 @8                            8
``plaincnn``  16 @2, 32 @4, 128 @8 (``plaincnn-w32``: x2 widths)   8
``resnet*``   stem 64 @2, layer1 @4, layer2 @8, layer3 @16,         32
              layer4 @32 (MONAI ResNet-10 ... 152)
``efficient-  stem + stack 1 @2, stack 2 @4, stack 3 @8,            32
net-b*``      stacks 4-5 @16, stacks 6-7 @32 (MONAI EfficientNet-B0 ... B7; the
              stride 2-32 features of ``EfficientNetBNFeatures`` / timm's ``features_only``)
============  ==================================================  =====================

DenseNet encoders are not supported here (:func:`encoder_stages` raises a ``ValueError``).

``ppm_bins`` adds a pyramid pooling module (:class:`~medlearn.nn.pyramid_pooling.PyramidPooling`,
PSPNet) on the deepest feature map before the decoder: the EfficientNet + skip connections + PPM
localiser of the AS-OCT method (Yuan et al., arXiv:1910.10414).

The output has the input's spatial size when every spatial size is a multiple of the encoder's
total stride (:attr:`BackboneUNet.total_stride`: 8 for ``smallcnn`` / ``plaincnn``, 32 for the
ResNets and EfficientNets); other sizes raise a ``ValueError`` (pad the volume, or use
sliding-window inference with a window that is a multiple of it).

Examples:
    >>> import torch
    >>> net = BackboneUNet("smallcnn", spatial_dims=3, in_channels=4, out_channels=4)
    >>> net(torch.zeros(1, 4, 16, 16, 16)).shape
    torch.Size([1, 4, 16, 16, 16])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution, UpSample
from monai.networks.nets.efficientnet import EfficientNet
from monai.networks.nets.resnet import ResNet
from torch import nn
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.pooling import _AvgPoolNd, _MaxPoolNd

from medlearn.nn.backbones import Backbone, PlainCNN, SmallCNN, build_backbone
from medlearn.nn.pyramid_pooling import PyramidPooling

__all__ = ["BackboneUNet", "EncoderStage", "encoder_stages", "SUPPORTED_ENCODERS"]

#: Backbone families :func:`encoder_stages` can cut into stages (``resnet*`` = any MONAI ResNet).
SUPPORTED_ENCODERS: tuple[str, ...] = ("smallcnn", "smallcnn-w16", "plaincnn", "plaincnn-w32", "resnet10", "resnet18",
                                       "resnet34", "resnet50", "resnet101", "resnet152",
                                       *(f"efficientnet-b{i}" for i in range(8)))


class EncoderStage(nn.Sequential):
    """One resolution stage of an encoder: the backbone's own modules, run in order.

    Attributes:
        out_channels: channels of the stage's output.
        stride: the output's total stride with respect to the network input.
    """

    def __init__(self, modules: Sequence[nn.Module], out_channels: int, stride: int) -> None:
        super().__init__(*modules)
        self.out_channels = int(out_channels)
        self.stride = int(stride)


def _stride_of(module: nn.Module) -> int:
    """The downsampling factor of one stage: the largest conv / pooling stride inside it.

    (A stage downsamples once; a ResNet layer's main path and its shortcut downsample in parallel.)
    """
    s = 1
    for m in module.modules():
        if isinstance(m, (_ConvNd, _MaxPoolNd, _AvgPoolNd)):
            st = m.stride
            s = max(s, *(st if isinstance(st, tuple) else (st,)))
    return s


def _channels_of(modules: Sequence[nn.Module]) -> int:
    """Output channels: those of the last normalisation (or convolution) layer in the modules."""
    for mod in reversed(modules):
        for m in reversed(list(mod.modules())):
            if isinstance(m, nn.modules.batchnorm._NormBase):
                return int(m.num_features)
            if isinstance(m, _ConvNd):
                return int(m.out_channels)
    raise ValueError("cannot infer the output channels of an encoder stage (no conv or norm layer)")


def _split_sequential(features: nn.Sequential | Sequence[nn.Module]) -> list[EncoderStage]:
    """Cut a plain conv stack into stages, a new stage starting at each downsampling module."""
    groups: list[list[nn.Module]] = []
    strides: list[int] = []
    total = 1
    for m in features:
        s = _stride_of(m)
        if not groups or s > 1:
            total *= s
            groups.append([])
            strides.append(total)
        groups[-1].append(m)
    return [EncoderStage(g, _channels_of(g), st) for g, st in zip(groups, strides)]


def _resnet_stages(net: ResNet) -> list[EncoderStage]:
    stem = [net.conv1, net.bn1, net.act]
    s = _stride_of(net.conv1)
    stages = [EncoderStage(stem, _channels_of(stem), s)]
    first = [net.layer1] if net.no_max_pool else [net.maxpool, net.layer1]
    for mods in (first, [net.layer2], [net.layer3], [net.layer4]):
        s *= max(_stride_of(m) for m in mods)
        stages.append(EncoderStage(mods, _channels_of(mods), s))
    return stages


def _efficientnet_stages(net: EfficientNet) -> list[EncoderStage]:
    """Stem, then MBConv stacks; a stage starts at each stack that downsamples (head conv excluded)."""
    stem = nn.Sequential(net._conv_stem_padding, net._conv_stem, net._bn0, net._swish)
    return _split_sequential([stem, *net._blocks])


def encoder_stages(backbone: Backbone) -> list[EncoderStage]:
    """Cut a factory backbone into its resolution stages, shallow to deep.

    Stage ``i`` maps the output of stage ``i - 1`` (stage 0: the input image) to a feature map of
    ``stages[i].out_channels`` channels at ``stages[i].stride`` of the input resolution; running
    them in order is the backbone's forward pass without its global pooling. The stages hold the
    backbone's own modules (no copies): training them trains the backbone.

    Supported: ``smallcnn``, ``plaincnn`` (any width), MONAI ``resnet10..152`` and
    ``efficientnet-b0..b7`` (without their 1x1 head convolution, which only feeds the pooled features).

    Args:
        backbone: a :class:`~medlearn.nn.backbones.Backbone` from :func:`~medlearn.nn.build_backbone`.

    Returns:
        The stages; strides strictly increase.

    Raises:
        ValueError: an unsupported encoder (DenseNet).
    """
    body = backbone.body if isinstance(backbone, Backbone) else backbone
    if isinstance(body, (SmallCNN, PlainCNN)):
        return _split_sequential(body.features)
    if isinstance(body, ResNet):
        return _resnet_stages(body)
    if isinstance(body, EfficientNet):
        return _efficientnet_stages(body)
    name = getattr(backbone, "name", type(body).__name__)
    raise ValueError(
        f"BackboneUNet cannot use the encoder {name!r}: only smallcnn, plaincnn, the MONAI ResNets "
        f"(resnet10..152) and EfficientNets (efficientnet-b0..b7) are cut into U-Net stages. For DenseNet "
        f"encoders use MONAI's monai.networks.nets.FlexibleUNet."
    )


class _DecoderLevel(nn.Module):
    """Upsample, concatenate the skip (if any), two conv-norm-ReLU blocks (MONAI blocks)."""

    def __init__(self, spatial_dims: int, in_channels: int, skip_channels: int, out_channels: int, scale: int,
                 norm: str) -> None:
        super().__init__()
        self.up = UpSample(spatial_dims, in_channels, out_channels, scale_factor=scale, mode="deconv")
        self.conv = nn.Sequential(
            Convolution(spatial_dims, out_channels + skip_channels, out_channels, kernel_size=3, norm=norm,
                        act="relu"),
            Convolution(spatial_dims, out_channels, out_channels, kernel_size=3, norm=norm, act="relu"),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = self.up(x)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv(x)


class BackboneUNet(nn.Module):
    """U-Net with a factory backbone as encoder (Ronneberger et al. 2015; 3D: Çiçek et al. 2016).

    Decoder: from the deepest stage up, one level per shallower encoder stage (transposed-conv
    upsampling to that stage's resolution, concatenation of its feature map, two 3x3 conv-norm-ReLU
    blocks), then, when the shallowest stage is not at full resolution (``plaincnn``, ResNets), x2
    levels without skip up to the input resolution; a final 1x1 convolution gives the logits.

    Args:
        backbone: factory name (:data:`SUPPORTED_ENCODERS`).
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes, background included).
        decoder_channels: widths of the decoder levels, deepest first; default: the width of the
            skip of each level (the classic symmetric U-Net), and half the shallowest skip width
            (at least 8) for the levels without skip. Its length must be :attr:`n_decoder_levels`.
        norm: decoder normalisation (MONAI name: ``"batch"``, ``"instance"`` ...).
        ppm_bins: grid sizes of a pyramid pooling module on the deepest feature map (PSPNet: 1, 2,
            3, 6); ``None``: no PPM (the plain U-Net).

    Attributes:
        backbone: the encoder (:class:`~medlearn.nn.backbones.Backbone`; keys ``backbone.body.*``).
        stages: :func:`encoder_stages` of it (not registered again as sub-modules).
        total_stride: spatial sizes must be multiples of it.
        n_decoder_levels: number of decoder levels.

    Raises:
        ValueError: an unsupported backbone or a ``decoder_channels`` of the wrong length.
    """

    def __init__(self, backbone: str, spatial_dims: int, in_channels: int, out_channels: int,
                 decoder_channels: Sequence[int] | None = None, norm: str = "batch",
                 ppm_bins: Sequence[int] | None = None) -> None:
        super().__init__()
        self.backbone = build_backbone(backbone, spatial_dims, in_channels)
        stages = encoder_stages(self.backbone)
        # backbone parts outside every stage (EfficientNet's 1x1 head conv, which only feeds the pooled
        # features) get no gradient here: freeze them, so optimisers and DDP see only what is used
        in_stages = {id(p) for st in stages for p in st.parameters()}
        for p in self.backbone.parameters():
            if id(p) not in in_stages:
                p.requires_grad_(False)
        # a plain list (not a ModuleList): the parameters belong to self.backbone only, so the
        # state dict has each tensor once, under backbone.*
        self.stages = stages
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.total_stride = stages[-1].stride
        skips = [(st.out_channels, st.stride) for st in stages[:-1]][::-1]  # deep to shallow
        n_extra = 0
        s = stages[0].stride
        while s > 1:
            n_extra += 1
            s //= 2
        if stages[0].stride != 2**n_extra:
            raise ValueError(f"the first stage's stride {stages[0].stride} is not a power of 2")
        self.n_decoder_levels = len(skips) + n_extra
        if decoder_channels is None:
            extra_w = max(stages[0].out_channels // 2, 8)
            decoder_channels = [c for c, _ in skips] + [extra_w] * n_extra
        decoder_channels = [int(c) for c in decoder_channels]
        if len(decoder_channels) != self.n_decoder_levels:
            raise ValueError(f"decoder_channels needs {self.n_decoder_levels} widths for {backbone!r} (deepest "
                             f"first), got {len(decoder_channels)}")
        levels: list[_DecoderLevel] = []
        c_in, stride_in = stages[-1].out_channels, stages[-1].stride
        for i, c_out in enumerate(decoder_channels):
            if i < len(skips):
                c_skip, stride_out = skips[i]
            else:
                c_skip, stride_out = 0, stride_in // 2
            levels.append(_DecoderLevel(spatial_dims, c_in, c_skip, c_out, stride_in // stride_out, norm))
            c_in, stride_in = c_out, stride_out
        self.decoder = nn.ModuleList(levels)
        deepest = stages[-1].out_channels
        self.ppm = PyramidPooling(spatial_dims, deepest, ppm_bins, norm=norm) if ppm_bins else None
        self.head = Convolution(spatial_dims, c_in, out_channels, kernel_size=1, conv_only=True, bias=True)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feature maps of every encoder stage, shallow to deep."""
        feats = []
        for st in self.stages:
            x = st(x)
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, out_channels, *spatial)`` of ``(B, in_channels, *spatial)`` inputs.

        Raises:
            ValueError: wrong rank or channels, or a spatial size not a multiple of
                :attr:`total_stride`.
        """
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"BackboneUNet expects (B, {self.in_channels}, {'x'.join('*' * self.spatial_dims)}), "
                             f"got {tuple(x.shape)}")
        bad = [int(s) for s in x.shape[2:] if s % self.total_stride]
        if bad:
            raise ValueError(f"spatial size {tuple(x.shape[2:])} is not a multiple of the encoder's total stride "
                             f"{self.total_stride}; pad the input or use sliding-window inference with a window "
                             f"that is a multiple of it")
        feats = self.encode(x)
        skips = feats[:-1][::-1]
        y = feats[-1] if self.ppm is None else self.ppm(feats[-1])
        for i, level in enumerate(self.decoder):
            y = level(y, skips[i] if i < len(skips) else None)
        return self.head(y)
