"""What one training image costs a Mask R-CNN preset: forward FLOPs and activation memory.

FLOPs are counted by `torch.utils.flop_counter` over a training forward (backbone, pyramid,
RPN, RoI heads and losses) of one synthetic image at the preset's size with one object; a
backward costs about twice the forward. Activation memory is the bytes of the tensors autograd
keeps for the backward (distinct storages), the part that grows with batch size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from vitssl.eval.detection.model import build_detector
from vitssl.eval.detection.presets import DetectionPreset


def training_cost(backbone: nn.Module, preset: DetectionPreset, height: int, width: int,
                  num_classes: int = 80) -> dict[str, float]:
    """{'gflops_forward', 'activation_mib'} per image of `height` x `width` (before resizing)."""
    torch.manual_seed(0)
    model = build_detector(backbone, num_classes, preset).train()
    image = torch.rand(3, height, width)
    box = torch.tensor([[width * 0.25, height * 0.25, width * 0.75, height * 0.75]])
    mask = torch.zeros(1, height, width, dtype=torch.uint8)
    mask[:, height // 4:3 * height // 4, width // 4:3 * width // 4] = 1
    target = {"boxes": box, "labels": torch.tensor([1]), "masks": mask}
    return forward_cost(lambda: model([image], [target]))


def forward_cost(forward: Callable[[], object]) -> dict[str, float]:
    """{'gflops_forward', 'activation_mib'} of one call of `forward` (a training forward)."""
    storages: dict[int, int] = {}

    def keep(t: torch.Tensor) -> torch.Tensor:
        if t.device.type != "meta":
            storage = t.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    counter = FlopCounterMode(display=False)
    with counter, torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        forward()
    return {"gflops_forward": counter.get_total_flops() / 1e9, "activation_mib": sum(storages.values()) / 2**20}
