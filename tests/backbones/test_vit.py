import pytest
import torch
import torch.nn.functional as F

from helpers import TINY_BACKBONE_BY_NAME
from vitssl.backbones import BACKBONES, create_backbone
from vitssl.backbones.vit import interpolate_pos_embed


def tiny(**kw):
    return create_backbone("vit_tiny", **{**dict(patch_size=4, img_size=16, embed_dim=32, depth=2, num_heads=2), **kw})


def test_named_sizes_match_the_spec_table():
    expected = {"vit_tiny": (192, 3), "vit_small": (384, 6), "vit_base": (768, 12)}
    for name, (dim, heads) in expected.items():
        model = create_backbone(name, img_size=32, patch_size=16, depth=1)
        assert model.embed_dim == dim and model.blocks[0].attn.num_heads == heads
    params = sum(p.numel() for p in create_backbone("vit_small").parameters())
    assert 21e6 < params < 22.5e6  # DINO's ViT-S/16: 21M


def test_tokens_for_any_crop_size():
    model = tiny()
    for size, grid in ((16, (4, 4)), (8, (2, 2)), (24, (6, 6))):
        out = model(torch.randn(2, 3, size, size))
        assert out.cls.shape == (2, 32) and out.patches.shape == (2, grid[0] * grid[1], 32)
        assert out.grid == grid


def test_pos_embed_interpolation_is_bicubic_and_identity_at_native_size():
    pos = torch.randn(1, 16, 8)
    assert interpolate_pos_embed(pos, (4, 4), (4, 4)) is pos
    grid = pos.reshape(1, 4, 4, 8).permute(0, 3, 1, 2)
    want = F.interpolate(grid, size=(2, 2), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(1, 4, 8)
    assert torch.allclose(interpolate_pos_embed(pos, (4, 4), (2, 2)), want)


def test_last_blocks_end_with_the_final_output():
    model = tiny().eval()
    x = torch.randn(2, 3, 16, 16)
    blocks = model.last_blocks(x, 2)
    assert len(blocks) == 2
    assert torch.allclose(blocks[-1].cls, model(x).cls, atol=1e-5)
    assert not torch.allclose(blocks[0].cls, blocks[1].cls)


def test_bad_input_size_and_unknown_name():
    with pytest.raises(ValueError, match="multiple of the patch size 4"):
        tiny()(torch.randn(1, 3, 15, 15))
    with pytest.raises(ValueError, match="did you mean 'vit_small'"):
        create_backbone("vit_smal")


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_registered_backbone_runs_forward_and_backward(name):
    patches = {} if name in TINY_BACKBONE_BY_NAME else dict(patch_size=4)  # ResNet has no patch embedding
    size = TINY_BACKBONE_BY_NAME.get(name, {}).get("img_size", 16)  # ViL: sides are multiples of 32
    model = create_backbone(name, img_size=size, depth=1, **patches)
    out = model(torch.randn(2, 3, size, size))
    (out.pooled.sum() + out.patches.sum()).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_attention_uses_the_fused_sdpa_kernel(monkeypatch):
    model = tiny()
    assert all(block.attn.fused_attn for block in model.blocks)
    calls = []
    real = torch.nn.functional.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting)
    model(torch.randn(1, 3, 16, 16))
    assert len(calls) == len(model.blocks)


def test_cls_free_variant_without_final_norm():
    model = tiny(class_token=False, final_norm=False)
    out = model(torch.randn(2, 3, 16, 16))
    assert out.cls is None and out.patches.shape == (2, 16, 32)
    assert model.pos_embed.shape == (1, 16, 32)
    assert isinstance(model.norm, torch.nn.Identity)
    assert torch.allclose(out.pooled, out.patches.mean(1))
    assert model.last_blocks(torch.randn(1, 3, 8, 8), 2)[-1].cls is None


def test_sincos_pos_embed_is_fixed_and_exact_at_other_grids():
    from vitssl.backbones.vit import sincos_pos_embed

    emb = sincos_pos_embed(8, (2, 3))
    # token (row 1, col 2): first half encodes the column, second half the row
    omega = torch.tensor([1.0, 0.01])
    want = torch.cat([torch.sin(2 * omega), torch.cos(2 * omega), torch.sin(1 * omega), torch.cos(1 * omega)])
    assert torch.allclose(emb[1 * 3 + 2], want, atol=1e-6)
    model = tiny(pos_embed="sincos")
    assert not model.pos_embed.requires_grad
    assert torch.equal(model.pos_embed[0, 0], torch.zeros(32))  # CLS slot
    assert torch.allclose(model._patch_pos((6, 6))[0], sincos_pos_embed(32, (6, 6)))
    with pytest.raises(ValueError, match="'learned' or 'sincos'"):
        tiny(pos_embed="rope")


def test_forward_masked_equals_full_forward_on_the_kept_tokens_when_nothing_is_dropped():
    model = tiny(pos_embed="sincos").eval()
    x = torch.randn(2, 3, 16, 16)
    perm = torch.stack([torch.randperm(16) for _ in range(2)])
    full, masked = model(x), model.forward_masked(x, perm)
    assert torch.allclose(masked.patches, torch.gather(full.patches, 1, perm[..., None].expand(-1, -1, 32)), atol=1e-5)
    assert torch.allclose(masked.cls, full.cls, atol=1e-5)
    # with fewer tokens kept, only those are encoded
    assert model.forward_masked(x, perm[:, :4]).patches.shape == (2, 4, 32)


def test_cls_free_variant_keeps_its_final_norm_on_every_token():
    model = tiny(class_token=False).eval()
    out = model(torch.randn(2, 3, 16, 16))
    assert isinstance(model.fc_norm, torch.nn.Identity) and not isinstance(model.norm, torch.nn.Identity)
    assert torch.allclose(out.patches.mean(-1), torch.zeros(2, 16), atol=1e-5)  # LayerNorm output
