"""Tiny DINO networks and one optimiser step on a fixed batch, for the tests of DINO's options
(iBOT's masked-patch term, SimMIM's pixel term) that compare a step with and without them."""

from __future__ import annotations

import torch

from helpers import one_batch, tiny_overrides
from vitssl.config import load_config, to_objects
from vitssl.engine.protocol import StepContext
from vitssl.methods import build_method, method_configs

CTX = StepContext(step=0, epoch=0, steps_per_epoch=10, total_steps=20, epochs=2)


def dino(*extra: str, seed: int = 0):
    """A tiny DINO built under `seed` with the `extra` overrides."""
    torch.manual_seed(seed)
    cfg = to_objects(load_config(None, ["method.name=dino", *tiny_overrides(method="dino"), *extra], method_configs()))
    return build_method(cfg.method, cfg.backbone)


def one_update(method, ctx: StepContext = CTX):
    """Loss, metrics and state dict after one SGD step on a fixed batch (fixed mask draws)."""
    torch.manual_seed(1)
    batch = one_batch(method)
    opt = torch.optim.SGD([p for _, p in method.trainable_parameters()], lr=0.1)
    out = method.training_step(batch, ctx)
    out.loss.backward()
    method.before_optimizer_step(ctx)
    opt.step()
    method.after_optimizer_step(ctx)
    return out.loss.detach(), out.metrics, {k: v.clone() for k, v in method.state_dict().items()}
