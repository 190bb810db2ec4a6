"""KoLeo regulariser (Sablayrolles et al. 2019, "Spreading vectors for similarity search",
section 3.2; DINOv2, Oquab et al. 2023, section 4): push each feature away from its nearest
neighbour in the batch.

`L = -1/n sum_i log(d_i)`, `d_i = min_{j != i} ||x_i - x_j||` on L2-normalised features: the
Kozachenko-Leonenko differential-entropy estimator up to constants, so minimising it spreads the
batch uniformly over the sphere, the opposite of the collapse a teacher-student method fears.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F


def koleo_loss(features: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(n, d) features of one view -> scalar; each row's nearest other row by cosine similarity.

    `eps` keeps the logarithm finite when two samples coincide (DINOv2's value). The
    nearest-neighbour search carries no gradient; the distance to the chosen neighbour does.
    """
    if features.dim() != 2 or features.shape[0] < 2:
        raise ValueError(f"KoLeo needs (n >= 2, d) features, got shape {tuple(features.shape)}")
    x = F.normalize(features.float(), dim=-1, eps=eps)
    with torch.no_grad():
        similarity = x @ x.t()
        similarity.fill_diagonal_(-2.0)  # below any cosine similarity: a sample is not its own neighbour
        nearest = similarity.argmax(dim=1)
    distance = F.pairwise_distance(x, x[nearest], eps=eps)
    return -torch.log(distance + eps).mean()


def with_koleo(loss: torch.Tensor, metrics: dict[str, torch.Tensor], views: Iterable[torch.Tensor],
               weight: float) -> torch.Tensor:
    """`loss + weight * sum(koleo_loss(view))`, logging the term as `koleo`; `loss` itself when
    `weight` is 0 (the methods' `method.koleo_weight`, applied to the global views' features)."""
    if weight <= 0:
        return loss
    koleo = sum(koleo_loss(view) for view in views)
    metrics["koleo"] = koleo.detach()
    return loss + weight * koleo
