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


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum over ranks (a new tensor; the input itself without a process group)."""
    if not is_distributed():
        return tensor
    out = tensor.clone()
    dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return out


def mean_over_ranks(metrics: dict[str, torch.Tensor | float]) -> dict[str, float]:
    """Python floats of `metrics`, tensors averaged over ranks with one all-reduce (for logging).

    Every rank must call it at the same step. Plain floats (lr, throughput) are taken as they are.
    """
    keys = [k for k, v in metrics.items() if isinstance(v, torch.Tensor)]
    out = {k: float(v) for k, v in metrics.items() if not isinstance(v, torch.Tensor)}
    if keys:
        stacked = torch.stack([metrics[k].detach().float().reshape(()) for k in keys])  # type: ignore[union-attr]
        values = all_reduce_mean(stacked).tolist()
        out.update(zip(keys, values))
    return {k: out[k] for k in metrics}


def gather_rank_shards(local: torch.Tensor, total: int) -> torch.Tensor:
    """Reassemble rows sharded as `rank::world_size` (see `eval.features.rank_shard`) in order.

    Rank r holds rows r, r + W, r + 2W, ... of a (total, ...) tensor; every rank gets the whole
    tensor back. Shards differ in length by at most one, so they are padded to one length for
    a single `all_gather` (NCCL needs tensors on the current GPU; the result is on `local`'s device).
    """
    if not is_distributed():
        return local
    world = world_size()
    per_rank = -(-total // world)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else local.device
    padded = local.new_zeros((per_rank, *local.shape[1:]), device=device)
    padded[: local.shape[0]] = local.to(device)
    shards = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(shards, padded)
    out = local.new_empty((total, *local.shape[1:]))
    for r, shard in enumerate(shards):
        count = len(range(r, total, world))
        out[r::world] = shard[:count].to(out.device)
    return out
