"""DINO: self-distillation with no labels (Caron et al., 2021), spec section 1.

Student (backbone + head) sees all 2 + M crops; the EMA teacher sees the 2 global crops;
the loss matches the student's distribution on every view to the teacher's centred and
sharpened distribution on every other global view.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator

import torch
from torch import nn

from vitssl.augment import MultiCrop, MultiCropConfig, collate_views
from vitssl.augment.gpu_multicrop import GPUMultiCrop
from vitssl.augment.multicrop import local_crop_groups, validate_config
from vitssl.backbones import BackboneConfig, create_backbone, patch_size_of
from vitssl.engine.ema import TeacherEMA
from vitssl.engine.protocol import StepContext, StepOutput
from vitssl.engine.schedules import cosine_schedule, teacher_temperature
from vitssl.heads import DINOHead, DINOHeadConfig
from vitssl.losses import DINOLoss, teacher_statistics
from vitssl.methods.views import resolution_batches
from vitssl.validation import require_int, require_multiple, require_number, require_probability


@dataclass
class DINOConfig:
    """DINO's own hyper-parameters (spec 1.1-1.4); names follow the original flags."""

    name: str = "dino"
    head: DINOHeadConfig = field(default_factory=DINOHeadConfig)
    crops: MultiCropConfig = field(default_factory=MultiCropConfig)
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: int = 0
    center_momentum: float = 0.9
    momentum_teacher: float = 0.996
    freeze_last_layer: int = 1

    def __post_init__(self) -> None:
        check_dino_family(self)

    def check_backbone_fit(self, backbone: BackboneConfig) -> None:
        check_crops_fit(self.crops, backbone)


def check_crops_fit(crops: MultiCropConfig, backbone: BackboneConfig) -> None:
    """Every crop a whole number of patches: otherwise the first step fails, after the data scan."""
    patch = patch_size_of(backbone)
    what = f"the patch size {patch} (backbone.patch_size)"
    require_multiple("method.crops.global_crops_size", crops.global_crops_size, patch, what)
    for _, size in local_crop_groups(crops):
        require_multiple("method.crops.local_crops_size", size, patch, what)


def check_dino_family(c: Any, heads: tuple[str, ...] = ("head",), p: str = "method") -> None:
    """What DINO, EsViT and SelfPatch share: head sizes, crops, temperatures > 0, momentums in [0, 1]."""
    for name in heads:
        getattr(c, name).validate(f"{p}.{name}")
    validate_config(c.crops)
    for name in ("student_temp", "teacher_temp", "warmup_teacher_temp"):
        require_number(f"{p}.{name}", getattr(c, name), lo=0.0, lo_open=True)
    for name in ("center_momentum", "momentum_teacher"):
        require_probability(f"{p}.{name}", getattr(c, name))
    for name in ("warmup_teacher_temp_epochs", "freeze_last_layer"):
        require_int(f"{p}.{name}", getattr(c, name), lo=0)


class StudentTeacher(nn.Module):
    """Backbone + head, run once per crop resolution like DINO's MultiCropWrapper."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        """List of V views (B, 3, S_v, S_v), equal sizes consecutive -> (V, B, K) logits."""
        batch = views[0].shape[0]
        features = [self.backbone(batch).pooled for batch in resolution_batches(views)]
        logits = self.head(torch.cat(features))
        return logits.reshape(len(views), batch, -1)


class DINO(nn.Module):
    """The DINO method: implements `vitssl.engine.protocol.Method`."""

    Config = DINOConfig

    def __init__(self, cfg: DINOConfig, backbone: BackboneConfig) -> None:
        super().__init__()
        self.cfg = cfg
        student_backbone = create_backbone(backbone)
        teacher_backbone = create_backbone(replace(backbone, drop_path_rate=0.0))
        dim = student_backbone.embed_dim
        self.student = StudentTeacher(student_backbone, DINOHead(dim, cfg.head))
        self.teacher = StudentTeacher(teacher_backbone, DINOHead(dim, cfg.head))
        self.ema = TeacherEMA(self.teacher, self.student)  # pairs parameters once
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher.requires_grad_(False)
        self.loss = DINOLoss(cfg.head.out_dim, cfg.student_temp, cfg.center_momentum)
        self.multicrop = MultiCrop(cfg.crops)

    # -- data ----------------------------------------------------------------------------
    def train_transform(self) -> Callable[[Any, torch.Generator], list[torch.Tensor]]:
        return self.multicrop

    def device_transform(self) -> GPUMultiCrop:
        """The same multi-crop, batched on the accelerator (`train.augment_on=device`)."""
        return GPUMultiCrop(self.cfg.crops)

    def collate(self, samples: list[tuple[list[torch.Tensor], int]]) -> tuple[list[torch.Tensor], torch.Tensor]:
        return collate_views(samples)

    # -- optimisation --------------------------------------------------------------------
    def trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        return ((n, p) for n, p in self.student.named_parameters() if p.requires_grad)

    def teacher_temperature(self, epoch: int) -> float:
        c = self.cfg
        return teacher_temperature(epoch, c.warmup_teacher_temp, c.teacher_temp, c.warmup_teacher_temp_epochs)

    def teacher_momentum(self, ctx: StepContext) -> float:
        return cosine_schedule(ctx.step, ctx.total_steps, self.cfg.momentum_teacher, 1.0)

    def training_step(self, batch: tuple[list[torch.Tensor], torch.Tensor], ctx: StepContext) -> StepOutput:
        views, _ = batch
        temp = self.teacher_temperature(ctx.epoch)
        with torch.no_grad():
            teacher_logits = self.teacher(views[:2])
        student_logits = self.student(views)
        probs = self.loss.teacher_probs(teacher_logits, temp)
        loss = self.loss(student_logits, teacher_logits, temp, teacher_probs=probs)
        return StepOutput(loss, {"teacher_temp": temp, **(teacher_statistics(probs) if ctx.logged else {}),
                                 "center_norm": self.loss.center.center.norm()})

    def before_optimizer_step(self, ctx: StepContext) -> None:
        """Drop last-layer gradients during the first `freeze_last_layer` epochs (spec 1.2)."""
        if ctx.epoch < self.cfg.freeze_last_layer:
            for p in self.student.head.last_layer.parameters():
                p.grad = None

    def after_optimizer_step(self, ctx: StepContext) -> None:
        self.ema.update(self.teacher_momentum(ctx))
        self.loss.center.update()

    def evaluation_backbone(self) -> nn.Module:
        return self.teacher.backbone

    def student_backbone(self) -> nn.Module:
        return self.student.backbone
