"""What the trainer needs from a method. Methods implement it; the engine never imports them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol, runtime_checkable

import torch
from torch import nn


@dataclass(frozen=True)
class StepContext:
    """Where the run is: `step` counts optimizer steps already taken (0-based index of this one).

    `logged`: whether this step's metrics will be read (a log step). Diagnostics that only
    feed the log (DINO's teacher entropy and mutual information) are computed only then.
    """

    step: int
    epoch: int
    steps_per_epoch: int
    total_steps: int
    epochs: int
    logged: bool = True


@dataclass
class StepOutput:
    """The loss to back-propagate and scalars to log (tensors are fine: read only when logging)."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor | float] = field(default_factory=dict)


@runtime_checkable
class Method(Protocol):
    """A self-supervised method as the trainer sees it (an `nn.Module` holding all its state).

    A step whose loss or gradients are not finite is skipped: no `before/after_optimizer_step`,
    and the trainer puts back every buffer the forward passes wrote (BatchNorm statistics). A
    submodule that accumulates statistics in plain attributes during `training_step` for use after
    the step (DINO's `Center`) defines `discard_pending()`, which the trainer calls on every
    submodule of a skipped step.
    """

    def train_transform(self) -> Callable[[Any, torch.Generator], Any]:
        """Per-sample augmentation: (PIL image, generator) -> views."""
        ...

    def collate(self, samples: list[tuple[Any, int]]) -> Any:
        """Batch a list of (views, label) into what `training_step` takes."""
        ...

    def trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """(name, parameter) pairs the optimizer updates; the trainer splits them for weight decay."""
        ...

    def training_step(self, batch: Any, ctx: StepContext) -> StepOutput:
        """Forward pass and loss for one micro-batch (the trainer handles backward and the step)."""
        ...

    def before_optimizer_step(self, ctx: StepContext) -> None:
        """Edit gradients after clipping, e.g. DINO's last-layer freeze in the first epochs."""
        ...

    def after_optimizer_step(self, ctx: StepContext) -> None:
        """Post-step updates: EMA teacher, centers."""
        ...

    def evaluation_backbone(self) -> nn.Module:
        """The backbone whose features evaluation uses (DINO: the teacher's)."""
        ...

    def student_backbone(self) -> nn.Module:
        """The trained (not averaged) backbone, for `--backbone student` evaluation and export."""
        ...
