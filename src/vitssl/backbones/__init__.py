"""Backbones: `create_backbone(name, **overrides)` is the one way to build them.

Every backbone maps (B, 3, H, W) images to `Tokens` and exposes `embed_dim`, `patch_size`
and `last_blocks(x, n)`. Methods never branch on architecture.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from vitssl.backbones.tokens import Tokens
from vitssl.backbones.vit import ViT


@dataclass
class BackboneConfig:
    """Which backbone and its size; `embed_dim`/`depth`/`num_heads` override the named size.

    `class_token`, `final_norm` and `pos_embed` ("learned" | "sincos") select ViT variants;
    methods that need one (SelfPatch: no CLS, no final norm; MAE: sin-cos) set them themselves.
    """

    name: str = "vit_small"
    patch_size: int = 16
    img_size: int = 224
    drop_path_rate: float = 0.1
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    class_token: bool = True
    final_norm: bool = True
    pos_embed: str = "learned"


_VIT_SIZES = {
    "vit_tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "vit_small": dict(embed_dim=384, depth=12, num_heads=6),
    "vit_base": dict(embed_dim=768, depth=12, num_heads=12),
}


def _vit_factory(size: dict[str, int]) -> Callable[..., nn.Module]:
    def build(**kw: Any) -> nn.Module:
        merged = dict(size)
        merged.update({k: v for k, v in kw.items() if v is not None})
        return ViT(**merged)

    return build


BACKBONES: dict[str, Callable[..., nn.Module]] = {name: _vit_factory(size) for name, size in _VIT_SIZES.items()}


def create_backbone(cfg: BackboneConfig | str, **overrides: Any) -> nn.Module:
    """Build a backbone from its config (or name plus keyword overrides)."""
    if isinstance(cfg, str):
        cfg = BackboneConfig(name=cfg, **overrides)
    if cfg.name not in BACKBONES:
        close = difflib.get_close_matches(cfg.name, BACKBONES, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ValueError(f"unknown backbone '{cfg.name}': {hint}choose one of {sorted(BACKBONES)}")
    return BACKBONES[cfg.name](
        patch_size=cfg.patch_size,
        img_size=cfg.img_size,
        drop_path_rate=cfg.drop_path_rate,
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        class_token=cfg.class_token,
        final_norm=cfg.final_norm,
        pos_embed=cfg.pos_embed,
    )


__all__ = ["BACKBONES", "BackboneConfig", "Tokens", "ViT", "create_backbone"]
