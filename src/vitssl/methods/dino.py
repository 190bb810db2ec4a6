"""DINO: self-distillation with no labels (Caron et al., 2021), facebookresearch/dino, arXiv 2104.14294.

Student (backbone + head) sees all 2 + M crops; the EMA teacher sees the 2 global crops;
the loss matches the student's distribution on every view to the teacher's centred and
sharpened distribution on every other global view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from vitssl.backbones import BackboneConfig, create_backbone
from vitssl.engine.protocol import BenchmarkSetup, StepContext, StepOutput
from vitssl.engine.validation import require_choice, require_int
from vitssl.heads import DINOHead
from vitssl.losses import DINOLoss, teacher_statistics
from vitssl.losses.center import Center
from vitssl.losses.koleo import with_koleo
from vitssl.losses.sinkhorn import sinkhorn_knopp
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
      term on the student's backbone features of each global view (DINOv2 uses 0.1).
    """

    name: str = "dino"
    centering: str = "ema"
    sinkhorn_iterations: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        require_choice("method.centering", self.centering, CENTERINGS)
        require_int("method.sinkhorn_iterations", self.sinkhorn_iterations, lo=1)


class StudentTeacher(nn.Module):
    """Backbone + head, run once per crop resolution like DINO's MultiCropWrapper."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

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
        super().__init__(cfg, StudentTeacher(student_backbone, DINOHead(dim, cfg.head)),
                         StudentTeacher(teacher, DINOHead(dim, cfg.head)))
        self.loss = DINOLoss(cfg.head.out_dim, cfg.student_temp, cfg.center_momentum)

    @classmethod
    def loss_reference(cls, cfg: DINOConfig) -> tuple[float, str]:
        """ln K, the loss of a flat teacher: a loss that stays there means nothing is distilled."""
        flat = math.log(cfg.head.out_dim)
        return flat, f"ln K = {flat:.2f} (flat teacher)"

    def last_layer_heads(self) -> tuple[nn.Module, ...]:
        return (self.student.head,)

    def centers(self) -> tuple[Center, ...]:
        return (self.loss.center,)

    def training_step(self, batch: tuple[list[torch.Tensor], torch.Tensor], ctx: StepContext) -> StepOutput:
        views, _ = batch
        temp = self.teacher_temperature(ctx.epoch)
        with torch.no_grad():
            teacher_logits = self.teacher(views[:2])
        student_logits, features = self.student.logits_and_features(views)
        sinkhorn = self.cfg.centering == "sinkhorn_knopp"
        probs = (sinkhorn_knopp(teacher_logits, temp, self.cfg.sinkhorn_iterations) if sinkhorn
                 else self.loss.teacher_probs(teacher_logits, temp))
        loss = self.loss(student_logits, teacher_logits, temp, teacher_probs=probs, accumulate_center=not sinkhorn)
        metrics = {**self.schedule_metrics(ctx, temp), **(teacher_statistics(probs) if ctx.logged else {})}
        if not sinkhorn:
            metrics["center_norm"] = self.loss.center.center.norm()
        return StepOutput(with_koleo(loss, metrics, features[:2], self.cfg.koleo_weight), metrics)
