"""DINO: self-distillation with no labels (Caron et al., 2021), facebookresearch/dino, arXiv 2104.14294.

Student (backbone + head) sees all 2 + M crops; the EMA teacher sees the 2 global crops;
the loss matches the student's distribution on every view to the teacher's centred and
sharpened distribution on every other global view.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vitssl.backbones import BackboneConfig, create_backbone
from vitssl.engine.protocol import StepContext, StepOutput
from vitssl.heads import DINOHead
from vitssl.losses import DINOLoss, teacher_statistics
from vitssl.losses.center import Center
from vitssl.methods.teacher_student import TeacherStudent, TeacherStudentConfig, teacher_backbone
from vitssl.methods.views import encode_by_resolution


@dataclass
class DINOConfig(TeacherStudentConfig):
    """DINO's hyper-parameters (DINO paper Sec. 3.1, Alg. 1) are the family's shared ones."""

    name: str = "dino"


class StudentTeacher(nn.Module):
    """Backbone + head, run once per crop resolution like DINO's MultiCropWrapper."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        """List of V views (B, 3, S_v, S_v), equal sizes consecutive -> (V, B, K) logits."""
        batch = views[0].shape[0]
        features = [tokens.pooled for tokens in encode_by_resolution(self.backbone, views)]
        logits = self.head(torch.cat(features))
        return logits.reshape(len(views), batch, -1)


class DINO(TeacherStudent):
    """The DINO method: implements `vitssl.engine.protocol.Method`."""

    Config = DINOConfig

    def __init__(self, cfg: DINOConfig, backbone: BackboneConfig) -> None:
        student_backbone = create_backbone(backbone)
        teacher = create_backbone(teacher_backbone(backbone))
        dim = student_backbone.embed_dim
        super().__init__(cfg, StudentTeacher(student_backbone, DINOHead(dim, cfg.head)),
                         StudentTeacher(teacher, DINOHead(dim, cfg.head)))
        self.loss = DINOLoss(cfg.head.out_dim, cfg.student_temp, cfg.center_momentum)

    def last_layer_heads(self) -> tuple[nn.Module, ...]:
        return (self.student.head,)

    def centers(self) -> tuple[Center, ...]:
        return (self.loss.center,)

    def training_step(self, batch: tuple[list[torch.Tensor], torch.Tensor], ctx: StepContext) -> StepOutput:
        views, _ = batch
        temp = self.teacher_temperature(ctx.epoch)
        with torch.no_grad():
            teacher_logits = self.teacher(views[:2])
        student_logits = self.student(views)
        probs = self.loss.teacher_probs(teacher_logits, temp)
        loss = self.loss(student_logits, teacher_logits, temp, teacher_probs=probs)
        return StepOutput(loss, {**self.schedule_metrics(ctx, temp),
                                 **(teacher_statistics(probs) if ctx.logged else {}),
                                 "center_norm": self.loss.center.center.norm()})
