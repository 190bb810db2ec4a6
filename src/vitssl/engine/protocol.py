"""What the trainer needs from a method. Methods implement it; the engine never imports them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, ClassVar, Iterator, Protocol, runtime_checkable

import torch
from torch import nn


@dataclass(frozen=True)
class StepContext:
    """Where the run is: `step` counts optimizer steps already taken (0-based index of this one).

    `logged`: whether this step's metrics will be read (a log step). Diagnostics that only
    feed the log (DINO's teacher entropy and mutual information) are computed only then.

    `applied` (set for `after_optimizer_step` only, for a method with `gates_state_updates`): a
    0-dim bool tensor on the device, False when the step was bad (non-finite loss or gradients)
    and its update skipped. It is decided on the device and not read by the trainer until later,
    so state updates must be gated with it there (`torch.where(applied, new, old)`, an EMA
    weight times `applied`), never read with `.item()`. None: the update was applied.
    """

    step: int
    epoch: int
    steps_per_epoch: int
    total_steps: int
    epochs: int
    logged: bool = True
    applied: torch.Tensor | None = None


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
    the step (DINO's `Center`) implements `DiscardsPending`. A method with `gates_state_updates`
    (see `MethodBase`) instead gets both calls on every step and gates with `ctx.applied`.

    The members below are required; `MethodBase` holds the optional ones with their defaults.
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


@runtime_checkable
class DiscardsPending(Protocol):
    """A submodule holding statistics of the current step for use after it (DINO's `Center`):
    the trainer calls `discard_pending()` on it when it skips a non-finite step."""

    def discard_pending(self) -> None: ...


@runtime_checkable
class ReconstructsPixels(Protocol):
    """A masked-image model (MAE): `vitssl demo` shows its reconstructions of held-out images."""

    def reconstruct(self, images: torch.Tensor, generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


@dataclass(frozen=True)
class EvalInput:
    """How evaluation feeds images to a run's backbone: the crop size it trained at and the
    mean/std its crops were normalised with (None: ImageNet's, the evaluation transform's default)."""

    image_size: int
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


@dataclass(frozen=True)
class ShownMetric:
    """A logged metric also shown in the progress bar, as `label=value` formatted with `fmt`."""

    key: str
    label: str
    fmt: str = ".3f"


@dataclass(frozen=True)
class BenchmarkSetup:
    """A configuration `vitssl benchmark step` times: `name` is its `--methods` choice."""

    name: str
    label: str
    preset: str
    batch_size: int
    overrides: tuple[str, ...] = ()


class MethodBase(nn.Module):
    """The optional members of `Method`, with their defaults: the one place they are defined.

    Every registered method derives from this class and overrides what applies to it; code
    outside `vitssl.methods` asks these members instead of testing a method's name. For an
    object that implements only `Method`, `optional_member` gives the same defaults.
    """

    # -- training ------------------------------------------------------------------------
    find_unused_parameters: bool = False
    """DDP must look for parameters without a gradient (EsViT's region head before it starts)."""

    gates_state_updates: ClassVar[bool] = False
    """`after_optimizer_step` gates every state update with `ctx.applied` (EMA teacher, centers):
    the trainer may then decide on the device whether a step's update applies and read that
    decision on log steps only, with no host-device sync per step. False (the safe default): the
    trainer reads each step's finiteness on the host and calls `before/after_optimizer_step` for
    applied steps only."""

    progress_metrics: ClassVar[tuple[ShownMetric, ...]] = ()
    """Logged metrics the progress bar shows beside loss, lr and images/s."""

    def device_transform(self) -> Callable[[Any, torch.Generator], Any] | None:
        """Batch augmentation on the accelerator for `train.augment_on=device`: (list of uint8
        (3, H, W) images, generator) -> what `collate` returns for the views; None: none."""
        return None

    # -- evaluation ----------------------------------------------------------------------
    @classmethod
    def evaluation_input(cls, cfg: Any, backbone: Any) -> EvalInput:
        """Size and normalisation evaluation uses for a run of this config (`cfg` the method's
        config object, `backbone` the `BackboneConfig`): by default the backbone's image size
        and ImageNet statistics."""
        return EvalInput(int(backbone.img_size))

    @classmethod
    def evaluation_model(cls, cfg: Any, backbone: Any) -> nn.Module:
        """The module a checkpoint's saved state is loaded into for evaluation and export; one
        that holds only part of the state (D-MAE-Lite's student without its teacher) gets that part."""
        return cls(cfg, backbone)

    def backbone_network(self, student: bool = False) -> nn.Module:
        """The backbone network alone (a `vitssl.backbones` module, e.g. the ViT), without what the
        method adds on top for evaluation (SelfPatch's aggregation module): attention maps,
        layer similarity and timm export read it."""
        return self.student_backbone() if student else self.evaluation_backbone()  # type: ignore[attr-defined]

    @classmethod
    def loss_reference(cls, cfg: Any) -> tuple[float, str] | None:
        """(value, label) of a loss level the report marks on the loss plot (DINO: ln K, the loss of
        a flat teacher), or None."""
        return None

    matches_regions: ClassVar[bool] = False
    """The method trains region-level matching (EsViT): the report shows region correspondences."""

    # -- tests, benchmarks, recipes --------------------------------------------------------
    @classmethod
    def tiny_overrides(cls) -> tuple[str, ...]:
        """`method.*` overrides that shrink the method to seconds on a CPU with a 16-pixel,
        patch-4 backbone (what tests and `vitssl benchmark step --tiny` run)."""
        return ()

    run_fields: ClassVar[Mapping[str, str]] = MappingProxyType({})
    """Config fields (under `method.`) that name another vitssl run, with the method that run
    must be (D-MAE-Lite: `teacher` -> an MAE run); tests fill them with a tiny untrained run."""

    def synthetic_batch(self, batch_size: int, generator: torch.Generator) -> Any:
        """A random batch as `collate` returns it, on the CPU, for the step benchmark's synthetic
        input: by default `batch_size` noise images through `train_transform` and `collate`."""
        from torchvision.transforms.v2.functional import to_pil_image

        transform = self.train_transform()  # type: ignore[attr-defined]
        images = [to_pil_image(torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=generator))
                  for _ in range(batch_size)]
        return self.collate([(transform(image, generator), 0) for image in images])  # type: ignore[attr-defined]

    benchmark_setups: ClassVar[Sequence[BenchmarkSetup]] = ()
    """Configurations `vitssl benchmark step` times for this method (the paper's, at scale)."""

    paper: ClassVar[str] = ""
    """The paper, as `vitssl recipes` cites it for the method's presets."""

    cpu_preset: ClassVar[str] = ""
    """A preset that trains this method in minutes on a CPU: the hint a too-slow CPU run prints
    names it (none: the hint names `vitssl demo`)."""


def optional_member(method: Any, name: str) -> Any:
    """`method.<name>`, or `MethodBase`'s default for an object that implements only `Method`."""
    if hasattr(method, name):
        return getattr(method, name)
    default = vars(MethodBase)[name]
    return default.__get__(method, type(method)) if hasattr(default, "__get__") else default
