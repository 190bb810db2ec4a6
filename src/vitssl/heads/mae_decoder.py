"""MAE's lightweight decoder and pixel predictor (He et al., 2022), MAE paper Sec. 3; facebookresearch/mae models_mae.py; MAE-Lite (Wang et al., ICML 2023, arXiv 2205.14443), wangsr126/mae-lite projects/mae_lite/mae_lite_exp.py.

Encoded visible tokens are projected to the decoder width, a shared learned mask token fills
every masked position, `ids_restore` puts the tokens back in patch order, a fixed 2-D sin-cos
position embedding (zero for the CLS slot) is added, and a few pre-norm Transformer blocks,
a LayerNorm and a Linear predict the p*p*3 pixel values of every patch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from timm.models.vision_transformer import Block
from torch import nn

from vitssl.backbones.vit import sincos_pos_embed
from vitssl.engine.validation import fail, require_int, require_multiple, require_number


@dataclass
class MAEDecoderConfig:
    """Decoder size: MAE 8 blocks x 512 x 16 heads (default); MAE-Lite Tiny 1 x 96 x 3,
    Small 1 x 192 x 6 (MAE-Lite, wangsr126/mae-lite projects/mae_lite/mae_lite_exp.py)."""

    depth: int = 8
    embed_dim: int = 512
    num_heads: int = 16
    mlp_ratio: float = 4.0

    def validate(self, prefix: str = "method.decoder") -> None:
        """Sizes >= 1, the width split evenly over the heads and into sin-cos quarters."""
        require_int(f"{prefix}.depth", self.depth, lo=0)
        require_int(f"{prefix}.embed_dim", self.embed_dim, lo=1)
        require_int(f"{prefix}.num_heads", self.num_heads, lo=1)
        require_number(f"{prefix}.mlp_ratio", self.mlp_ratio, lo=0.0, lo_open=True)
        if self.embed_dim % self.num_heads:
            fail(f"{prefix}.num_heads", self.num_heads, f"does not divide the width {self.embed_dim} "
                 f"({prefix}.embed_dim)", f"use a head count that divides {self.embed_dim}")
        require_multiple(f"{prefix}.embed_dim", self.embed_dim, 4, "4 (sin-cos positions)")


class MAEDecoder(nn.Module):
    """(CLS, visible tokens, ids_restore, grid) -> per-patch pixel predictions (B, L, p*p*3).

    Parameter names follow MAE's `decoder_*` modules (`embed`, `mask_token`, `pos_embed`,
    `blocks`, `norm`, `pred`), so official weights map by a prefix rename.
    """

    def __init__(self, encoder_dim: int, patch_size: int, grid: tuple[int, int], cfg: MAEDecoderConfig,
                 in_chans: int = 3) -> None:
        super().__init__()
        if cfg.embed_dim % cfg.num_heads:
            raise ValueError(f"method.decoder.embed_dim {cfg.embed_dim} is not divisible by its {cfg.num_heads} heads")
        if cfg.embed_dim % 4:
            raise ValueError(f"method.decoder.embed_dim must be divisible by 4 (sin-cos positions), got {cfg.embed_dim}")
        self.grid = tuple(grid)
        self.embed = nn.Linear(encoder_dim, cfg.embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        fixed = torch.cat([torch.zeros(1, cfg.embed_dim), sincos_pos_embed(cfg.embed_dim, self.grid)])
        self.pos_embed = nn.Parameter(fixed[None], requires_grad=False)  # fixed, MAE's layout
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.Sequential(*[
            Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, qkv_bias=True, norm_layer=norm)
            for _ in range(cfg.depth)
        ])
        self.norm = norm(cfg.embed_dim)
        self.pred = nn.Linear(cfg.embed_dim, patch_size * patch_size * in_chans)

    def _positions(self, grid: tuple[int, int]) -> torch.Tensor:
        """(1, 1 + h*w, D): the stored table on the native grid, recomputed exactly on others."""
        if tuple(grid) == self.grid:
            return self.pos_embed
        patch = sincos_pos_embed(self.pos_embed.shape[-1], grid).to(self.pos_embed)
        return torch.cat([self.pos_embed[:, :1], patch[None]], dim=1)

    def forward(self, cls: torch.Tensor | None, visible: torch.Tensor, ids_restore: torch.Tensor,
                grid: tuple[int, int]) -> torch.Tensor:
        """cls (B, D_enc) or None, visible (B, n_keep, D_enc) in `ids_keep` order,
        ids_restore (B, L) -> predictions (B, L, p*p*3) in patch order (CLS dropped)."""
        b, n_keep, _ = visible.shape
        num_patches = ids_restore.shape[1]
        x = self.embed(visible)
        masked = self.mask_token.to(x.dtype).expand(b, num_patches - n_keep, -1)
        x = torch.cat([x, masked], dim=1)
        x = torch.gather(x, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        pos = self._positions(grid)
        if cls is not None:
            x = torch.cat([self.embed(cls).unsqueeze(1), x], dim=1) + pos
        else:
            x = x + pos[:, 1:]
        x = self.norm(self.blocks(x))
        x = self.pred(x)
        return x[:, 1:] if cls is not None else x
