"""`vitssl export`: a checkpoint's backbone as plain weights in timm's key layout.

vitssl's backbones keep timm's parameter names, so exporting is writing the backbone's state
dict (teacher or student) and saying how plain timm rebuilds it (`timm_model.json` beside the
weights, and the printed call). `export_timm` names the architecture and says at which input
sizes timm computes exactly vitssl's features; the export is made for one size (`image_size`,
default the training size) and refuses a Swin size where timm cannot match. SelfPatch's
aggregation module is a training head on top of the ViT, not part of the backbone: it is not
exported, and the note says so.
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
from vitssl.commands.export_timm import (
    CLASSES,
    exported_state,
    swin_note,
    swin_padded_stages,
    swin_spec,
    timm_matches,
    vit_spec,
)
from vitssl.engine.outputs import check_output_dir, find_os_error, write_text_atomic
from vitssl.eval.pretrained import load_run

FORMATS = ("safetensors", "timm", "detectron2", "mmdet")
WEIGHT_FILES = {"safetensors": "model.safetensors", "timm": "pytorch_model.pth", "detectron2": "detectron2_backbone.pth",
                "mmdet": "mmdet_backbone.pth"}
SELFPATCH_NOTE = ("SelfPatch's aggregation module (a training head over the ViT's patch tokens) is not part of the "
                  "backbone and is not exported: the weights are the ViT's")


def timm_model_spec(backbone: nn.Module, image_size: int | None = None) -> tuple[str | None, str, dict[str, Any]]:
    """(registered timm name or None, timm class, keyword arguments) that rebuild `backbone`."""
    if getattr(backbone, "stem", "patch") == "conv":
        raise ValueError("cannot export a ViT with a convolutional stem (backbone.stem=conv) in timm's layout: timm's "
                         "ViT has a patch projection only; use the run's vitssl checkpoint")
    if isinstance(backbone, ViT):
        name, kwargs = vit_spec(backbone, image_size or backbone.patch_embed.img_size[0])
        return name, CLASSES["vit"], kwargs
    if isinstance(backbone, Swin):
        name, kwargs = swin_spec(backbone)
        return name, CLASSES["swin"], kwargs
    if hasattr(backbone, "timm_spec"):  # backbones that say themselves how timm rebuilds them (ResNet)
        name, kwargs = backbone.timm_spec()
        return name, "", kwargs
    raise ValueError(f"cannot export a {type(backbone).__name__}: timm has no counterpart of it (timm export covers "
                     "vitssl's ViT, Swin and ResNet backbones); use its vitssl checkpoint")


def export_backbone(checkpoint: str | Path, out_dir: str | Path, fmt: str = "safetensors",
                    which: str = "teacher", overwrite: bool = True, image_size: int | None = None) -> dict[str, Any]:
    """Write the backbone weights and `timm_model.json`; returns what was written.

    `overwrite=False` (the CLI's default) refuses a folder that already holds either file.
    `image_size` (default: the training size) is the input size the export is exact at."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format '{fmt}': use one of {FORMATS}")
    spec_file = "load_config.txt" if fmt in ("detectron2", "mmdet") else "timm_model.json"
    out_dir = check_output_dir(out_dir, overwrite, (WEIGHT_FILES[fmt], spec_file))
    run = load_run(checkpoint, which)
    backbone, config = run.network, run.config  # SelfPatch: its ViT (the aggregator is not a timm part)
    aggregator = run.backbone is not run.network
    if fmt in ("detectron2", "mmdet"):
        return export_for_framework(backbone, out_dir, fmt, which, str(config["method"]["name"]))
    size = image_size or run.eval_input.image_size
    if image_size is not None:  # asked for: refused where timm cannot match (the default only gets the note)
        _check_size(backbone, size)
    name, cls, kwargs = timm_model_spec(backbone, size)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = write_weights(exported_state(backbone, size), out_dir / WEIGHT_FILES[fmt], fmt,
                            {"source": "vitssl", "method": str(config["method"]["name"])})
    notes = [n for n in (_note(backbone, size), SELFPATCH_NOTE if aggregator else "") if n]
    spec = {"model_name": name, "model_class": cls, "kwargs": kwargs, "file": weights.name, "backbone": which,
            "method": config["method"]["name"], "image_size": size, "note": " ".join(notes)}
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


def _check_size(backbone: nn.Module, size: int) -> None:
    step = backbone.embed_stride if isinstance(backbone, Swin) else getattr(backbone, "patch_size", 1)
    if size % step:
        raise ValueError(f"--image-size {size} is not a multiple of the patch size {step}")
    if isinstance(backbone, Swin) and swin_padded_stages(backbone, size):
        fits = [s for s in range(size - size % 32, size + 1025, 32) if s > 0 and timm_matches(backbone, s, s)]
        raise ValueError(f"--image-size {size}: timm pads Swin windows differently from vitssl at this size, so the "
                         f"export would not give the same features; use a size of whole windows, e.g. {fits[0] if fits else 224}")


def _note(backbone: nn.Module, size: int) -> str:
    if isinstance(backbone, Swin):
        return swin_note(backbone)
    if isinstance(backbone, ViT):
        return (f"exact at {size} px (the position embedding is written for that size); at other sizes timm "
                "resamples it with its own (antialiased) interpolation, so features differ slightly: export again "
                "with --image-size for another size")
    return ""


def load_code(spec: dict[str, Any], weights: str) -> str:
    """The Python lines that rebuild the export with timm alone."""
    kwargs = ", ".join(f"{k}={v!r}" for k, v in spec["kwargs"].items())
    norm = ", norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6)" if "swin" in spec["model_class"] else ""
    if spec["model_name"]:
        return (f"timm.create_model('{spec['model_name']}', pretrained=True, num_classes=0, "
                f"pretrained_cfg_overlay=dict(file='{weights}'), {kwargs}{norm})")
    reader = (f"safetensors.torch.load_file('{weights}')" if weights.endswith(".safetensors")
              else f"torch.load('{weights}', weights_only=True)")
    return f"{spec['model_class']}(num_classes=0, {kwargs}{norm}).load_state_dict({reader})"


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


def load_exported(out_dir: str | Path) -> nn.Module:
    """Rebuild an exported backbone with timm alone (what a user without vitssl would run)."""
    import importlib
    from functools import partial

    import timm

    spec = json.loads((Path(out_dir) / "timm_model.json").read_text())
    kwargs = dict(spec["kwargs"])
    if "swin" in spec["model_class"]:
        kwargs["norm_layer"] = partial(nn.LayerNorm, eps=1e-6)
    path = Path(out_dir) / spec["file"]
    if spec["model_name"]:
        return timm.create_model(spec["model_name"], pretrained=True, num_classes=0,
                                 pretrained_cfg_overlay=dict(file=str(path)), **kwargs)
    module, _, cls = spec["model_class"].rpartition(".")
    model = getattr(importlib.import_module(module), cls)(num_classes=0, **kwargs)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, weights_only=True)
    model.load_state_dict(state)
    return model
