from functools import partial

import pytest
import torch
from timm.models.swin_transformer import SwinTransformer
from torch import nn

from vitssl.backbones import create_backbone
from vitssl.backbones.swin import window_attention_mask
from vitssl.engine.checkpoint import CheckpointError, load_matching_state


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """One intra-op thread for these tiny tensors (the shared `one_thread` fixture)."""


def shallow(name="swin_tiny", **kw):
    """The real window rule at 224 (4 stages, two blocks each so odd blocks shift) at tiny width."""
    return create_backbone(name, **{**dict(depth=2, embed_dim=16, num_heads=1, drop_path_rate=0.0), **kw})


def windows(model):
    """Per stage: (window, shift) of its odd (shifted) block."""
    return [(stage.blocks[-1].window_size[0], stage.blocks[-1].shift_size[0]) for stage in model.layers]


def reference_block(block, x):
    """A Swin block by definition, without padding, rolling or window partitioning.

    Every token attends to the tokens of its own window, windows being the W x W tiles of the
    map offset by the shift (boundaries at s + kW) and cut at the map's border, with the
    relative position bias of their true offsets.
    """
    b, h, w, c = x.shape
    (wh, ww), (sh, sw) = block.window_size, block.shift_size
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    tile_r, tile_c = (rows - sh).div(wh, rounding_mode="floor"), (cols - sw).div(ww, rounding_mode="floor")
    same = (tile_r[:, None] == tile_r[None, :]) & (tile_c[:, None] == tile_c[None, :])
    dy, dx = rows[:, None] - rows[None, :], cols[:, None] - cols[None, :]
    index = torch.where(same, (dy + wh - 1) * (2 * ww - 1) + (dx + ww - 1), 0)
    bias = block.attn.relative_position_bias_table[index].permute(2, 0, 1)  # (heads, L, L)
    heads = block.attn.num_heads
    q, k, v = block.attn.qkv(block.norm1(x).reshape(b, h * w, c)).reshape(b, h * w, 3, heads, -1).permute(2, 0, 3, 1, 4)
    logits = (q @ k.transpose(-2, -1)) * block.attn.scale + bias
    attn = logits.masked_fill(~same, float("-inf")).softmax(-1) @ v
    y = x.reshape(b, h * w, c) + block.attn.proj(attn.transpose(1, 2).reshape(b, h * w, -1))
    y = y + block.mlp(block.norm2(y))
    return y.reshape(b, h, w, c)


def test_parameter_counts_match_the_spec_table():
    # EsViT paper Sec. 3.1; microsoft/esvit models/ and experiments/imagenet/: 28M / 49M / 87M (the table counts ImageNet's 0.77M classifier; we have none)
    expected = {"swin_tiny": (27.5, 768), "swin_small": (48.8, 768), "swin_base": (86.7, 1024)}
    for name, (millions, width) in expected.items():
        for suffix in ("", "_w14"):
            with torch.device("meta"):  # built at 224, never run
                model = create_backbone(name + suffix)
            params = sum(p.numel() for p in model.parameters()) / 1e6
            assert abs(params - millions) < 0.3, (name + suffix, params)
            assert model.embed_dim == model.num_features == width and model.patch_size == 32
    assert model.norm.eps == model.patch_embed.norm.eps == 1e-6
    assert model.layers[0].blocks[0].attn.qkv.bias is not None
    assert model.layers[0].blocks[0].mlp.fc1.out_features == 4 * 128


def test_window_rule_from_the_224_grid():
    # W=7: stage grids 56, 28, 14, 7 -> only stage 4 is global; W=14: stages 3 and 4 are
    assert windows(shallow("swin_tiny")) == [(7, 3), (7, 3), (7, 3), (7, 0)]
    assert windows(shallow("swin_tiny_w14")) == [(14, 7), (14, 7), (14, 0), (7, 0)]
    assert windows(shallow("swin_tiny", window_size=14)) == windows(shallow("swin_tiny_w14"))
    assert [block.shift_size[0] for block in shallow("swin_tiny").layers[0].blocks] == [0, 3]
    # fixed at construction: a 96 crop keeps the 224 windows (its stage-4 3x3 grid is padded to 7x7)
    assert windows(shallow("swin_tiny", img_size=96)) == [(7, 3), (7, 3), (6, 0), (3, 0)]


@pytest.mark.parametrize("name", ["swin_tiny", "swin_tiny_w14"])
def test_one_model_takes_global_and_local_crops_in_one_step(name):
    model = shallow(name)
    global_out, local_out = model(torch.randn(2, 3, 224, 224)), model(torch.randn(3, 3, 96, 96))
    assert global_out.cls is None and global_out.patches.shape == (2, 49, 128) and global_out.grid == (7, 7)
    assert local_out.patches.shape == (3, 9, 128) and local_out.grid == (3, 3)
    assert torch.allclose(global_out.pooled, global_out.patches.mean(1))
    (global_out.pooled.sum() + local_out.pooled.pow(2).sum()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_any_multiple_of_four_down_to_tiny_sizes_and_a_clear_error_otherwise():
    model = create_backbone("swin_tiny", img_size=16, depth=1, embed_dim=8, num_heads=1)
    for size, grid in ((16, (1, 1)), (4, (1, 1)), (40, (2, 2)), (72, (3, 3))):
        out = model(torch.randn(1, 3, size, size))
        assert out.grid == grid and torch.isfinite(out.patches).all()
    assert model(torch.randn(1, 3, 64, 96)).grid == (2, 3)
    with pytest.raises(ValueError, match="multiple of the patch size 4"):
        model(torch.randn(1, 3, 30, 30))


@pytest.mark.parametrize("size", [(10, 12), (3, 3), (14, 14), (9, 16)])
@pytest.mark.parametrize("stage, index", [(0, 0), (0, 1), (3, 0)])
def test_masked_padding_leaves_real_tokens_as_if_windows_were_cut_at_the_border(stage, index, size):
    # stage 1 blocks: window 7 without / with shift 3; stage 4: global 7x7 window (3x3 at 96)
    model = shallow().eval()
    block = model.layers[stage].blocks[index]
    x = torch.randn(2, *size, block.dim)
    with torch.no_grad():
        assert torch.allclose(block(x), reference_block(block, x), atol=1e-5)


@pytest.mark.parametrize("stage, index", [(0, 0), (0, 1), (3, 0)])
def test_unmasked_padding_reproduces_the_original_and_changes_real_tokens(stage, index):
    model = shallow(mask_padding=False).eval()
    block = model.layers[stage].blocks[index]
    with torch.no_grad():
        no_padding = torch.randn(2, 14, 14, block.dim) if stage == 0 else torch.randn(2, 7, 7, block.dim)
        assert torch.allclose(block(no_padding), reference_block(block, no_padding), atol=1e-5)
        padded = torch.randn(2, 10, 12, block.dim) if stage == 0 else torch.randn(2, 3, 3, block.dim)
        assert not torch.allclose(block(padded), reference_block(block, padded), atol=1e-3)


def test_masking_changes_nothing_without_padding_and_something_with_it():
    masked = shallow().eval()
    unmasked = shallow(mask_padding=False).eval()
    unmasked.load_state_dict(masked.state_dict())
    with torch.no_grad():
        x = torch.randn(2, 3, 224, 224)  # 56, 28, 14, 7: multiples of 7, no padding
        assert torch.allclose(masked(x).patches, unmasked(x).patches, atol=1e-5)
        x = torch.randn(2, 3, 96, 96)  # 24, 12, 6, 3: every stage padded
        assert not torch.allclose(masked(x).patches, unmasked(x).patches, atol=1e-3)


def test_padding_mask_layout():
    # a 3x3 map in one 7x7 window, no shift: real queries see exactly the 9 real keys
    mask = window_attention_mask((3, 3), (7, 7), (0, 0))
    real = torch.zeros(7, 7, dtype=torch.bool)
    real[:3, :3] = True
    real = real.flatten()
    assert mask.shape == (1, 49, 49)
    assert torch.equal(mask[0][real][:, real], torch.zeros(9, 9))
    assert torch.isinf(mask[0][real][:, ~real]).all()
    assert (mask[0][~real] == 0).all()  # padding queries are discarded, not masked (no all -inf rows)
    assert window_attention_mask((7, 7), (7, 7), (0, 0)) is None
    assert window_attention_mask((3, 3), (7, 7), (0, 0), mask_padding=False) is None
    # the shift mask alone is the original's (-100 between regions), built for the padded size
    shifted = window_attention_mask((12, 12), (7, 7), (3, 3), mask_padding=False)
    assert shifted.shape == (4, 49, 49) and set(shifted.unique().tolist()) == {-100.0, 0.0}
    assert torch.isfinite(window_attention_mask((2, 2), (7, 7), (3, 3))).any(-1).all()


def test_masks_are_cached_per_grid_not_rebuilt_every_step(monkeypatch):
    import vitssl.backbones.swin as swin

    model = shallow()
    calls = []
    real = swin.window_attention_mask
    monkeypatch.setattr(swin, "window_attention_mask", lambda *a, **k: calls.append(1) or real(*a, **k))
    for _ in range(3):
        model(torch.randn(1, 3, 96, 96))
    assert len(calls) == len(model.blocks)  # once per block for the 96 grid
    model(torch.randn(1, 3, 224, 224))
    assert len(calls) == 2 * len(model.blocks)


def test_attention_runs_through_sdpa(monkeypatch):
    model = shallow()
    calls = []
    real = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    model(torch.randn(1, 3, 96, 96))
    assert len(calls) == len(model.blocks)


def test_last_blocks_cross_stages_and_only_the_last_stage_is_normed():
    model = shallow().eval()
    x = torch.randn(2, 3, 96, 96)
    blocks = model.last_blocks(x, 4)
    assert [t.patches.shape for t in blocks] == [(2, 36, 64), (2, 36, 64), (2, 9, 128), (2, 9, 128)]
    assert [t.grid for t in blocks] == [(6, 6), (6, 6), (3, 3), (3, 3)]
    assert torch.allclose(blocks[-1].patches, model(x).patches, atol=1e-5)
    layer_norm = nn.functional.layer_norm
    assert not torch.allclose(blocks[1].patches, layer_norm(blocks[1].patches, (64,), eps=1e-6), atol=1e-2)
    assert torch.cat([t.pooled for t in blocks], dim=-1).shape == (2, 384)
    # Swin-T, n=4: 384 + 384 + 768 + 768 = 2304 (EsViT paper Sec. 3.1; microsoft/esvit models/ and experiments/imagenet/)
    swin_t = create_backbone("swin_tiny", depth=None, img_size=32).eval()
    assert [t.pooled.shape[-1] for t in swin_t.last_blocks(torch.randn(1, 3, 32, 32), 4)] == [384, 384, 768, 768]


def test_drop_path_is_configurable_and_rises_linearly():
    model = shallow(drop_path_rate=0.2)
    rates = [getattr(block.drop_path1, "drop_prob", 0.0) for block in model.blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.2) and rates == sorted(rates)


def test_weights_export_to_timm_unchanged():
    ours = shallow().eval()
    theirs = SwinTransformer(img_size=224, embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=7,
                             num_classes=0, norm_layer=partial(nn.LayerNorm, eps=1e-6)).eval()
    theirs.load_state_dict(ours.state_dict())  # strict: same names and shapes
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(ours(x).patches, theirs.forward_features(x).flatten(1, 2), atol=1e-5)


def test_window_7_and_window_14_refuse_each_others_weights():
    w7, w14 = shallow("swin_tiny"), shallow("swin_tiny_w14")
    assert w7.state_dict().keys() == w14.state_dict().keys()
    differ = {k for k, v in w7.state_dict().items() if v.shape != w14.state_dict()[k].shape}
    # windows 7 vs 14 in stages 1-3 (13^2 vs 27^2 offsets); stage 4 is 7x7 in both
    assert differ == {f"layers.{i}.blocks.{j}.attn.relative_position_bias_table" for i in range(3) for j in range(2)}
    with pytest.raises(CheckpointError, match=r"layers\.0\.blocks\.0\.attn\.relative_position_bias_table \(729, 1\) vs \(169, 1\)"):
        load_matching_state(w7, w14.state_dict())


def test_mask_padding_can_be_switched_after_loading_weights():
    model = shallow().eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        masked = model(x).patches
        model.mask_padding = False
        assert all(not block.mask_padding for block in model.blocks)
        assert not torch.allclose(model(x).patches, masked, atol=1e-3)
        model.mask_padding = True
        assert torch.allclose(model(x).patches, masked)
