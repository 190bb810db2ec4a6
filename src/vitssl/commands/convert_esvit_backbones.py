"""EsViT's CvT, ViL and ResNet-50 checkpoint layouts (reference `models/cvt_v4_transformer.py`,
`models/vision_longformer.py`, `utils.ResNetWrapper`) onto vitssl's `cvt_tiny`, `vil_tiny` and
`resnet50`, for `vitssl import --from esvit`.

| original (teacher/student, heads removed) | vitssl backbone |
|---|---|
| `stage{i}.0.proj`, `stage{i}.0.norm` | `stages.{i}.embed.proj`, `.embed.norm` |
| `stage{i}.1.layers.{j}.0.norm`, `.1.norm` | `stages.{i}.blocks.{j}.norm1`, `.norm2` |
| `...layers.{j}.0.fn.qkv.dw` / `.bn` / `.pw` (1x1 conv) | `...attn.qkv_dw` / `.qkv_bn` / `.qkv` (Linear) |
| `...layers.{j}.0.fn.proj_out` (1x1 conv) | `...attn.proj` (Linear) |
| `...layers.{j}.1.fn.net.0`, `.net.2` (1x1 convs) | `...mlp.fc1`, `.mlp.fc2` (Linears) |
| `norm` | `norm` |
| `layer{i}.0.proj`, `.0.norm_embed`, `.0.cls_token` (ViL) | `stages.{i-1}.embed.proj`, `.embed.norm`, `.embed.cls_token` |
| `layer{i}.{2j+1}.norm`, `.attn.{query,kv,qkv,proj}` | `stages.{i-1}.blocks.{j}.norm1`, `.attn.{same}` |
| `...attn.local_relative_position_bias_table`, `g2l_`, `g2g_relative_position_bias` | `...attn.relative_position_bias_table`, `.global_bias`, `.global_global_bias` |
| `layer{i}.{2j+2}.norm`, `.mlp.fc1`, `.mlp.fc2` | `stages.{i-1}.blocks.{j}.norm2`, `.mlp.fc1`, `.mlp.fc2` |
| `backbone.backbone.<torchvision name>` | `<same name>` (timm's ResNet keeps torchvision's) |

Head counts and the window are not in the weights: CvT takes the released `s1.yaml` values
(heads 1-3-6-12, i.e. width / 64; W = 7) unless `backbone.num_heads` / `window_size` say otherwise.
Imported CvTs reproduce the original's unmasked padding (`backbone.mask_padding=false`).
ViL's head counts, chunk size and `img_size` are read from its bias tables; its `*_global`
projections are the same tensors as `query`/`kv`/`proj` (SHARE_W) and are dropped once checked.
"""

from __future__ import annotations

import re
from typing import Callable

import torch

from vitssl.engine.checkpoint import CheckpointError

State = dict[str, torch.Tensor]

_CVT_BLOCK = {"0.norm.": "norm1.", "0.fn.qkv.dw.": "attn.qkv_dw.", "0.fn.qkv.bn.": "attn.qkv_bn.",
              "0.fn.qkv.pw.": "attn.qkv.", "0.fn.proj_out.": "attn.proj.", "1.norm.": "norm2.",
              "1.fn.net.0.": "mlp.fc1.", "1.fn.net.2.": "mlp.fc2."}
_RESNET_PREFIX = "backbone.backbone."


def _linear(key: str, value: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution's weight (out, in, 1, 1) as a Linear's (out, in)."""
    return value.flatten(1) if key.endswith("weight") and value.ndim == 4 and value.shape[-2:] == (1, 1) else value


def rename_cvt(backbone: State) -> State:
    """Original CvT keys -> vitssl `CvT` keys; keys of other layouts pass through unchanged
    (and are then refused by name when loaded)."""
    out = {}
    for key, value in backbone.items():
        if m := re.match(r"stage(\d+)\.0\.(proj|norm)\.(.*)", key):
            out[f"stages.{m[1]}.embed.{m[2]}.{m[3]}"] = value
        elif (m := re.match(r"stage(\d+)\.1\.layers\.(\d+)\.(.*)", key)) and (
                part := next((p for p in _CVT_BLOCK if m[3].startswith(p)), None)):
            out[f"stages.{m[1]}.blocks.{m[2]}.{_CVT_BLOCK[part]}{m[3][len(part):]}"] = _linear(key, value)
        else:
            out[key] = value
    return out


def cvt_overrides(backbone: State) -> list[str]:
    """Backbone config of an EsViT CvT from its shapes (widths, depths)."""
    stages = sorted({int(m[1]) for k in backbone if (m := re.match(r"stage(\d+)\.0\.proj\.weight$", k))})
    dims = [backbone[f"stage{s}.0.proj.weight"].shape[0] for s in stages]
    depths = tuple(len({m[1] for k in backbone if (m := re.match(rf"stage{s}\.1\.layers\.(\d+)\.", k))})
                   for s in stages)
    if any(".rel_pos_" in k for k in backbone):
        raise CheckpointError("this EsViT CvT uses relative position bias (cvt_v4 *_rpe configs): vitssl's "
                              "cvt_tiny is the released s1 variant without it")
    if dims != [dims[0] * r for r in (1, 3, 6, 12)]:
        raise CheckpointError(f"CvT stage widths {dims} are not cvt_tiny's 1:3:6:12 (64-192-384-768)")
    if depths != (2, 2, 6, 2) and len(set(depths)) != 1:
        raise CheckpointError(f"CvT stage depths {depths} are not cvt_tiny's 2-2-6-2 nor equal per stage")
    out = ["backbone.name=cvt_tiny", f"backbone.embed_dim={dims[0]}", f"backbone.num_heads={max(dims[0] // 64, 1)}",
           "backbone.mask_padding=false"]
    return out + ([f"backbone.depth={depths[0]}"] if depths != (2, 2, 6, 2) else [])


def rename_resnet(backbone: State) -> State:
    return {k.removeprefix(_RESNET_PREFIX): v for k, v in backbone.items()}


def resnet_overrides(backbone: State) -> list[str]:
    """Backbone config of EsViT's torchvision ResNet-50 (or a narrower / equal-depth bottleneck ResNet)."""
    depths = tuple(len({m[1] for k in backbone if (m := re.match(rf"{_RESNET_PREFIX}layer{s}\.(\d+)\.", k))})
                   for s in range(1, 5))
    width = backbone[f"{_RESNET_PREFIX}layer1.0.conv1.weight"].shape[0]
    if f"{_RESNET_PREFIX}layer1.0.conv3.weight" not in backbone or (depths != (3, 4, 6, 3) and len(set(depths)) != 1):
        raise CheckpointError(f"ResNet with blocks {depths} is not a bottleneck ResNet-50 nor one with equal "
                              "depths per stage: vitssl's resnet50 cannot hold it")
    out = ["backbone.name=resnet50", "backbone.drop_path_rate=0.0"]
    return out + ([f"backbone.embed_dim={width}"] if width != 64 else []) + (
        [f"backbone.depth={depths[0]}"] if depths != (3, 4, 6, 3) else [])


_VIL_ATTN = {"local_relative_position_bias_table": "relative_position_bias_table",
             "g2l_relative_position_bias": "global_bias", "g2g_relative_position_bias": "global_global_bias"}


def _vil_key(key: str) -> str | None:
    """vitssl name of one original ViL key; None for the shared `*_global` projections and the
    position-index buffers (rebuilt here)."""
    if m := re.match(r"layer(\d)\.0\.(proj\.|norm_embed\.|cls_token$)(.*)", key):
        return f"stages.{int(m[1]) - 1}.embed.{m[2].replace('norm_embed', 'norm')}{m[3]}"
    if not (m := re.match(r"layer(\d)\.(\d+)\.(.*)", key)):
        return key
    stage, index, rest = int(m[1]) - 1, int(m[2]) - 1, m[3]
    if rest.endswith("relative_position_index") or re.match(r"attn\.(query|kv|proj)_global\.", rest):
        return None
    if rest.startswith("norm."):
        rest = ("norm1." if index % 2 == 0 else "norm2.") + rest[5:]
    elif rest.startswith("attn.") and rest[5:] in _VIL_ATTN:
        rest = "attn." + _VIL_ATTN[rest[5:]]
    return f"stages.{stage}.blocks.{index // 2}.{rest}"


def rename_vil(backbone: State) -> State:
    """Original ViL keys -> vitssl `ViL` keys (other keys pass through, to be refused by name)."""
    for key, value in backbone.items():
        if (m := re.match(r"(.*\.attn\.)(query|kv|proj)_global\.(.*)", key)) and not torch.equal(
                value, backbone.get(f"{m[1]}{m[2]}.{m[3]}", value + 1)):
            raise CheckpointError(f"{key} differs from {m[1]}{m[2]}.{m[3]}: this ViL has separate global "
                                  "projections (SHARE_W false); vil_tiny shares them as the released models do")
    return {name: value for key, value in backbone.items() if (name := _vil_key(key)) is not None}


def vil_overrides(backbone: State) -> list[str]:
    """Backbone config of an EsViT ViL from its shapes: widths, depths, heads, chunk size, img_size."""
    stages = range(1, 5)
    dims = [backbone[f"layer{s}.0.proj.weight"].shape[0] for s in stages if f"layer{s}.0.proj.weight" in backbone]
    tables = {s: [v for k, v in sorted(backbone.items()) if re.match(rf"layer{s}\.\d+\.attn\.local_relative", k)]
              for s in stages}
    modules = [{m[1] for k in backbone if (m := re.match(rf"layer{s}\.([1-9]\d*)\.", k))} for s in stages]
    depths = tuple(-(-len(m) // 2) for m in modules)  # an attention and an MLP module per block
    heads = [tables[s][0].shape[1] if tables[s] else 0 for s in stages]
    kinds = tuple(f"layer{s}.1.attn.query.weight" in backbone for s in stages)
    glob = tuple(f"layer{s}.0.cls_token" in backbone for s in stages)
    if len(dims) != 4 or dims != [dims[0] * r for r in (1, 2, 4, 8)] or heads != [heads[0] * r for r in (1, 2, 4, 8)]:
        raise CheckpointError(f"ViL stage widths {dims} / heads {heads} are not vil_tiny's 1:2:4:8 (96-192-384-768, "
                              "3-6-12-24)")
    if depths != (2, 2, 6, 2) and len(set(depths)) != 1:
        raise CheckpointError(f"ViL stage depths {depths} are not vil_tiny's 2-2-6-2 nor equal per stage")
    if kinds != (True, True, False, False) or glob != (True, True, True, False):
        raise CheckpointError(f"ViL with Longformer stages {kinds} and global tokens {glob} is not vil_2262's "
                              "(Longformer in stages 1-2, one global token in stages 1-3)")
    window = (round(tables[1][0].shape[0] ** 0.5) + 1) // 4
    side = (round(tables[4][0].shape[0] ** 0.5) + 1) // 2
    out = ["backbone.name=vil_tiny", f"backbone.embed_dim={dims[0]}", f"backbone.num_heads={heads[0]}"]
    out += [f"backbone.window_size={window}"] if window != 7 else []
    out += [f"backbone.img_size={side * 32}"] if side != 7 else []
    return out + ([f"backbone.depth={depths[0]}"] if depths != (2, 2, 6, 2) else [])


Layout = tuple[Callable[[State], State], Callable[[State], list[str]]]


def esvit_backbone_layout(teacher: State) -> Layout | None:
    """(rename, shapes -> overrides) for an EsViT CvT, ViL or ResNet network state; None for Swin/ViT."""
    if f"{_RESNET_PREFIX}conv1.weight" in teacher:
        return rename_resnet, resnet_overrides
    if "layer1.0.proj.weight" in teacher:
        return rename_vil, vil_overrides
    if "stage0.0.proj.weight" in teacher:
        return rename_cvt, cvt_overrides
    return None
