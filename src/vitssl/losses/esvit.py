"""EsViT's region-matching loss (EsViT paper Sec. 3.2; microsoft/esvit main_esvit.py DDINOLoss).

For a teacher global view t and a student view s != t, every student region token i is
matched to the teacher region token j*(i) with the highest cosine similarity of the backbone
tokens (after the final norm); the student's region-head distribution at i must predict the
teacher's centred, sharpened region distribution at j*(i):
`M_R(s,t) = -(1/T_s) sum_i q_t[j*(i)] . log p_s[i]`, averaged over the |P| view pairs.

Computation: per crop resolution, all (student view, teacher view) pairs are matched in one
batched similarity and argmax. The targets q_t[j*(i)] are never gathered into a K-wide tensor
per student token (~2.8 GB in float32 for Swin-T at batch 64): the loss is linear in the
targets, so each student token's log-probabilities are instead added into the slot of the
teacher token it matched, `A_t[j] = sum_{s, i: j*(i) = j} log p_s[i] / (B T_s)`, with one
`index_add` per (resolution, teacher view), and `M_R` summed over pairs is `-sum_t <q_t, A_t>`.
`A_t` has the teacher's shape and is not kept for backward (the gradient of `<q_t, A_t>` in
`A_t` is `q_t`, which exists anyway); a pair s = t adds into a spare row that is left out.
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


@torch.no_grad()
def match_all_regions(student_tokens: torch.Tensor, teacher_tokens: torch.Tensor) -> torch.Tensor:
    """(V, B, T_s, C), (T, B, T_t, C) -> (V, T, B, T_s): `match_regions` for every view pair at once."""
    s = F.normalize(student_tokens.float(), dim=-1)
    t = F.normalize(teacher_tokens.float(), dim=-1)
    return torch.einsum("vbic,tbjc->vtbij", s, t).argmax(dim=-1)


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
        n_teacher, batch, n_tokens, k = teacher_logits.shape
        probs = F.softmax((teacher_logits.detach().float() - self.center.center) / teacher_temp, dim=-1)
        targets = probs.reshape(n_teacher, batch * n_tokens, k)
        slots = torch.arange(batch, device=probs.device).reshape(1, 1, batch, 1) * n_tokens
        pairs, first_view, terms = 0, 0, []
        for logits, tokens in zip(student_logits, student_tokens):
            views, _, t_s = logits.shape[:3]
            match = match_all_regions(tokens, teacher_tokens)  # (V_g, T, B, T_s)
            same = (torch.arange(views, device=match.device)[:, None] + first_view
                    == torch.arange(n_teacher, device=match.device)[None])  # (V_g, T)
            rows = torch.where(same[:, :, None, None], batch * n_tokens, slots + match)
            logprobs = F.log_softmax(logits.float() / self.student_temp, dim=-1).reshape(-1, k)
            for t in range(n_teacher):
                # one spare row past the teacher's slots collects the same-view pairs' rows, unused
                slot_sums = logprobs.new_zeros(batch * n_tokens + 1, k).index_add(
                    0, rows[:, t].reshape(-1), logprobs, alpha=1.0 / (batch * t_s))
                terms.append((targets[t] * slot_sums[:-1]).sum())
            pairs += views * n_teacher - int(sum(first_view <= t < first_view + views for t in range(n_teacher)))
            first_view += views
        if pairs == 0:
            raise ValueError("region loss needs at least one (teacher view, other student view) pair")
        self.center.accumulate(teacher_logits)
        return -torch.stack(terms).sum() / pairs
