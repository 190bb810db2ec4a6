"""Inference throughput of a backbone at a fixed batch, with its size and cost.

Cost is in GMACs (multiply-accumulates of the matrix products, what papers call "FLOPs":
ViT-S/16 at 224^2 is 4.6), counted by torch's FLOP counter (which counts 2 per MAC).

The number EsViT's and DINO's tables compare (images/s at 224^2, batch 128 as in DINO) is
only meaningful with its conditions, so the result records device, precision and batch.
Timing uses CUDA events on GPUs and wall-clock on CPUs, after warm-up iterations.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class ThroughputResult:
    images_per_s: float
    batch_size: int
    image_size: int
    precision: str
    device: str
    params_m: float
    gmacs_per_image: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_flops(model: nn.Module, image_size: int = 224) -> int:
    """Floating-point operations of one forward pass on one image (a multiply-add counts 2).

    Fused attention kernels are switched to timm's explicit path while counting, because the
    counter does not see inside every fused kernel (the CPU one); the maths is the same.
    """
    device = next(model.parameters()).device
    return count_call_flops(lambda: model(torch.zeros(1, 3, image_size, image_size, device=device)), model)


def count_call_flops(call: Callable[[], Any], model: nn.Module) -> int:
    """FLOPs of `call()` with `model`'s fused attention switched to timm's explicit path."""
    fused = [m for m in model.modules() if getattr(m, "fused_attn", False)]
    for m in fused:
        m.fused_attn = False
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            call()
    finally:
        for m in fused:
            m.fused_attn = True
    return int(counter.get_total_flops())


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


@torch.no_grad()
def measure_throughput(model: nn.Module, batch_size: int = 128, image_size: int = 224, device: str | torch.device = "cpu",
                       precision: str = "fp32", warmup: int = 5, iters: int = 20) -> ThroughputResult:
    """Images per second of `model` (eval mode) on random input of the given size."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}': use one of {sorted(PRECISIONS)}")
    if batch_size < 1 or iters < 1:
        raise ValueError("batch size and iterations must be at least 1")
    device = torch.device(device)
    model = model.to(device).eval()
    flops = count_flops(model, image_size)
    x = torch.randn(batch_size, 3, image_size, image_size, device=device)
    dtype = PRECISIONS[precision]
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
    with autocast:
        for _ in range(warmup):
            model(x)
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            for _ in range(iters):
                model(x)
            end.record()
            torch.cuda.synchronize(device)
            seconds = start.elapsed_time(end) / 1000
        else:
            begin = time.perf_counter()
            for _ in range(iters):
                model(x)
            seconds = time.perf_counter() - begin
    return ThroughputResult(
        images_per_s=batch_size * iters / seconds, batch_size=batch_size, image_size=image_size, precision=precision,
        device=_device_name(device), params_m=count_parameters(model) / 1e6, gmacs_per_image=flops / 2e9)


def format_throughput_table(rows: list[tuple[str, ThroughputResult]]) -> str:
    """A Markdown table, one row per backbone."""
    lines = ["| backbone | params (M) | GMACs | images/s | batch | size | precision | device |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in rows:
        lines.append(f"| {name} | {r.params_m:.1f} | {r.gmacs_per_image:.2f} | {r.images_per_s:.0f} | "
                     f"{r.batch_size} | {r.image_size} | {r.precision} | {r.device} |")
    return "\n".join(lines)
