"""Siamese-Octad network of the Rubik's cube pretext task.

Zhuang, Li, Wu, Ma, Zheng: "Self-supervised Feature Learning for 3D Medical Images by Playing a
Rubik's Cube", MICCAI 2019, arXiv:1910.02241 (section 2.2); mask head from Rubik's Cube+ (Zhu et
al., Medical Image Analysis 64:101746, 2020). Head shapes follow the re-implementation
``UNet3D_RKB`` / ``UNet3D_RKBP`` of ``EndoluminalSurgicalVision-IMR/Medical-SSL`` (arXiv:2209.12157):
per cube GAP -> FC(F -> 64) -> ReLU -> BN, concatenation in slot order, order head
FC-1024-1024-K, rotation heads FC-1024-8. Its appendix shows that a deeper rotation head
(FC-1024-1024-8) made the whole pretext diverge, hence ``rotation_head_layers=1`` by default.

The eight "branches" share their weights, so they are one encoder applied to a ``(B * 8)`` batch;
BatchNorm statistics are therefore computed over all cubes of all puzzles (as the re-implementation).
"""

from __future__ import annotations

import torch
from torch import nn

from medlearn.nn import build_backbone

__all__ = ["SiameseOctad", "mlp_head"]

NUM_CUBES = 8


def mlp_head(in_features: int, hidden: int, out_features: int, hidden_layers: int) -> nn.Sequential:
    """``hidden_layers`` x [Linear -> ReLU] then a Linear to ``out_features`` (0 hidden layers = linear)."""
    layers: list[nn.Module] = []
    width = in_features
    for _ in range(hidden_layers):
        layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
        width = hidden
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


class SiameseOctad(nn.Module):
    """One shared 3D encoder over the 8 cubes + order / rotation (/ mask) heads.

    Args:
        encoder: backbone factory name (:func:`medlearn.nn.build_backbone`, 3D); must end in global
            pooling so that any cube size works.
        in_channels: channels of a cube.
        k: number of permutations (order classes).
        feature_dim: per-cube feature width after FC -> ReLU -> BN (64 in the re-implementation).
        head_hidden: hidden width of the heads (1024 in the re-implementation).
        order_head_layers: hidden layers of the order head (2: FC-1024-1024-K).
        rotation_head_layers: hidden layers of the rotation / mask heads (1: FC-1024-8; deeper
            diverged in the re-implementation's study).
        mask_head: add the Rubik's Cube+ mask head.
        rotation_heads: predict the rotations (``False``: order only, the 3D jigsaw ablation).

    Shapes:
        ``cubes (B, 8, C, d, h, w)`` -> ``{"order": (B, k), "hor": (B, 8), "ver": (B, 8)[, "mask": (B, 8)]}``,
        all logits (softmax / sigmoid live in the loss).

    The encoder is the factory :class:`~medlearn.nn.Backbone` stored as ``self.encoder``, so its
    state-dict keys are ``encoder.body.*``; the downstream transfer maps ``encoder.`` -> ``backbone.``.

    Examples:
        >>> net = SiameseOctad("plaincnn", in_channels=1, k=100)
        >>> out = net(torch.rand(2, 8, 1, 16, 16, 16))
        >>> out["order"].shape, out["hor"].shape
        (torch.Size([2, 100]), torch.Size([2, 8]))
    """

    def __init__(self, encoder: str = "plaincnn", in_channels: int = 1, k: int = 100, feature_dim: int = 64,
                 head_hidden: int = 1024, order_head_layers: int = 2, rotation_head_layers: int = 1,
                 mask_head: bool = False, rotation_heads: bool = True) -> None:
        super().__init__()
        self.encoder = build_backbone(encoder, 3, in_channels)
        self.in_channels = in_channels
        self.k = k
        self.cube_fc = nn.Sequential(
            nn.Linear(self.encoder.out_features, feature_dim), nn.ReLU(inplace=True), nn.BatchNorm1d(feature_dim)
        )
        joint = NUM_CUBES * feature_dim
        self.order_head = mlp_head(joint, head_hidden, k, order_head_layers)
        # rotation_heads=False is the "order only" ablation (a 3D jigsaw puzzle)
        self.hor_head = mlp_head(joint, head_hidden, NUM_CUBES, rotation_head_layers) if rotation_heads else None
        self.ver_head = mlp_head(joint, head_hidden, NUM_CUBES, rotation_head_layers) if rotation_heads else None
        self.mask_head = mlp_head(joint, head_hidden, NUM_CUBES, rotation_head_layers) if mask_head else None

    def cube_features(self, cubes: torch.Tensor) -> torch.Tensor:
        """``(B, 8, C, d, h, w)`` -> concatenated per-cube features ``(B, 8 * feature_dim)`` in slot order."""
        if cubes.ndim != 6 or cubes.shape[1] != NUM_CUBES or cubes.shape[2] != self.in_channels:
            raise ValueError(
                f"expected cubes (B, {NUM_CUBES}, {self.in_channels}, d, h, w), got {tuple(cubes.shape)}"
            )
        b = cubes.shape[0]
        feats = self.cube_fc(self.encoder(cubes.flatten(0, 1)))  # (B*8, feature_dim), slot-major per sample
        return feats.view(b, -1)

    def forward(self, cubes: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits of the permutation (and rotation / mask) heads for puzzles ``(B, 8, C, d, h, w)``."""
        joint = self.cube_features(cubes)
        out = {"order": self.order_head(joint)}
        if self.hor_head is not None and self.ver_head is not None:
            out["hor"] = self.hor_head(joint)
            out["ver"] = self.ver_head(joint)
        if self.mask_head is not None:
            out["mask"] = self.mask_head(joint)
        return out
