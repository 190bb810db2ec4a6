"""iBOT's masked-image-modelling term (Zhou et al., ICLR 2022, arXiv 2111.07832, Sec. 3 and
Algorithm 1; bytedance/ibot main_ibot.py iBOTLoss): self-distillation of masked patch tokens.

For each global view v, image b and masked patch i, the student's output on the masked view must
predict the teacher's centred, sharpened output on the same patch of the unmasked view:

    L_MIM = mean_{v, b} ( sum_{i masked in (v, b)} -P_t(v, b, i)^T log P_s(v, b, i) / max(1, #masked(v, b)) )

An image with nothing masked adds 0 to the mean over images, as in the original's `loss2.mean()`.
The patch targets have their own EMA center (iBOT's `center2`), the mean over every teacher patch
of the global views, and their own temperature.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vitssl.losses.center import CenteredDistillation


def picked_patches(masks: torch.Tensor, at_least: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """masks (..., N) bool, one row per image -> indices of the masked patches in `masks.flatten()`
    and each one's weight in L_MIM, 1 / (its image's masked count x the number of images).

    The student's patch head then runs on these tokens only. Fewer than `at_least` masked
    patches are padded with unmasked ones of weight 0, so a BatchNorm head still sees a batch.
    Works on the host: masks drawn there give indices without a device sync.
    """
    rows = masks.reshape(-1, masks.shape[-1])
    flat = rows.flatten()
    picked = flat.nonzero().flatten()
    counts = rows.sum(-1).clamp_min(1).to(torch.float32)
    weights = 1.0 / (counts[picked // rows.shape[-1]] * rows.shape[0])
    if picked.numel() < at_least:
        spare = (~flat).nonzero().flatten()[: at_least - picked.numel()]
        picked = torch.cat([picked, spare])
        weights = torch.cat([weights, torch.zeros(spare.numel())])
    return picked, weights


class MaskedPatchLoss(CenteredDistillation):
    """L_MIM with its center, from the student's logits on the picked (masked) patches only;
    `forward` accumulates every teacher patch logit into the center (moved once per optimizer
    step by `center.update`, like DINO's)."""

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, picked: torch.Tensor,
                weights: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """student_logits (M, K) on the patches `picked` (M,) of the flattened (..., N, K)
        teacher_logits (every patch of the global views), `weights` (M,) from `picked_patches`
        -> scalar loss."""
        flat = teacher_logits.reshape(-1, teacher_logits.shape[-1])
        probs = self.teacher_probs(flat.index_select(0, picked), teacher_temp)
        logprobs = F.log_softmax(student_logits.float() / self.student_temp, dim=-1)
        loss = (-(probs * logprobs).sum(-1) * weights).sum()
        self.center.accumulate(teacher_logits)
        return loss
