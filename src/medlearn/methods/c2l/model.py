"""C2L networks: the student/teacher encoder and the teacher forward with shuffled BatchNorm.

Zhou, Lu, Yang, Wang, Yu: "Comparing to Learn: Surpassing ImageNet Pretraining on Radiographs by
Comparing Image Representations", MICCAI 2020, arXiv:2007.07423. Official code:
github.com/funnyzhou/C2L_MICCAI2020 (``models/resnet_mixup.py``, ``get_shuffle_ids``).
"""

from __future__ import annotations

import torch
from torch import nn

from medlearn.nn import build_backbone
from medlearn.nn.distributed import broadcast_, gather_cat, rank, world_size

__all__ = ["C2LEncoder", "shuffled_forward"]


class C2LEncoder(nn.Module):
    """Backbone from the factory + ONE linear layer to the embedding (no MLP, no BN in the head).

    Args:
        backbone: factory name (``resnet18``, ``densenet121``, ``plaincnn`` ...).
        spatial_dims: 2 (radiographs) or 3.
        in_channels: input channels (1 for gray radiographs; the official code replicated gray to 3).
        embed_dim: embedding width (128 in the paper).

    Shapes:
        ``(B, C, H, W) -> (B, embed_dim)``, not normalised (the loss normalises).
    """

    def __init__(self, backbone: str = "resnet18", spatial_dims: int = 2, in_channels: int = 1,
                 embed_dim: int = 128) -> None:
        super().__init__()
        self.backbone = build_backbone(backbone, spatial_dims, in_channels)
        self.head = nn.Linear(self.backbone.out_features, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(B, embed_dim)`` (not normalised) of images ``(B, C, H, W)``."""
        return self.head(self.backbone(x))


def shuffled_forward(net: nn.Module, x: torch.Tensor, perm: torch.Tensor | None,
                     groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher forward whose BatchNorm statistics do not leak the positive pair.

    Under DDP (MoCo's ShuffleBN, He et al. 2020): the global batch is gathered, shuffled with one
    permutation drawn on rank 0, each rank encodes its slice, and the outputs are gathered and
    un-shuffled. On one process a shuffle alone changes nothing, so the shuffled batch is split
    into ``groups`` sub-batches ("ghost" BN): each key is normalised with the statistics of a
    random subset of the batch, not those its query saw.

    Args:
        net: the teacher (BatchNorm in train mode).
        x: ``(B, ...)`` this rank's batch.
        perm: a permutation of the *global* batch (``world_size * B``) to reuse (C2L uses the same
            shuffle ids for the plain and the mixed views) or ``None`` to draw one.
        groups: sub-batches on one process (1 = plain forward).

    Returns:
        ``(B, D)`` outputs in the original order, and the permutation used (for reuse).
    """
    n = world_size()
    b = x.shape[0]
    if perm is None:
        perm = torch.randperm(b * n, device=x.device)
        broadcast_(perm)
    if n > 1:
        xg = gather_cat(x)
        r = rank()
        mine = perm.view(n, b)[r]
        out = net(xg[mine])
        out_all = gather_cat(out)  # row i of out_all = output for global index perm[i]
        inv = torch.argsort(perm)
        return out_all[inv].view(n, b, -1)[r], perm
    if groups <= 1:
        return net(x), perm
    xs = x[perm]
    out = torch.cat([net(c) for c in xs.chunk(groups)], dim=0)
    return out[torch.argsort(perm)], perm
