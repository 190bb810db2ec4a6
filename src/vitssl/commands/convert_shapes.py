"""What `vitssl import` reads off an original checkpoint's tensors: backbone and head sizes as
config overrides, and the key renames onto vitssl's modules (timm Swin, DINOHead, PatchAggregator)."""

from __future__ import annotations

import math
import re
from typing import Any

import torch

from vitssl.commands.original_checkpoint import State, saved_arg
from vitssl.engine.checkpoint import CheckpointError

_VIT_NAMES = {192: "vit_tiny", 384: "vit_small", 768: "vit_base"}
VIT_HEADS = {192: 3, 384: 6, 768: 12}
_ARCH_HEADS = {"vit_tiny": 3, "deit_tiny": 3, "vit_small": 6, "deit_small": 6, "vit_base": 12}
_SWIN_NAMES = {(96, (2, 2, 6, 2)): "swin_tiny", (96, (2, 2, 18, 2)): "swin_small", (128, (2, 2, 18, 2)): "swin_base"}


# -- shapes -> config ---------------------------------------------------------------------

def count_indices(state: State, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.match(k))})


def vit_overrides(backbone: State, raw: dict[str, Any], default_heads: dict[int, int]) -> list[str]:
    """Backbone config of a ViT state dict (timm/DINO names, no prefix)."""
    if "pos_embed" not in backbone or "patch_embed.proj.weight" not in backbone:
        raise CheckpointError("no ViT backbone found (pos_embed, patch_embed.proj.weight): is --from right?")
    dim, patch = backbone["pos_embed"].shape[-1], backbone["patch_embed.proj.weight"].shape[-1]
    tokens = backbone["pos_embed"].shape[1] - (1 if "cls_token" in backbone else 0)
    side = math.isqrt(tokens)
    heads = _ARCH_HEADS.get(str(saved_arg(raw, "arch")), default_heads.get(dim))
    depth = count_indices(backbone, r"blocks\.(\d+)\.")
    out = [f"backbone.name={_VIT_NAMES.get(dim, 'vit_small')}", f"backbone.embed_dim={dim}",
           f"backbone.depth={depth}", f"backbone.patch_size={patch}",
           f"backbone.img_size={side * patch}"]
    return out + ([f"backbone.num_heads={heads}"] if heads else [])


def swin_overrides(backbone: State) -> list[str]:
    """Backbone config of an EsViT Swin: sizes from shapes, windows and heads from the
    relative-position tables ((2W-1)^2 rows, one column per head)."""
    if "patch_embed.proj.weight" not in backbone or not any(".relative_position_bias_table" in k for k in backbone):
        raise CheckpointError("no Swin backbone found (patch_embed, relative_position_bias_table): is --from right?")
    dim, patch = backbone["patch_embed.proj.weight"].shape[0], backbone["patch_embed.proj.weight"].shape[-1]
    stages = count_indices(backbone, r"layers\.(\d+)\.blocks\.")
    depths = tuple(count_indices(backbone, rf"layers\.{s}\.blocks\.(\d+)\.") for s in range(stages))
    tables = [backbone[f"layers.{s}.blocks.0.attn.relative_position_bias_table"] for s in range(stages)]
    windows = [(math.isqrt(t.shape[0]) + 1) // 2 for t in tables]
    window = max(windows)
    # a stage whose grid is smaller than the window attends globally: its window is its grid
    clamped = [s for s, w in enumerate(windows) if w < window]
    img_size = windows[clamped[0]] * 2 ** clamped[0] * patch if clamped else 224
    name = _SWIN_NAMES.get((dim, depths))
    out = [f"backbone.window_size={window}", f"backbone.img_size={img_size}", "backbone.mask_padding=false",
           f"backbone.patch_size={patch}"]
    if name:
        return [f"backbone.name={name}", *out]
    if len(set(depths)) != 1:
        raise CheckpointError(f"Swin stage depths {depths} with width {dim} are not a vitssl Swin: "
                              "use Swin-T/S/B or equal depths per stage")
    return ["backbone.name=swin_tiny", f"backbone.embed_dim={dim}", f"backbone.depth={depths[0]}",
            f"backbone.num_heads={tables[0].shape[1]}", *out]


def head_overrides(head: State, key: str, norm_last_layer: Any = None) -> list[str]:
    """`method.<key>.*` sizes of a DINO head state dict (`mlp.*`, `last_layer.weight_g/_v`)."""
    if "last_layer.weight_v" not in head:
        return []
    linears = sorted(int(m.group(1)) for k, v in head.items() if (m := re.match(r"mlp\.(\d+)\.weight$", k)) and v.ndim == 2)
    first, last = head[f"mlp.{linears[0]}.weight"], head[f"mlp.{linears[-1]}.weight"]
    use_bn = any(k.endswith("running_mean") for k in head)
    if norm_last_layer is None:  # a frozen magnitude stays exactly 1
        norm_last_layer = bool(torch.all(head["last_layer.weight_g"] == 1))
    return [f"method.{key}.out_dim={head['last_layer.weight_v'].shape[0]}",
            f"method.{key}.hidden_dim={first.shape[0] if len(linears) > 1 else 2048}",
            f"method.{key}.bottleneck_dim={last.shape[0]}", f"method.{key}.nlayers={len(linears)}",
            f"method.{key}.use_bn={str(use_bn).lower()}", f"method.{key}.norm_last_layer={str(bool(norm_last_layer)).lower()}"]


# -- key renaming -------------------------------------------------------------------------

def rename_head(head: State, prefix: str) -> State:
    """DINO head -> vitssl DINOHead: weight norm's old `weight_g`/`weight_v` -> parametrization."""
    names = {"last_layer.weight_g": "last_layer.parametrizations.weight.original0",
             "last_layer.weight_v": "last_layer.parametrizations.weight.original1",
             "mlp.weight": "mlp.0.weight", "mlp.bias": "mlp.0.bias"}  # nlayers=1: a bare Linear
    return {prefix + names.get(k, k): v for k, v in head.items()}


def rename_swin(backbone: State) -> State:
    """EsViT Swin -> timm Swin: patch merging moves from the end of stage i to the start of i+1;
    the relative-position index (a constant buffer) is dropped."""
    out = {}
    for k, v in backbone.items():
        if k.endswith(("relative_position_index", "attn_mask")):
            continue
        m = re.match(r"layers\.(\d+)\.downsample\.(.*)", k)
        out[f"layers.{int(m.group(1)) + 1}.downsample.{m.group(2)}" if m else k] = v
    return out


def rename_aggregator(ca_head: State) -> State:
    """SelfPatch `ca_head` -> PatchAggregator: separate k and v Linears fuse into `kv` ([k; v])."""
    out = {}
    for k, v in ca_head.items():
        if k == "cls_token":
            out["query"] = v
        elif re.search(r"\.attn\.v\.(weight|bias)$", k):
            continue
        elif m := re.match(r"cls_blocks\.(\d+)\.attn\.k\.(weight|bias)$", k):
            i, kind = m.groups()
            value = ca_head.get(f"cls_blocks.{i}.attn.v.{kind}")
            out[f"blocks.{i}.attn.kv.{kind}"] = v if value is None else torch.cat([v, value])
        else:
            out[k.replace("cls_blocks.", "blocks.", 1)] = v
    return out
