"""Small helpers for code that must behave the same on one process and under DDP.

Lightning runs the processes; these functions only ask ``torch.distributed`` whether a process
group is up, so the same loss or queue works in plain PyTorch, in Lightning and under DDP.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    """Number of processes in the default group (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """Rank of this process (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


@torch.no_grad()
def gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` from every rank along dim 0, in rank order (no gradient).

    Args:
        t: ``(B, ...)``; every rank must pass the same shape.

    Returns:
        ``(world_size * B, ...)``; ``t`` itself on a single process.
    """
    n = world_size()
    if n == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(n)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=0)


def broadcast_(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    """In-place broadcast from ``src`` (no-op on a single process)."""
    if world_size() > 1:
        dist.broadcast(t, src)
    return t
