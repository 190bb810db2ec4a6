"""Registry entries for EsViT's non-Swin backbones: `cvt_tiny`, `vil_tiny` and `resnet50` (EsViT paper Sec. 3.1; microsoft/esvit models/ and experiments/imagenet/).

The generic `BackboneConfig` fields keep one meaning across families where they have one:
`embed_dim` is the first stage's width and `depth` every stage's depth (as for Swin); CvT's
later widths and head counts keep the original's 1:3:6:12 ratios (ViL's 1:2:4:8). Options a family does not
have are refused with the reason instead of being silently ignored.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from vitssl.backbones.cvt import CvT
from vitssl.backbones.resnet import ResNet
from vitssl.backbones.vil import ViL

_CVT_RATIOS = (1, 3, 6, 12)  # widths 64-192-384-768 and heads 1-3-6-12 (cvt_v4/s1.yaml)
_VIL_RATIOS = (1, 2, 4, 8)  # widths 96-192-384-768 and heads 3-6-12-24 (vil_2262)


def _refuse(name: str, **options: Any) -> None:
    for key, (value, why) in options.items():
        if value is not None:
            raise ValueError(f"backbone.{key}={value} does not apply to {name}: {why}; remove it")


def _cvt_tiny(patch_size: int | None = None, drop_path_rate: float = 0.0, embed_dim: int | None = None,
              depth: int | None = None, num_heads: int | None = None, final_norm: bool = True,
              pos_embed: str = "learned", window_size: int | None = None, mask_padding: bool | None = None,
              **_: Any) -> nn.Module:
    """EsViT's CvT-T (`cvt_v4/s1.yaml`): 64-192-384-768 wide, depths 2-2-6-2, heads 1-3-6-12, W=7.
    `img_size` is not needed: the window rule is applied to each input's own map."""
    if patch_size not in (None, 4):
        raise ValueError(f"backbone.patch_size={patch_size}: cvt_tiny's token embedding has stride 4; remove it")
    if pos_embed != "learned":
        raise ValueError(f"pos_embed='{pos_embed}' is a ViT option: cvt_tiny has no position embedding")
    width, heads = embed_dim or 64, num_heads or 1
    return CvT(dims=tuple(width * r for r in _CVT_RATIOS), depths=(depth,) * 4 if depth else (2, 2, 6, 2),
               num_heads=tuple(heads * r for r in _CVT_RATIOS), window_size=window_size or 7,
               drop_path_rate=drop_path_rate, final_norm=final_norm,
               mask_padding=True if mask_padding is None else mask_padding)


def _resnet50(patch_size: int | None = None, drop_path_rate: float = 0.0, embed_dim: int | None = None,
              depth: int | None = None, num_heads: int | None = None, pos_embed: str = "learned",
              window_size: int | None = None, mask_padding: bool | None = None, **_: Any) -> nn.Module:
    """ResNet-50 without classifier (EsViT's torchvision `resnet50`); `embed_dim` is the first
    stage's width (64; the output is 32x it), `depth` the blocks of every stage (3-4-6-3 otherwise)."""
    _refuse("resnet50", patch_size=(patch_size, "it has no patch embedding (total stride 32)"),
            num_heads=(num_heads, "it has no attention"), window_size=(window_size, "it has no attention"),
            mask_padding=(mask_padding, "it has no attention"))
    if pos_embed != "learned":
        raise ValueError(f"pos_embed='{pos_embed}' is a ViT option: resnet50 has no position embedding")
    return ResNet(width=embed_dim or 64, depths=(depth,) * 4 if depth else (3, 4, 6, 3), drop_path_rate=drop_path_rate)


def _vil_tiny(patch_size: int | None = None, img_size: int = 224, drop_path_rate: float = 0.0,
              embed_dim: int | None = None, depth: int | None = None, num_heads: int | None = None,
              final_norm: bool = True, pos_embed: str = "learned", window_size: int | None = None,
              mask_padding: bool | None = None, **_: Any) -> nn.Module:
    """EsViT's ViL-T (`vil_2262`): 96-192-384-768 wide, depths 2-2-6-2, heads 3-6-12-24, 7x7
    chunks; `img_size` sizes the full-attention stages' relative position tables."""
    if patch_size not in (None, 4):
        raise ValueError(f"backbone.patch_size={patch_size}: vil_tiny's first patch embedding has stride 4; remove it")
    _refuse("vil_tiny", mask_padding=(mask_padding, "its attention always masks the padding out, as the original"))
    if pos_embed != "learned":
        raise ValueError(f"pos_embed='{pos_embed}' is a ViT option: vil_tiny uses relative position biases only")
    width, heads = embed_dim or 96, num_heads or 3
    return ViL(dims=tuple(width * r for r in _VIL_RATIOS), depths=(depth,) * 4 if depth else (2, 2, 6, 2),
               num_heads=tuple(heads * r for r in _VIL_RATIOS), window_size=window_size or 7, img_size=img_size,
               drop_path_rate=drop_path_rate, final_norm=final_norm)


ESVIT_BACKBONES: dict[str, Callable[..., nn.Module]] = {"cvt_tiny": _cvt_tiny, "vil_tiny": _vil_tiny,
                                                        "resnet50": _resnet50}
