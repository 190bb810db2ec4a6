"""What DINO, EsViT and SelfPatch share: an EMA teacher of the student, multi-crop views,
centred and sharpened teacher targets, and DINO's optimisation schedule (DINO paper Sec. 3.1, Alg. 1).

A method of the family builds its student and teacher networks (same structure, the teacher
without drop path), names the heads whose last layer stays frozen at first and the centers to
update after each step, and adds only its own objective in `training_step`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, ClassVar, Iterator

import torch
from torch import nn

from vitssl.augment import MultiCrop, MultiCropConfig, collate_views
from vitssl.augment.gpu_multicrop import GPUMultiCrop
from vitssl.augment.multicrop import local_crop_groups, validate_config
from vitssl.backbones import (
    BackboneConfig,
    create_backbone,
    input_multiple_description,
    patch_size_of,
)
from vitssl.engine.ema import TeacherEMA
from vitssl.engine.protocol import EvalInput, MethodBase, ShownMetric, StepContext
from vitssl.engine.schedules import cosine_schedule, teacher_temperature
from vitssl.engine.validation import (
    require_int,
    require_multiple,
    require_number,
    require_probability,
)
from vitssl.heads import DINOHeadConfig
from vitssl.losses.center import Center


@dataclass
class TeacherStudentConfig:
    """The family's shared settings; names follow DINO's flags. `head_keys` names the
    `DINOHeadConfig` fields a method has (each validated under `method.KEY`).

    `koleo_weight > 0` adds the KoLeo spreading term (`vitssl.losses.koleo`; DINOv2 uses 0.1) on
    the student's image-level feature of each global view, the one evaluation reads: DINO's
    backbone feature, EsViT's pooled view feature, SelfPatch's aggregated image token. Off by
    default: none of the three papers' recipes has it.
    """

    head_keys: ClassVar[tuple[str, ...]] = ("head",)

    name: str = ""
    head: DINOHeadConfig = field(default_factory=DINOHeadConfig)
    crops: MultiCropConfig = field(default_factory=MultiCropConfig)
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: int = 0
    center_momentum: float = 0.9
    momentum_teacher: float = 0.996
    freeze_last_layer: int = 1
    koleo_weight: float = 0.0

    def __post_init__(self) -> None:
        """Head sizes, crops, temperatures > 0, momentums in [0, 1], epoch counts >= 0."""
        for key in self.head_keys:
            getattr(self, key).validate(f"method.{key}")
        validate_config(self.crops)
        for key in ("student_temp", "teacher_temp", "warmup_teacher_temp"):
            require_number(f"method.{key}", getattr(self, key), lo=0.0, lo_open=True)
        for key in ("center_momentum", "momentum_teacher"):
            require_probability(f"method.{key}", getattr(self, key))
        for key in ("warmup_teacher_temp_epochs", "freeze_last_layer"):
            require_int(f"method.{key}", getattr(self, key), lo=0)
        require_number("method.koleo_weight", self.koleo_weight, lo=0.0)

    def check_backbone_fit(self, backbone: BackboneConfig) -> None:
        check_crops_fit(self.crops, backbone)


def check_crops_fit(crops: MultiCropConfig, backbone: BackboneConfig) -> None:
    """Every crop a whole number of patches: otherwise the first step fails, after the data scan."""
    patch = patch_size_of(backbone)
    what = input_multiple_description(backbone)
    require_multiple("method.crops.global_crops_size", crops.global_crops_size, patch, what)
    for _, size in local_crop_groups(crops):
        require_multiple("method.crops.local_crops_size", size, patch, what)


def student_and_teacher(backbone: BackboneConfig, network: Callable[[nn.Module], nn.Module]
                        ) -> tuple[nn.Module, nn.Module]:
    """`network` around a fresh backbone, twice: the student, then the teacher without drop path."""
    return network(create_backbone(backbone)), network(create_backbone(teacher_backbone(backbone)))


def teacher_backbone(backbone: BackboneConfig) -> BackboneConfig:
    """The teacher is never trained, so it has no stochastic depth."""
    return replace(backbone, drop_path_rate=0.0)


class TeacherStudent(MethodBase):
    """Base of the family's methods: implements `vitssl.engine.protocol.Method` but for
    `training_step`.

    Subclasses call `__init__` with their two networks (built alike, e.g. by
    `student_and_teacher`, each with a `backbone`) and define `last_layer_heads()` and `centers()`.
    """

    progress_metrics = (ShownMetric("teacher_temp", "t_temp"),)
    gates_state_updates = True  # the EMA and the centers take `ctx.applied` (a subclass that updates more must too)

    def __init__(self, cfg: TeacherStudentConfig, student: nn.Module, teacher: nn.Module) -> None:
        super().__init__()
        self.cfg = cfg
        self.student, self.teacher = student, teacher
        self.ema = TeacherEMA(self.teacher, self.student)  # pairs parameters once
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher.requires_grad_(False)
        self.multicrop = MultiCrop(cfg.crops)

    def last_layer_heads(self) -> tuple[nn.Module, ...]:
        """The student's heads whose `last_layer` is frozen in the first `freeze_last_layer` epochs."""
        raise NotImplementedError

    def centers(self) -> tuple[Center, ...]:
        """The centers to move after each optimizer step."""
        raise NotImplementedError

    # -- data ----------------------------------------------------------------------------
    def train_transform(self) -> Callable[[Any, torch.Generator], list[torch.Tensor]]:
        return self.multicrop

    def device_transform(self) -> GPUMultiCrop:
        """The same multi-crop, batched on the accelerator (`train.augment_on=device`)."""
        return GPUMultiCrop(self.cfg.crops)

    def collate(self, samples: list[tuple[list[torch.Tensor], int]]) -> tuple[list[torch.Tensor], torch.Tensor]:
        return collate_views(samples)

    def synthetic_batch(self, batch_size: int, generator: torch.Generator) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Random views at every crop size, as `collate` batches them."""
        views = [torch.randn(batch_size, 3, s, s, generator=generator) for s in self.multicrop.view_sizes]
        return views, torch.zeros(batch_size, dtype=torch.long)

    # -- schedules -----------------------------------------------------------------------
    def teacher_temperature(self, epoch: int) -> float:
        c = self.cfg
        return teacher_temperature(epoch, c.warmup_teacher_temp, c.teacher_temp, c.warmup_teacher_temp_epochs)

    def teacher_momentum(self, ctx: StepContext) -> float:
        """EMA momentum of this step: cosine from `momentum_teacher` to 1 over the run."""
        return cosine_schedule(ctx.step, ctx.total_steps, self.cfg.momentum_teacher, 1.0)

    def schedule_metrics(self, ctx: StepContext, temp: float) -> dict[str, float]:
        """The teacher's temperature and EMA momentum of this step, for the log (two floats:
        cheap on every step, so a step's keys do not depend on whether it is logged)."""
        return {"teacher_temp": temp, "momentum": self.teacher_momentum(ctx)}

    # -- optimisation --------------------------------------------------------------------
    def trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        return ((n, p) for n, p in self.student.named_parameters() if p.requires_grad)

    def before_optimizer_step(self, ctx: StepContext) -> None:
        """Drop last-layer gradients during the first `freeze_last_layer` epochs (DINO paper Sec. 3.1; facebookresearch/dino vision_transformer.py DINOHead)."""
        if ctx.epoch < self.cfg.freeze_last_layer:
            for head in self.last_layer_heads():
                for p in head.last_layer.parameters():
                    p.grad = None

    def after_optimizer_step(self, ctx: StepContext) -> None:
        self.ema.update(self.teacher_momentum(ctx), ctx.applied)
        for center in self.centers():
            center.update(ctx.applied)

    def evaluation_backbone(self) -> nn.Module:
        """The teacher's, as the originals evaluate (DINO paper Sec. 3.2; facebookresearch/dino eval_knn.py, eval_linear.py): the EMA average is the better feature extractor."""
        return self.teacher.backbone

    def student_backbone(self) -> nn.Module:
        return self.student.backbone

    @classmethod
    def evaluation_input(cls, cfg: TeacherStudentConfig, backbone: BackboneConfig) -> EvalInput:
        """The global crop size and the crops' mean/std: what the teacher saw."""
        return EvalInput(cfg.crops.global_crops_size, tuple(cfg.crops.mean), tuple(cfg.crops.std))

    @classmethod
    def tiny_overrides(cls) -> tuple[str, ...]:
        """Small heads (every head the config has) and two 8-pixel local crops beside 16-pixel globals."""
        heads = [f"method.{key}.{kv}" for key in cls.Config.head_keys  # type: ignore[attr-defined]
                 for kv in ("out_dim=64", "hidden_dim=32", "bottleneck_dim=16")]
        return (*heads, "method.crops.global_crops_size=16", "method.crops.local_crops_size=8",
                "method.crops.local_crops_number=2")
