import torch

from vitssl.heads.patch_aggregator import PatchAggregator


def test_aggregation_is_permutation_invariant_over_its_set():
    agg = PatchAggregator(dim=16, num_heads=2).eval()
    tokens = torch.randn(3, 5, 16)
    perm = torch.randperm(5)
    assert torch.allclose(agg(tokens), agg(tokens[:, perm]), atol=1e-5)


def test_invalid_members_do_not_count():
    agg = PatchAggregator(dim=16, num_heads=2).eval()
    tokens = torch.randn(2, 4, 16)
    valid = torch.tensor([[True, True, False, False], [True, True, True, False]])
    changed = tokens.clone()
    changed[0, 2:] = 100 * torch.randn(2, 16)
    changed[1, 3] = -50.0
    assert torch.allclose(agg(tokens, valid), agg(changed, valid), atol=1e-5)
    # masking a member is the same as leaving it out
    assert torch.allclose(agg(tokens, valid)[0], agg(tokens[:1, :2])[0], atol=1e-5)
    # an empty set still gives a finite output: the query attends to itself
    assert torch.isfinite(agg(tokens, torch.zeros(2, 4, dtype=torch.bool))).all()


def test_output_is_layer_normalised_and_trainable():
    agg = PatchAggregator(dim=16, num_heads=4)
    out = agg(torch.randn(4, 3, 16))
    assert out.shape == (4, 16)
    assert torch.allclose(out.mean(-1), torch.zeros(4), atol=1e-5)
    out.pow(2).sum().backward()
    assert agg.query.grad is not None and agg.blocks[0].attn.kv.weight.grad is not None
