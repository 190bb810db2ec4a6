"""CvT-T as EsViT pre-trains it (`cvt_v4`, `experiments/imagenet/cvt_v4/s1.yaml`; EsViT paper Sec. 3.1; microsoft/esvit models/ and experiments/imagenet/).

EsViT's "CvT" is not the published CvT's strided key/value attention: each stage is a
convolutional token embedding (kernel 7/3/3/3, stride 4/2/2/2, padding 2/1/1/1, then LayerNorm)
and pre-norm blocks whose attention runs in non-overlapping W x W windows (W = 7), with q, k
and v from one convolutional projection: depthwise 3x3 conv (stride 1, no bias), BatchNorm,
pointwise 1x1 to 3C. No position embedding and no class token. Behaviour kept from the
original because its checkpoints depend on it:

- the window is min(W, map height, map width): a map smaller than W attends globally;
- the normed map is zero-padded at the bottom and right to a multiple of the window before
  the projection; the original lets real tokens attend to the padding. `mask_padding=True`
  (the default) masks padded keys out instead; `False` reproduces the original;
- logits are scaled by C^-1/2 (the whole width, not the head width);
- QuickGELU MLPs (x * sigmoid(1.702 x)), LayerNorm eps 1e-5, stochastic depth rising
  linearly over all blocks, truncated-normal (std 0.02) initialisation.

Tokens are kept channels-last, (B, H, W, C); the 1x1 convolutions of the original are Linears
here (`vitssl.convert_esvit` reshapes their weights).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath, trunc_normal_
from torch import nn

from vitssl.backbones.tokens import Tokens

CVT_EMBED = ((7, 4, 2), (3, 2, 1), (3, 2, 1), (3, 2, 1))  # (kernel, stride, padding) per stage


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ConvEmbed(nn.Module):
    """Strided convolution + LayerNorm: (B, H, W, C_in) -> (B, H', W', C)."""

    def __init__(self, dim_in: int, dim: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(dim_in, dim, kernel, stride, padding)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


def padding_key_mask(grid: tuple[int, int], window: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(nW, 1, N, N) additive mask: -inf where the key is padding and the query is real."""
    h, w = grid
    hp, wp = -(-h // window) * window, -(-w // window) * window
    pad = torch.ones(hp, wp, dtype=torch.bool, device=device)
    pad[:h, :w] = False
    pad = pad.reshape(hp // window, window, wp // window, window).transpose(1, 2).reshape(-1, window * window)
    mask = torch.zeros(pad.shape[0], 1, window * window, window * window, device=device, dtype=dtype)
    return mask.masked_fill_(pad[:, None, None, :] & ~pad[:, None, :, None], float("-inf"))


class WindowConvAttention(nn.Module):
    """Windowed multi-head attention with a depthwise-conv + BatchNorm + pointwise q/k/v projection."""

    def __init__(self, dim: int, num_heads: int, window_size: int, qkv_bias: bool = True, kernel: int = 3) -> None:
        super().__init__()
        self.num_heads, self.window_size = num_heads, window_size
        self.scale = dim**-0.5  # the original's: the whole width
        self.qkv_dw = nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim, bias=False)
        self.qkv_bn = nn.BatchNorm2d(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.mask_padding = True

    def _windows(self, t: torch.Tensor, w: int) -> torch.Tensor:
        """(B, Hp, Wp, C) -> (B * nW, heads, w*w, C/heads), windows row-major like the original."""
        b, hp, wp, c = t.shape
        t = t.reshape(b, hp // w, w, wp // w, w, self.num_heads, c // self.num_heads)
        return t.permute(0, 1, 3, 5, 2, 4, 6).reshape(-1, self.num_heads, w * w, c // self.num_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) normed tokens -> (B, H, W, C)."""
        b, h, w_, c = x.shape
        w = min(self.window_size, h, w_)
        x = F.pad(x, (0, 0, 0, -w_ % w, 0, -h % w))
        hp, wp = x.shape[1:3]
        qkv = self.qkv(self.qkv_bn(self.qkv_dw(x.permute(0, 3, 1, 2))).permute(0, 2, 3, 1))
        q, k, v = (self._windows(t, w) for t in qkv.chunk(3, dim=-1))
        mask = None
        if self.mask_padding and (hp, wp) != (h, w_):
            mask = padding_key_mask((h, w_), w, x.device, q.dtype).repeat(b, 1, 1, 1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        out = out.reshape(b, hp // w, wp // w, self.num_heads, w, w, c // self.num_heads)
        out = out.permute(0, 1, 4, 2, 5, 3, 6).reshape(b, hp, wp, c)
        return self.proj(out[:, :h, :w_])


class Mlp(nn.Module):
    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, int(dim * ratio)), QuickGELU(), nn.Linear(int(dim * ratio), dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class CvTBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, window_size: int, mlp_ratio: float, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowConvAttention(dim, num_heads, window_size)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class CvTStage(nn.Module):
    def __init__(self, dim_in: int, dim: int, embed: tuple[int, int, int], blocks: list[CvTBlock]) -> None:
        super().__init__()
        self.embed = ConvEmbed(dim_in, dim, *embed)
        self.blocks = nn.ModuleList(blocks)


class CvT(nn.Module):
    """EsViT's CvT: `forward(x)` returns the last-stage tokens after the final norm (no CLS), so
    `Tokens.pooled` (their mean) is the view feature and `Tokens.patches` the region tokens.

    Any input size works (the map is ceil(H/32) a side: 7x7 at 224, 3x3 at 96); `patch_size`
    is the total stride (32), `embed_dim` the output width.
    """

    def __init__(
        self,
        dims: tuple[int, ...] = (64, 192, 384, 768),
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (1, 3, 6, 12),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        final_norm: bool = True,
        mask_padding: bool = True,
    ) -> None:
        super().__init__()
        rates = [drop_path_rate * i / max(sum(depths) - 1, 1) for i in range(sum(depths))]  # linspace, device-free
        self.stages, dim_in, start = nn.ModuleList(), 3, 0
        for dim, depth, heads, embed in zip(dims, depths, num_heads, CVT_EMBED):
            blocks = [CvTBlock(dim, heads, window_size, mlp_ratio, rates[start + i]) for i in range(depth)]
            self.stages.append(CvTStage(dim_in, dim, embed, blocks))
            dim_in, start = dim, start + depth
        self.norm = nn.LayerNorm(dim_in) if final_norm else nn.Identity()
        self.embed_dim = self.num_features = dim_in
        self.patch_size = 32
        self.apply(_init_weights)
        self.mask_padding = mask_padding

    @property
    def mask_padding(self) -> bool:
        """Whether padded tokens are masked out of attention (False: the original's behaviour)."""
        return self.blocks[0].attn.mask_padding

    @mask_padding.setter
    def mask_padding(self, value: bool) -> None:
        for block in self.blocks:
            block.attn.mask_padding = value

    @property
    def blocks(self) -> list[CvTBlock]:
        """All blocks in order, across stages (like ViT's `blocks`)."""
        return [block for stage in self.stages for block in stage.blocks]

    @property
    def stage_depths(self) -> list[int]:
        return [len(stage.blocks) for stage in self.stages]

    @staticmethod
    def _tokens(x: torch.Tensor) -> Tokens:
        b, h, w, c = x.shape
        return Tokens(cls=None, patches=x.reshape(b, h * w, c), grid=(h, w))

    def forward(self, x: torch.Tensor) -> Tokens:
        """(B, 3, H, W) images -> last-stage Tokens (B, h*w, C) after the final norm."""
        x = x.permute(0, 2, 3, 1)
        for stage in self.stages:
            x = stage.embed(x)
            for block in stage.blocks:
                x = block(x)
        return self._tokens(self.norm(x))

    def last_blocks(self, x: torch.Tensor, n: int) -> list[Tokens]:
        """Tokens of the last n blocks across stages; only the last stage's pass the final norm
        (EsViT's `forward_return_n_last_blocks`, as for Swin)."""
        first, index, outputs = len(self.blocks) - n, 0, []
        x = x.permute(0, 2, 3, 1)
        for i, stage in enumerate(self.stages):
            x = stage.embed(x)
            for block in stage.blocks:
                x = block(x)
                if index >= first:
                    outputs.append(self._tokens(self.norm(x) if i == len(self.stages) - 1 else x))
                index += 1
        return outputs

    def no_weight_decay(self) -> set[str]:
        """Empty on purpose, as for ViT and Swin: the param groups decide."""
        return set()


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, (nn.Linear, nn.Conv2d)):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
