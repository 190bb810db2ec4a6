"""D-MAE-Lite's distillation term (Wang et al., ICML 2023), MAE-Lite paper, distillation section; wangsr126/mae-lite projects/mae_lite/mae_lite_distill_exp.py.

The student's pre-softmax attention logits of a block, mixed over heads by a learnable 1x1
adapter, regress the frozen teacher's logits of the same block on the same visible tokens:

    L = L_MAE + alpha * sum_l mean((W_l * A_s^l - A_t^l)^2)

with A = q·kᵀ/√d of shape (B, heads, 1 + n_visible, 1 + n_visible) and W_l the adapter. The
optional hidden-state term has the same form, on LayerNorm'd block inputs mapped by a Linear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation_mse(student: torch.Tensor, teacher: torch.Tensor, what: str = "attention") -> torch.Tensor:
    """Mean squared error between adapted student and (detached) teacher tensors, in fp32.

    Shapes must match exactly: broadcasting would silently compare the wrong tokens, and a
    token-count mismatch means the two models do not see the same patches.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"{what} distillation compares student {tuple(student.shape)} with teacher "
                         f"{tuple(teacher.shape)}: student and teacher must see the same tokens (same patch size)")
    return F.mse_loss(student.float(), teacher.detach().float())
