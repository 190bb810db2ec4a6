"""KoLeo against its formula, -1/n sum_i log min_{j!=i} ||x_i - x_j|| on the unit sphere."""

from __future__ import annotations

import math

import pytest
import torch

from vitssl.losses.koleo import koleo_loss


def test_hand_computed_square():
    # four unit vectors at 90 degrees: each nearest neighbour is sqrt(2) away
    x = torch.tensor([[1.0, 0], [0, 1], [-1, 0], [0, -1]]) * 3  # scale is normalised away
    assert koleo_loss(x).item() == pytest.approx(-math.log(math.sqrt(2)), abs=1e-6)


def test_equals_brute_force():
    x = torch.randn(10, 5, generator=torch.Generator().manual_seed(0))
    u = x / x.norm(dim=1, keepdim=True)
    nearest = [min((u[i] - u[j]).norm().item() for j in range(10) if j != i) for i in range(10)]
    assert koleo_loss(x).item() == pytest.approx(-sum(math.log(d) for d in nearest) / 10, abs=1e-5)


def test_spread_batches_score_lower_than_clustered_ones():
    gen = torch.Generator().manual_seed(1)
    spread = torch.randn(64, 8, generator=gen)
    clustered = torch.ones(64, 8) + 0.01 * torch.randn(64, 8, generator=gen)
    assert koleo_loss(spread) < koleo_loss(clustered)


def test_gradient_pushes_nearest_neighbours_apart_and_stays_finite_for_duplicates():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.1], [-1.0, 0.0]], requires_grad=True)
    koleo_loss(x).backward()
    assert x.grad[1, 1] < 0  # moving the second point's y up would increase its distance: loss falls
    dup = torch.ones(4, 3, requires_grad=True)
    loss = koleo_loss(dup)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(dup.grad).all()


def test_rejects_a_single_sample():
    with pytest.raises(ValueError, match="n >= 2"):
        koleo_loss(torch.randn(1, 4))
