"""Exponential moving average of the student into the teacher (spec 1.1)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """`theta_t <- m theta_t + (1 - m) theta_s` over all parameters (buffers are not averaged).

    Parameters are paired by name, so the two modules must have the same structure; one fused
    multi-tensor lerp does the update.
    """
    t_params = dict(teacher.named_parameters())
    s_params = dict(student.named_parameters())
    if t_params.keys() != s_params.keys():
        missing = sorted(set(t_params) ^ set(s_params))[:5]
        raise ValueError(f"teacher and student differ in parameters (e.g. {missing}); build them from one config")
    names = list(t_params)
    torch._foreach_lerp_([t_params[n].data for n in names], [s_params[n].data for n in names], 1.0 - momentum)
