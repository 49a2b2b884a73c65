"""MGAN / TC-MGAN networks: the StarGAN-style conditional critic and the conditional segmentor.

Xin, Hu, Zheng, Liao, "Multi-modality Generative Adversarial Networks with Tumor Consistency Loss
for Brain MR Image Synthesis", ISBI 2020, arXiv:2005.00925. The generator is the shared pix2pix
U-Net with a tiled one-hot target code (:class:`medlearn.nn.gan.UNetGenerator`, ``code_dim=3``);
what the paper's code adds is here, rebuilt from its description in the authors' ``model.py``
(``hellopipu/TC-MGAN``; read, not copied):

- :class:`StarGANCritic`: a critic without normalisation layers on ``concat(candidate, source)``:
  Conv 4x4 s2 + LeakyReLU(0.01) ``repeat_num`` times (widths ``conv_dim * 2^i``), then a patch
  head (Conv 3x3 -> 1) and a target-classification head (Conv with the remaining spatial size ->
  ``c_dim`` logits), Kaiming-normal weights.
- :class:`ConditionalSegmentor`: the small conditional U-Net S of the tumour-consistency loss:
  image + tiled code, 4 x (Conv 3x3 s2 + BN + ReLU), 4 x (ConvTranspose 3x3 s2 + BN + ReLU) with
  skip concatenations, sigmoid output (whole-tumour probability).
"""

from __future__ import annotations

import torch
from torch import nn

from medlearn.nn.gan import tile_code

__all__ = ["ConditionalSegmentor", "StarGANCritic"]


def _kaiming(net: nn.Module) -> None:
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, a=0)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class StarGANCritic(nn.Module):
    """MGAN's conditional critic with a patch head and an auxiliary target classifier.

    Args:
        image_size: input side (divisible by ``2 ** repeat_num``).
        in_channels: candidate + condition channels (2: target slice and T2).
        conv_dim: first width.
        c_dim: target classes (3: FLAIR, T1ce, T1).
        repeat_num: stride-2 layers (5 in the official code: 128 px -> 4 x 4).

    Shapes:
        ``forward(y (B, 1, S, S), x (B, 1, S, S))`` -> ``(src (B, 1, S/2^r, S/2^r), cls (B, c_dim))``.
    """

    def __init__(self, image_size: int = 128, in_channels: int = 2, conv_dim: int = 64, c_dim: int = 3,
                 repeat_num: int = 5) -> None:
        super().__init__()
        if image_size % 2**repeat_num:
            raise ValueError(f"image_size {image_size} must be divisible by 2**repeat_num = {2 ** repeat_num}")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, conv_dim, 4, 2, 1), nn.LeakyReLU(0.01, inplace=True)]
        ch = conv_dim
        for _ in range(1, repeat_num):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1), nn.LeakyReLU(0.01, inplace=True)]
            ch *= 2
        self.main = nn.Sequential(*layers)
        self.src = nn.Conv2d(ch, 1, 3, 1, 1, bias=False)
        self.cls = nn.Conv2d(ch, c_dim, image_size // 2**repeat_num, bias=False)
        _kaiming(self)

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch scores and target logits of candidate ``y`` given source ``x``."""
        h = self.main(torch.cat([y, x], 1))
        return self.src(h), self.cls(h).flatten(1)


def _down(i: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(i, o, 3, 2, 1), nn.BatchNorm2d(o), nn.ReLU(inplace=True))


def _up(i: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(i, o, 3, 2, 1, output_padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True))


class ConditionalSegmentor(nn.Module):
    """TC-MGAN's segmentor S (and, with ``code_dim`` = 4, the independent evaluator).

    Args:
        in_channels: image channels.
        code_dim: length of the one-hot contrast code (0: unconditional).
        conv_dim: first width (64 in the official code).
        out_channels: output maps (1: whole tumour).

    Shapes:
        ``(B, in_channels, S, S)`` [+ code ``(B, code_dim)``] -> ``(B, out_channels, S, S)``
        probabilities (sigmoid); ``S`` divisible by 16.
    """

    def __init__(self, in_channels: int = 1, code_dim: int = 3, conv_dim: int = 64, out_channels: int = 1) -> None:
        super().__init__()
        c = conv_dim
        self.code_dim = code_dim
        self.down = nn.ModuleList([_down(in_channels + code_dim, c), _down(c, 2 * c), _down(2 * c, 4 * c),
                                   _down(4 * c, 8 * c)])
        self.up = nn.ModuleList([_up(8 * c, 8 * c), _up(12 * c, 4 * c), _up(6 * c, 2 * c)])
        self.head = nn.ConvTranspose2d(3 * c, out_channels, 3, 2, 1, output_padding=1)
        _kaiming(self)

    def logits(self, x: torch.Tensor, code: torch.Tensor | None = None) -> torch.Tensor:
        """Pre-sigmoid maps."""
        if self.code_dim:
            if code is None:
                raise ValueError("this segmentor is conditional: pass a code")
            x = tile_code(x, code)
        skips = []
        for d in self.down:
            x = d(x)
            skips.append(x)
        out = self.up[0](skips[3])
        out = self.up[1](torch.cat([skips[2], out], 1))
        out = self.up[2](torch.cat([skips[1], out], 1))
        return self.head(torch.cat([skips[0], out], 1))

    def forward(self, x: torch.Tensor, code: torch.Tensor | None = None) -> torch.Tensor:
        """Tumour probabilities."""
        return torch.sigmoid(self.logits(x, code))
