"""Layer-wise learning-rate decay for fine-tuning (BEiT; MAE paper App. A.1, Tables 9-10; facebookresearch/mae FINETUNE.md; MAE-Lite paper, fine-tuning recipe; wangsr126/mae-lite projects/eval_tools/finetuning_exp.py).

Each parameter gets a layer id: 0 for the embeddings (patch embedding, CLS token, position
embedding), i + 1 for the i-th transformer block, L + 1 for everything after the last block
(final norm, fc_norm, classifier), with L blocks in all. Its lr is scaled by
`layer_decay ** (L + 1 - layer_id)`, so the classifier trains at the full rate and the
embeddings at `layer_decay ** (L + 1)`. Swin counts its blocks across stages in order (a
stage's patch-merging layer goes with the stage's first block); ViT and Swin are told apart by
their parameter names, which are timm's. EsViT's CvT (a stage's token embedding goes with its
first block) and ResNet (residual blocks as blocks, the stem as embedding) likewise.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from torch import nn

# Parameters before the first block (ViT and Swin, timm names).
EMBEDDING_NAMES = ("patch_embed", "cls_token", "pos_embed", "reg_token", "norm_pre", "absolute_pos_embed",
                   "conv1.", "bn1.")  # ResNet's stem
# Never weight-decayed, besides biases and 1-D tensors (MAE's and timm's `no_weight_decay`).
NO_WEIGHT_DECAY_NAMES = ("pos_embed", "cls_token", "reg_token", "absolute_pos_embed",
                         "relative_position_bias_table")

_VIT_BLOCK = re.compile(r"blocks\.(\d+)\.")
_SWIN_BLOCK = re.compile(r"layers\.(\d+)\.blocks\.(\d+)\.")
_SWIN_MERGE = re.compile(r"layers\.(\d+)\.downsample\.")
_CVT_BLOCK = re.compile(r"stages\.(\d+)\.blocks\.(\d+)\.")
_CVT_EMBED = re.compile(r"stages\.(\d+)\.embed\.")
_RESNET_BLOCK = re.compile(r"layer([1-9])\.(\d+)\.")


def stage_depths(backbone: nn.Module) -> list[int]:
    """Blocks per stage: one stage of `len(blocks)` for a ViT, Swin's `layers`, or what a
    multi-stage backbone states (`stage_depths`: CvT, ResNet)."""
    stages = getattr(backbone, "layers", None)
    if isinstance(stages, nn.Sequential):
        return [len(stage.blocks) for stage in stages]
    if hasattr(backbone, "stage_depths"):
        return list(backbone.stage_depths)
    return [len(backbone.blocks)]


def layer_id(name: str, depths: list[int], prefix: str = "") -> int:
    """Layer id of parameter `name` (see the module docstring); `prefix` is stripped first.

    `depths` are the blocks per stage (`stage_depths`); L = sum(depths). Names outside the
    backbone (without `prefix`) are heads: L + 1.
    """
    last = sum(depths) + 1
    if not name.startswith(prefix):
        return last
    name = name[len(prefix):]
    if name.startswith(EMBEDDING_NAMES):
        return 0
    first_of_stage = [sum(depths[:s]) for s in range(len(depths))]
    if match := _SWIN_BLOCK.match(name):
        return first_of_stage[int(match.group(1))] + int(match.group(2)) + 1
    if match := _SWIN_MERGE.match(name) or _CVT_EMBED.match(name):
        return first_of_stage[int(match.group(1))] + 1
    if match := _CVT_BLOCK.match(name):
        return first_of_stage[int(match.group(1))] + int(match.group(2)) + 1
    if match := _RESNET_BLOCK.match(name):
        return first_of_stage[int(match.group(1)) - 1] + int(match.group(2)) + 1
    if match := _VIT_BLOCK.match(name):
        return int(match.group(1)) + 1
    return last


def is_weight_decayed(name: str, param: nn.Parameter) -> bool:
    """Decay matrices only: not biases, 1-D tensors (norms), positions, CLS or bias tables."""
    leaf = name.rsplit(".", 1)[-1]
    return not (name.endswith(".bias") or param.ndim <= 1 or leaf in NO_WEIGHT_DECAY_NAMES)


def layer_decay_groups(
    named_params: Iterable[tuple[str, nn.Parameter]],
    depths: list[int],
    layer_decay: float,
    weight_decay: float,
    prefix: str = "backbone.",
) -> list[dict]:
    """Optimizer parameter groups, one per (layer id, decayed or not).

    Each group carries `lr_scale` (multiply the scheduled lr by it every step), its own
    `weight_decay` (0 for the exempt parameters), `layer_id` and a readable `name`. Frozen
    parameters (requires_grad False) are left out.
    """
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    last = sum(depths) + 1
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in named_params:
        if not param.requires_grad:
            continue
        lid = layer_id(name, depths, prefix)
        decayed = is_weight_decayed(name, param)
        group = groups.setdefault((lid, decayed), {
            "params": [], "param_names": [], "layer_id": lid, "lr_scale": layer_decay ** (last - lid),
            "weight_decay": weight_decay if decayed else 0.0,
            "name": f"layer{lid}_{'decay' if decayed else 'no_decay'}",
        })
        group["params"].append(param)
        group["param_names"].append(name)
    return [groups[key] for key in sorted(groups)]
