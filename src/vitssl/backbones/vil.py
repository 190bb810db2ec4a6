"""ViL-T (Vision Longformer) as EsViT pre-trains it (`--arch vil_2262`; EsViT paper Sec. 3.1, microsoft/esvit models/vision_longformer.py).

The released architecture string `l1,h3,d96,n2,s1,g1,p4,f7,a0_l2,h6,d192,n2,s1,g1,p2,f7,a0_
l3,h12,d384,n6,s0,g1,p2,f7,a0_l4,h24,d768,n2,s0,g0,p2,f7,a0` (EsViT README) reads: four stages
96-192-384-768 wide, 2-2-6-2 blocks, 3-6-12-24 heads; each stage starts with a non-overlapping
patch embedding (stride 4, then 2, 2, 2) followed by a LayerNorm, and prepends one learned
global token (stages 1-3; stage 4 has none). Stages 1-2 use Vision Longformer attention with
7 x 7 chunks, stages 3-4 full attention (`vil_attention.py`); every attention has relative
position biases and no absolute position embedding (`a0`). Blocks are pre-norm with
separate LayerNorms (eps 1e-6) before attention and MLP (GELU, ratio 4), stochastic depth
rising linearly over all blocks. A stage's global tokens are dropped before the next stage.

`forward` returns the last stage's tokens after the final norm (no global token there, so the
view feature is their mean, as in the original's `forward_features` with `AVG_POOL: False`);
`last_blocks` follows `forward_return_n_last_blocks`: a block of a stage with a global token
is summarised by that token, the last stage's blocks by their normed mean.
"""

from __future__ import annotations

import torch
from timm.layers import DropPath, trunc_normal_
from torch import nn

from vitssl.backbones.tokens import Tokens
from vitssl.backbones.vil_attention import FullAttention, LongformerAttention

VIL_PATCHES = (4, 2, 2, 2)  # patch-embedding stride per stage
EPS = 1e-6


class ViLEmbed(nn.Module):
    """Strided patch convolution + LayerNorm, then the stage's global tokens in front."""

    def __init__(self, dim_in: int, dim: int, patch: int, num_global: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(dim_in, dim, patch, patch)
        self.norm = nn.LayerNorm(dim, eps=EPS)
        self.num_global = num_global
        if num_global:
            self.cls_token = nn.Parameter(trunc_normal_(torch.zeros(1, num_global, dim), std=0.02))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B, C_in, H, W) -> (B, G + h w, C) and the grid (h, w)."""
        x = self.proj(x)
        grid = (x.shape[2], x.shape[3])
        x = self.norm(x.flatten(2).transpose(1, 2))
        if self.num_global:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return x, grid


class Mlp(nn.Module):
    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, int(dim * ratio)), nn.GELU(), nn.Linear(int(dim * ratio), dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ViLBlock(nn.Module):
    def __init__(self, dim: int, attn: nn.Module, mlp_ratio: float, drop_path: float) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=EPS), attn
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=EPS), Mlp(dim, mlp_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), grid))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ViLStage(nn.Module):
    def __init__(self, embed: ViLEmbed, blocks: list[ViLBlock]) -> None:
        super().__init__()
        self.embed, self.blocks = embed, nn.ModuleList(blocks)


class ViL(nn.Module):
    """Vision Longformer: `forward(x)` returns the last-stage tokens after the final norm.

    Input sides must be multiples of 32 (the stride-2 embeddings would drop rows otherwise);
    `img_size` sizes the full-attention stages' relative position tables (14 x 14 and 7 x 7 at
    224), other grids resample them. `patch_size` is the total stride (32).
    """

    def __init__(
        self,
        dims: tuple[int, ...] = (96, 192, 384, 768),
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (3, 6, 12, 24),
        num_global: tuple[int, ...] = (1, 1, 1, 0),
        longformer: tuple[bool, ...] = (True, True, False, False),
        window_size: int = 7,
        img_size: int = 224,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        final_norm: bool = True,
    ) -> None:
        super().__init__()
        rates = [drop_path_rate * i / max(sum(depths) - 1, 1) for i in range(sum(depths))]
        self.stages, dim_in, start, side = nn.ModuleList(), 3, 0, img_size
        for s, (dim, depth, heads, glob, local) in enumerate(zip(dims, depths, num_heads, num_global, longformer)):
            side //= VIL_PATCHES[s]

            def attention() -> nn.Module:
                if local:
                    return LongformerAttention(dim, heads, window_size, glob)  # noqa: B023
                return FullAttention(dim, heads, (side, side), glob)  # noqa: B023

            blocks = [ViLBlock(dim, attention(), mlp_ratio, rates[start + i]) for i in range(depth)]
            self.stages.append(ViLStage(ViLEmbed(dim_in, dim, VIL_PATCHES[s], glob), blocks))
            dim_in, start = dim, start + depth
        self.norm = nn.LayerNorm(dim_in, eps=EPS) if final_norm else nn.Identity()
        self.embed_dim = self.num_features = dim_in
        self.patch_size = 32
        self.apply(_init_weights)

    @property
    def blocks(self) -> list[ViLBlock]:
        """All blocks in order, across stages (like ViT's `blocks`)."""
        return [block for stage in self.stages for block in stage.blocks]

    @property
    def stage_depths(self) -> list[int]:
        return [len(stage.blocks) for stage in self.stages]

    def _walk(self, x: torch.Tensor, first: int):
        """Run every stage; yield (stage index, tokens, grid) after each block from block `first` on."""
        if x.shape[-2] % self.patch_size or x.shape[-1] % self.patch_size:
            raise ValueError(f"ViL takes images whose sides are multiples of {self.patch_size}, not "
                             f"{x.shape[-2]}x{x.shape[-1]}: use a size such as {self.patch_size}, 96 or 224")
        index, grid = 0, (0, 0)
        for s, stage in enumerate(self.stages):
            if s:  # drop the previous stage's global tokens, back to a map
                prev = self.stages[s - 1].embed.num_global
                x = x[:, prev:].transpose(1, 2).reshape(x.shape[0], -1, *grid)
            x, grid = stage.embed(x)
            for block in stage.blocks:
                x = block(x, grid)
                if index >= first:
                    yield s, x, grid
                index += 1

    def _tokens(self, x: torch.Tensor, grid: tuple[int, int], num_global: int) -> Tokens:
        return Tokens(cls=x[:, 0] if num_global else None, patches=x[:, num_global:], grid=grid)

    def forward(self, x: torch.Tensor) -> Tokens:
        """(B, 3, H, W) images -> last-stage Tokens (B, h*w, C) after the final norm."""
        *_, (_, out, grid) = self._walk(x, len(self.blocks) - 1)
        return self._tokens(self.norm(out), grid, self.stages[-1].embed.num_global)

    def last_blocks(self, x: torch.Tensor, n: int) -> list[Tokens]:
        """Tokens of the last n blocks across stages; only the last stage's pass the final norm.
        Blocks of a stage with a global token pool to it (`Tokens.cls`), as in the original."""
        last = len(self.stages) - 1
        return [self._tokens(self.norm(t) if s == last else t, grid, self.stages[s].embed.num_global)
                for s, t, grid in self._walk(x, len(self.blocks) - n)]

    def no_weight_decay(self) -> set[str]:
        """Empty on purpose, as for ViT and Swin: the param groups decide."""
        return set()


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
