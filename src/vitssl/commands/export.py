"""`vitssl export`: a checkpoint's backbone as plain weights in timm's key layout.

vitssl's backbones keep timm's parameter names, so exporting is writing the backbone's state
dict (teacher or student) and saying which `timm.create_model` call rebuilds it. The result is
loadable without vitssl:

    timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=PATH), num_classes=0, **KWARGS)

with NAME and KWARGS from the `timm_model.json` written next to the weights. Outputs are
identical at the size the model was built for; elsewhere timm resamples ViT position
embeddings with its own interpolation, and pads Swin windows after the cyclic shift where the
original (and vitssl) pad before it, so inputs that need window padding differ slightly.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitssl.backbones import Swin, ViT
from vitssl.engine.outputs import check_output_dir, find_os_error, write_text_atomic
from vitssl.eval.pretrained import load_run

FORMATS = ("safetensors", "timm", "detectron2", "mmdet")
WEIGHT_FILES = {"safetensors": "model.safetensors", "timm": "pytorch_model.pth", "detectron2": "detectron2_backbone.pth",
                "mmdet": "mmdet_backbone.pth"}


def timm_model_spec(backbone: nn.Module) -> tuple[str, dict[str, Any]]:
    """timm model name and `create_model` keyword arguments that rebuild `backbone`."""
    if getattr(backbone, "stem", "patch") == "conv":
        raise ValueError("cannot export a ViT with a convolutional stem (backbone.stem=conv) in timm's layout: timm's "
                         "ViT has a patch projection only; use the run's vitssl checkpoint")
    if isinstance(backbone, ViT):
        kwargs: dict[str, Any] = dict(
            img_size=backbone.patch_embed.img_size[0], patch_size=backbone.patch_size, embed_dim=backbone.embed_dim,
            depth=len(backbone.blocks), num_heads=backbone.blocks[0].attn.num_heads,
            class_token=backbone.num_prefix_tokens > 0, global_pool="token" if backbone.num_prefix_tokens else "avg",
            final_norm=not isinstance(backbone.norm, nn.Identity), fc_norm=False, dynamic_img_size=True)
        return "vit_small_patch16_224", kwargs
    if isinstance(backbone, Swin):
        stages = backbone.layers
        kwargs = dict(img_size=backbone.patch_embed.img_size[0], patch_size=backbone.embed_stride,
                      embed_dim=stages[0].dim, depths=[len(s.blocks) for s in stages],
                      num_heads=[s.blocks[0].attn.num_heads for s in stages],
                      window_size=max(stages[0].blocks[0].window_size), strict_img_size=False)
        return "swin_tiny_patch4_window7_224", kwargs
    if hasattr(backbone, "timm_spec"):  # backbones that say themselves how timm rebuilds them (ResNet)
        return backbone.timm_spec()
    raise ValueError(f"cannot export a {type(backbone).__name__}: timm has no counterpart of it (timm export covers "
                     "vitssl's ViT, Swin and ResNet backbones); use its vitssl checkpoint")


def export_backbone(checkpoint: str | Path, out_dir: str | Path, fmt: str = "safetensors",
                    which: str = "teacher", overwrite: bool = True) -> dict[str, Any]:
    """Write the backbone weights and `timm_model.json`; returns what was written.

    `overwrite=False` (the CLI's default) refuses a folder that already holds either file."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format '{fmt}': use one of {FORMATS}")
    spec_file = "load_config.txt" if fmt in ("detectron2", "mmdet") else "timm_model.json"
    out_dir = check_output_dir(out_dir, overwrite, (WEIGHT_FILES[fmt], spec_file))
    run = load_run(checkpoint, which)
    backbone, config = run.network, run.config  # SelfPatch: its ViT (the aggregator is not a timm part)
    if fmt in ("detectron2", "mmdet"):
        return export_for_framework(backbone, out_dir, fmt, which, str(config["method"]["name"]))
    name, kwargs = timm_model_spec(backbone)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in backbone.state_dict().items()}
    weights = write_weights(state, out_dir / WEIGHT_FILES[fmt], fmt, {"source": "vitssl",
                                                                      "method": str(config["method"]["name"])})
    spec = {"model_name": name, "kwargs": kwargs, "file": weights.name, "backbone": which,
            "method": config["method"]["name"], "note": _note(backbone)}
    write_text_atomic(out_dir / "timm_model.json", json.dumps(spec, indent=2))
    return {"weights": str(weights), "spec": spec}


def export_for_framework(backbone: nn.Module, out_dir: Path, fmt: str, which: str, method: str) -> dict[str, Any]:
    """detectron2 / mmdet layout (commands/export_frameworks.py) and `load_config.txt`, the
    config lines that load it."""
    from vitssl.commands.export_frameworks import config_lines, framework_state

    content = framework_state(backbone, fmt)  # refuses a backbone the framework has no layout for
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = write_weights(_to_cpu(content), out_dir / WEIGHT_FILES[fmt], "timm", {})  # a torch .pth
    lines = config_lines(backbone, fmt, str(weights.resolve()))
    write_text_atomic(out_dir / "load_config.txt", "\n".join(lines) + "\n")
    spec = {"format": fmt, "file": weights.name, "backbone": which, "method": method, "config": lines, "note": ""}
    return {"weights": str(weights), "spec": spec}


def _to_cpu(content: Any) -> Any:
    if isinstance(content, torch.Tensor):
        return content.detach().contiguous().cpu()
    if isinstance(content, dict):
        return {k: _to_cpu(v) for k, v in content.items()}
    return content


def write_weights(state: dict[str, torch.Tensor], weights: Path, fmt: str, metadata: dict[str, str]) -> Path:
    """Write through a temp file renamed over `weights` once complete; a failed write (disk
    full) is an `OSError` naming `weights`, whatever library reported it."""
    tmp = weights.with_name(f".{weights.name}.{os.getpid()}.tmp")
    try:
        if fmt == "safetensors":
            from safetensors.torch import save_file

            save_file(state, str(tmp), metadata=metadata)
        else:
            with open(tmp, "wb") as f:  # through a Python file: a failed write surfaces as its OSError
                torch.save(state, f)
        os.replace(tmp, weights)
    except Exception as e:
        cause = find_os_error(e)  # torch: a RuntimeError around it; safetensors: "... (os error N)"
        code = cause.errno if cause is not None else re.search(r"os error (\d+)", str(e))
        if code is None:
            raise
        number = code if isinstance(code, int) else int(code.group(1))
        raise OSError(number, os.strerror(number), str(weights)) from e
    finally:
        tmp.unlink(missing_ok=True)
    return weights


def _note(backbone: nn.Module) -> str:
    if isinstance(backbone, Swin):
        return ("EsViT's Swin uses LayerNorm eps 1e-6: pass norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6) "
                "to timm.create_model for identical outputs")
    return ""


def load_exported(out_dir: str | Path) -> nn.Module:
    """Rebuild an exported backbone with timm alone (what a user without vitssl would run)."""
    from functools import partial

    import timm

    spec = json.loads((Path(out_dir) / "timm_model.json").read_text())
    kwargs = dict(spec["kwargs"])
    if spec["model_name"].startswith("swin"):
        kwargs["norm_layer"] = partial(nn.LayerNorm, eps=1e-6)
    return timm.create_model(spec["model_name"], pretrained=True, num_classes=0,
                             pretrained_cfg_overlay=dict(file=str(Path(out_dir) / spec["file"])), **kwargs)
