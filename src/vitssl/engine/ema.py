"""Exponential moving average of the student into the teacher (DINO paper Sec. 3.1, Alg. 1)."""

from __future__ import annotations

import torch
from torch import nn


def paired_parameters(teacher: nn.Module, student: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The two modules' parameter tensors, paired by name; they must have the same structure."""
    t_params = dict(teacher.named_parameters())
    s_params = dict(student.named_parameters())
    if t_params.keys() != s_params.keys():
        missing = sorted(set(t_params) ^ set(s_params))[:5]
        raise ValueError(f"teacher and student differ in parameters (e.g. {missing}); build them from one config")
    return [t_params[n].data for n in t_params], [s_params[n].data for n in t_params]


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """`theta_t <- m theta_t + (1 - m) theta_s` over all parameters (buffers are not averaged).

    Parameters are paired by name; one fused multi-tensor lerp does the update.
    """
    t_list, s_list = paired_parameters(teacher, student)
    torch._foreach_lerp_(t_list, s_list, 1.0 - momentum)


class TeacherEMA:
    """`ema_update` for one teacher-student pair, pairing the parameters once, not every step.

    Walking both module trees to pair ~150 tensors by name costs the host more than the fused
    lerp costs a GPU. The pairing is made at the first update, i.e. after the trainer has
    moved, wrapped or sharded the modules, and kept: `.to()` and `load_state_dict` update the
    same parameter objects in place. Call `reset()` if parameters are ever replaced.
    """

    def __init__(self, teacher: nn.Module, student: nn.Module) -> None:
        self.teacher, self.student = teacher, student
        self._pairs: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None

    def reset(self) -> None:
        self._pairs = None

    @torch.no_grad()
    def update(self, momentum: float, applied: torch.Tensor | None = None) -> None:
        """One EMA step; `applied` (a 0-dim bool device tensor, see `StepContext.applied`) False
        leaves the teacher bitwise as it is: the lerp weight becomes 0 on the device, no sync."""
        if self._pairs is None:
            self._pairs = paired_parameters(self.teacher, self.student)
        if applied is None:
            torch._foreach_lerp_(*self._pairs, 1.0 - momentum)
            return
        weight = applied.to(self._pairs[0][0].dtype) * (1.0 - momentum)  # (1 - m) or exactly 0
        torch._foreach_lerp_(*self._pairs, [weight] * len(self._pairs[0]))
