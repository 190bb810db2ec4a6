import torch

from vitssl.heads import DINOHead, DINOHeadConfig


def small(**kw):
    return DINOHeadConfig(**{**dict(out_dim=10, hidden_dim=16, bottleneck_dim=8), **kw})


def test_structure_and_output_shape():
    head = DINOHead(12, small())
    linears = [m for m in head.mlp if isinstance(m, torch.nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(12, 16), (16, 16), (16, 8)]
    assert head(torch.randn(5, 12)).shape == (5, 10)


def test_logits_are_cosines_with_normalised_last_layer():
    head = DINOHead(12, small(norm_last_layer=True))
    logits = head(torch.randn(64, 12) * 100)
    assert logits.abs().max() <= 1.0 + 1e-5
    g = head.last_layer.parametrizations.weight.original0
    assert not g.requires_grad and torch.all(g == 1)


def test_norm_last_layer_false_trains_the_magnitude():
    head = DINOHead(12, small(norm_last_layer=False))
    head(torch.randn(4, 12)).sum().backward()
    assert head.last_layer.parametrizations.weight.original0.grad is not None


def test_batchnorm_option_and_init():
    head = DINOHead(12, small(use_bn=True))
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in head.mlp)
    assert all(torch.all(m.bias == 0) for m in head.mlp if isinstance(m, torch.nn.Linear))
