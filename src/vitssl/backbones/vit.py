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


class ViT(VisionTransformer):
    """Pre-norm ViT (LayerNorm eps 1e-6, qkv bias, MLP ratio 4) with CLS and final norm."""

    def __init__(
        self,
        embed_dim: int,
        depth: int,
        num_heads: int,
        patch_size: int = 16,
        img_size: int = 224,
        drop_path_rate: float = 0.0,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            num_classes=0,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=True,
            drop_path_rate=drop_path_rate,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            dynamic_img_size=True,
        )
        self.patch_size = patch_size

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, h, w, D) patch embeddings -> (B, 1+h*w, D) with CLS and position embedding."""
        b, h, w, d = x.shape
        pos = self.pos_embed
        cls_pos, patch_pos = pos[:, :1], pos[:, 1:]
        patch_pos = interpolate_pos_embed(patch_pos, tuple(self.patch_embed.grid_size), (h, w))
        x = x.reshape(b, h * w, d) + patch_pos
        cls = self.cls_token.expand(b, -1, -1) + cls_pos
        return self.pos_drop(torch.cat([cls, x], dim=1))

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
        out = self.forward_features(x)
        return Tokens(cls=out[:, 0], patches=out[:, 1:], grid=grid)

    def last_blocks(self, x: torch.Tensor, n: int) -> list[Tokens]:
        """Tokens of each of the last n blocks, each passed through the final norm (DINO linear eval)."""
        grid = self._grid(x)
        x = self._pos_embed(self.patch_embed(x))
        x = self.norm_pre(x)
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i >= len(self.blocks) - n:
                normed = self.norm(x)
                outputs.append(Tokens(cls=normed[:, 0], patches=normed[:, 1:], grid=grid))
        return outputs

    def no_weight_decay(self) -> set[str]:
        """Empty on purpose: DINO decays pos_embed and cls_token (spec 1.5); param groups decide."""
        return set()
