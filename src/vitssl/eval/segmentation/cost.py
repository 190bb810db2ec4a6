"""What one training crop costs a segmentation head with its backbone: forward FLOPs and
activation memory, counted as the detector's (`eval.detection.cost.forward_cost`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vitssl.eval.detection.cost import forward_cost
from vitssl.eval.segmentation.heads import Segmenter


def segmentation_cost(backbone: nn.Module, head: str, size: int, num_classes: int = 150,
                      fpn_channels: int = 256, head_channels: int | None = None) -> dict[str, float]:
    """{'gflops_forward', 'activation_mib'} of one size x size crop: backbone, pyramid, head and
    the cross-entropy loss (ADE20K: 150 classes), the backbone fine-tuned."""
    torch.manual_seed(0)
    model = Segmenter(backbone, num_classes, head, fpn_channels, head_channels).train()
    image = torch.rand(1, 3, size, size)
    labels = torch.randint(0, num_classes, (1, size, size))
    return forward_cost(lambda: F.cross_entropy(model(image), labels))
