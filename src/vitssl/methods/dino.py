"""DINO: self-distillation with no labels (Caron et al., 2021), facebookresearch/dino, arXiv 2104.14294.

Student (backbone + head) sees all 2 + M crops; the EMA teacher sees the 2 global crops;
the loss matches the student's distribution on every view to the teacher's centred and
sharpened distribution on every other global view.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import nn

from vitssl.backbones import BackboneConfig, create_backbone, is_vit
from vitssl.engine.protocol import BenchmarkSetup, StepContext, StepOutput
from vitssl.engine.schedules import teacher_temperature
from vitssl.engine.validation import fail, require_choice, require_int, require_number
from vitssl.heads import DINOHead
from vitssl.losses import DINOLoss, teacher_statistics
from vitssl.losses.center import Center
from vitssl.losses.koleo import with_koleo
from vitssl.losses.mae import patchify
from vitssl.losses.masked_patch import MaskedPatchLoss
from vitssl.losses.masked_pixels import masked_pixel_l1
from vitssl.losses.sinkhorn import sinkhorn_knopp
from vitssl.methods.masked_patch import (
    MaskedPatchConfig,
    MaskedStep,
    PatchParts,
    masked_distillation,
)
from vitssl.methods.teacher_student import TeacherStudent, TeacherStudentConfig, teacher_backbone
from vitssl.methods.views import encode_by_resolution

CENTERINGS = ("ema", "sinkhorn_knopp")


@dataclass
class DINOConfig(TeacherStudentConfig):
    """DINO's hyper-parameters (DINO paper Sec. 3.1, Alg. 1) are the family's shared ones,
    plus two options from later work that keep a small-data teacher informative (off by default):

    - `centering: sinkhorn_knopp` replaces the EMA center by Sinkhorn-Knopp normalisation of the
      teacher's batch (`sinkhorn_iterations` rounds; iBOT / DINOv2);
    - `koleo_weight > 0` (the family's option, `TeacherStudentConfig`) adds the KoLeo spreading
      term on the student's backbone features of each global view (DINOv2 uses 0.1);
    - `mim_weight > 0` adds iBOT's masked-patch distillation with that weight (ViT only; iBOT's
      lambda2 = 1), set by `mim.*` (`methods/masked_patch.py`);
    - `pixel_weight > 0` adds SimMIM's pixel regression of the masked patches with that weight
      (ViT only; `losses/masked_pixels.py`). It masks the global crops with the same `mim.*`
      masks, so it turns the masking on by itself, also with `mim_weight` 0.
    """

    name: str = "dino"
    centering: str = "ema"
    sinkhorn_iterations: int = 3
    mim_weight: float = 0.0
    mim: MaskedPatchConfig = field(default_factory=MaskedPatchConfig)
    pixel_weight: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        require_choice("method.centering", self.centering, CENTERINGS)
        require_int("method.sinkhorn_iterations", self.sinkhorn_iterations, lo=1)
        require_number("method.mim_weight", self.mim_weight, lo=0.0)
        require_number("method.pixel_weight", self.pixel_weight, lo=0.0)
        self.mim.validate("method.mim")

    def check_backbone_fit(self, backbone: BackboneConfig) -> None:
        super().check_backbone_fit(backbone)
        for key in ("mim_weight", "pixel_weight"):
            if getattr(self, key) > 0 and not is_vit(backbone):
                fail(f"method.{key}", getattr(self, key), f"needs a ViT backbone (the [MASK] embedding replaces "
                     f"ViT patch tokens), not '{backbone.name}'", f"use a vit_* backbone or method.{key}=0")

    @property
    def masking(self) -> bool:
        """Whether the student sees masked global crops: either masked-patch term is on."""
        return self.mim_weight > 0 or self.pixel_weight > 0


class StudentTeacher(nn.Module):
    """Backbone + head, run once per crop resolution like DINO's MultiCropWrapper."""

    def __init__(self, backbone: nn.Module, head: nn.Module, mim: PatchParts | None = None) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head
        if mim is not None:  # absent without masked-patch distillation: plain DINO's state dict
            self.mim = mim

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        """List of V views (B, 3, S_v, S_v), equal sizes consecutive -> (V, B, K) logits."""
        return self.logits_and_features(views)[0]

    def logits_and_features(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(V, B, K) logits and the (V, B, D) pooled backbone features they come from."""
        batch = views[0].shape[0]
        features = torch.cat([tokens.pooled for tokens in encode_by_resolution(self.backbone, views)])
        logits = self.head(features)
        return logits.reshape(len(views), batch, -1), features.reshape(len(views), batch, -1)


class DINO(TeacherStudent):
    """The DINO method: implements `vitssl.engine.protocol.Method`."""

    Config = DINOConfig
    paper = "DINO (Caron et al., ICCV 2021)"
    cpu_preset = "demo_mnist"
    benchmark_setups = (BenchmarkSetup("dino", "DINO ViT-S/16", "dino_vit_small16", 64),)

    def __init__(self, cfg: DINOConfig, backbone: BackboneConfig) -> None:
        student_backbone = create_backbone(backbone)
        teacher = create_backbone(teacher_backbone(backbone))
        dim = student_backbone.embed_dim
        mim = cfg.mim_weight > 0
        shared = cfg.mim.shared_head or not mim  # no patch prototypes for the pixel term alone
        parts = [PatchParts(dim, cfg.head, shared) if cfg.masking else None for _ in range(2)]
        super().__init__(cfg, StudentTeacher(student_backbone, DINOHead(dim, cfg.head), parts[0]),
                         StudentTeacher(teacher, DINOHead(dim, cfg.head), parts[1]))
        self.loss = DINOLoss(cfg.head.out_dim, cfg.student_temp, cfg.center_momentum)
        self.patch_loss = MaskedPatchLoss(cfg.head.out_dim, cfg.student_temp, cfg.mim.center_momentum) if mim else None
        if cfg.pixel_weight > 0:  # built last: the networks start as without it
            self.pixel_head = nn.Linear(dim, student_backbone.patch_size ** 2 * 3)

    @classmethod
    def loss_reference(cls, cfg: DINOConfig) -> tuple[float, str]:
        """ln K, the loss of a flat teacher: a loss that stays there means nothing is distilled."""
        flat = math.log(cfg.head.out_dim)
        return flat, f"ln K = {flat:.2f} (flat teacher)"

    def last_layer_heads(self) -> tuple[nn.Module, ...]:
        separate = self.patch_loss is not None and self.student.mim.last_layer is not None
        return (self.student.head, self.student.mim) if separate else (self.student.head,)

    def trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """The student's, and SimMIM's pixel head where there is one."""
        head = self.pixel_head.named_parameters("pixel_head") if self.cfg.pixel_weight > 0 else ()
        return itertools.chain(super().trainable_parameters(), head)

    def centers(self) -> tuple[Center, ...]:
        return (self.loss.center,) if self.patch_loss is None else (self.loss.center, self.patch_loss.center)

    def patch_temperature(self, epoch: int) -> float:
        """The patch targets' temperature: `mim.warmup_teacher_temp -> mim.teacher_temp` over
        the [CLS] temperature's warm-up epochs (iBOT's teacher_temp2 schedule)."""
        m = self.cfg.mim
        return teacher_temperature(epoch, m.warmup_teacher_temp, m.teacher_temp, self.cfg.warmup_teacher_temp_epochs)

    def training_step(self, batch: tuple[list[torch.Tensor], torch.Tensor], ctx: StepContext) -> StepOutput:
        views, _ = batch
        temp = self.teacher_temperature(ctx.epoch)
        masked = None
        if not self.cfg.masking:
            with torch.no_grad():
                teacher_logits = self.teacher(views[:2])
            student_logits, features = self.student.logits_and_features(views)
        else:
            masked = masked_distillation(self.student, self.teacher, self.patch_loss, views, self.cfg.mim,
                                         self.patch_temperature(ctx.epoch))
            teacher_logits, student_logits, features = masked.teacher_cls, masked.student_cls, masked.features
        sinkhorn = self.cfg.centering == "sinkhorn_knopp"
        probs = (sinkhorn_knopp(teacher_logits, temp, self.cfg.sinkhorn_iterations) if sinkhorn
                 else self.loss.teacher_probs(teacher_logits, temp))
        loss = self.loss(student_logits, teacher_logits, temp, teacher_probs=probs, accumulate_center=not sinkhorn)
        metrics = {**self.schedule_metrics(ctx, temp), **(teacher_statistics(probs) if ctx.logged else {})}
        if not sinkhorn:
            metrics["center_norm"] = self.loss.center.center.norm()
        if masked is not None:
            loss = self.add_masked_terms(loss, masked, metrics)
        return StepOutput(with_koleo(loss, metrics, features[:2], self.cfg.koleo_weight), metrics)

    def add_masked_terms(self, cls_loss: torch.Tensor, masked: MaskedStep, metrics: dict) -> torch.Tensor:
        """DINO's loss plus the weighted iBOT and SimMIM terms that are on; logs each."""
        metrics["cls_loss"] = cls_loss.detach()
        loss = cls_loss
        if masked.mim_loss is not None:
            metrics["mim_loss"] = masked.mim_loss.detach()
            loss = loss + self.cfg.mim_weight * masked.mim_loss
        metrics["masked_fraction"] = masked.masked
        if self.cfg.pixel_weight > 0:
            target = patchify(masked.globals_, self.student.backbone.patch_size)
            pixel_loss = masked_pixel_l1(self.pixel_head(masked.patches), target, masked.masks)
            metrics["pixel_loss"] = pixel_loss.detach()
            loss = loss + self.cfg.pixel_weight * pixel_loss
        return loss
