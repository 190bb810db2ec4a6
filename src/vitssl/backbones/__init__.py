"""Backbones: `create_backbone(name, **overrides)` is the one way to build them.

Every backbone maps (B, 3, H, W) images to `Tokens` and exposes `embed_dim`, `patch_size`
and `last_blocks(x, n)`. Methods never branch on architecture.

Names: `vit_tiny|small|base`; EsViT's Swins `swin_tiny|small|base` (window 7) and
`swin_tiny|small|base_w14` (window 14); EsViT's `cvt_tiny` (windowed CvT, W=7), `vil_tiny`
(Vision Longformer) and `resnet50` (their factories live in `backbones/esvit_backbones.py`).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from vitssl.backbones.esvit_backbones import ESVIT_BACKBONES
from vitssl.backbones.swin import Swin
from vitssl.backbones.tokens import Tokens
from vitssl.backbones.vit import ViT
from vitssl.engine.validation import (
    ConfigError,
    fail,
    require_choice,
    require_int,
    require_multiple,
    require_number,
)


@dataclass
class BackboneConfig:
    """Which backbone and its size; `embed_dim`/`depth`/`num_heads` override the named size.

    `class_token`, `final_norm` and `pos_embed` ("learned" | "sincos") select ViT variants;
    methods that need one (SelfPatch: no CLS, no final norm; MAE: sin-cos) set them themselves.

    `patch_size` is the patch-embedding size; None takes the model's own (16 for ViT, 4 for
    Swin, whose `patch_size` attribute is then its total stride, 32). For Swin, `depth` sets
    every stage's depth, `embed_dim` and `num_heads` the first stage's (doubling per stage);
    `window_size` overrides the name's window and `mask_padding=False` reproduces the
    original's unmasked zero padding (both Swin only; None leaves the default). `stem="conv"`
    gives a ViT a convolutional stem (`vitssl.backbones.vit.conv_stem`) in place of the patch
    projection (ViT only; the patch size must then be a power of two).
    """

    name: str = "vit_small"
    patch_size: int | None = None
    img_size: int = 224
    drop_path_rate: float = 0.1
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    class_token: bool = True
    final_norm: bool = True
    pos_embed: str = "learned"
    window_size: int | None = None
    mask_padding: bool | None = None
    stem: str = "patch"

    def __post_init__(self) -> None:
        check_backbone(self)


_VIT_SIZES = {
    "vit_tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "vit_small": dict(embed_dim=384, depth=12, num_heads=6),
    "vit_base": dict(embed_dim=768, depth=12, num_heads=12),
}


def _vit_factory(size: dict[str, int]) -> Callable[..., nn.Module]:
    def build(window_size: int | None = None, mask_padding: bool | None = None, **kw: Any) -> nn.Module:
        if window_size is not None or mask_padding is not None:
            raise ValueError("backbone.window_size and backbone.mask_padding are Swin options: remove them for a ViT")
        merged = dict(size)
        merged.update({k: v for k, v in kw.items() if v is not None})
        return ViT(**merged)

    return build


_SWIN_SIZES = {  # EsViT paper Sec. 3.1; microsoft/esvit models/ and experiments/imagenet/
    "swin_tiny": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    "swin_small": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    "swin_base": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
}


def _swin_factory(size: dict[str, Any], window_size: int) -> Callable[..., nn.Module]:
    def build(depth: int | None = None, num_heads: int | None = None, class_token: bool = True,
              pos_embed: str = "learned", **kw: Any) -> nn.Module:
        # class_token is a ViT option: Swin has none, and its Tokens.cls is None either way.
        if pos_embed != "learned":
            raise ValueError(f"pos_embed='{pos_embed}' is a ViT option: Swin uses relative position bias only")
        stages = len(size["depths"])
        merged = dict(size, window_size=window_size)
        if depth is not None:
            merged["depths"] = (depth,) * stages
        if num_heads is not None:
            merged["num_heads"] = tuple(num_heads * 2**i for i in range(stages))
        merged.update({k: v for k, v in kw.items() if v is not None})
        return Swin(**merged)

    return build


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    **{name: _vit_factory(size) for name, size in _VIT_SIZES.items()},
    **{name: _swin_factory(size, 7) for name, size in _SWIN_SIZES.items()},
    **{f"{name}_w14": _swin_factory(size, 14) for name, size in _SWIN_SIZES.items()},
    **ESVIT_BACKBONES,
}


def is_vit(cfg: BackboneConfig) -> bool:
    """Whether the config names a plain ViT (`ViT`), whose patch tokens can be masked."""
    return cfg.name in _VIT_SIZES


def patch_size_of(cfg: BackboneConfig) -> int:
    """What input sides must be a multiple of: the patch size for ViT (16) and Swin (4); 32 for
    ViL (its non-overlapping patch embeddings would drop rows); 1 for the convolutional-stem
    backbones (CvT, ResNet), which take any size."""
    if cfg.name == "vil_tiny":
        return 32
    if cfg.name in ESVIT_BACKBONES:
        return 1
    return cfg.patch_size or (4 if cfg.name.startswith("swin") else 16)


def input_multiple_description(cfg: BackboneConfig) -> str:
    """What `patch_size_of` is, for error messages: a settable patch size, or ViL's fixed stride."""
    patch = patch_size_of(cfg)
    return f"{cfg.name}'s total stride {patch}" if cfg.name == "vil_tiny" else f"the patch size {patch} (backbone.patch_size)"


def _width_and_heads(cfg: BackboneConfig) -> tuple[int, int] | None:
    """(width, heads) of the (first) attention layer, the named size's unless overridden; None
    without attention (ResNet). CvT's later stages keep the first stage's width:heads ratio."""
    if cfg.name == "resnet50":
        return None
    if cfg.name == "cvt_tiny":
        return cfg.embed_dim or 64, cfg.num_heads or 1
    if cfg.name == "vil_tiny":
        return cfg.embed_dim or 96, cfg.num_heads or 3
    size = _VIT_SIZES.get(cfg.name) or _SWIN_SIZES[cfg.name.removesuffix("_w14")]
    heads = size["num_heads"]
    return cfg.embed_dim or size["embed_dim"], cfg.num_heads or (heads[0] if isinstance(heads, tuple) else heads)


def check_backbone(c: BackboneConfig, p: str = "backbone") -> None:
    """Every BackboneConfig field, and what timm would otherwise assert on (heads dividing the width)."""
    if c.name not in BACKBONES:
        close = difflib.get_close_matches(str(c.name), BACKBONES, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(f"unknown backbone '{c.name}': {hint}choose one of {sorted(BACKBONES)}")
    require_int(f"{p}.img_size", c.img_size, lo=1)
    for name in ("patch_size", "embed_dim", "depth", "num_heads", "window_size"):
        require_int(f"{p}.{name}", getattr(c, name), lo=1, optional=True)
    require_number(f"{p}.drop_path_rate", c.drop_path_rate, 0.0, 1.0, hi_open=True)
    require_choice(f"{p}.pos_embed", c.pos_embed, ("learned", "sincos"))
    vit = c.name in _VIT_SIZES
    if not vit and c.pos_embed != "learned":
        fix = ("Swin uses relative position bias only (learned)" if c.name.startswith("swin")
               else f"{c.name} has no position embedding to choose (keep learned)")
        fail(f"{p}.pos_embed", c.pos_embed, "is a ViT option", fix)
    if vit and (c.window_size is not None or c.mask_padding is not None):
        raise ConfigError(f"{p}.window_size and {p}.mask_padding are Swin/CvT options: remove them for a ViT")
    require_choice(f"{p}.stem", c.stem, ("patch", "conv"))
    if c.stem == "conv":
        if not vit:
            fail(f"{p}.stem", c.stem, "is a ViT option", f"{c.name} has its own stem: use stem=patch")
        size = patch_size_of(c)
        if size < 2 or size & (size - 1):
            fail(f"{p}.patch_size", size, "is not a power of two (stem=conv halves the image per layer)",
                 "use 2, 4, 8, 16 or 32, or backbone.stem=patch")
    patch = patch_size_of(c)
    require_multiple(f"{p}.img_size", c.img_size, patch, input_multiple_description(c).removesuffix(" (backbone.patch_size)"))
    shape = _width_and_heads(c)
    if shape is not None and shape[0] % shape[1]:
        width, heads = shape
        fail(f"{p}.num_heads", heads, f"does not divide the width {width} ({p}.embed_dim)",
             f"use a head count that divides {width}")
    if c.pos_embed == "sincos" and shape is not None and shape[0] % 4:
        fail(f"{p}.embed_dim", shape[0], "is not a multiple of 4 (sin-cos positions)", "use a multiple of 4")


def create_backbone(cfg: BackboneConfig | str, **overrides: Any) -> nn.Module:
    """Build a backbone from its config (or name plus keyword overrides)."""
    if isinstance(cfg, str):
        cfg = BackboneConfig(name=cfg, **overrides)
    check_backbone(cfg)  # a config edited after it was built
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
        window_size=cfg.window_size,
        mask_padding=cfg.mask_padding,
        **({"stem": cfg.stem} if cfg.stem != "patch" else {}),  # a ViT option: other factories lack it
    )


__all__ = ["BACKBONES", "BackboneConfig", "Swin", "Tokens", "ViT", "check_backbone", "create_backbone",
           "input_multiple_description", "is_vit", "patch_size_of"]
