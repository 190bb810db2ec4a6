"""Seeded weights and inputs shared by the EsViT backbone fixtures and their tests.

The fixtures under tests/fixtures/esvit_backbones/ hold the reference implementation's outputs
(EsViT's own code, run outside this repository) for weights made here from the original key
names and shapes alone, so a test can rebuild the same original-layout state dict, import it
with `vitssl.commands.convert_esvit_backbones` and compare the forward passes.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch

FIXTURES = Path(__file__).parent / "fixtures" / "esvit_backbones"


def seeded_state(keys: list[str], shapes: list[list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Values for an original-layout state dict, in key order from one generator: matrices and
    kernels ~ N(0, 1/fan_in) (activations keep their scale through depth), norm weights
    ~ 1 + N(0, 0.1^2), biases and running means ~ N(0, 0.1^2), running variances in [0.5, 1.5)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in zip(keys, shapes):
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros(shape, dtype=torch.long)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=g)
        elif len(shape) >= 2:
            state[key] = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        elif key.endswith("weight"):
            state[key] = 1 + 0.1 * torch.randn(shape, generator=g)
        else:
            state[key] = 0.1 * torch.randn(shape, generator=g)
    return state


def seeded_images(batch: int, size: int) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(size))


def share_global_projections(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ViL's `*_global` projections are the very modules `query`/`kv`/`proj` (SHARE_W), so a
    real state dict holds each tensor twice: make the seeded copies equal as well."""
    for key in state:
        if m := re.match(r"(.*\.attn\.)(query|kv|proj)_global\.(.*)", key):
            state[key] = state[f"{m[1]}{m[2]}.{m[3]}"]
    return state
