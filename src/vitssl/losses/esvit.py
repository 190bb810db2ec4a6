"""EsViT's region-matching loss (spec 3.2).

For a teacher global view t and a student view s != t, every student region token i is
matched to the teacher region token j*(i) with the highest cosine similarity of the backbone
tokens (after the final norm); the student's region-head distribution at i must predict the
teacher's centred, sharpened region distribution at j*(i):
`M_R(s,t) = -(1/T_s) sum_i q_t[j*(i)] . log p_s[i]`, averaged over the |P| view pairs.

Memory: the region logits (T tokens x K prototypes per view) dominate. Since the student
term is linear in the target, the targets of all teachers for one student view are summed
first, `Q_s[i] = sum_{t != s} q_t[j*_t(i)]`, so each student view needs one cross-entropy
and no per-pair copy of the K-wide log-probabilities is kept for backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vitssl.losses.center import Center


@torch.no_grad()
def match_regions(student_tokens: torch.Tensor, teacher_tokens: torch.Tensor) -> torch.Tensor:
    """(B, T_s, C), (B, T_t, C) -> (B, T_s) index of each student token's most similar teacher token."""
    s = F.normalize(student_tokens.float(), dim=-1)
    t = F.normalize(teacher_tokens.float(), dim=-1)
    return torch.bmm(s, t.transpose(1, 2)).argmax(dim=-1)


class RegionLoss(nn.Module):
    """Region-level cross-entropy with its own center c' (EMA of all teacher region outputs)."""

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        self.student_temp = student_temp
        self.center = Center(out_dim, center_momentum)

    def forward(
        self,
        student_logits: list[torch.Tensor],
        student_tokens: list[torch.Tensor],
        teacher_logits: torch.Tensor,
        teacher_tokens: torch.Tensor,
        teacher_temp: float,
    ) -> torch.Tensor:
        """Mean of M_R over all (teacher view t, student view s != t) pairs.

        student_logits / student_tokens: one entry per crop resolution, (V_g, B, T_g, K) and
        (V_g, B, T_g, C), views in order, the first two being the teacher's global views.
        teacher_logits (T, B, T_t, K), teacher_tokens (T, B, T_t, C).
        """
        n_teacher = teacher_logits.shape[0]
        probs = F.softmax((teacher_logits.detach().float() - self.center.center) / teacher_temp, dim=-1)
        total, pairs, view = 0.0, 0, 0
        for logits, tokens in zip(student_logits, student_tokens):
            targets = torch.zeros(logits.shape, dtype=torch.float32, device=logits.device)
            for v in range(logits.shape[0]):
                for t in range(n_teacher):
                    if t == view + v:
                        continue
                    j = match_regions(tokens[v], teacher_tokens[t])  # (B, T_s)
                    targets[v] += torch.gather(probs[t], 1, j.unsqueeze(-1).expand(-1, -1, probs.shape[-1]))
                    pairs += 1
            logprobs = F.log_softmax(logits.float() / self.student_temp, dim=-1)
            total = total - (targets * logprobs).sum(-1).mean(dim=(1, 2)).sum()
            view += logits.shape[0]
        if pairs == 0:
            raise ValueError("region loss needs at least one (teacher view, other student view) pair")
        self.center.accumulate(teacher_logits)
        return total / pairs
