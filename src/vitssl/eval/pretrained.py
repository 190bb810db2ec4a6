"""Loading a pre-trained backbone from a vitssl run: the evaluation backbone of a checkpoint (or a
seeded untrained one of the same architecture), and the image size and normalisation it was
trained with. Shared by the evaluation, analysis, report and export commands."""

from __future__ import annotations

from dataclasses import dataclass
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
from vitssl.engine.protocol import EvalInput, MethodBase, optional_member
from vitssl.engine.rng import seed_everything
from vitssl.methods import method_class, method_configs


@dataclass
class Pretrained:
    """A run's backbone as evaluation reads it: `backbone` the evaluation backbone (the teacher's for
    DINO), `network` the backbone network alone (`MethodBase.backbone_network`), its `config`
    (a dict) and `eval_input`, the image size and normalisation it trained with."""

    backbone: nn.Module
    network: nn.Module
    config: dict[str, Any]
    eval_input: EvalInput


def load_run(checkpoint: str | Path, which: str = "teacher") -> Pretrained:
    """The backbone of a vitssl checkpoint (`which="student"`: the trained, not averaged, one)."""
    if which not in ("teacher", "student"):
        raise ValueError(f"unknown backbone choice '{which}': use teacher or student")
    from vitssl.eval.transfer.timm_weights import load_timm_backbone, read_timm_state

    if (timm_state := read_timm_state(checkpoint)) is not None:  # a timm-layout weights file
        backbone, config = load_timm_backbone(checkpoint, timm_state)
        return Pretrained(backbone, backbone, config, EvalInput(int(config["backbone"]["img_size"])))
    payload = load_checkpoint(checkpoint)
    if "config" not in payload or "method" not in payload:
        raise CheckpointError(f"'{checkpoint}' is not a vitssl pre-training checkpoint (no config/method entries)")
    if not isinstance(payload["config"], dict):
        raise CheckpointError(f"'{checkpoint}' holds a {type(payload['config']).__name__} as its config, not a "
                              "mapping: the file is damaged or not a vitssl checkpoint")
    check_tensors(payload["method"], f"checkpoint '{checkpoint}'")
    objs = to_objects(load_config(None, [], method_configs(), base=payload["config"]))
    method, state = _evaluation_method(objs, payload["method"])
    load_matching_state(method, state, "method")
    student = which == "student"
    backbone = method.student_backbone() if student else method.evaluation_backbone()
    network = optional_member(method, "backbone_network")(student)
    return Pretrained(backbone.eval(), network.eval(), payload["config"],
                      method_class(objs.method.name).evaluation_input(objs.method, objs.backbone))


def load_pretrained(checkpoint: str | Path, which: str = "teacher") -> tuple[nn.Module, dict[str, Any]]:
    """The evaluation backbone of a vitssl checkpoint (the teacher for DINO) and its config.

    `which="student"` returns the student backbone instead, where the method has one.
    """
    run = load_run(checkpoint, which)
    return run.backbone, run.config


def _evaluation_method(objs: Any, state: dict[str, torch.Tensor]) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """The method's `evaluation_model`, and the part of the saved state it holds (all of it,
    unless the method evaluates as a simpler model: D-MAE-Lite's student is a plain MAE)."""
    cls = method_class(objs.method.name)
    method = cls.evaluation_model(objs.method, objs.backbone)
    if type(method) is cls:
        return method, state
    own = method.state_dict()
    return method, {k: v for k, v in state.items() if k in own}


@dataclass
class RunMethod:
    """The method class a run's config names, and its resolved method and backbone configs."""

    cls: type[MethodBase]
    cfg: Any
    backbone: Any


def run_method(config: dict[str, Any]) -> RunMethod:
    """The method of a run's config (a dict); a config without a method section gets `MethodBase`,
    the defaults of every optional member."""
    objs = to_objects(load_config(None, [], method_configs(), base=config))
    name = (config.get("method") or {}).get("name")
    return RunMethod(method_class(objs.method.name) if name else MethodBase, objs.method, objs.backbone)


def evaluation_input(config: dict[str, Any]) -> EvalInput:
    """The image size and normalisation a run with this config trained with, as its method says
    (`MethodBase.evaluation_input`)."""
    method = run_method(config)
    return method.cls.evaluation_input(method.cfg, method.backbone)


def default_image_size(config: dict[str, Any]) -> int:
    """Evaluate at the size the backbone was trained on (DINO family: the global crop size)."""
    return evaluation_input(config).image_size


def image_size_or_default(image_size: int | None, config: dict[str, Any]) -> int:
    """An asked-for evaluation size, else the training one; 0 or less is refused, not read as "default"."""
    if image_size is None:
        return default_image_size(config)
    if image_size < 1:
        raise ValueError(f"image size {image_size} is out of range: use an integer >= 1 (or leave it out for the "
                         "training crop size)")
    return image_size


def default_normalization(config: dict[str, Any]) -> tuple[list[float], list[float]]:
    """Mean and std the run's crops were normalised with (ImageNet's where the method says none)."""
    return normalization(evaluation_input(config))


def normalization(eval_input: EvalInput) -> tuple[list[float], list[float]]:
    """`eval_input`'s mean and std as lists, ImageNet's (the evaluation transform's) where unset."""
    default = EvalTransform()
    return list(eval_input.mean or default.mean), list(eval_input.std or default.std)


def untrained_backbone(source: str | Path, seed: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """A randomly initialised evaluation backbone (seeded) with the architecture of a
    pre-training preset, config YAML or checkpoint: the from-scratch baseline. `seed=None` takes
    the config's `train.seed`, so for a run it is the very network the run started from."""
    path = Path(source)
    if path.is_dir() or path.suffix == ".pt":
        base = load_checkpoint(source).get("config")
        if base is None:
            raise CheckpointError(f"'{source}' is not a vitssl pre-training checkpoint (no config entry)")
        cfg = load_config(None, [], method_configs(), base=base)
    else:
        cfg = load_config(str(source), [], method_configs())
    objs = to_objects(cfg)
    seed_everything(objs.train.seed if seed is None else seed)  # as pretraining seeds its first build
    method, _ = _evaluation_method(objs, {})  # D-MAE-Lite: a plain MAE, no teacher file needed
    return method.evaluation_backbone(), to_container(cfg)


