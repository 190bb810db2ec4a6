"""Cross-rank helpers that are identities without a process group.

Kept at the bottom of the import graph (imports nothing of ours) so losses and the engine
can both use them; every method therefore runs unchanged on one CPU process.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    return rank() == 0


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of `tensor` over ranks (returned as a new tensor; the input is not modified)."""
    if not is_distributed():
        return tensor
    out = tensor.clone()
    dist.all_reduce(out)
    return out / world_size()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if not is_distributed():
        return tensor
    out = tensor.clone()
    dist.all_reduce(out)
    return out
