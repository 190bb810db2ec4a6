import pytest
import torch
import torch.nn.functional as F

from vitssl.backbones import create_backbone
from vitssl.backbones.cvt import WindowConvAttention


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """One intra-op thread for these tiny tensors (the shared `one_thread` fixture)."""


def small(**kw):
    return create_backbone("cvt_tiny", **{**dict(embed_dim=8, depth=1, num_heads=1, drop_path_rate=0.0), **kw})


def test_parameter_count_and_structure_of_cvt_tiny():
    with torch.device("meta"):
        model = create_backbone("cvt_tiny")
    params = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(params - 29.3) < 0.1, params  # EsViT paper Sec. 3.1; microsoft/esvit models/ and experiments/imagenet/: 29M
    assert [s.embed.proj.out_channels for s in model.stages] == [64, 192, 384, 768]
    assert [len(s.blocks) for s in model.stages] == [2, 2, 6, 2]
    assert [s.blocks[0].attn.num_heads for s in model.stages] == [1, 3, 6, 12]
    assert [(s.embed.proj.kernel_size[0], s.embed.proj.stride[0], s.embed.proj.padding[0]) for s in model.stages] == [
        (7, 4, 2), (3, 2, 1), (3, 2, 1), (3, 2, 1)]
    assert model.embed_dim == 768 and model.patch_size == 32
    assert not any("pos" in n or "cls" in n for n, _ in model.named_parameters())  # no position embedding, no CLS


@pytest.mark.parametrize("size,grid", [(224, 7), (96, 3), (64, 2), (16, 1)])
def test_view_and_region_tokens_for_any_crop(size, grid):
    tokens = small()(torch.randn(2, 3, size, size))
    assert tokens.cls is None and tokens.grid == (grid, grid)
    assert tokens.patches.shape == (2, grid * grid, 96) and tokens.pooled.shape == (2, 96)
    torch.testing.assert_close(tokens.pooled, tokens.patches.mean(1))


def test_region_tokens_are_after_the_final_norm():
    model = small()
    with torch.no_grad():
        model.norm.bias.fill_(3.0)
    tokens = model(torch.randn(2, 3, 64, 64)).patches
    torch.testing.assert_close(tokens.mean(-1), torch.full(tokens.shape[:2], 3.0), atol=1e-4, rtol=0)


def windowed_by_definition(attn, x):
    """Attention where each token sees exactly the real tokens of its window (tiles of the map
    cut at the border), from the module's own projections: what masked padding must equal."""
    b, h, w, c = x.shape
    win = min(attn.window_size, h, w)
    qkv = attn.qkv(attn.qkv_bn(attn.qkv_dw(x.permute(0, 3, 1, 2))).permute(0, 2, 3, 1))
    q, k, v = (t.reshape(b, h * w, attn.num_heads, -1).transpose(1, 2) for t in qkv.chunk(3, -1))
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    tile = (rows // win * 100 + cols // win).flatten()
    logits = (q @ k.transpose(-2, -1)) * attn.scale
    out = logits.masked_fill(tile[:, None] != tile[None, :], float("-inf")).softmax(-1) @ v
    return attn.proj(out.transpose(1, 2).reshape(b, h, w, c))


@pytest.mark.parametrize("grid", [(10, 10), (9, 12), (7, 7), (3, 5)])
def test_masked_padding_leaves_real_tokens_as_if_windows_were_cut_at_the_border(grid):
    attn = WindowConvAttention(dim=8, num_heads=2, window_size=7).eval()
    x = torch.randn(2, *grid, 8)
    torch.testing.assert_close(attn(x), windowed_by_definition(attn, x), atol=1e-5, rtol=1e-4)
    attn.mask_padding = False  # the original: padding tokens act as keys, wherever a map is padded
    padded = bool(grid[0] % min(7, *grid) or grid[1] % min(7, *grid))
    assert padded == bool((attn(x) - windowed_by_definition(attn, x)).abs().max() > 1e-4)


def test_attention_runs_through_sdpa(monkeypatch):
    calls = []
    original = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or original(*a, **k))
    small()(torch.randn(2, 3, 32, 32))
    assert len(calls) == 4


def test_last_blocks_cross_stages_and_only_the_last_stage_is_normed():
    model = small(depth=2).eval()
    x = torch.randn(2, 3, 64, 64)
    blocks = model.last_blocks(x, 3)
    assert [t.patches.shape[-1] for t in blocks] == [48, 96, 96]
    torch.testing.assert_close(blocks[-1].patches, model(x).patches)
    assert abs(blocks[0].patches.mean(-1)).mean() > 1e-3  # stage 3: not normed


def test_drop_path_rises_linearly_over_all_blocks():
    model = create_backbone("cvt_tiny", drop_path_rate=0.1)
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for b in model.blocks]
    torch.testing.assert_close(torch.tensor(rates), torch.linspace(0, 0.1, 12))


@pytest.mark.parametrize("option,match", [
    (dict(patch_size=16), "stride 4"), (dict(pos_embed="sincos"), "no position embedding")])
def test_options_cvt_does_not_have_are_refused(option, match):
    with pytest.raises(ValueError, match=match):
        create_backbone("cvt_tiny", **option)
