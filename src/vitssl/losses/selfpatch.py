"""SelfPatch's patch-level objective (SelfPatch paper Sec. 3; alinlab/SelfPatch main_selfpatch.py): neighbour positives and their loss.

Each patch i has up to 8 neighbours in its 3x3 window; the k most similar to it (cosine of
the teacher's backbone tokens) form its positive set P_i. The teacher's target for patch i is
the aggregate of P_i; the student must predict it from patch i alone, in the same view.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vitssl.losses.center import Center
from vitssl.losses.dino import multicrop_cross_entropy

BORDER_MODES = ("inside", "wrap")


def neighbour_indices(grid: tuple[int, int], border: str = "inside",
                      device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (N, 8) of each patch's 3x3-window neighbours on a row-major (h, w) grid, and
    which of them exist (N, 8) bool, on `device` (default CPU).

    Built once per (grid, border, device) and cached: the training step asks for the same two
    or three grids every step, and rebuilding them on the host meant a copy to the device each
    time. The returned tensors are shared: do not modify them in place.

    `border="inside"`: neighbours outside the image do not exist (a corner has 3).
    `border="wrap"`: the original code's modular indexing, so border patches take neighbours
    from the opposite border; on grids narrower than 3 the wrapped offsets repeat a patch or
    land on the patch itself, and those repeats are marked as not existing.
    Offsets are ordered row by row: (-1,-1), (-1,0), (-1,1), (0,-1), (0,1), (1,-1), (1,0), (1,1).
    """
    if border not in BORDER_MODES:
        raise ValueError(f"unknown neighbour border mode '{border}': use one of {BORDER_MODES}")
    return _cached_neighbour_indices((int(grid[0]), int(grid[1])), border, torch.device(device or "cpu"))


@functools.lru_cache(maxsize=64)
def _cached_neighbour_indices(grid: tuple[int, int], border: str,
                              device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    index, valid = _build_neighbour_indices(grid, border)
    return index.to(device), valid.to(device)


def _build_neighbour_indices(grid: tuple[int, int], border: str) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = grid
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    rows, cols = rows.reshape(-1, 1), cols.reshape(-1, 1)
    offsets = torch.tensor([(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)])
    nr, nc = rows + offsets[:, 0], cols + offsets[:, 1]
    if border == "inside":
        valid = (nr >= 0) & (nr < h) & (nc >= 0) & (nc < w)
        index = nr.clamp(0, h - 1) * w + nc.clamp(0, w - 1)
        return index, valid
    index = (nr % h) * w + (nc % w)
    valid = index != (rows * w + cols)
    for j in range(1, 8):  # drop repeats of an earlier neighbour (grids narrower than 3)
        valid[:, j] &= ~(index[:, :j] == index[:, j : j + 1]).any(dim=1)
    return index, valid


def select_positives(tokens: torch.Tensor, index: torch.Tensor, valid: torch.Tensor,
                     k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k neighbours most similar to each patch: (B, N, k) patch indices and existence.

    tokens (B, N, D) are the teacher's backbone tokens; similarity is cosine; a patch with
    fewer than k existing neighbours gets its missing slots marked False.
    """
    unit = F.normalize(tokens.float(), dim=-1)
    sims = torch.einsum("bnd,bnjd->bnj", unit, unit[:, index])  # (B, N, 8)
    sims = sims.masked_fill(~valid, float("-inf"))
    k = min(k, index.shape[1])
    top = sims.topk(k, dim=-1).indices  # (B, N, k) into the 8 slots
    batch_index = index.expand(tokens.shape[0], -1, -1)
    return torch.gather(batch_index, 2, top), torch.gather(valid.expand_as(sims), 2, top)


def gather_positives(tokens: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """tokens (B, N, D), positives (B, N, k) -> (B, N, k, D) neighbour tokens."""
    b, n, k = positives.shape
    flat = positives.reshape(b, n * k, 1).expand(-1, -1, tokens.shape[-1])
    return torch.gather(tokens, 1, flat).reshape(b, n, k, tokens.shape[-1])


def aggregate_positives(tokens: torch.Tensor, grid: tuple[int, int], aggregator: Callable[..., torch.Tensor],
                        k: int, border: str = "inside") -> torch.Tensor:
    """The teacher's per-patch targets before the patch head: tokens (B, N, D) on a (h, w) grid
    -> (B, N, D), each patch's k most similar neighbours read by `aggregator(members, valid)`."""
    index, valid = neighbour_indices(grid, border, tokens.device)
    positives, exists = select_positives(tokens, index, valid, k)
    members = gather_positives(tokens, positives)  # (B, N, k, D)
    b, n, kept, d = members.shape
    return aggregator(members.reshape(b * n, kept, d), exists.reshape(b * n, kept)).reshape(b, n, d)


def image_level_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, center: Center,
                     teacher_temp: float, student_temp: float = 0.1,
                     center_views: str = "all") -> tuple[torch.Tensor, torch.Tensor]:
    """SelfPatch's image term: DINO's loss with the first 2 (global) teacher views as targets.

    student_logits (S, B, K); teacher_logits (T, B, K), every view the teacher saw. The center
    accumulates all T views (`"all"`, the original, locals included) or the 2 global ones
    (`"global"`, DINO's). Returns the loss and the teacher probabilities (for diagnostics).
    """
    probs = F.softmax((teacher_logits[:2].float() - center.center) / teacher_temp, dim=-1)
    loss = multicrop_cross_entropy(probs, F.log_softmax(student_logits.float() / student_temp, dim=-1))
    center.accumulate(teacher_logits if center_views == "all" else teacher_logits[:2])
    return loss, probs


class PatchLoss(nn.Module):
    """Same-view, same-position cross-entropy between centred, sharpened teacher patch outputs
    and student patch outputs, averaged over patches and then over views (SelfPatch paper Sec. 3; alinlab/SelfPatch main_selfpatch.py DINOLoss).

    Center `c_p` is the EMA of the mean teacher patch output over all views and tokens.
    """

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        self.student_temp = student_temp
        self.center = Center(out_dim, center_momentum)

    def forward(self, student: list[torch.Tensor], teacher: list[torch.Tensor], teacher_temp: float) -> torch.Tensor:
        """student, teacher: lists of (V_g, B, N_g, K) logits, one entry per crop resolution,
        the same views in the same order -> scalar loss."""
        if len(student) != len(teacher) or any(s.shape != t.shape for s, t in zip(student, teacher)):
            raise ValueError("student and teacher patch logits must cover the same views and patches")
        total, views = 0.0, 0
        for s, t in zip(student, teacher):
            probs = F.softmax((t.detach().float() - self.center.center) / teacher_temp, dim=-1)
            logprobs = F.log_softmax(s.float() / self.student_temp, dim=-1)
            ce = -(probs * logprobs).sum(-1)  # (V_g, B, N_g)
            total = total + ce.mean(dim=(1, 2)).sum()
            views += s.shape[0]
            self.center.accumulate(t)
        return total / views
