"""Vision Longformer attention (Zhang et al. 2021; EsViT's ViL-T, EsViT paper Sec. 3.1), memory-linear.

ViL's stage-1/2 attention ("sliding chunk", the released `longformerhand`, `exact=0`): the map
is cut into W x W chunks (zero-padded at the bottom and right to a multiple of W); the queries of
a chunk attend to the global tokens and to the 3 x 3 chunks around their own (9 W^2 keys, those
outside the map or in the padding masked out), and the global tokens attend to every token.
The cost per token is constant, so memory grows linearly with the map: at stage 1 of a 224²
image (56 x 56 = 3,136 tokens) each query sees 1 + 441 keys instead of 3,137.

Here the 3 x 3 neighbourhoods are gathered with `unfold` (a 9x copy of keys and values, no
T x T tensor) and both parts run through `F.scaled_dot_product_attention`, so a GPU takes its
fused (memory-efficient) kernel; relative position biases and the border mask are one additive
mask, shared by the batch. Stages 3-4 of ViL-T attend fully (`FullAttention`), with a relative
position table sized for the `img_size` grid and, on other grids, the original's bicubic
resampling of the whole token-pair bias matrix (kept: its checkpoints depend on it).

Both keep the original's parametrisation (q from `query`, k and v from `kv`, shared by local and
global tokens, as in the released SHARE_W configuration; bias tables indexed as the original's)
so `vitssl import --from esvit` only renames.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn


def chunk_bias_index(w: int) -> torch.Tensor:
    """(w^2, 9 w^2) index into a (4w-1)^2 table: query (x, y) of the centre chunk against key
    (x', y') of neighbour chunk (di, dj), keys ordered (di, dj, x', y') row-major."""
    q = torch.stack(torch.meshgrid(torch.arange(w), torch.arange(w), indexing="ij")).reshape(2, -1)
    offsets = torch.arange(-w, 2 * w)
    k = torch.stack(torch.meshgrid(offsets, offsets, indexing="ij"))  # (2, 3w, 3w)
    k = k.reshape(2, 3, w, 3, w).permute(0, 1, 3, 2, 4).reshape(2, -1)  # (di, dj, x', y')
    rel = q[:, :, None] - k[:, None, :] + 2 * w - 1  # each in [0, 4w - 2]
    return rel[0] * (4 * w - 1) + rel[1]


def grid_bias_index(h: int, w: int) -> torch.Tensor:
    """(h w, h w) Swin-style index into a (2h-1)(2w-1) table of relative offsets."""
    c = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")).reshape(2, -1)
    rel = c[:, :, None] - c[:, None, :]
    return (rel[0] + h - 1) * (2 * w - 1) + rel[1] + w - 1


@lru_cache(maxsize=64)
def _invalid_keys(h: int, w: int, chunk: int, device: torch.device) -> torch.Tensor:
    """(mh mw, 9 chunk^2) bool: key outside the real h x w map for each chunk's neighbourhood
    (cached per map size and device: no host-to-device copy per layer)."""
    mh, mw = -(-h // chunk), -(-w // chunk)
    cm, cn = torch.meshgrid(torch.arange(mh), torch.arange(mw), indexing="ij")
    d = torch.arange(3) - 1
    x = torch.arange(chunk)
    rows = (cm.reshape(-1, 1, 1, 1, 1) + d.reshape(1, 3, 1, 1, 1)) * chunk + x.reshape(1, 1, 1, chunk, 1)
    cols = (cn.reshape(-1, 1, 1, 1, 1) + d.reshape(1, 1, 3, 1, 1)) * chunk + x.reshape(1, 1, 1, 1, chunk)
    invalid = (rows < 0) | (rows >= h) | (cols < 0) | (cols >= w)
    return invalid.reshape(mh * mw, 9 * chunk * chunk).to(device)


def _neighbourhoods(t: torch.Tensor, chunk: int) -> torch.Tensor:
    """(B, Hp, Wp, heads, d) padded map -> (B, chunks, heads, 9 chunk^2, d): every chunk's 3 x 3
    chunk neighbourhood, zero beyond the border."""
    b, hp, wp, heads, d = t.shape
    t = F.pad(t, (0, 0, 0, 0, chunk, chunk, chunk, chunk))
    t = t.reshape(b, hp // chunk + 2, chunk, wp // chunk + 2, chunk, heads, d).permute(0, 5, 6, 2, 4, 1, 3)
    t = t.unfold(5, 3, 1).unfold(6, 3, 1)  # (B, heads, d, x, y, mh, mw, di, dj)
    t = t.permute(0, 5, 6, 1, 7, 8, 3, 4, 2)  # (B, mh, mw, heads, di, dj, x, y, d)
    return t.reshape(b, -1, heads, 9 * chunk * chunk, d)


class _GlobalBias(nn.Module):
    """Relative biases of the global tokens: `global_bias[0]` global -> local, `[1]` local ->
    global, `global_global_bias` between global tokens (the original's g2l / g2g)."""

    def _init_global(self, heads: int, num_global: int) -> None:
        self.num_global = num_global
        if num_global:
            self.global_bias = nn.Parameter(trunc_normal_(torch.zeros(2, heads, num_global), std=0.02))
            self.global_global_bias = nn.Parameter(trunc_normal_(torch.zeros(heads, num_global, num_global), std=0.02))

    def _global_rows(self, n_local: int) -> torch.Tensor:
        """(heads, G, G + n_local) bias of the global queries against every key."""
        g = self.global_bias[0][:, :, None].expand(-1, -1, n_local)
        return torch.cat([self.global_global_bias, g], dim=-1)


class LongformerAttention(_GlobalBias):
    """Sliding-chunk attention on (B, G + h w, C) tokens (G global ones first)."""

    def __init__(self, dim: int, num_heads: int, window: int, num_global: int) -> None:
        super().__init__()
        self.num_heads, self.window, self.head_dim = num_heads, window, dim // num_heads
        self.query = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(
            trunc_normal_(torch.zeros((4 * window - 1) ** 2, num_heads), std=0.02))
        self.register_buffer("bias_index", chunk_bias_index(window), persistent=False)
        self._init_global(num_heads, num_global)

    def _local_mask(self, grid: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
        """(chunks, heads, W^2, G + 9 W^2) additive mask: relative biases, -inf off the map."""
        w2 = self.window**2
        local = self.relative_position_bias_table[self.bias_index.reshape(-1)].reshape(w2, 9 * w2, -1).permute(2, 0, 1)
        invalid = _invalid_keys(*grid, self.window, local.device)
        local = local[None].masked_fill(invalid[:, None, None, :], float("-inf"))
        if not self.num_global:
            return local.to(dtype)
        to_global = self.global_bias[1][None, :, None, :].expand(local.shape[0], -1, w2, -1)
        return torch.cat([to_global, local], dim=-1).to(dtype)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        g, (h, w), cw, heads = self.num_global, grid, self.window, self.num_heads
        q = self.query(x).reshape(b, n, heads, self.head_dim)
        k, v = self.kv(x).reshape(b, n, 2, heads, self.head_dim).unbind(2)
        pad = (0, 0, 0, 0, 0, -w % cw, 0, -h % cw)
        q_map, k_map, v_map = (F.pad(t[:, g:].reshape(b, h, w, heads, -1), pad) for t in (q, k, v))
        hp, wp = q_map.shape[1:3]
        q_loc = q_map.reshape(b, hp // cw, cw, wp // cw, cw, heads, -1).permute(0, 1, 3, 5, 2, 4, 6)
        q_loc = q_loc.reshape(b, -1, heads, cw * cw, self.head_dim)
        k_loc, v_loc = _neighbourhoods(k_map, cw), _neighbourhoods(v_map, cw)
        if g:
            k_glob, v_glob = (t[:, None, :g].transpose(2, 3).expand(-1, k_loc.shape[1], -1, -1, -1) for t in (k, v))
            k_loc, v_loc = torch.cat([k_glob, k_loc], dim=3), torch.cat([v_glob, v_loc], dim=3)
        out = F.scaled_dot_product_attention(q_loc, k_loc, v_loc, attn_mask=self._local_mask(grid, q.dtype))
        out = out.reshape(b, hp // cw, wp // cw, heads, cw, cw, -1).permute(0, 1, 4, 2, 5, 3, 6)
        out = out.reshape(b, hp, wp, c)[:, :h, :w].reshape(b, h * w, c)
        if g:
            bias = self._global_rows(h * w).to(q.dtype)
            glob = F.scaled_dot_product_attention(q[:, :g].transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                  attn_mask=bias[None])
            out = torch.cat([glob.transpose(1, 2).reshape(b, g, c), out], dim=1)
        return self.proj(out)


class FullAttention(_GlobalBias):
    """Global attention on (B, G + h w, C) with a relative position table for the `table_grid`."""

    def __init__(self, dim: int, num_heads: int, table_grid: tuple[int, int], num_global: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.table_grid = num_heads, dim // num_heads, table_grid
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        th, tw = table_grid
        self.relative_position_bias_table = nn.Parameter(
            trunc_normal_(torch.zeros((2 * th - 1) * (2 * tw - 1), num_heads), std=0.02))
        self.register_buffer("bias_index", grid_bias_index(th, tw), persistent=False)
        self._init_global(num_heads, num_global)

    def _mask(self, n_local: int, dtype: torch.dtype) -> torch.Tensor:
        """(heads, N, N) bias; on another grid the table's (T, T) bias matrix is resampled to
        (n, n) bicubically, as the original does."""
        t = self.table_grid[0] * self.table_grid[1]
        local = self.relative_position_bias_table[self.bias_index.reshape(-1)].reshape(t, t, -1).permute(2, 0, 1)
        if n_local != t:
            local = F.interpolate(local[None], size=(n_local, n_local), mode="bicubic")[0]
        if self.num_global:
            from_local = self.global_bias[1][:, None, :].expand(-1, n_local, -1)
            local = torch.cat([self._global_rows(n_local), torch.cat([from_local, local], dim=-1)], dim=1)
        return local.to(dtype)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self._mask(n - self.num_global, q.dtype)[None])
        return self.proj(out.transpose(1, 2).reshape(b, n, c))
