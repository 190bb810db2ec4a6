"""How plain timm rebuilds a vitssl backbone, and at which input sizes it computes the same thing.

The architecture name is timm's registered name when one matches exactly (`vit_small_patch8_224`
for a ViT-S/8 at 224, `swin_tiny_patch4_window7_224`); otherwise the export names timm's model
class with the keyword arguments that define it, rather than a registered name of another
architecture.

Where timm and vitssl differ, and what the export does about it:
- ViT at a size other than the one it was exported for: timm resamples the position embedding
  with antialiased bicubic interpolation, vitssl (as DINO) without antialiasing, and MAE's sin-cos
  table is recomputed by vitssl but interpolated by timm. The export therefore writes the
  position embedding for one size (`--image-size`, default the training size), where timm
  uses it as is; at other sizes the features differ slightly.
- Swin at sizes where a stage's grid is not a multiple of its window: timm pads after the cyclic
  shift, vitssl (as the original Swin and EsViT) before it, and masks the padding; timm has no
  setting for either. Sizes whose every stage grid is a multiple of its window need no padding
  and match; an export for another size is refused.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from vitssl.backbones import Swin, ViT

VIT_NAMES = {(192, 12, 3): "tiny", (384, 12, 6): "small", (768, 12, 12): "base", (1024, 24, 16): "large"}
SWIN_NAMES = {(96, (2, 2, 6, 2), (3, 6, 12, 24)): "tiny", (96, (2, 2, 18, 2), (3, 6, 12, 24)): "small",
              (128, (2, 2, 18, 2), (4, 8, 16, 32)): "base", (192, (2, 2, 18, 2), (6, 12, 24, 48)): "large"}
CLASSES = {"vit": "timm.models.vision_transformer.VisionTransformer",
           "swin": "timm.models.swin_transformer.SwinTransformer"}


def registered(name: str | None) -> str | None:
    """`name` if timm registers a model of that name, else None."""
    import timm

    return name if name and timm.is_model(name) else None


def vit_spec(backbone: ViT, image_size: int) -> tuple[str | None, dict[str, Any]]:
    width, depth, heads = backbone.embed_dim, len(backbone.blocks), backbone.blocks[0].attn.num_heads
    size = VIT_NAMES.get((width, depth, heads))
    name = registered(size and f"vit_{size}_patch{backbone.patch_size}_{image_size}")
    kwargs: dict[str, Any] = dict(
        img_size=image_size, patch_size=backbone.patch_size, embed_dim=width, depth=depth, num_heads=heads,
        class_token=backbone.num_prefix_tokens > 0, global_pool="token" if backbone.num_prefix_tokens else "avg",
        final_norm=not isinstance(backbone.norm, nn.Identity), fc_norm=False, dynamic_img_size=True)
    return name, kwargs


def swin_windows(backbone: Swin) -> list[int]:
    """The window of each stage, as vitssl fixed it at construction."""
    return [stage.blocks[0].window_size[0] for stage in backbone.layers]


def swin_spec(backbone: Swin) -> tuple[str | None, dict[str, Any]]:
    stages = backbone.layers
    width, depths = stages[0].dim, tuple(len(s.blocks) for s in stages)
    heads = tuple(s.blocks[0].attn.num_heads for s in stages)
    window, img = max(swin_windows(backbone)), backbone.patch_embed.img_size[0]
    size = SWIN_NAMES.get((width, depths, heads))
    name = registered(size and f"swin_{size}_patch{backbone.embed_stride}_window{window}_{img}")
    kwargs = dict(img_size=img, patch_size=backbone.embed_stride, embed_dim=width, depths=list(depths),
                  num_heads=list(heads), window_size=window, strict_img_size=False)
    return name, kwargs


def swin_padded_stages(backbone: Swin, size: int) -> list[int]:
    """Stages (0-based) whose grid at `size` px is not a whole number of windows: there timm pads
    differently from vitssl. Patch merging halves a grid, rounding up (it pads odd grids)."""
    grid, padded = size // backbone.embed_stride, []
    for i, window in enumerate(swin_windows(backbone)):
        if grid % window:
            padded.append(i)
        grid = math.ceil(grid / 2)
    return padded


def timm_matches(backbone: nn.Module, size: int, exported_size: int) -> bool:
    """Does the exported model, loaded in timm, give vitssl's features on `size` px inputs?"""
    if isinstance(backbone, ViT):
        return size == exported_size
    if isinstance(backbone, Swin):
        return not swin_padded_stages(backbone, size)
    return True  # convolutional (ResNet): no positions, no windows


def exported_state(backbone: nn.Module, image_size: int) -> dict[str, torch.Tensor]:
    """The backbone's weights for timm; a ViT's position embedding made for `image_size`
    (vitssl's own interpolation, or MAE's sin-cos table recomputed)."""
    state = {k: v.detach().contiguous().cpu() for k, v in backbone.state_dict().items()}
    if isinstance(backbone, ViT) and image_size != backbone.patch_embed.img_size[0]:
        grid = image_size // backbone.patch_size
        prefix = backbone.pos_embed[:, :backbone.num_prefix_tokens]
        with torch.no_grad():
            state["pos_embed"] = torch.cat([prefix, backbone._patch_pos((grid, grid))], dim=1).detach().contiguous().cpu()
    return state


def swin_note(backbone: Swin) -> str:
    img = backbone.patch_embed.img_size[0]
    fits = [s for s in range(backbone.patch_size, max(4 * img, 1024) + 1, backbone.patch_size)
            if not swin_padded_stages(backbone, s)]
    shown = ", ".join(map(str, fits[:6])) + (", ..." if len(fits) > 6 else "") if fits else "none up to 1024"
    return (f"timm gives vitssl's features at input sizes whose stage grids are whole windows ({shown}); at "
            "other sizes timm pads windows after the cyclic shift where vitssl (as the original) pads before "
            "it and masks the padding, so features differ: use vitssl there. EsViT's Swin uses LayerNorm eps "
            "1e-6: pass norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6)")
