"""EMA center of teacher outputs (DINO's centering, DINO paper Sec. 3.1, Alg. 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vitssl.distributed import all_reduce_mean


class Center(nn.Module):
    """`c <- m c + (1 - m) mean(teacher outputs)`, the mean taken over every rank's batch.

    Batch statistics are accumulated with `accumulate` and applied once per optimizer step with
    `update`, so gradient accumulation sees one center per step, as a larger batch would.
    The loss of a step always uses the center from before the step (as in DINO).
    """

    def __init__(self, dim: int, momentum: float = 0.9) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("center", torch.zeros(1, dim))
        self._sum: torch.Tensor | None = None
        self._count = 0

    @torch.no_grad()
    def accumulate(self, teacher_logits: torch.Tensor) -> None:
        """Add (..., K) teacher logits of one micro-batch to the pending statistics."""
        flat = teacher_logits.detach().reshape(-1, teacher_logits.shape[-1]).float()
        batch_sum = flat.sum(dim=0, keepdim=True)
        self._sum = batch_sum if self._sum is None else self._sum + batch_sum
        self._count += flat.shape[0]

    @torch.no_grad()
    def update(self, applied: torch.Tensor | None = None) -> None:
        """Apply the EMA with the mean of everything accumulated since the last update.

        `applied` (a 0-dim bool device tensor, see `StepContext.applied`) False keeps the center
        as it was, chosen on the device: a skipped step's statistics (NaN, say) never reach it.
        """
        if self._sum is None:
            return
        batch_center = all_reduce_mean(self._sum / self._count)
        if applied is None:
            self.center.mul_(self.momentum).add_(batch_center, alpha=1 - self.momentum)
        else:
            new = self.center.mul(self.momentum).add_(batch_center, alpha=1 - self.momentum)
            self.center.copy_(torch.where(applied, new, self.center))
        self._sum, self._count = None, 0

    def discard_pending(self) -> None:
        """Forget the statistics accumulated this step (the trainer skipped it: non-finite loss)."""
        self._sum, self._count = None, 0


class CenteredDistillation(nn.Module):
    """What DINO's image loss and iBOT's patch loss share: a student temperature and an EMA
    center, and the teacher targets `softmax((g_t - c) / tau_t)` in float32 without gradient."""

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        self.student_temp = student_temp
        self.center = Center(out_dim, center_momentum)

    def teacher_probs(self, teacher_logits: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """Centred, sharpened teacher distribution (..., K), float32, no gradient."""
        return F.softmax((teacher_logits.detach().float() - self.center.center) / teacher_temp, dim=-1)
