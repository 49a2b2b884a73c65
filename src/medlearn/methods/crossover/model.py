"""Crossover-Net's networks: strip branches, the two-branch crossover classifier, and the baselines' nets.

Crossover-Net (Yu et al., arXiv:2004.01397, 2020) classifies the centre pixel of a crossover patch:
a vertical ``long x short`` strip and the transposed horizontal strip go through a branch each (the
official code applies ONE set of weights to both: ``shared=True``), each branch gives a *profile*
(``(P, T)``: channels x positions along the strip, the width collapsed; the tensor the crossover
loss compares) and an embedding; the fused head classifies ``relu(concat(e_v, e_h))``.

Branches (``arch``):

- ``"hv100x20"``: the official 100 x 20 network (``hvCNN`` in ``modules/HV_net.py`` of
  github.com/Qianyu1226/Crossover-Net): conv (5,3) x2 -> pool -> conv (5,3) -> pool -> conv 3x3 gives
  the 64 x 19 profile, then convs (7,1) x3 to a 500-d embedding; no padding, no batch norm; head
  Linear(1000 -> classes). Submodule names follow the official ones (``conv1`` .. ``conv4``), so its
  checkpoints load by prefixing ``branch_v.``.
- ``"inbreast340x68"``: the official 340 x 68 network for INbreast (``modules/inbreast_net.py``):
  convs 5x5, 5x5, pool, 5x5, 6x6, pool, 3x3 x3, pool, 2x2 give the 64 x 35 profile, then (8,1) x4 and
  (7,1) to 500.
- ``"small"``: the spec's CPU network (methods/crossover.md section 5): Conv(C,16,(5,3)) ReLU
  Conv(16,32,(5,3)) ReLU MaxPool2 Conv(32,32,3) ReLU with "same" zero padding (an 8-pixel-wide strip
  would otherwise vanish), adaptive average pooling to a ``long / 2``-position profile, Linear to a
  64-d embedding.

Baselines (same head style): :class:`StripNet` (one vertical strip, one branch) and
:class:`SquareNet` (the square patch of equal pixel count, the small network's depth with 3x3
kernels, pooled to a ``t x t`` grid with ``t = round(sqrt(long / 2))``, so its head sees about as many
positions as one strip's profile).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["ARCHS", "StripBranch", "SmallBranch", "HV100x20Branch", "INbreast340x68Branch", "build_branch",
           "CrossoverNet", "StripNet", "SquareNet", "ARCH_SIZES"]

#: Branch architectures.
ARCHS = ("small", "hv100x20", "inbreast340x68")
#: The strip size each official architecture is built for (``long``, ``short``).
ARCH_SIZES: dict[str, tuple[int, int]] = {"hv100x20": (100, 20), "inbreast340x68": (340, 68)}


class StripBranch(nn.Module):
    """A branch: ``(N, C, long, short)`` strips -> ``(embedding (N, out_features), profile (N, P, T))``."""

    out_features: int
    profile_length: int
    profile_channels: int


class SmallBranch(StripBranch):
    """The spec's CPU branch on a ``(N, C, long, short)`` strip.

    Args:
        in_channels: image channels.
        long: strip length (rows).
        widths: channels of the three convolutions.
        embed: embedding size.
        kernel: kernel of the first two convolutions (``(5, 3)``: longer along the strip).

    Returns (forward):
        ``(embedding (N, embed), profile (N, widths[-1], long // 2))``.
    """

    def __init__(self, in_channels: int = 1, long: int = 48, widths: Sequence[int] = (16, 32, 32), embed: int = 64,
                 kernel: tuple[int, int] = (5, 3)) -> None:
        super().__init__()
        a, b, c = (int(w) for w in widths)
        pad = (kernel[0] // 2, kernel[1] // 2)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, a, kernel, padding=pad), nn.ReLU(),
            nn.Conv2d(a, b, kernel, padding=pad), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(b, c, 3, padding=1), nn.ReLU())
        self.profile_length = max(1, long // 2)
        self.profile_channels = c
        self.pool = nn.AdaptiveAvgPool2d((self.profile_length, 1))
        self.embed = nn.Linear(c * self.profile_length, embed)
        self.out_features = embed

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embedding and profile of a batch of strips."""
        profile = self.pool(self.features(x)).flatten(2)  # (N, P, T)
        return self.embed(profile.flatten(1)), profile


class HV100x20Branch(StripBranch):
    """The official 100 x 20 branch (``hvCNN`` of ``HV_net.py``), on ``(N, C, 100, 20)`` strips.

    Returns (forward):
        ``(embedding (N, 500), profile (N, 64, 19))``.
    """

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, 16, (5, 3)), nn.ReLU(), nn.Conv2d(16, 36, (5, 3)), nn.ReLU(),
                                   nn.MaxPool2d(2))
        self.conv2 = nn.Sequential(nn.Conv2d(36, 64, (5, 3)), nn.ReLU(), nn.MaxPool2d(2))
        self.conv3 = nn.Sequential(nn.Conv2d(64, 64, 3), nn.ReLU())
        self.conv4 = nn.Sequential(nn.Conv2d(64, 64, (7, 1)), nn.ReLU(), nn.Conv2d(64, 64, (7, 1)), nn.ReLU(),
                                   nn.Conv2d(64, 500, (7, 1)))
        self.profile_length, self.profile_channels, self.out_features = 19, 64, 500

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embedding and profile of a batch of strips."""
        p = self.conv3(self.conv2(self.conv1(x)))  # (N, 64, 19, 1)
        return self.conv4(p).flatten(1), p.flatten(2)


class INbreast340x68Branch(StripBranch):
    """The official 340 x 68 INbreast branch (``inbreast_net.py``), on ``(N, C, 340, 68)`` strips.

    Returns (forward):
        ``(embedding (N, 500), profile (N, 64, 35))``.
    """

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, 16, 5), nn.ReLU(), nn.Conv2d(16, 36, 5), nn.ReLU(),
                                   nn.MaxPool2d(2))
        self.conv2 = nn.Sequential(nn.Conv2d(36, 64, 5), nn.ReLU(), nn.Conv2d(64, 64, 6), nn.ReLU(), nn.MaxPool2d(2))
        self.conv3 = nn.Sequential(nn.Conv2d(64, 64, 3), nn.ReLU(), nn.Conv2d(64, 64, 3), nn.ReLU(),
                                   nn.Conv2d(64, 64, 3), nn.ReLU(), nn.MaxPool2d(2))
        self.conv4 = nn.Sequential(nn.Conv2d(64, 64, 2), nn.ReLU())
        self.conv5 = nn.Sequential(nn.Conv2d(64, 64, (8, 1)), nn.ReLU(), nn.Conv2d(64, 64, (8, 1)), nn.ReLU(),
                                   nn.Conv2d(64, 64, (8, 1)), nn.ReLU(), nn.Conv2d(64, 64, (8, 1)), nn.ReLU(),
                                   nn.Conv2d(64, 500, (7, 1)))
        self.profile_length, self.profile_channels, self.out_features = 35, 64, 500

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embedding and profile of a batch of strips."""
        p = self.conv4(self.conv3(self.conv2(self.conv1(x))))  # (N, 64, 35, 1)
        return self.conv5(p).flatten(1), p.flatten(2)


def build_branch(arch: str, in_channels: int, long: int, short: int, embed: int = 64,
                 widths: Sequence[int] = (16, 32, 32)) -> StripBranch:
    """A strip branch of ``arch`` (see the module docstring).

    Raises:
        ValueError: an unknown ``arch``, or an official architecture with other strip sizes than its own.
    """
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    if arch in ARCH_SIZES and (long, short) != ARCH_SIZES[arch]:
        want = ARCH_SIZES[arch]
        raise ValueError(f"arch {arch!r} takes {want[0]} x {want[1]} strips, got long={long}, short={short}")
    if arch == "hv100x20":
        return HV100x20Branch(in_channels)
    if arch == "inbreast340x68":
        return INbreast340x68Branch(in_channels)
    return SmallBranch(in_channels, long, widths, embed)


class CrossoverNet(nn.Module):
    """Two strip branches (one shared set of weights by default) and the fused head.

    Args:
        arch: branch architecture (:data:`ARCHS`).
        in_channels: image channels.
        num_classes: classes of the centre pixel (2 in the released code).
        long: strip length.
        short: strip width.
        shared: one set of branch weights for both arms (the official code); ``False``: two branches
            (the paper's figure draws two; whether they share weights is not stated).
        embed: embedding size of the ``small`` branch (the official ones: 500).
        widths: convolution widths of the ``small`` branch.

    Returns (forward on ``(v, ht)``, each ``(N, C, long, short)``):
        ``(logits (N, num_classes), profile_v (N, P, T), profile_h (N, P, T))``.
    """

    def __init__(self, arch: str = "small", in_channels: int = 1, num_classes: int = 2, long: int = 48,
                 short: int = 8, shared: bool = True, embed: int = 64, widths: Sequence[int] = (16, 32, 32)) -> None:
        super().__init__()
        self.shared = bool(shared)
        self.branch_v = build_branch(arch, in_channels, long, short, embed, widths)
        self.branch_h: StripBranch | None = None if shared else build_branch(arch, in_channels, long, short, embed,
                                                                           widths)
        width = int(self.branch_v.out_features)
        self.out = nn.Linear(2 * width, num_classes)

    @property
    def profile_length(self) -> int:
        """Positions of a profile."""
        return int(self.branch_v.profile_length)

    def forward(self, v: torch.Tensor, ht: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits and both profiles."""
        ev, pv = self.branch_v(v)
        eh, ph = (self.branch_h or self.branch_v)(ht)  # shared weights: the same branch on both arms
        return self.out(torch.relu(torch.cat([ev, eh], dim=1))), pv, ph


class StripNet(nn.Module):
    """The single-strip baseline: one vertical strip, one branch, the head on its embedding.

    Args:
        arch: branch architecture.
        in_channels: image channels.
        num_classes: classes.
        long: strip length.
        short: strip width.
        embed: embedding size of the ``small`` branch (the baseline uses twice the crossover branch's, so
            that its head sees as many features as the fused head).
        widths: convolution widths of the ``small`` branch.
    """

    def __init__(self, arch: str = "small", in_channels: int = 1, num_classes: int = 2, long: int = 48,
                 short: int = 8, embed: int = 128, widths: Sequence[int] = (16, 32, 32)) -> None:
        super().__init__()
        self.branch_v = build_branch(arch, in_channels, long, short, embed, widths)
        self.out = nn.Linear(int(self.branch_v.out_features), num_classes)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)``."""
        e, _ = self.branch_v(v)
        return self.out(torch.relu(e))


class SquareNet(nn.Module):
    """The square-patch baseline: the small branch's depth with 3x3 kernels on a ``side x side`` patch.

    Args:
        in_channels: image channels.
        num_classes: classes.
        side: patch side.
        grid: side of the pooled feature grid (``round(sqrt(long / 2))`` for the crossover's ``long``).
        embed: embedding size.
        widths: convolution widths.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, side: int = 26, grid: int = 5, embed: int = 128,
                 widths: Sequence[int] = (16, 32, 32)) -> None:
        super().__init__()
        a, b, c = (int(w) for w in widths)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, a, 3, padding=1), nn.ReLU(), nn.Conv2d(a, b, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Conv2d(b, c, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d((grid, grid)))
        self.embed = nn.Linear(c * grid * grid, embed)
        self.out = nn.Linear(embed, num_classes)
        self.side = int(side)

    @staticmethod
    def grid_for(long: int) -> int:
        """The pooled grid side matching a ``long``-pixel strip's ``long / 2``-position profile."""
        return max(1, int(round(math.sqrt(long / 2))))

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` of ``(N, C, side, side)`` patches."""
        return self.out(torch.relu(self.embed(self.features(q).flatten(1))))
