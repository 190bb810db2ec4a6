import pytest
import torch
from torch import nn

from vitssl.backbones import create_backbone
from vitssl.engine.optim import clip_gradients, decay_groups


def test_dino_decay_groups_keep_pos_embed_and_cls_token_decayed():
    model = create_backbone("vit_tiny", patch_size=4, img_size=16, embed_dim=32, depth=1, num_heads=2)
    named = dict(model.named_parameters())
    decay, plain = decay_groups(model.named_parameters())
    decay_ids = {id(p) for p in decay["params"]}
    plain_ids = {id(p) for p in plain["params"]}
    assert id(named["pos_embed"]) in decay_ids and id(named["cls_token"]) in decay_ids
    assert id(named["blocks.0.attn.qkv.bias"]) in plain_ids and id(named["norm.weight"]) in plain_ids
    assert id(named["blocks.0.attn.qkv.weight"]) in decay_ids
    assert len(decay_ids) + len(plain_ids) == len(named)


def test_exempt_names_and_frozen_parameters():
    model = create_backbone("vit_tiny", patch_size=4, img_size=16, embed_dim=32, depth=1, num_heads=2)
    model.patch_embed.proj.weight.requires_grad = False
    decay, plain = decay_groups(model.named_parameters(), ["pos_embed", "cls_token"])
    names = {id(p): n for n, p in model.named_parameters()}
    assert {"pos_embed", "cls_token"} <= {names[id(p)] for p in plain["params"]}
    assert "patch_embed.proj.weight" not in {names[id(p)] for p in decay["params"] + plain["params"]}


def test_per_tensor_clipping_clips_each_tensor_on_its_own():
    a, b = nn.Parameter(torch.zeros(4)), nn.Parameter(torch.zeros(2))
    a.grad = torch.tensor([3.0, 4.0, 0.0, 0.0])  # norm 5 -> clipped to 1
    b.grad = torch.tensor([0.3, 0.4])  # norm 0.5 -> untouched
    norms = clip_gradients([a, b], 1.0, "per_tensor")
    assert torch.allclose(norms, torch.tensor([5.0, 0.5]))
    assert a.grad.norm().item() == pytest.approx(1.0, rel=1e-5)
    assert torch.allclose(b.grad, torch.tensor([0.3, 0.4]))


def test_global_clipping_scales_all_tensors_together():
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 4.0])
    clip_gradients([a, b], 1.0, "global")
    assert torch.allclose(torch.cat([a.grad, b.grad]).norm(), torch.tensor(1.0), atol=1e-5)
    assert a.grad[0] / b.grad[1] == pytest.approx(0.75)


def test_unknown_clip_mode():
    p = nn.Parameter(torch.zeros(1))
    p.grad = torch.ones(1)
    with pytest.raises(ValueError, match="clip_mode"):
        clip_gradients([p], 1.0, "per_layer")


def test_per_tensor_clipping_launches_do_not_grow_with_the_tensor_count():
    """DINO clips every tensor on its own: a fixed number of multi-tensor ops, not ~4 per tensor."""
    from sync_probe import record

    def clip(count: int):
        params = [torch.nn.Parameter(torch.zeros(5)) for _ in range(count)]
        for i, p in enumerate(params):
            p.grad = torch.full((5,), float(i))
        return record(clip_gradients, params, 1.0, "per_tensor")

    (_, few), (many_norms, many) = clip(3), clip(30)
    assert few.launches == many.launches and few.syncs == many.syncs == 0
    assert many_norms[2].item() == pytest.approx(2.0 * 5 ** 0.5)
