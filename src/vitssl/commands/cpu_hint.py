"""On a machine without a GPU: say, before the first step, when a run would take minutes per
step, and name an `--image-size` or preset that fits a CPU.

The estimate is arithmetic, not a measurement: forward FLOPs of the backbone per crop (counted
from the ViT's shapes, or by torch's FLOP counter on a weightless "meta" copy of other
backbones), times 3 for the student's forward and backward, plus the teacher's forward of the
global crops, over an assumed CPU rate per core. It only decides whether to print one line.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from vitssl.engine.cores import available_cores

CPU_FLOPS_PER_CORE = 30e9  # sustained fp32 FLOP/s of one core in a ViT step; measured ~39e9 on the demo
SLOW_STEP_S = 60.0  # "minutes per step": print the hint above this
FITTING_STEP_S = 15.0  # a suggested size should give steps of at most this
CANDIDATE_SIZES = (160, 128, 112, 96, 64, 48, 32)


def vit_forward_flops(width: int, depth: int, tokens: int) -> float:
    """One ViT forward on one image: per block 12 width^2 multiply-adds per token (qkv, projection,
    4x MLP) and 2 tokens^2 width for attention; a multiply-add counts 2."""
    return depth * (24.0 * tokens * width * width + 4.0 * tokens * tokens * width)


def forward_flops(backbone_cfg: Any, size: int) -> float:
    """Forward FLOPs of the configured backbone at `size` px."""
    from vitssl.backbones import _VIT_SIZES, create_backbone, patch_size_of

    if backbone_cfg.name in _VIT_SIZES:
        named = _VIT_SIZES[backbone_cfg.name]
        width, depth = backbone_cfg.embed_dim or named["embed_dim"], backbone_cfg.depth or named["depth"]
        tokens = (size // patch_size_of(backbone_cfg)) ** 2 + 1
        return vit_forward_flops(width, depth, tokens)
    from vitssl.bench.throughput import count_flops

    with torch.device("meta"):  # shapes only: no memory, no arithmetic
        model = create_backbone(replace(backbone_cfg, img_size=size)).eval()
    return float(count_flops(model, size))


def step_views(method: Any) -> tuple[int, list[tuple[int, int]]]:
    """(global size, [(crop size, crops per image)]) of the student's views."""
    crops = getattr(method, "crops", None)
    if crops is None:  # MAE: one crop
        return method.crop.size, [(method.crop.size, 1)]
    numbers, sizes = crops.local_crops_number, crops.local_crops_size
    numbers, sizes = (numbers, sizes) if isinstance(numbers, list) else ([numbers], [sizes])
    return crops.global_crops_size, [(crops.global_crops_size, 2), *zip(sizes, numbers)]


def step_flops(objs: Any, base_flops: float, image_size: int | None = None) -> float:
    """Rough FLOPs of one optimizer step (per process) from the forward FLOPs at the global crop
    size, `base_flops`; with `image_size`, every crop scaled to that global size. Forward cost is
    taken as proportional to the crop's area (tokens), which the MLPs dominate at these sizes."""
    base, views = step_views(objs.method)
    scale = (image_size / base) ** 2 if image_size else 1.0
    student = sum(3 * count * base_flops * (size / base) ** 2 for size, count in views)  # forward + backward
    if getattr(objs.method, "crops", None) is not None:
        per_image = student + 2 * base_flops  # the teacher's forward of the two global crops
    else:
        per_image = student * (1.0 - getattr(objs.method, "mask_ratio", 0.0))  # MAE: visible patches only
    return per_image * scale * objs.train.batch_size * objs.train.accum_steps


def cpu_hint(objs: Any, device: torch.device) -> str | None:
    """One line when this run on this CPU would take minutes per step; None otherwise (or on a GPU)."""
    if device.type != "cpu":
        return None
    rate = CPU_FLOPS_PER_CORE * min(available_cores(), torch.get_num_threads())
    base = forward_flops(objs.backbone, step_views(objs.method)[0])
    seconds = step_flops(objs, base) / rate
    if seconds < SLOW_STEP_S:
        return None
    from vitssl.backbones import patch_size_of

    patch = patch_size_of(objs.backbone)
    fits = [s for s in CANDIDATE_SIZES if s % patch == 0 and step_flops(objs, base, s) / rate <= FITTING_STEP_S]
    suggestion = (f"add --image-size {fits[0]} (~{step_flops(objs, base, fits[0]) / rate:.0f} s per step) or lower "
                  f"train.batch_size" if fits else f"lower train.batch_size and add --image-size {max(patch, 32)}")
    return (f"no GPU: one step of this run needs roughly {_duration(seconds)} on {rate / CPU_FLOPS_PER_CORE:.0f} "
            f"CPU core(s) (an estimate from its FLOPs); for a first run {suggestion}, or try "
            f"{_cpu_preset_hint(objs.method.name)}")


def _cpu_preset_hint(method_name: str) -> str:
    """The method's own CPU preset (`cpu_preset`), so the suggested command runs as written."""
    from vitssl.engine.protocol import optional_member
    from vitssl.methods import method_class

    preset = optional_member(method_class(method_name), "cpu_preset")
    return f"`--config {preset}` (or `vitssl demo`)" if preset else "`vitssl demo`"


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def log_cpu_hint(objs: Any, device: torch.device) -> None:
    """Log `cpu_hint`'s line, if any."""
    from vitssl.engine.logging import log

    try:
        hint = cpu_hint(objs, device)
    except Exception as e:  # noqa: BLE001 - an estimate must never stop a run
        log.debug("no CPU estimate: %s", e)
        return
    if hint:
        log.warning(hint)
