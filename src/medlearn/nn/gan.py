"""GAN networks shared by the image-to-image methods: PatchGAN, U-Net and ResNet generators, code tiling.

This module owns the generator and discriminator *architectures* of pix2pix / CycleGAN (Isola et
al., "Image-to-Image Translation with Conditional Adversarial Networks", CVPR 2017,
arXiv:1611.07004; Zhu et al., "Unpaired Image-to-Image Translation using Cycle-Consistent
Adversarial Networks", ICCV 2017, arXiv:1703.10593) for 2D and 3D (``spatial_dims``):

- :func:`patch_discriminator`: the N-layer PatchGAN (70x70 receptive field with 3 layers) as
  MONAI's :class:`~monai.networks.nets.PatchDiscriminator` builds it, wrapped by
  :class:`PatchGAN` so that it returns the logit map only.
- :class:`UNetGenerator`: the pix2pix U-Net (``unet_128`` = 7 downsamplings, ``unet_256`` = 8):
  Conv 4x4 s2 + LeakyReLU(0.2) down, ReLU + ConvTranspose 4x4 s2 up, a skip concatenation at
  every level, optional dropout 0.5 in the three innermost decoder blocks, Tanh output. MONAI's
  ``UNet`` is a residual-unit U-Net with another layout, so the pix2pix one is built here from
  MONAI's layer factories.
- :class:`ResNetGenerator`: CycleGAN's ResNet generator (c7s1-ngf, two stride-2 downs,
  ``n_blocks`` residual blocks with reflection padding, two ups, c7s1, Tanh); MONAI has no such
  network.
- :func:`tile_code`: a per-sample code vector tiled to the image size and concatenated as
  channels (StarGAN-style conditioning, as MGAN's generator uses it).
- :class:`ResBlock`: CycleGAN's residual block (also VideoGAN's fused bottleneck).
- :func:`init_gan_weights`: pix2pix's ``init_weights`` (normal / xavier / kaiming, gain 0.02).
"""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.layers.factories import Conv, Norm
from monai.networks.nets import PatchDiscriminator
from torch import nn

__all__ = ["PatchGAN", "ResBlock", "ResNetGenerator", "UNetGenerator", "init_gan_weights", "patch_discriminator",
           "tile_code"]

_NORMS = ("batch", "instance", "none")


def _norm(norm: str, spatial_dims: int, channels: int) -> nn.Module:
    if norm == "batch":
        return Norm[Norm.BATCH, spatial_dims](channels)
    if norm == "instance":
        return Norm[Norm.INSTANCE, spatial_dims](channels, affine=False, track_running_stats=False)
    return nn.Identity()


def _check_norm(norm: str) -> None:
    if norm not in _NORMS:
        raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")


def tile_code(x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """Concatenate a per-sample code, tiled over space, to ``x`` as channels.

    Args:
        x: ``(B, C, *spatial)``.
        code: ``(B, K)``.

    Returns:
        ``(B, C + K, *spatial)``.

    Examples:
        >>> tile_code(torch.zeros(2, 1, 4, 4), torch.eye(2)).shape
        torch.Size([2, 3, 4, 4])
    """
    if code.ndim != 2 or code.shape[0] != x.shape[0]:
        raise ValueError(f"code must be (B, K) with B={x.shape[0]}, got {tuple(code.shape)}")
    c = code.to(x.dtype).reshape(*code.shape, *([1] * (x.ndim - 2))).expand(-1, -1, *x.shape[2:])
    return torch.cat([x, c], 1)


def init_gan_weights(net: nn.Module, init_type: str = "normal", gain: float = 0.02) -> nn.Module:
    """pix2pix / CycleGAN initialisation: conv and linear weights ``N(0, gain)`` (or xavier /
    kaiming), biases 0, BatchNorm weights ``N(1, gain)``.

    Returns:
        ``net``, initialised in place.
    """
    if init_type not in ("normal", "xavier", "kaiming"):
        raise ValueError(f"init_type must be normal, xavier or kaiming, got {init_type!r}")
    for m in net.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)):
            if init_type == "normal":
                nn.init.normal_(m.weight, 0.0, gain)
            elif init_type == "xavier":
                nn.init.xavier_normal_(m.weight, gain=gain)
            else:
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return net


# ----------------------------------------------------------------------------------- discriminator
class PatchGAN(nn.Module):
    """The N-layer PatchGAN discriminator: a map of real/fake logits, one per receptive field.

    MONAI's :class:`~monai.networks.nets.PatchDiscriminator` (which returns every intermediate
    feature map) with the pix2pix settings: kernel 4, padding 1, LeakyReLU(0.2), strides 2 for
    the first ``num_layers`` convolutions and 1 for the last two; 3 layers = the 70x70 PatchGAN.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (a conditional pix2pix D sees ``source + target`` channels).
        channels: width of the first layer (``ndf``; doubled per layer up to 8x).
        num_layers: stride-2 layers (3: 70x70 receptive field).
        norm: ``"batch"`` (pix2pix), ``"instance"`` (CycleGAN) or ``"none"``.

    Shapes:
        ``(B, in_channels, H, W[, D])`` -> ``(B, 1, H', W'[, D'])`` logits (``H' = H/8 - 2`` for
        3 layers).
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 2, channels: int = 64, num_layers: int = 3,
                 norm: str = "batch") -> None:
        super().__init__()
        _check_norm(norm)
        monai_norm: Any = ("INSTANCE", {"affine": False}) if norm == "instance" else "BATCH"
        self.net = PatchDiscriminator(spatial_dims=spatial_dims, channels=channels, in_channels=in_channels,
                                      out_channels=1, num_layers_d=num_layers, kernel_size=4, norm=monai_norm,
                                      bias=norm != "batch", padding=1)
        if norm == "none":  # MONAI always inserts a norm layer: replace them by identities
            for mod in list(self.net.modules()):
                for child_name, child in list(mod.named_children()):
                    if isinstance(child, (nn.BatchNorm2d, nn.BatchNorm3d)):
                        setattr(mod, child_name, nn.Identity())
        init_gan_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The logit map of ``x``."""
        out = self.net(x)
        return out[-1] if isinstance(out, (list, tuple)) else out


def patch_discriminator(spatial_dims: int = 2, in_channels: int = 2, channels: int = 64, num_layers: int = 3,
                        norm: str = "batch") -> PatchGAN:
    """A :class:`PatchGAN` (pix2pix defaults: 70x70, ndf 64, BatchNorm)."""
    return PatchGAN(spatial_dims, in_channels, channels, num_layers, norm)


# ------------------------------------------------------------------------------------- generators
class _UNetBlock(nn.Module):
    """One level of the pix2pix U-Net: down, the inner levels, up, and the skip concatenation."""

    def __init__(self, spatial_dims: int, outer: int, inner: int, in_ch: int | None, sub: nn.Module | None,
                 outermost: bool, innermost: bool, norm: str, dropout: bool) -> None:
        super().__init__()
        conv, tconv = Conv[Conv.CONV, spatial_dims], Conv[Conv.CONVTRANS, spatial_dims]
        bias = norm != "batch"
        in_ch = outer if in_ch is None else in_ch
        self.outermost = outermost
        down_conv = conv(in_ch, inner, kernel_size=4, stride=2, padding=1, bias=bias)
        layers: list[nn.Module]
        if outermost:
            assert sub is not None
            layers = [down_conv, sub, nn.ReLU(True), tconv(inner * 2, outer, kernel_size=4, stride=2, padding=1),
                      nn.Tanh()]
        elif innermost:
            layers = [nn.LeakyReLU(0.2, True), down_conv, nn.ReLU(True),
                      tconv(inner, outer, kernel_size=4, stride=2, padding=1, bias=bias),
                      _norm(norm, spatial_dims, outer)]
        else:
            assert sub is not None
            layers = [nn.LeakyReLU(0.2, True), down_conv, _norm(norm, spatial_dims, inner), sub, nn.ReLU(True),
                      tconv(inner * 2, outer, kernel_size=4, stride=2, padding=1, bias=bias),
                      _norm(norm, spatial_dims, outer)]
            if dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


class UNetGenerator(nn.Module):
    """The pix2pix U-Net generator, optionally conditioned on a tiled code (MGAN).

    Widths: ``ngf * (1, 2, 4, 8, 8, ...)`` from the outermost level inwards, capped at
    ``8 * ngf``; ``num_downs`` stride-2 levels, so inputs need sides divisible by
    ``2 ** num_downs`` (``unet_128``: 7, ``unet_256``: 8).

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels (without the code).
        out_channels: output channels.
        num_downs: down-sampling levels (>= 2).
        ngf: width of the outermost level.
        norm: ``"instance"`` (MGAN, CycleGAN), ``"batch"`` (pix2pix) or ``"none"``.
        dropout: dropout 0.5 after the decoder of the intermediate 8ngf -> 8ngf levels
            (``num_downs - 5`` of them; pix2pix's ``use_dropout``).
        code_dim: length of the conditioning code (0: unconditional).

    Shapes:
        ``(B, in_channels, H, W[, D])`` [and code ``(B, code_dim)``] -> ``(B, out_channels, H, W[, D])``
        in [-1, 1].
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 1, num_downs: int = 7,
                 ngf: int = 64, norm: str = "instance", dropout: bool = False, code_dim: int = 0) -> None:
        super().__init__()
        _check_norm(norm)
        if num_downs < 2:
            raise ValueError(f"num_downs must be >= 2, got {num_downs}")
        self.num_downs, self.code_dim = num_downs, code_dim
        widths = [ngf * min(2**i, 8) for i in range(num_downs)]  # outermost .. innermost level widths
        block = _UNetBlock(spatial_dims, widths[-2], widths[-1], None, None, False, True, norm, False)
        for i in range(num_downs - 2, 0, -1):
            drop = dropout and widths[i - 1] == 8 * ngf  # pix2pix: the 8ngf -> 8ngf intermediate levels
            block = _UNetBlock(spatial_dims, widths[i - 1], widths[i], None, block, False, False, norm, drop)
        self.model = _UNetBlock(spatial_dims, out_channels, widths[0], in_channels + code_dim, block, True, False,
                                norm, False)
        init_gan_weights(self)

    def forward(self, x: torch.Tensor, code: torch.Tensor | None = None) -> torch.Tensor:
        """Translate ``x`` (conditioned on ``code`` when ``code_dim > 0``)."""
        if self.code_dim:
            if code is None:
                raise ValueError("this generator is conditional: pass a code")
            x = tile_code(x, code)
        return self.model(x)


class ResBlock(nn.Module):
    """CycleGAN's residual block: ``x + norm(conv3(relu(norm(conv3(pad(x))))))`` with reflection padding.

    Args:
        spatial_dims: 2 or 3 (3D pads by replication).
        ch: channels.
        norm: ``"instance"``, ``"batch"`` or ``"none"``.
        dropout: dropout 0.5 between the two convolutions.
    """

    def __init__(self, spatial_dims: int, ch: int, norm: str, dropout: bool) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        pad = nn.ReflectionPad2d if spatial_dims == 2 else nn.ReplicationPad3d
        bias = norm != "batch"
        layers: list[nn.Module] = [pad(1), conv(ch, ch, 3, bias=bias), _norm(norm, spatial_dims, ch), nn.ReLU(True)]
        if dropout:
            layers.append(nn.Dropout(0.5))
        layers += [pad(1), conv(ch, ch, 3, bias=bias), _norm(norm, spatial_dims, ch)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` plus the block's residual."""
        return x + self.block(x)


class ResNetGenerator(nn.Module):
    """CycleGAN's ResNet generator (Johnson et al. 2016 as adapted by Zhu et al. 2017).

    c7s1-ngf, two stride-2 convs (2ngf, 4ngf), ``n_blocks`` residual blocks (reflection padding in
    2D, replication in 3D), two stride-2 transposed convs, c7s1-out, Tanh. Input sides must be
    divisible by 4.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (without the code).
        out_channels: output channels.
        ngf: width of the first layer.
        n_blocks: residual blocks (6 for 128 px, 9 for 256 px in CycleGAN).
        norm: ``"instance"`` (CycleGAN), ``"batch"`` or ``"none"``.
        dropout: dropout 0.5 inside the residual blocks.
        code_dim: length of a conditioning code tiled onto the input (0: none).

    Shapes:
        ``(B, in_channels, H, W[, D])`` -> ``(B, out_channels, H, W[, D])`` in [-1, 1].
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 3, out_channels: int = 3, ngf: int = 64,
                 n_blocks: int = 9, norm: str = "instance", dropout: bool = False, code_dim: int = 0) -> None:
        super().__init__()
        _check_norm(norm)
        conv, tconv = Conv[Conv.CONV, spatial_dims], Conv[Conv.CONVTRANS, spatial_dims]
        pad = nn.ReflectionPad2d if spatial_dims == 2 else nn.ReplicationPad3d
        bias = norm != "batch"
        self.code_dim = code_dim
        layers: list[nn.Module] = [pad(3), conv(in_channels + code_dim, ngf, 7, bias=bias),
                                   _norm(norm, spatial_dims, ngf), nn.ReLU(True)]
        for i in range(2):
            c = ngf * 2**i
            layers += [conv(c, 2 * c, 3, stride=2, padding=1, bias=bias), _norm(norm, spatial_dims, 2 * c),
                       nn.ReLU(True)]
        layers += [ResBlock(spatial_dims, ngf * 4, norm, dropout) for _ in range(n_blocks)]
        for i in range(2):
            c = ngf * 2 ** (2 - i)
            layers += [tconv(c, c // 2, 3, stride=2, padding=1, output_padding=1, bias=bias),
                       _norm(norm, spatial_dims, c // 2), nn.ReLU(True)]
        layers += [pad(3), conv(ngf, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        init_gan_weights(self)

    def forward(self, x: torch.Tensor, code: torch.Tensor | None = None) -> torch.Tensor:
        """Translate ``x`` (conditioned on ``code`` when ``code_dim > 0``)."""
        if self.code_dim:
            if code is None:
                raise ValueError("this generator is conditional: pass a code")
            x = tile_code(x, code)
        return self.model(x)
