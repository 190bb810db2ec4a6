"""D-MAE-Lite's head-mixing adapter (Wang et al., ICML 2023), MAE-Lite paper, distillation section; wangsr126/mae-lite projects/mae_lite/mae_lite_distill_exp.py.

A learnable 1x1 convolution over the head axis of a (B, H_s, T, T) attention-logit tensor:
each of the teacher's H_t heads is matched by a linear mixture of the student's H_s heads,
so a 12-head student can be distilled from a 12- or 16-head teacher alike. The released code
uses it even when the head counts match, with PyTorch's default initialisation and no bias.
"""

from __future__ import annotations

import torch
from torch import nn


class AttentionMixer(nn.Module):
    """(B, student_heads, T, T) logits -> (B, teacher_heads, T, T): `Conv2d(H_s, H_t, 1, bias=False)`."""

    def __init__(self, student_heads: int, teacher_heads: int) -> None:
        super().__init__()
        self.mix = nn.Conv2d(student_heads, teacher_heads, kernel_size=1, bias=False)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return self.mix(logits)
