"""vil_tiny: structure and size, the backbone contract, and Vision Longformer attention against
its definition (dense attention over each token's allowed keys, biases from coordinates)."""

import pytest
import torch
import torch.nn.functional as F

from helpers import one_batch
from vitssl.backbones import BackboneConfig, create_backbone
from vitssl.backbones.vil_attention import FullAttention, LongformerAttention
from vitssl.config import load_config, to_objects
from vitssl.engine.protocol import StepContext
from vitssl.engine.validation import ConfigError
from vitssl.methods import build_method, method_configs


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """One intra-op thread for these tiny tensors (the shared `one_thread` fixture)."""


def small(**kw):
    return create_backbone("vil_tiny", **{**dict(embed_dim=8, depth=1, num_heads=1, drop_path_rate=0.0,
                                                 img_size=64), **kw})


def test_parameter_count_and_structure_of_vil_tiny():
    with torch.device("meta"):
        model = create_backbone("vil_tiny")
    params = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(params - 27.6) < 0.05, params  # spec 3.3 / 3.7: 28M
    assert [s.embed.proj.out_channels for s in model.stages] == [96, 192, 384, 768]
    assert [s.embed.proj.stride[0] for s in model.stages] == [4, 2, 2, 2]
    assert [len(s.blocks) for s in model.stages] == [2, 2, 6, 2]
    assert [s.blocks[0].attn.num_heads for s in model.stages] == [3, 6, 12, 24]
    assert [type(s.blocks[0].attn) for s in model.stages] == [LongformerAttention] * 2 + [FullAttention] * 2
    assert [s.embed.num_global for s in model.stages] == [1, 1, 1, 0]
    assert [s.blocks[0].attn.table_grid for s in model.stages[2:]] == [(14, 14), (7, 7)]
    assert model.embed_dim == 768 and model.patch_size == 32
    assert not any("pos_embed" in n for n, _ in model.named_parameters())  # relative biases only


@pytest.mark.parametrize("size,grid", [(224, (7, 7)), (96, (3, 3)), (64, (2, 2)), (32, (1, 1)), ((64, 96), (2, 3))])
def test_view_and_region_tokens_for_any_accepted_crop(size, grid):
    h, w = (size, size) if isinstance(size, int) else size
    tokens = small()(torch.randn(2, 3, h, w))
    assert tokens.cls is None and tokens.grid == grid
    assert tokens.patches.shape == (2, grid[0] * grid[1], 64) and tokens.pooled.shape == (2, 64)
    torch.testing.assert_close(tokens.pooled, tokens.patches.mean(1))


def test_region_tokens_are_after_the_final_norm():
    model = small()
    with torch.no_grad():
        model.norm.bias.fill_(3.0)
    tokens = model(torch.randn(2, 3, 64, 64)).patches
    torch.testing.assert_close(tokens.mean(-1), torch.full(tokens.shape[:2], 3.0), atol=1e-4, rtol=0)


def longformer_by_definition(attn, x, grid):
    """Dense attention: a local token at (r, c) in chunk (r // W, c // W) sees the global tokens
    and the real tokens of the 3 x 3 chunks around its own, with bias table[(r - r', c - c')];
    global tokens see everything. Built from coordinates, not from the module's index tables."""
    b, n, c = x.shape
    g, (h, w), win, heads = attn.num_global, grid, attn.window, attn.num_heads
    q = attn.query(x).reshape(b, n, heads, -1).transpose(1, 2)
    k, v = (t.reshape(b, n, heads, -1).transpose(1, 2) for t in attn.kv(x).chunk(2, dim=-1))
    rows, cols = (t.flatten() for t in torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij"))
    span = 2 * win - 1  # the largest offset inside a neighbourhood; farther pairs are masked anyway
    dr, dc = ((t[:, None] - t[None, :]).clamp(-span, span) for t in (rows, cols))
    near = ((rows[:, None] // win - rows[None, :] // win).abs() <= 1) & ((cols[:, None] // win - cols[None, :] // win).abs() <= 1)
    table = attn.relative_position_bias_table  # ((4W-1)^2, heads)
    local = table[(dr + 2 * win - 1) * (4 * win - 1) + dc + 2 * win - 1].permute(2, 0, 1)
    local = local.masked_fill(~near, float("-inf"))
    bias = torch.zeros(heads, n, n)
    bias[:, g:, g:] = local
    if g:
        bias[:, :g, :g] = attn.global_global_bias
        bias[:, :g, g:] = attn.global_bias[0][:, :, None]
        bias[:, g:, :g] = attn.global_bias[1][:, None, :]
    probs = ((q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5 + bias).softmax(-1)
    return attn.proj((probs @ v).transpose(1, 2).reshape(b, n, c))


@pytest.mark.parametrize("grid,window,num_global", [((9, 9), 3, 1), ((7, 11), 3, 1), ((8, 8), 7, 1), ((5, 6), 2, 0),
                                                     ((2, 2), 7, 1)])
def test_longformer_attention_is_its_definition_and_padding_never_acts(grid, window, num_global):
    """Maps that are not a multiple of the chunk are padded; the definition has no padding, so
    equality means padded positions never act as keys and real tokens are unchanged by them."""
    attn = LongformerAttention(dim=8, num_heads=2, window=window, num_global=num_global).eval()
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0, 0.5)
    x = torch.randn(2, num_global + grid[0] * grid[1], 8)
    torch.testing.assert_close(attn(x, grid), longformer_by_definition(attn, x, grid), atol=1e-5, rtol=1e-4)


def test_full_attention_is_dense_attention_with_relative_biases_on_its_own_grid():
    attn = FullAttention(dim=8, num_heads=2, table_grid=(3, 4), num_global=1).eval()
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0, 0.5)
    x = torch.randn(2, 13, 8)
    q, k, v = attn.qkv(x).reshape(2, 13, 3, 2, 4).permute(2, 0, 3, 1, 4)
    rows, cols = (t.flatten() for t in torch.meshgrid(torch.arange(3), torch.arange(4), indexing="ij"))
    bias = torch.zeros(2, 13, 13)
    bias[:, 1:, 1:] = attn.relative_position_bias_table[
        (rows[:, None] - rows[None, :] + 2) * 7 + cols[:, None] - cols[None, :] + 3].permute(2, 0, 1)
    bias[:, :1, :1], bias[:, :1, 1:], bias[:, 1:, :1] = (
        attn.global_global_bias, attn.global_bias[0][:, :, None], attn.global_bias[1][:, None, :])
    expected = ((q @ k.transpose(-2, -1)) * 0.5 + bias).softmax(-1) @ v
    torch.testing.assert_close(attn(x, (3, 4)), attn.proj(expected.transpose(1, 2).reshape(2, 13, 8)),
                               atol=1e-5, rtol=1e-4)


def test_attention_is_memory_linear_and_runs_through_sdpa(monkeypatch):
    """At 224² no attention call is T x T over the 3,136 stage-1 tokens: each local query of
    stages 1-2 sees 1 global + 9 x 49 keys, the global token all of them (1 x T); only stages
    3-4 (197 and 49 tokens) attend fully."""
    calls = []
    original = F.scaled_dot_product_attention

    def record(q, k, v, **kw):
        calls.append((q.shape[-2], k.shape[-2], tuple(kw["attn_mask"].shape)))
        return original(q, k, v, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", record)
    with torch.no_grad():
        small(img_size=224)(torch.randn(1, 3, 224, 224))
    assert [(q, s) for q, s, _ in calls[:4]] == [(49, 1 + 9 * 49), (1, 1 + 56 * 56), (49, 1 + 9 * 49), (1, 1 + 28 * 28)]
    assert calls[0][2] == (64, 1, 49, 1 + 9 * 49)  # one mask for the 8 x 8 chunks, shared by the batch
    assert [(q, s) for q, s, _ in calls[4:]] == [(197, 197), (49, 49)]


def test_last_blocks_cross_stages_pool_to_the_global_token_and_only_the_last_stage_is_normed():
    model = small(depth=2).eval()
    x = torch.randn(2, 3, 64, 64)
    blocks = model.last_blocks(x, 3)
    assert [t.pooled.shape[-1] for t in blocks] == [32, 64, 64]
    assert blocks[0].cls is not None and blocks[1].cls is None  # stage 3 has a global token, stage 4 none
    torch.testing.assert_close(blocks[-1].patches, model(x).patches)
    assert abs(blocks[0].patches.mean(-1)).mean() > 1e-3  # stage 3: not normed


def test_drop_path_rises_linearly_over_all_blocks():
    model = create_backbone("vil_tiny", drop_path_rate=0.1, embed_dim=8, num_heads=1)
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for b in model.blocks]
    torch.testing.assert_close(torch.tensor(rates), torch.linspace(0, 0.1, 12))


@pytest.mark.parametrize("option,match", [
    (dict(patch_size=16), "stride 4"), (dict(pos_embed="sincos"), "no position embedding"),
    (dict(mask_padding=False), "always masks the padding")])
def test_options_vil_does_not_have_are_refused(option, match):
    with pytest.raises(ValueError, match=match):
        create_backbone("vil_tiny", **option)


def test_sizes_that_are_not_multiples_of_32_are_refused_at_config_time_with_the_accepted_ones():
    with pytest.raises(ConfigError, match=r"backbone.img_size=48 is not a multiple of .*32.*use a multiple of 32"):
        BackboneConfig(name="vil_tiny", img_size=48)
    with pytest.raises(ConfigError, match="did you mean 'vil_tiny'"):
        BackboneConfig(name="vil_tiyn")
    with pytest.raises(ValueError, match="multiples of 32, not 16x48: use a size such as 32, 96 or 224"):
        small()(torch.randn(1, 3, 16, 48))  # an evaluation or analysis at another size


def test_selfpatch_runs_on_vil_last_stage_tokens():
    heads = [f"method.{h}.{kv}" for h in ("head", "patch_head") for kv in ("out_dim=32", "hidden_dim=16", "bottleneck_dim=8")]
    objs = to_objects(load_config(None, ["method.name=selfpatch", "backbone.name=vil_tiny", "backbone.embed_dim=8",
                                         "backbone.depth=1", "backbone.num_heads=1", "backbone.img_size=32", *heads,
                                         "method.crops.global_crops_size=64", "method.crops.local_crops_size=32",
                                         "method.crops.local_crops_number=2"], method_configs()))
    model = build_method(objs.method, objs.backbone).train()
    out = model.training_step(one_batch(model), StepContext(step=0, epoch=1, steps_per_epoch=10, total_steps=20, epochs=2))
    out.loss.backward()
    assert torch.isfinite(out.loss) and model.student.backbone.stages[0].blocks[0].attn.query.weight.grad is not None
