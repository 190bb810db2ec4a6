import math

import pytest
import torch

from vitssl.eval import format_knn_table, knn_classify


def test_weighted_vote_by_hand():
    # one query at angle 0; train: class 0 at 10 deg, class 1 at 12 and 14 deg
    def unit(deg):
        return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]

    train = torch.tensor([unit(10), unit(12), unit(14)])
    labels = torch.tensor([0, 1, 1])
    query, truth = torch.tensor([unit(0)]), torch.tensor([0])
    res = knn_classify(train, labels, query, truth, ks=(1, 3), temperature=0.07)
    assert res[1]["top1"] == 1.0  # nearest is class 0
    w = [math.exp(math.cos(math.radians(d)) / 0.07) for d in (10, 12, 14)]
    assert w[1] + w[2] > w[0]  # so with k = 3 class 1 wins
    assert res[3]["top1"] == 0.0 and res[3]["top5"] == 1.0


def test_scale_invariance_chunking_and_k_clipping():
    g = torch.Generator().manual_seed(0)
    tr, te = torch.randn(50, 8, generator=g), torch.randn(30, 8, generator=g)
    ytr, yte = torch.randint(0, 4, (50,), generator=g), torch.randint(0, 4, (30,), generator=g)
    base = knn_classify(tr, ytr, te, yte, ks=(5, 500))
    assert knn_classify(tr * 7, ytr, te * 0.1, yte, ks=(5, 500)) == base
    assert knn_classify(tr, ytr, te, yte, ks=(5, 500), chunk_size=7) == base
    for r in base.values():
        assert 0 <= r["top1"] <= r["top5"] <= 1


def test_clusters_are_classified():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 16, generator=g) * 5
    y = torch.arange(90) % 3
    x = centers[y] + torch.randn(90, 16, generator=g) * 0.3
    assert knn_classify(x[:60], y[:60], x[60:], y[60:], ks=(20,))[20]["top1"] == 1.0
    assert "20" in format_knn_table({20: {"top1": 1.0, "top5": 1.0}})


def test_errors():
    with pytest.raises(ValueError, match="dim"):
        knn_classify(torch.randn(3, 4), torch.zeros(3).long(), torch.randn(2, 5), torch.zeros(2).long())
    with pytest.raises(ValueError, match="at least one train sample"):
        knn_classify(torch.randn(0, 4), torch.zeros(0).long(), torch.randn(2, 4), torch.zeros(2).long())
