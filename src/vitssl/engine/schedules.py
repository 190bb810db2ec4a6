"""Schedules as pure functions of the step (DINO paper Sec. 3.1-3.2; facebookresearch/dino utils.py cosine_scheduler), matching DINO's precomputed arrays."""

from __future__ import annotations

import math


def cosine_schedule(
    step: int, total_steps: int, base: float, final: float, warmup_steps: int = 0, warmup_start: float = 0.0
) -> float:
    """Value at `step` of DINO's `cosine_scheduler` array.

    Warm-up: `linspace(warmup_start, base, warmup_steps)` (reaches `base` on its last step);
    then `final + (base - final) * (1 + cos(pi * i / n)) / 2` for i in [0, n), n = total - warmup.
    Steps past the end hold the last value.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    warmup_steps = min(warmup_steps, total_steps)
    step = min(max(step, 0), total_steps - 1)
    if step < warmup_steps:
        if warmup_steps == 1:
            return base
        return warmup_start + (base - warmup_start) * step / (warmup_steps - 1)
    i, n = step - warmup_steps, total_steps - warmup_steps
    return final + 0.5 * (base - final) * (1 + math.cos(math.pi * i / n))


def teacher_temperature(epoch: int, warmup_temp: float, temp: float, warmup_epochs: int) -> float:
    """Per-epoch teacher temperature: `linspace(warmup_temp, temp, warmup_epochs)` then constant."""
    if epoch >= warmup_epochs:
        return temp
    if warmup_epochs == 1:
        return warmup_temp
    return warmup_temp + (temp - warmup_temp) * epoch / (warmup_epochs - 1)


def scaled_lr(base_lr: float, global_batch: int) -> float:
    """Linear scaling rule: `base_lr * global_batch / 256`, global batch including accumulation."""
    return base_lr * global_batch / 256.0
