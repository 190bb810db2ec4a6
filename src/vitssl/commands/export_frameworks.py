"""Backbone weights in the key layouts detectron2's ViTDet and mmdetection's Swin load.

- detectron2 (`detectron2/modeling/backbone/vit.py`, the ViTDet projects): the ViT sits at
  `backbone.net.` inside the detector; its names are timm's minus the CLS token and final norm,
  and `pos_embed` keeps the pre-training grid (plus the CLS slot when the ViT had one: ViTDet's
  `pretrain_use_cls_token`), which ViTDet resizes itself. Saved as `{"model": state}`, the file a
  `DetectionCheckpointer` (LazyConfig `train.init_checkpoint`) reads.
- mmdet (`mmdet/models/backbones/swin.py`, `convert_weights=False`): `stages.i` instead of
  `layers.i`, attention under `attn.w_msa`, the MLP as `ffn.layers.0.0` / `ffn.layers.1`, the
  patch embedding as `projection`, and each patch merging at the end of the stage before (timm
  puts it at the start of the next). mmdet merges 2x2 patches with `nn.Unfold`, channel-major,
  so the merging norm and reduction are permuted to that order. The final norm is the last
  stage's output norm `norm3`; `norm0`-`norm2` are new in mmdet and start fresh. Saved as
  `{"state_dict": state}` for the backbone's `init_cfg=dict(type='Pretrained', checkpoint=...)`.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from vitssl.backbones import Swin, ViT

FRAMEWORK_FORMATS = ("detectron2", "mmdet")


def detectron2_vit_state(vit: nn.Module) -> dict[str, torch.Tensor]:
    """detectron2 ViTDet keys (`backbone.net.*`) of a vitssl ViT."""
    if not isinstance(vit, ViT):
        raise ValueError(f"--format detectron2 exports a plain ViT (ViTDet); this checkpoint's backbone is a "
                         f"{type(vit).__name__}: use --format mmdet for Swin, or safetensors/timm")
    state = {}
    for key, value in vit.state_dict().items():
        if key in ("cls_token", "norm.weight", "norm.bias"):  # ViTDet has neither
            continue
        state[f"backbone.net.{key}"] = value
    return state


def _unfold_order(channels: int) -> torch.Tensor:
    """Index into timm's merged vector (2x2 positions major: (0,0), (1,0), (0,1), (1,1), each C
    channels) for every entry of nn.Unfold's (channel major, positions (0,0), (0,1), (1,0), (1,1))."""
    timm_position = torch.tensor([0, 2, 1, 3])  # unfold's k-th kernel position in timm's order
    c = torch.arange(channels)
    return (timm_position[None, :] * channels + c[:, None]).reshape(-1)


def _mmdet_name(key: str) -> str | None:
    if key.startswith("patch_embed."):
        return key.replace("patch_embed.proj.", "patch_embed.projection.")
    if key.startswith("norm."):
        return key.replace("norm.", "norm3.", 1)
    if m := re.match(r"layers\.(\d+)\.downsample\.(.*)", key):
        return f"stages.{int(m.group(1)) - 1}.downsample.{m.group(2)}"
    if m := re.match(r"layers\.(\d+)\.blocks\.(\d+)\.(.*)", key):
        rest = m.group(3)
        rest = re.sub(r"^attn\.", "attn.w_msa.", rest)
        rest = rest.replace("mlp.fc1.", "ffn.layers.0.0.").replace("mlp.fc2.", "ffn.layers.1.")
        return f"stages.{m.group(1)}.blocks.{m.group(2)}.{rest}"
    return None


def mmdet_swin_state(swin: nn.Module) -> dict[str, torch.Tensor]:
    """mmdetection SwinTransformer keys (no `backbone.` prefix) of a vitssl Swin."""
    if not isinstance(swin, Swin):
        raise ValueError(f"--format mmdet exports a Swin backbone (mmdet's SwinTransformer); this checkpoint's "
                         f"backbone is a {type(swin).__name__}: use --format detectron2 for a ViT, or safetensors/timm")
    state = {}
    for key, value in swin.state_dict().items():
        name = _mmdet_name(key)
        if name is None:
            raise ValueError(f"Swin parameter '{key}' has no place in mmdet's SwinTransformer")
        if ".downsample." in key:
            order = _unfold_order(value.shape[-1] // 4)
            value = value[..., order.to(value.device)]
        state[name] = value
    return state


def framework_state(backbone: nn.Module, fmt: str) -> dict[str, Any]:
    """The file content for `fmt`: {'model': ...} for detectron2, {'state_dict': ...} for mmdet."""
    if fmt == "detectron2":
        return {"model": detectron2_vit_state(backbone), "__author__": "vitssl"}
    return {"state_dict": mmdet_swin_state(backbone), "meta": {"source": "vitssl"}}


def config_lines(backbone: nn.Module, fmt: str, path: str) -> list[str]:
    """The config lines that load the written file (LazyConfig for detectron2, mmdet config dict)."""
    if fmt == "detectron2":
        grid = backbone.patch_embed.img_size[0]
        return [f'train.init_checkpoint = "{path}"',
                f"model.backbone.net.pretrain_img_size = {grid}  # pos_embed's grid; ViTDet resizes it",
                f"model.backbone.net.pretrain_use_cls_token = {backbone.num_prefix_tokens > 0}",
                f"model.backbone.net.embed_dim = {backbone.embed_dim}  # depth {len(backbone.blocks)}, "
                f"num_heads {backbone.blocks[0].attn.num_heads}, patch_size {backbone.patch_size}"]
    depths = [len(s.blocks) for s in backbone.layers]
    heads = [s.blocks[0].attn.num_heads for s in backbone.layers]
    window = max(backbone.layers[0].blocks[0].window_size)
    return [f"model = dict(backbone=dict(type='SwinTransformer', embed_dims={backbone.layers[0].dim}, "
            f"depths={depths}, num_heads={heads}, window_size={window}, convert_weights=False, "
            f"init_cfg=dict(type='Pretrained', checkpoint='{path}')))"]
