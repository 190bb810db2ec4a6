"""Loading a pre-trained backbone from a vitssl run: the evaluation backbone of a checkpoint (or a
seeded untrained one of the same architecture), and the image size and normalisation it was
trained with. Shared by the evaluation, analysis, report and export commands."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitssl.augment import EvalTransform
from vitssl.config import load_config, to_container, to_objects
from vitssl.engine.checkpoint import (
    CheckpointError,
    check_tensors,
    load_checkpoint,
    load_matching_state,
)
from vitssl.methods import build_method, method_class, method_configs


def load_pretrained(checkpoint: str | Path, which: str = "teacher") -> tuple[nn.Module, dict[str, Any]]:
    """The evaluation backbone of a vitssl checkpoint (the teacher for DINO) and its config.

    `which="student"` returns the student backbone instead, where the method has one. A
    timm-layout weights file (.safetensors, .pth) gives the ViT/Swin it describes.
    """
    from vitssl.eval.transfer.timm_weights import load_timm_backbone, read_timm_state

    if (timm_state := read_timm_state(checkpoint)) is not None:
        return load_timm_backbone(checkpoint, timm_state)
    payload = load_checkpoint(checkpoint)
    if "config" not in payload or "method" not in payload:
        raise CheckpointError(f"'{checkpoint}' is not a vitssl pre-training checkpoint (no config/method entries)")
    if not isinstance(payload["config"], dict):
        raise CheckpointError(f"'{checkpoint}' holds a {type(payload['config']).__name__} as its config, not a "
                              "mapping: the file is damaged or not a vitssl checkpoint")
    check_tensors(payload["method"], f"checkpoint '{checkpoint}'")
    cfg = load_config(None, [], method_configs(), base=payload["config"])
    objs = to_objects(cfg)
    method, state = _evaluation_method(objs, payload["method"])
    load_matching_state(method, state, "method")
    if which == "teacher":
        backbone = method.evaluation_backbone()
    elif which == "student":
        backbone = method.student_backbone()
    else:
        raise ValueError(f"unknown backbone choice '{which}': use teacher or student")
    return backbone.eval(), payload["config"]


def _evaluation_method(objs: Any, state: dict[str, torch.Tensor]) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """The method to load for evaluation, and the part of the saved state it holds.

    A method class may name a simpler one to be evaluated as (`evaluated_as`: D-MAE-Lite's
    student is an MAE; its adapters are training-only); its config is the shared fields.
    """
    target = getattr(method_class(objs.method.name), "evaluated_as", None)
    if target is None:
        return build_method(objs.method, objs.backbone), state
    cls = method_class(target)
    shared = {f.name for f in dataclasses.fields(cls.Config)}
    cfg = cls.Config(**{k: v for k, v in vars(objs.method).items() if k in shared and k != "name"})
    method = cls(cfg, objs.backbone)
    own = method.state_dict()
    return method, {k: v for k, v in state.items() if k in own}


def default_image_size(config: dict[str, Any]) -> int:
    """Evaluate at the size the backbone was trained on (global crop size, else img_size)."""
    crops = config.get("method", {}).get("crops", {})
    return int(crops.get("global_crops_size") or config.get("backbone", {}).get("img_size", 224))


def image_size_or_default(image_size: int | None, config: dict[str, Any]) -> int:
    """An asked-for evaluation size, else the training one; 0 or less is refused, not read as "default"."""
    if image_size is None:
        return default_image_size(config)
    if image_size < 1:
        raise ValueError(f"image size {image_size} is out of range: use an integer >= 1 (or leave it out for the "
                         "training crop size)")
    return image_size


def default_normalization(config: dict[str, Any]) -> tuple[list[float], list[float]]:
    """Mean and std of the pre-training crops (method.crop or method.crops), else ImageNet's."""
    method = config.get("method", {})
    crops = method.get("crop") or method.get("crops") or {}
    eval_default = EvalTransform()
    return list(crops.get("mean", eval_default.mean)), list(crops.get("std", eval_default.std))


def untrained_backbone(source: str | Path, seed: int = 0) -> tuple[nn.Module, dict[str, Any]]:
    """A randomly initialised evaluation backbone (seeded) with the architecture of a
    pre-training preset, config YAML or checkpoint: the from-scratch baseline."""
    path = Path(source)
    if path.is_dir() or path.suffix == ".pt":
        base = load_checkpoint(source).get("config")
        if base is None:
            raise CheckpointError(f"'{source}' is not a vitssl pre-training checkpoint (no config entry)")
        cfg = load_config(None, [], method_configs(), base=base)
    else:
        cfg = load_config(str(source), [], method_configs())
    objs = to_objects(cfg)
    torch.manual_seed(seed)
    method, _ = _evaluation_method(objs, {})  # D-MAE-Lite: a plain MAE, no teacher file needed
    return method.evaluation_backbone(), to_container(cfg)


