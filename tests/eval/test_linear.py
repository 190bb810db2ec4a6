"""DINO linear probe on cached features (DINO paper Sec. 3.2; facebookresearch/dino eval_knn.py, eval_linear.py)."""

import pytest
import torch

from vitssl.eval import train_linear_probe


def blobs(n: int, seed: int, shuffle_labels: bool = False):
    """Four well-separated Gaussian blobs in 10-D (same centres for every seed)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(4, 10, generator=torch.Generator().manual_seed(99)) * 3
    y = torch.randint(0, 4, (n,), generator=g)
    x = centers[y] + torch.randn(n, 10, generator=g)
    if shuffle_labels:
        y = y[torch.randperm(n, generator=g)]
    return x, y


def test_learns_separable_blobs():
    (xt, yt), (xv, yv) = blobs(400, 0), blobs(200, 1)
    res = train_linear_probe(xt, yt, xv, yv, 4, epochs=20, lr=0.1, batch_size=32)
    assert res.top1 > 0.95 and res.top5 == 1.0  # 4 classes: top-5 is every class
    assert len(res.history) == 20 and res.best_top1 == max(res.history) and res.history[-1] == res.top1
    assert res.best_lr == 0.1
    assert res.state_dict["weight"].shape == (4, 10) and res.state_dict["bias"].shape == (4,)


def test_near_chance_on_random_labels():
    (xt, yt), (xv, yv) = blobs(400, 0, shuffle_labels=True), blobs(400, 1, shuffle_labels=True)
    assert train_linear_probe(xt, yt, xv, yv, 4, epochs=10, lr=0.1).top1 < 0.4  # chance is 0.25


def test_reproducible_for_a_seed():
    (xt, yt), (xv, yv) = blobs(200, 0), blobs(100, 1)
    a = train_linear_probe(xt, yt, xv, yv, 4, epochs=3, lr=0.05, batch_size=16, seed=3)
    b = train_linear_probe(xt, yt, xv, yv, 4, epochs=3, lr=0.05, batch_size=16, seed=3)
    c = train_linear_probe(xt, yt, xv, yv, 4, epochs=3, lr=0.05, batch_size=16, seed=4)
    assert a.history == b.history and torch.equal(a.state_dict["weight"], b.state_dict["weight"])
    assert not torch.equal(a.state_dict["weight"], c.state_dict["weight"])


def test_dino_init_and_default_lr():
    # a vanishing lr leaves the DINO init: weight ~ N(0, 0.01), bias 0
    (xt, yt), (xv, yv) = blobs(64, 0), blobs(32, 1)
    x_wide = torch.randn(64, 500)
    res = train_linear_probe(x_wide, yt, torch.randn(32, 500), yv, 4, epochs=1, lr=1e-12)
    assert res.state_dict["weight"].std().item() == pytest.approx(0.01, rel=0.05)
    assert res.state_dict["bias"].abs().max().item() < 1e-9
    assert train_linear_probe(xt, yt, xv, yv, 4, epochs=1, batch_size=512).best_lr == pytest.approx(0.002)


def test_lr_sweep_returns_the_best_given_lr():
    (xt, yt), (xv, yv) = blobs(200, 0), blobs(100, 1)
    lrs = [1e-6, 0.1, 1e-4]
    res = train_linear_probe(xt, yt, xv, yv, 4, epochs=5, batch_size=32, lrs=lrs)
    singles = {lr: train_linear_probe(xt, yt, xv, yv, 4, epochs=5, batch_size=32, lr=lr).top1 for lr in lrs}
    assert res.best_lr in lrs and res.best_lr == 0.1
    assert res.top1 == max(singles.values())


@pytest.mark.parametrize("kwargs, message", [
    ({"lr": 0.1, "lrs": [0.1]}, "not both"),
    ({"lrs": []}, "lrs is empty"),
    ({"num_classes": 3}, r"labels must lie in \[0, 3\)"),
    ({"val_features": torch.randn(10, 7)}, "dim 10 but val features have dim 7"),
    ({"train_labels": torch.zeros(5).long()}, "train labels length 5"),
])
def test_errors(kwargs, message):
    (xt, yt), (xv, yv) = blobs(20, 0), blobs(10, 1)
    yt[0] = 3
    args = dict(train_features=xt, train_labels=yt, val_features=xv, val_labels=yv, num_classes=4, epochs=1)
    with pytest.raises(ValueError, match=message):
        train_linear_probe(**{**args, **kwargs})


def test_mae_batchnorm_probe_has_no_affine_and_normalises_features():
    from vitssl.eval.linear import BatchNormLinear

    head = BatchNormLinear(10, 4)
    assert head.bn.weight is None and head.bn.bias is None and not head.bn.affine and head.bn.eps == 1e-6
    assert [n for n, _ in head.named_parameters()] == ["linear.weight", "linear.bias"]
    x = torch.randn(256, 10) * 50 + 7  # far from unit scale
    normed = head.bn(x)
    assert torch.allclose(normed.mean(0), torch.zeros(10), atol=1e-4)
    assert torch.allclose(normed.std(0, unbiased=False), torch.ones(10), atol=1e-3)


def test_batchnorm_probe_trains_on_badly_scaled_features():
    (xt, yt), (xv, yv) = blobs(400, 0), blobs(200, 1)
    scale = torch.logspace(-3, 3, 10)  # per-feature scales over six orders of magnitude
    res = train_linear_probe(xt * scale, yt, xv * scale, yv, 4, epochs=10, lr=0.1, batch_size=33, batchnorm=True)
    assert res.top1 > 0.95  # a last batch of one row is skipped, not an error
    assert set(res.state_dict) == {"bn.running_mean", "bn.running_var", "bn.num_batches_tracked",
                                   "linear.weight", "linear.bias"}
    assert res.state_dict["bn.running_var"][-1] > 1e4  # the running stats saw the raw scale
    plain = train_linear_probe(xt, yt, xv, yv, 4, epochs=2, lr=0.1)
    assert set(plain.state_dict) == {"weight", "bias"}  # DINO default unchanged
