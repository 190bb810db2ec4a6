import torch
from torch.utils.data import DataLoader, TensorDataset

from vitssl.backbones import create_backbone
from vitssl.eval import extract_features, train_linear_probe


def blobs(n, seed, shuffle_labels=False):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(4, 10, generator=torch.Generator().manual_seed(99)) * 3
    y = torch.randint(0, 4, (n,), generator=g)
    x = centers[y] + torch.randn(n, 10, generator=g)
    if shuffle_labels:
        y = y[torch.randperm(n, generator=g)]
    return x, y


def test_probe_learns_separable_blobs_and_is_reproducible():
    (xt, yt), (xv, yv) = blobs(400, 0), blobs(200, 1)
    res = train_linear_probe(xt, yt, xv, yv, 4, epochs=20, lr=0.1, batch_size=32)
    assert res.top1 > 0.95 and len(res.history) == 20
    again = train_linear_probe(xt, yt, xv, yv, 4, epochs=20, lr=0.1, batch_size=32)
    assert again.top1 == res.top1 and torch.equal(again.state_dict["weight"], res.state_dict["weight"])


def test_probe_is_near_chance_on_random_labels():
    (xt, yt), (xv, yv) = blobs(400, 0, shuffle_labels=True), blobs(400, 1, shuffle_labels=True)
    assert train_linear_probe(xt, yt, xv, yv, 4, epochs=10, lr=0.1).top1 < 0.4


def test_lr_sweep_returns_a_given_lr():
    (xt, yt), (xv, yv) = blobs(200, 0), blobs(100, 1)
    res = train_linear_probe(xt, yt, xv, yv, 4, epochs=5, lrs=[1e-5, 0.1])
    assert res.best_lr == 0.1


def test_feature_shapes_and_training_flag_restored():
    model = create_backbone("vit_tiny", patch_size=4, img_size=16, embed_dim=32, depth=4, num_heads=2).train()
    images, labels = torch.randn(10, 3, 16, 16), torch.arange(10)
    loader = DataLoader(TensorDataset(images, labels), batch_size=4)
    f1, y = extract_features(model, loader, "cpu")
    assert f1.shape == (10, 32) and torch.equal(y, labels) and model.training
    assert extract_features(model, loader, "cpu", n_last_blocks=4)[0].shape == (10, 128)
    f_avg, _ = extract_features(model, loader, "cpu", avgpool_patchtokens=True)
    assert f_avg.shape == (10, 64) and torch.allclose(f_avg[:, :32], f1, atol=1e-5)
