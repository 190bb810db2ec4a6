"""Sinkhorn-Knopp centering of teacher outputs (SwAV, Caron et al. 2020, section 3.1; used in
place of DINO's EMA center by iBOT and DINOv2, Oquab et al. 2023, section 4).

Instead of subtracting a running mean, the teacher's batch of outputs is turned into a soft
assignment whose prototypes are used equally often across the batch: the matrix
`Q = exp(logits / tau)` (prototypes x samples) is scaled alternately so that every prototype row
sums to 1/K and every sample column to 1/B. A collapsed teacher (every sample on one prototype, or
every sample uniform) cannot satisfy both marginals, so the targets stay informative by
construction, batch by batch, rather than through a slowly moving center.
"""

from __future__ import annotations

import math

import torch

from vitssl.distributed import all_reduce_max, all_reduce_sum, world_size


@torch.no_grad()
def sinkhorn_knopp(teacher_logits: torch.Tensor, temperature: float, iterations: int = 3) -> torch.Tensor:
    """Teacher targets (..., K) -> (..., K) probabilities, each sample's row summing to 1.

    All leading dimensions count as samples (DINO's two global views together, as in DINOv2), over
    every rank's batch: the prototype sums are all-reduced. Computed in float32 in the log domain
    (each normalisation a log-sum-exp), which equals the papers' `exp` form but cannot underflow to
    0/0 when logits over temperature span more than float32's ~87 nats; the papers' first division
    by the total is left out because the first prototype normalisation cancels it exactly.
    """
    shape = teacher_logits.shape
    log_q = teacher_logits.detach().float().reshape(-1, shape[-1]) / temperature  # (B, K)
    prototypes, samples = shape[-1], log_q.shape[0] * world_size()
    log_k, log_b = math.log(prototypes), math.log(samples)
    for _ in range(iterations):
        log_q = log_q - (_logsumexp_over_ranks(log_q) + log_k)  # each prototype: mass 1/K
        log_q = log_q - (torch.logsumexp(log_q, dim=1, keepdim=True) + log_b)  # each sample: mass 1/B
    return torch.exp(log_q + log_b).reshape(shape)


def _logsumexp_over_ranks(log_q: torch.Tensor) -> torch.Tensor:
    """(1, K) log of each prototype's total mass over every rank's samples."""
    top = all_reduce_max(log_q.max(dim=0, keepdim=True).values)
    return top + torch.log(all_reduce_sum(torch.exp(log_q - top).sum(dim=0, keepdim=True)))
