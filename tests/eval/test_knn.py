"""DINO weighted k-NN (DINO paper Sec. 3.2; facebookresearch/dino eval_knn.py, eval_linear.py) against answers worked out by hand."""

import math

import pytest
import torch

from vitssl.eval import format_knn_table, knn_classify


def unit(deg: float) -> list[float]:
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


# one query at 0 deg; train: class 0 at 10 deg, class 1 at 12 and 14 deg
TRAIN = torch.tensor([unit(10), unit(12), unit(14)])
TRAIN_Y = torch.tensor([0, 1, 1])
QUERY, TRUTH = torch.tensor([unit(0)]), torch.tensor([0])


def test_weighted_vote_flips_between_k1_and_k3():
    t = 0.07
    w = [math.exp(math.cos(math.radians(d)) / t) for d in (10, 12, 14)]
    # by hand: exp(-0.0951) + exp(-0.2073) = 0.909 + 0.813 = 1.72 (relative to w[0]) > 1
    assert (w[1] + w[2]) / w[0] == pytest.approx(1.72, abs=0.01)
    res = knn_classify(TRAIN, TRAIN_Y, QUERY, TRUTH, ks=(1, 3), temperature=t)
    assert res[1] == {"top1": 1.0, "top5": 1.0}  # nearest neighbour is class 0
    assert res[3]["top1"] == 0.0  # two class-1 votes outweigh the single closer class-0 vote
    assert res[3]["top5"] == 1.0  # class 0 still has the second-largest vote


def test_low_temperature_lets_the_nearest_neighbour_dominate():
    t = 0.001
    w = [math.exp((math.cos(math.radians(d)) - math.cos(math.radians(10))) / t) for d in (10, 12, 14)]
    assert w[1] + w[2] < w[0]  # exp(-6.66) + exp(-14.5) << 1
    assert knn_classify(TRAIN, TRAIN_Y, QUERY, TRUTH, ks=(3,), temperature=t)[3]["top1"] == 1.0


def test_class_without_votes_is_no_top5_hit():
    # k = 1 votes only for class 1; class 0 gets no vote, so it is not a top-5 prediction
    res = knn_classify(TRAIN[1:2], TRAIN_Y[1:2], QUERY, TRUTH, ks=(1,), num_classes=2)
    assert res[1] == {"top1": 0.0, "top5": 0.0}


def test_k_larger_than_train_set_is_clipped():
    res = knn_classify(TRAIN, TRAIN_Y, QUERY, TRUTH, ks=(3, 50, 1000))
    assert res[50] == res[1000] == res[3]


def random_split(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    tr, te = torch.randn(50, 8, generator=g), torch.randn(31, 8, generator=g)
    ytr, yte = torch.randint(0, 7, (50,), generator=g), torch.randint(0, 7, (31,), generator=g)
    return tr, ytr, te, yte


def test_invariant_to_feature_scale():
    tr, ytr, te, yte = random_split()
    base = knn_classify(tr, ytr, te, yte, ks=(1, 5, 20))
    per_row = torch.rand(len(tr), 1) * 10 + 0.1
    assert knn_classify(tr * per_row, ytr, te * 0.01, yte, ks=(1, 5, 20)) == base


def test_chunking_matches_one_chunk():
    tr, ytr, te, yte = random_split()
    whole = knn_classify(tr, ytr, te, yte, ks=(1, 5, 20), chunk_size=len(te))
    for chunk in (1, 7, 30):
        assert knn_classify(tr, ytr, te, yte, ks=(1, 5, 20), chunk_size=chunk) == whole


def test_fractions_and_top5_at_least_top1():
    tr, ytr, te, yte = random_split()
    res = knn_classify(tr, ytr, te, yte)
    assert list(res) == [10, 20, 100, 200]
    for r in res.values():
        assert 0.0 <= r["top1"] <= r["top5"] <= 1.0
        assert (r["top1"] * len(te)) == pytest.approx(round(r["top1"] * len(te)))


def test_clusters_are_classified():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 16, generator=g) * 5
    y = torch.arange(90) % 3
    x = centers[y] + torch.randn(90, 16, generator=g) * 0.3
    assert knn_classify(x[:60], y[:60], x[60:], y[60:], ks=(20,))[20]["top1"] == 1.0


def test_format_table():
    table = format_knn_table({20: {"top1": 0.5, "top5": 0.75}, 10: {"top1": 0.25, "top5": 1.0}})
    lines = table.splitlines()
    assert "top-1" in lines[0] and len(lines) == 3
    assert lines[1].split() == ["10", "0.2500", "1.0000"] and lines[2].split() == ["20", "0.5000", "0.7500"]


@pytest.mark.parametrize("args, kwargs, message", [
    ((torch.randn(3, 4), torch.zeros(3).long(), torch.randn(2, 5), torch.zeros(2).long()), {}, "dim 4 .* dim 5"),
    ((torch.randn(0, 4), torch.zeros(0).long(), torch.randn(2, 4), torch.zeros(2).long()), {}, "train set is empty"),
    ((torch.randn(3, 4), torch.zeros(3).long(), torch.randn(0, 4), torch.zeros(0).long()), {}, "test set is empty"),
    ((torch.randn(3, 4), torch.zeros(2).long(), torch.randn(2, 4), torch.zeros(2).long()), {}, "train labels length 2"),
    ((torch.randn(3, 4), torch.zeros(3).long(), torch.randn(2, 4), torch.zeros(5).long()), {}, "test labels length 5"),
    ((torch.randn(3), torch.zeros(3).long(), torch.randn(2, 4), torch.zeros(2).long()), {}, "2-D"),
    ((torch.randn(3, 4), torch.zeros(3).long(), torch.randn(2, 4), torch.zeros(2).long()), {"ks": (0,)}, "ks"),
    ((torch.randn(3, 4), torch.tensor([0, 1, 4]), torch.randn(2, 4), torch.zeros(2).long()), {"num_classes": 3},
     "num_classes=3"),
])
def test_errors(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        knn_classify(*args, **kwargs)


def test_k_larger_than_the_memory_bank_warns(caplog, monkeypatch):
    """A clipped k is the k = N result under another name: said in a warning, not silently."""
    from vitssl.engine.logging import log

    monkeypatch.setattr(log, "propagate", True)
    g = torch.Generator().manual_seed(0)
    train, test = torch.randn(10, 4, generator=g), torch.randn(5, 4, generator=g)
    labels = torch.arange(10) % 2
    out = knn_classify(train, labels, test, torch.arange(5) % 2, ks=(3, 10, 50))
    assert out[50] == out[10]
    # distinct messages: earlier tests' console handlers may pass a record to the root logger twice
    warned = sorted({r.getMessage() for r in caplog.records if "exceeds the memory bank" in r.getMessage()})
    assert warned == ["k-NN: k = 50 exceeds the memory bank of 10 train images: those rows are the k = 10 result "
                      "(every train image votes); use k <= 10"]


def test_dinos_default_ks_that_do_not_fit_are_skipped_with_a_warning(tmp_path, caplog, monkeypatch):
    import numpy as np
    from PIL import Image

    from vitssl.commands.evaluate import knn_ks
    from vitssl.engine.logging import log

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(6):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / c / f"{i}.png")
    monkeypatch.setattr(log, "propagate", True)
    assert knn_ks(None, str(tmp_path)) == (10,)
    warned = sorted({r.getMessage() for r in caplog.records if "skipped (larger than the bank)" in r.getMessage()})
    assert len(warned) == 1 and "holds 12 train images" in warned[0] and "k = 20, 100, 200 skipped" in warned[0]
