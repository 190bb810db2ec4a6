"""Public weights in timm's key layout (.safetensors, or a .pth/.pt/.bin state dict) as a start.

vitssl's ViT and Swin keep timm's parameter names, so a timm file maps onto them key for key:
the classifier (`head.*`, `fc_norm.*`) is dropped, the position embedding is resampled to the
target grid (bicubic, as DINO), and anything else that does not fit is refused, naming the key.
`load_timm_backbone` builds the backbone the file describes (for `vitssl eval`); `load_timm_into`
puts the file into every backbone of a method (for `init_from=`). Files are read weights-only;
nothing is downloaded (see docs/evaluation.md for how to get the files).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitssl.backbones import Swin, ViT
from vitssl.backbones.vit import interpolate_pos_embed
from vitssl.engine.checkpoint import CheckpointError, check_tensors, read_failure

log = logging.getLogger("vitssl.transfer")
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
CLASSIFIER_PREFIXES = ("head.", "fc_norm.", "head_drop.")
HEADS_BY_WIDTH = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}  # timm's ViT-Ti/S/B/L/H


def _read(path: Path) -> Any:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:  # memory-mapped: telling a vitssl checkpoint .pt from a state dict costs no full read
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # the legacy (non-zip) format cannot be mapped
        return torch.load(path, map_location="cpu", weights_only=True)


def read_timm_state(path: str | Path) -> dict[str, torch.Tensor] | None:
    """The state dict of a timm-layout weights file; None for anything else (a vitssl checkpoint
    or run folder). A `model` or `state_dict` entry holding the tensors is unwrapped."""
    path = Path(path)
    if not path.is_file() or path.suffix not in WEIGHT_SUFFIXES:
        return None
    try:
        payload = _read(path)
    except Exception as e:
        raise CheckpointError(f"weights file '{path}' {read_failure(e, 'a weights file')}") from e
    if not isinstance(payload, dict) or "method" in payload or "config" in payload:
        return None
    for key in ("model", "state_dict"):
        if isinstance(payload.get(key), dict):
            payload = payload[key]
    if not payload or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        return None
    return {k.removeprefix("module."): v for k, v in payload.items()}


def _count(state: dict[str, torch.Tensor], pattern: str) -> int:
    return len({m.group(1) for k in state if (m := re.match(pattern, k))})


def _vit_from_state(state: dict[str, torch.Tensor], heads: int | None) -> ViT:
    dim, _, patch, _ = state["patch_embed.proj.weight"].shape
    prefix = int("cls_token" in state)
    grid = round((state["pos_embed"].shape[1] - prefix) ** 0.5) if "pos_embed" in state else 224 // patch
    heads = heads or HEADS_BY_WIDTH.get(dim)
    if heads is None:
        raise CheckpointError(f"ViT width {dim} has no standard head count: write the file's timm_model.json "
                              "(\"kwargs\": {\"num_heads\": N}) next to it")
    return ViT(embed_dim=dim, depth=_count(state, r"blocks\.(\d+)\."), num_heads=heads, patch_size=patch,
               img_size=grid * patch, class_token=bool(prefix), final_norm="norm.weight" in state)


def _swin_from_state(state: dict[str, torch.Tensor]) -> Swin:
    stages = _count(state, r"layers\.(\d+)\.")
    depths = tuple(_count(state, rf"layers\.{s}\.blocks\.(\d+)\.") for s in range(stages))
    tables = [state[f"layers.{s}.blocks.0.attn.relative_position_bias_table"] for s in range(stages)]
    windows = [(round(t.shape[0] ** 0.5) + 1) // 2 for t in tables]
    patch = state["patch_embed.proj.weight"].shape[-1]
    # timm shrinks a window to a stage's grid when the grid is smaller: that stage gives the image size
    clamped = [s for s in range(stages) if windows[s] < windows[0]]
    size = windows[clamped[0]] * patch * 2 ** clamped[0] if clamped else 224
    swin = Swin(embed_dim=state["patch_embed.proj.weight"].shape[0], depths=depths,
                num_heads=tuple(int(t.shape[1]) for t in tables), window_size=windows[0],
                patch_size=patch, img_size=size)
    for module in swin.modules():  # timm's Swin uses LayerNorm eps 1e-5 (EsViT's 1e-6)
        if isinstance(module, nn.LayerNorm):
            module.eps = 1e-5
    return swin


def _declared_heads(path: Path) -> int | None:
    """num_heads from a `timm_model.json` beside the file (what `vitssl export` writes)."""
    spec = path.with_name("timm_model.json")
    if not spec.is_file():
        return None
    heads = json.loads(spec.read_text()).get("kwargs", {}).get("num_heads")
    return heads if isinstance(heads, int) else None


def load_timm_backbone(path: str | Path, state: dict[str, torch.Tensor]) -> tuple[nn.Module, dict[str, Any]]:
    """The ViT or Swin a timm file describes, with its weights, and a config for evaluation."""
    path = Path(path)
    check_tensors(state, f"weights file '{path}'")
    if "layers.0.blocks.0.attn.relative_position_bias_table" in state:
        backbone: nn.Module = _swin_from_state(state)
    elif "patch_embed.proj.weight" in state and "blocks.0.attn.qkv.weight" in state:
        backbone = _vit_from_state(state, _declared_heads(path))
    else:
        first = next(iter(state))
        raise CheckpointError(f"weights file '{path}' is neither a timm ViT nor a timm Swin (first key '{first}'): "
                              "pass a timm vit_* or swin_* state dict, or a vitssl run")
    load_into_backbone(backbone, state, str(path))
    size = int(backbone.patch_embed.img_size[0])
    config = {"backbone": {"name": type(backbone).__name__.lower(), "img_size": size}, "method": {},
              "source": f"timm weights {path.name}"}
    return backbone.eval(), config


def _fit_pos_embed(backbone: ViT, pos: torch.Tensor) -> torch.Tensor:
    """The file's position embedding resampled to the backbone's grid (prefix tokens kept)."""
    own = backbone.pos_embed
    n = backbone.num_prefix_tokens
    if pos.shape == own.shape or pos.shape[-1] != own.shape[-1]:
        return pos
    side = round((pos.shape[1] - n) ** 0.5)
    if side * side != pos.shape[1] - n:
        return pos  # not a square grid: reported as a shape mismatch
    new = interpolate_pos_embed(pos[:, n:], (side, side), tuple(backbone.patch_embed.grid_size))
    return torch.cat([pos[:, :n], new], dim=1)


def load_into_backbone(backbone: nn.Module, state: dict[str, torch.Tensor], where: str) -> list[str]:
    """Load a timm state dict into a vitssl ViT/Swin; returns the dropped classifier keys.
    Missing, unexpected or misshapen keys are one `CheckpointError` naming them."""
    dropped = [k for k in state if k.startswith(CLASSIFIER_PREFIXES)]
    state = {k: v for k, v in state.items() if not k.startswith(CLASSIFIER_PREFIXES)
             and not k.endswith(("relative_position_index", "attn_mask"))}  # buffers rebuilt by the model
    own = backbone.state_dict()
    if isinstance(backbone, ViT) and "pos_embed" in state:
        if backbone.pos_embed_type == "sincos":
            state["pos_embed"] = own["pos_embed"]  # MAE's fixed embedding: recomputed exactly, not resampled
        else:
            state["pos_embed"] = _fit_pos_embed(backbone, state["pos_embed"])
    own_keys = {k for k in own if not k.endswith(("relative_position_index", "attn_mask"))}
    missing = sorted(own_keys - set(state))
    unexpected = sorted(set(state) - set(own))
    shape = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in sorted(own_keys & set(state))
             if state[k].shape != own[k].shape]
    if missing or unexpected or shape:
        parts = ([f"shape mismatch: {', '.join(shape[:3])}"] if shape else []) + \
                ([f"missing: {', '.join(missing[:3])}"] if missing else []) + \
                ([f"unexpected: {', '.join(unexpected[:3])}"] if unexpected else [])
        raise CheckpointError(f"weights file '{where}' does not fit the {type(backbone).__name__} backbone "
                              f"({'; '.join(parts)}): set backbone.* (depth, embed_dim, num_heads, patch_size, "
                              "window_size) to the file's architecture")
    backbone.load_state_dict(state, strict=False)
    return dropped


def load_timm_into(method: nn.Module, path: str | Path, state: dict[str, torch.Tensor]) -> list[str]:
    """Put a timm file into every ViT/Swin backbone of `method` (student and teacher alike);
    returns the module paths filled. A method with no such backbone is refused."""
    check_tensors(state, f"weights file '{path}'")
    targets = [name for name, m in method.named_modules() if isinstance(m, (ViT, Swin))]
    targets = [t for t in targets if not any(t.startswith(f"{o}.") for o in targets if o != t)]  # outermost
    if not targets:
        raise CheckpointError(f"init_from '{path}' holds timm ViT/Swin weights, but this method's backbone is "
                              "neither: choose backbone.name=vit_* or swin_*")
    for name in targets:
        dropped = load_into_backbone(method.get_submodule(name), state, str(path))
    log.info("initialised %s from timm weights %s%s", ", ".join(targets), path,
             f" (classifier keys not used: {', '.join(dropped[:3])})" if dropped else "")
    return targets
