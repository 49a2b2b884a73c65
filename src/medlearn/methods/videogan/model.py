"""VideoGAN's X-shape generator: two frames of one video in, shared arms, a fused bottleneck, per-frame skips.

VideoGAN (Chen et al., AAAI 2020, arXiv:2004.08058) translates several frames of one video jointly
with an "X-shape" generator so that their translations stay consistent. The architecture was not
retrievable (spec 2.2, [I]); this is the spec's reading:

- **Arms** (shared weights): CycleGAN's ResNet encoder per frame, ``c7s1-ngf, d2ngf, d4ngf``
  (Zhu et al. 2017), keeping each level's features for that frame's skips.
- **Crossing**: ``f_i = F([h_i, h_j])``, ``f_j = F([h_j, h_i])`` with ``F`` = conv 3x3 + norm +
  ReLU on the channel concatenation, then ``n_blocks`` CycleGAN residual blocks
  (:class:`~medlearn.nn.gan.ResBlock`); each output sees the other frame's global context (colour
  cast, illumination) and keeps its own spatial content. ``xshape=False`` (the "without X-shape"
  ablation) applies the same ``F`` to ``[h_i]`` alone, so the comparison isolates joint processing
  and not capacity (the fusion conv then has half the input channels).
- **Decoder** (shared): two stride-2 transposed convs, each followed by a concatenation with the
  *same* frame's encoder features of that level (never the other frame's, which would ghost its
  content into this one) and conv 3x3 + norm + ReLU; c7s1-out, Tanh.

Inputs need sides divisible by 4.
"""

from __future__ import annotations

import torch
from monai.networks.layers.factories import Conv
from torch import nn

from medlearn.nn.gan import ResBlock, _check_norm, _norm, init_gan_weights

__all__ = ["XShapeGenerator"]


def _conv_block(cin: int, cout: int, norm: str, **kw: int) -> nn.Sequential:
    conv = Conv[Conv.CONV, 2]
    return nn.Sequential(conv(cin, cout, bias=norm != "batch", **kw), _norm(norm, 2, cout), nn.ReLU(True))


class XShapeGenerator(nn.Module):
    """The X-shape generator (see the module docstring).

    Args:
        in_channels: frame channels (3).
        out_channels: output channels (3).
        ngf: width of the first layer.
        n_blocks: residual blocks after the fusion (CycleGAN: 6 at <= 128 px, 9 at 256 px).
        norm: ``"instance"`` (CycleGAN), ``"batch"`` or ``"none"``.
        xshape: fuse the two frames at the bottleneck (``False``: each frame alone, same layers).

    Shapes:
        ``x_i, x_j (B, C, H, W)`` in [-1, 1] -> ``(y_i, y_j)``, each ``(B, out_channels, H, W)`` in [-1, 1].
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 3, ngf: int = 64, n_blocks: int = 9,
                 norm: str = "instance", xshape: bool = True) -> None:
        super().__init__()
        _check_norm(norm)
        self.xshape = xshape
        tconv = Conv[Conv.CONVTRANS, 2]
        bias = norm != "batch"
        self.stem = nn.Sequential(nn.ReflectionPad2d(3), *_conv_block(in_channels, ngf, norm, kernel_size=7))
        self.down1 = _conv_block(ngf, 2 * ngf, norm, kernel_size=3, stride=2, padding=1)
        self.down2 = _conv_block(2 * ngf, 4 * ngf, norm, kernel_size=3, stride=2, padding=1)
        self.fuse = nn.Sequential(_conv_block((8 if xshape else 4) * ngf, 4 * ngf, norm, kernel_size=3, padding=1),
                                  *[ResBlock(2, 4 * ngf, norm, False) for _ in range(n_blocks)])
        self.up1 = nn.Sequential(tconv(4 * ngf, 2 * ngf, 3, stride=2, padding=1, output_padding=1, bias=bias),
                                 _norm(norm, 2, 2 * ngf), nn.ReLU(True))
        self.merge1 = _conv_block(4 * ngf, 2 * ngf, norm, kernel_size=3, padding=1)
        self.up0 = nn.Sequential(tconv(2 * ngf, ngf, 3, stride=2, padding=1, output_padding=1, bias=bias),
                                 _norm(norm, 2, ngf), nn.ReLU(True))
        self.merge0 = _conv_block(2 * ngf, ngf, norm, kernel_size=3, padding=1)
        self.head = nn.Sequential(nn.ReflectionPad2d(3), Conv[Conv.CONV, 2](ngf, out_channels, 7), nn.Tanh())
        init_gan_weights(self)

    def forward(self, x_i: torch.Tensor, x_j: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Translate the pair; ``x_j=None`` pairs every frame with itself (degenerate; prefer another frame).

        Raises:
            ValueError: frames of different shapes or sides not divisible by 4.
        """
        x_j = x_i if x_j is None else x_j
        if x_i.shape != x_j.shape:
            raise ValueError(f"the two frames must have one shape, got {tuple(x_i.shape)} and {tuple(x_j.shape)}")
        if x_i.shape[-1] % 4 or x_i.shape[-2] % 4:
            raise ValueError(f"frame sides must be divisible by 4, got {tuple(x_i.shape[-2:])}")
        b = x_i.shape[0]
        x = torch.cat([x_i, x_j])  # both arms in one pass (shared weights)
        e0 = self.stem(x)
        e1 = self.down1(e0)
        h = self.down2(e1)
        if self.xshape:
            other = torch.cat([h[b:], h[:b]])
            h = torch.cat([h, other], 1)
        f = self.fuse(h)
        u = self.merge1(torch.cat([self.up1(f), e1], 1))
        u = self.merge0(torch.cat([self.up0(u), e0], 1))
        y = self.head(u)
        return y[:b], y[b:]
