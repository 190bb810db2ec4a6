"""Sinkhorn-Knopp targets against the published algorithm (SwAV Alg. 1 / DINOv2's
`sinkhorn_knopp_teacher`), written out here in float64 with plain loops."""

from __future__ import annotations

import math

import torch

from vitssl.losses.sinkhorn import sinkhorn_knopp


def published(logits: torch.Tensor, temperature: float, iterations: int) -> torch.Tensor:
    """Q = exp(s / tau)^T; Q /= sum Q; repeat: rows /= row sums, /= K; columns /= col sums, /= B; Q *= B."""
    q = [[math.exp(v / temperature) for v in row] for row in logits.double().tolist()]
    b, k = len(q), len(q[0])
    q = [[q[i][j] for i in range(b)] for j in range(k)]  # K x B
    total = sum(map(sum, q))
    q = [[v / total for v in row] for row in q]
    for _ in range(iterations):
        q = [[v / sum(row) / k for v in row] for row in q]
        cols = [sum(q[j][i] for j in range(k)) for i in range(b)]
        q = [[q[j][i] / cols[i] / b for i in range(b)] for j in range(k)]
    return torch.tensor([[q[j][i] * b for j in range(k)] for i in range(b)], dtype=torch.float64)


def test_equals_the_published_algorithm():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=gen) * 3
    for iterations in (1, 3, 7):
        got = sinkhorn_knopp(logits, 0.5, iterations)
        assert torch.allclose(got.double(), published(logits, 0.5, iterations), atol=1e-6)


def test_marginals_rows_sum_to_one_and_prototypes_are_used_evenly():
    logits = torch.randn(2, 64, 16, generator=torch.Generator().manual_seed(1))
    q = sinkhorn_knopp(logits, 0.5, iterations=50)
    assert q.shape == logits.shape
    assert torch.allclose(q.sum(-1), torch.ones(2, 64), atol=1e-5)
    # over the 128 samples each of the 16 prototypes gets 128/16 = 8 samples' worth of mass
    assert torch.allclose(q.reshape(-1, 16).sum(0), torch.full((16,), 8.0), atol=1e-3)


def test_a_collapsed_teacher_still_gives_spread_targets():
    # every sample prefers prototype 0 by the same margin: softmax would put all mass there
    logits = torch.zeros(32, 8)
    logits[:, 0] = 10.0
    logits += 0.01 * torch.randn(32, 8, generator=torch.Generator().manual_seed(2))
    q = sinkhorn_knopp(logits, 0.1, iterations=3)
    assert q[:, 0].mean() < 0.25 and torch.softmax(logits / 0.1, -1)[:, 0].mean() > 0.99


def test_large_logits_do_not_overflow():
    logits = torch.randn(8, 4, generator=torch.Generator().manual_seed(3)) * 1000
    assert torch.isfinite(sinkhorn_knopp(logits, 0.04)).all()
