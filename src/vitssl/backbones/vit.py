"""Vision transformer backbone over timm's implementation, returning `Tokens`.

Keeps timm's parameter names (so weights export to timm unchanged) and timm's fused
attention (scaled_dot_product_attention), and adds what self-supervised methods need:
any crop size through DINO-style bicubic position-embedding interpolation, and the
last-n blocks' tokens for linear probing.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from vitssl.backbones.tokens import Tokens


def interpolate_pos_embed(patch_pos: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> torch.Tensor:
    """Resize the (1, h*w, D) patch position embedding to another grid.

    Bicubic without antialiasing to the exact target size, as DINO does (its "+0.1" offset
    exists only to make a scale factor land on that size; we give the size directly).
    """
    if old_grid == new_grid:
        return patch_pos
    dim = patch_pos.shape[-1]
    grid = patch_pos.reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=new_grid, mode="bicubic", align_corners=False)
    return grid.to(patch_pos.dtype).permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim)


def sincos_pos_embed(dim: int, grid: tuple[int, int]) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding (h*w, dim), MAE's layout.

    The first half of the channels encodes the column, the second half the row; each half is
    [sin(p * w_i), cos(p * w_i)] with w_i = 10000^(-i / (dim/4)), i = 0 .. dim/4 - 1.
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs a width divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    rows, cols = torch.meshgrid(torch.arange(grid[0], dtype=torch.float64),
                                torch.arange(grid[1], dtype=torch.float64), indexing="ij")

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.reshape(-1, 1) * omega
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(cols), encode(rows)], dim=1).float()


def conv_stem(embed_dim: int, patch_size: int) -> nn.Sequential:
    """Convolutional stem of Xiao et al. 2021 ("Early convolutions help transformers see better",
    section 3.1): log2(patch) 3x3 stride-2 convolutions, BatchNorm and ReLU, widths doubling up to
    `embed_dim` (48-96-192-384 for ViT-S/16), then a 1x1 convolution; same output grid as the
    patch projection it replaces. A random-init ViT then starts from local image statistics
    rather than from one linear map per patch, which matters most on small images.
    """
    stages = patch_size.bit_length() - 1
    if patch_size < 2 or 1 << stages != patch_size:
        raise ValueError(f"stem='conv' needs a power-of-two patch size >= 2, got {patch_size}")
    layers: list[nn.Module] = []
    channels = 3
    for i in range(stages):
        width = max(embed_dim >> (stages - 1 - i), 8)
        layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width),
                   nn.ReLU(inplace=True)]
        channels = width
    layers.append(nn.Conv2d(channels, embed_dim, 1))
    return nn.Sequential(*layers)


class ViT(VisionTransformer):
    """Pre-norm ViT (LayerNorm eps 1e-6, qkv bias, MLP ratio 4).

    Variants the methods need, as options rather than subclasses:
    - `class_token=False`: patch tokens only (SelfPatch); `Tokens.cls` is then None.
    - `final_norm=False`: no final LayerNorm (SelfPatch normalises in its head).
    - `pos_embed="sincos"`: fixed 2-D sin-cos position embedding (MAE), kept in the state dict
      as a frozen parameter and recomputed exactly, not interpolated, for other grids.
    - `stem="conv"`: the patch projection is a stack of 3x3 stride-2 convolutions (BatchNorm,
      ReLU) and a 1x1 projection (`conv_stem`), for small images.
    """

    def __init__(
        self,
        embed_dim: int,
        depth: int,
        num_heads: int,
        patch_size: int = 16,
        img_size: int = 224,
        drop_path_rate: float = 0.0,
        mlp_ratio: float = 4.0,
        class_token: bool = True,
        final_norm: bool = True,
        pos_embed: str = "learned",
        stem: str = "patch",
    ) -> None:
        if stem not in ("patch", "conv"):
            raise ValueError(f"unknown stem '{stem}': use 'patch' or 'conv'")
        if pos_embed not in ("learned", "sincos"):
            raise ValueError(f"unknown pos_embed '{pos_embed}': use 'learned' or 'sincos'")
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            num_classes=0,
            global_pool="token" if class_token else "avg",
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=True,
            class_token=class_token,
            final_norm=final_norm,
            fc_norm=False,  # the final norm acts on every token, with or without CLS
            drop_path_rate=drop_path_rate,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            dynamic_img_size=True,
        )
        self.patch_size = patch_size
        self.pos_embed_type = pos_embed
        self.stem = stem
        if stem == "conv":
            self.patch_embed.proj = conv_stem(embed_dim, patch_size)
        if pos_embed == "sincos":
            fixed = sincos_pos_embed(embed_dim, tuple(self.patch_embed.grid_size))
            prefix = torch.zeros(self.num_prefix_tokens, embed_dim)  # MAE: the CLS slot is zero
            self.pos_embed.data.copy_(torch.cat([prefix, fixed])[None])
            self.pos_embed.requires_grad_(False)

    def _patch_pos(self, grid: tuple[int, int]) -> torch.Tensor:
        """(1, h*w, D) position embedding of the patch tokens for this grid."""
        patch_pos = self.pos_embed[:, self.num_prefix_tokens:]
        native = tuple(self.patch_embed.grid_size)
        if self.pos_embed_type == "sincos" and grid != native:
            return sincos_pos_embed(self.embed_dim, grid).to(patch_pos)[None]
        return interpolate_pos_embed(patch_pos, native, grid)

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, h, w, D) patch embeddings -> (B, P+h*w, D) with P prefix (CLS) tokens and positions."""
        b, h, w, d = x.shape
        x = x.reshape(b, h * w, d) + self._patch_pos((h, w))
        if self.num_prefix_tokens:
            cls = self.cls_token.expand(b, -1, -1) + self.pos_embed[:, :1]
            x = torch.cat([cls, x], dim=1)
        return self.pos_drop(x)

    def _tokens(self, x: torch.Tensor, grid: tuple[int, int]) -> Tokens:
        p = self.num_prefix_tokens
        return Tokens(cls=x[:, 0] if p else None, patches=x[:, p:], grid=grid)

    def _grid(self, x: torch.Tensor) -> tuple[int, int]:
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"input {h}x{w} is not a multiple of the patch size {self.patch_size}; "
                f"resize or crop images to a multiple of {self.patch_size}"
            )
        return h // self.patch_size, w // self.patch_size

    def forward(self, x: torch.Tensor) -> Tokens:
        """(B, 3, H, W) images -> Tokens after the final norm."""
        grid = self._grid(x)
        return self._tokens(self.forward_features(x), grid)

    def forward_masked(self, x: torch.Tensor, ids_keep: torch.Tensor) -> Tokens:
        """Encode only the patches at `ids_keep` (B, n_keep), MAE's visible-only encoder.

        Positions are added before the gather, so each kept token remembers where it was;
        `Tokens.patches` holds the n_keep visible tokens in `ids_keep` order.
        """
        grid = self._grid(x)
        tokens = self._pos_embed(self.patch_embed(x))
        p = self.num_prefix_tokens
        index = ids_keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1])
        tokens = torch.cat([tokens[:, :p], torch.gather(tokens[:, p:], 1, index)], dim=1)
        tokens = self.norm(self.blocks(self.norm_pre(tokens)))
        return self._tokens(tokens, grid)

    def forward_with_token_mask(self, x: torch.Tensor, token_mask: torch.Tensor, mask_token: torch.Tensor) -> Tokens:
        """`forward` with the patch embeddings at `token_mask` (B, h*w) bool replaced by
        `mask_token` (D values) before positions are added, so a masked token still knows where
        it is (BEiT Sec. 2.2; iBOT Sec. 3, bytedance/ibot models/vision_transformer.py mask_model).
        Unmasked positions are computed exactly as by `forward`."""
        grid = self._grid(x)
        x = self.patch_embed(x)  # (B, h, w, D)
        masked = token_mask.reshape(x.shape[:3]).unsqueeze(-1)
        x = torch.where(masked, mask_token.to(x.dtype).reshape(1, 1, 1, -1), x)
        x = self.norm_pre(self.patch_drop(self._pos_embed(x)))
        return self._tokens(self.norm(self.blocks(x)), grid)

    def last_blocks(self, x: torch.Tensor, n: int) -> list[Tokens]:
        """Tokens of each of the last n blocks, each passed through the final norm (DINO linear eval)."""
        grid = self._grid(x)
        x = self._pos_embed(self.patch_embed(x))
        x = self.norm_pre(x)
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i >= len(self.blocks) - n:
                outputs.append(self._tokens(self.norm(x), grid))
        return outputs

    def no_weight_decay(self) -> set[str]:
        """Empty on purpose: DINO decays pos_embed and cls_token (DINO paper Sec. 3.2; facebookresearch/dino main_dino.py defaults); param groups decide."""
        return set()
