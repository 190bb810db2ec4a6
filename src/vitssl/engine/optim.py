"""Optimizer construction: parameter groups, optimizers, gradient clipping."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch
from torch import nn

from vitssl.distributed import all_reduce_sum


@dataclass
class OptimConfig:
    """Optimisation recipe. `lr` is the base rate per 256 images of global batch (DINO paper Sec. 3.2; facebookresearch/dino main_dino.py defaults)."""

    optimizer: str = "adamw"
    lr: float = 5e-4
    min_lr: float = 1e-6
    warmup_epochs: int = 10
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    momentum: float = 0.9
    clip_grad: float = 3.0
    clip_mode: str = "per_tensor"
    no_weight_decay_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        from vitssl.engine.config_checks import check_optim

        check_optim(self)


OPTIMIZERS = ("adamw", "sgd")
CLIP_MODES = ("per_tensor", "global", "none")


def decay_groups(
    named_params: Iterable[tuple[str, nn.Parameter]], no_weight_decay_names: Iterable[str] = ()
) -> list[dict]:
    """Split trainable parameters into a weight-decayed and a non-decayed group.

    DINO's rule: biases and 1-D tensors (norm weights) are not decayed; everything else is,
    *including* `pos_embed` and `cls_token` (a quirk kept by default; list names in
    `no_weight_decay_names` to exempt them, as MAE-style recipes do).
    """
    exempt = tuple(no_weight_decay_names)
    decayed, plain = [], []
    for name, param in named_params:
        if not param.requires_grad:
            continue
        if name.endswith(".bias") or param.ndim <= 1 or any(e in name for e in exempt):
            plain.append(param)
        else:
            decayed.append(param)
    return [
        {"params": decayed, "apply_weight_decay": True, "name": "decay"},
        {"params": plain, "apply_weight_decay": False, "name": "no_decay"},
    ]


def build_optimizer(groups: list[dict], cfg: OptimConfig, device: torch.device,
                    fused: bool | None = None) -> torch.optim.Optimizer:
    """AdamW or SGD over `groups`; lr and weight decay are set every step by the trainer.

    AdamW is fused on CUDA, and wherever `fused` asks (the trainer's on-device skips need it). On
    CPU torch's fused kernel rounds a few entries differently from its per-tensor one (last bit)."""
    groups = [dict(g, weight_decay=0.0) for g in groups if g["params"]]
    if cfg.optimizer == "adamw":
        fused = device.type == "cuda" if fused is None else fused
        return torch.optim.AdamW(groups, lr=0.0, betas=tuple(cfg.betas), fused=fused)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=0.0, momentum=cfg.momentum)
    raise ValueError(f"unknown optimizer '{cfg.optimizer}': choose one of {OPTIMIZERS}")


@torch.no_grad()
def clip_gradients(params: list[nn.Parameter], max_norm: float, mode: str,
                   sharded: bool = False) -> torch.Tensor | None:
    """Clip gradients in place and return the per-tensor (or global) norms before clipping.

    `per_tensor` (DINO): every tensor's gradient is scaled by min(1, max_norm / (norm + 1e-6))
    on its own; norms are computed with one multi-tensor kernel and never leave the device
    (no `.item()` per tensor, unlike DINO's loop).
    `global`: one norm over all tensors, the same rule as torch's clip_grad_norm_.
    `sharded` (FSDP): each rank holds a slice of every gradient (a DTensor); the squared norms
    of the local slices are summed over ranks, so every rank clips with the full tensors' norms.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads or mode == "none" or max_norm <= 0:
        return None
    if mode not in ("per_tensor", "global"):
        raise ValueError(f"unknown clip_mode '{mode}': choose one of {CLIP_MODES}")
    if mode == "global" and not sharded:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    if sharded:
        grads = [g.to_local() if hasattr(g, "to_local") else g for g in grads]
        squares = torch.stack(torch._foreach_norm(grads, 2.0)).square()
        norms = list(all_reduce_sum(squares).sqrt().unbind())
    else:
        norms = list(torch._foreach_norm(grads, 2.0))
    if mode == "global":
        total = torch.stack(norms).square().sum().sqrt()
        torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))
        return total
    stacked = torch.stack(norms)
    # one coefficient kernel for all tensors (not three per tensor), then one multi-tensor multiply
    coefs = (max_norm / (stacked + 1e-6)).clamp_(max=1.0)
    torch._foreach_mul_(grads, list(coefs.unbind()))
    return stacked
