"""DINO view-level self-distillation loss (DINO paper Sec. 3.1, Alg. 1)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vitssl.losses.center import CenteredDistillation


def multicrop_cross_entropy(teacher_probs: torch.Tensor, student_logprobs: torch.Tensor) -> torch.Tensor:
    """Mean over all (teacher view t, student view s != t) pairs of batch-mean cross-entropy.

    teacher_probs: (T, B, K); student_logprobs: (S, B, K), the first T student views are the
    teacher's views, so the pairs t == s are skipped: |P| = T*S - T (2(M+1) for DINO).
    Computed as one (T, S) matrix rather than DINO's double Python loop.
    """
    n_teacher, batch = teacher_probs.shape[:2]
    n_student = student_logprobs.shape[0]
    if n_student < 2 or n_teacher < 1:
        raise ValueError(
            f"DINO loss needs at least 2 student views and 1 teacher view, got {n_student} and {n_teacher}"
        )
    ce = -torch.einsum("tbk,sbk->ts", teacher_probs, student_logprobs) / batch
    same_view = torch.eye(n_teacher, n_student, dtype=torch.bool, device=ce.device)
    pairs = n_teacher * n_student - min(n_teacher, n_student)
    # a masked sum, not `ce[keep].mean()`: boolean indexing has a data-dependent shape and
    # makes the host wait for the device (a `nonzero` sync) in every step
    return ce.masked_fill(same_view, 0.0).sum() / pairs


@torch.no_grad()
def teacher_statistics(teacher_probs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Collapse diagnostics of teacher distributions (..., K), in nats (DINO section 5.3).

    - `teacher_entropy`: mean per-sample entropy, 0 when each output is one-hot, log K when uniform;
    - `teacher_kl_uniform`: KL(batch-mean distribution || uniform) = log K - H(mean), log K when
      every sample picks the same prototype, 0 when the batch spreads evenly over prototypes;
    - `teacher_mutual_info`: H(mean) - mean per-sample entropy, what the output says about which
      image was seen; 0 in both collapses (every image gets the same distribution).
    Tensors, so reading them costs no host-device sync until the trainer logs.
    """
    probs = teacher_probs.float().reshape(-1, teacher_probs.shape[-1])
    entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum(-1).mean()
    mean = probs.mean(0)
    mean_entropy = -(mean * torch.log(mean.clamp_min(1e-12))).sum()
    log_k = math.log(probs.shape[-1])  # a Python float: no host-to-device copy in the step
    return {"teacher_entropy": entropy, "teacher_kl_uniform": log_k - mean_entropy,
            "teacher_mutual_info": mean_entropy - entropy}


class DINOLoss(CenteredDistillation):
    """Cross-entropy between centred, sharpened teacher and student distributions.

    `P_t = softmax((g_t - c) / tau_t)`, `P_s = softmax(g_s / tau_s)`; the center `c` is updated
    from the teacher logits after the loss (call `center.update()` once per optimizer step).
    Softmaxes run in float32 whatever the autocast dtype.
    """

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, teacher_temp: float,
        teacher_probs: torch.Tensor | None = None, accumulate_center: bool = True,
    ) -> torch.Tensor:
        """student_logits (S, B, K), teacher_logits (T, B, K) -> scalar loss.

        Pass `teacher_probs` when the caller already computed them (e.g. for diagnostics, or
        Sinkhorn-Knopp targets, which need no center: then `accumulate_center=False`).
        """
        student_logprobs = F.log_softmax(student_logits.float() / self.student_temp, dim=-1)
        if teacher_probs is None:
            teacher_probs = self.teacher_probs(teacher_logits, teacher_temp)
        loss = multicrop_cross_entropy(teacher_probs, student_logprobs)
        if accumulate_center:
            self.center.accumulate(teacher_logits)
        return loss
