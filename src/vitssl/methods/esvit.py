"""EsViT: DINO's view-level task plus region matching (Li et al., ICLR 2022, arXiv 2106.09785; microsoft/esvit).

Works with any backbone: the view feature is `Tokens.pooled` (mean of the last-stage tokens
for Swin, CLS for ViT) and the regions are `Tokens.patches` after the final norm. A second
DINO head with its own center predicts, for every student region, the teacher's distribution
at the most similar teacher region. `L = w_V L_V + w_R L_R` (code's 1/2, 1/2 by default); before
`region_start_epoch` only `L_V` with weight 1, which is the "view-only, then view + region"
schedule of the released continued models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vitssl.backbones import BackboneConfig, Tokens
from vitssl.engine.protocol import BenchmarkSetup, StepContext, StepOutput
from vitssl.engine.validation import require_int, require_number
from vitssl.heads import DINOHead, DINOHeadConfig
from vitssl.losses import DINOLoss, teacher_statistics
from vitssl.losses.center import Center
from vitssl.losses.esvit import RegionLoss
from vitssl.losses.koleo import with_koleo
from vitssl.methods.teacher_student import TeacherStudent, TeacherStudentConfig, student_and_teacher
from vitssl.methods.views import encode_by_resolution


@dataclass
class EsViTConfig(TeacherStudentConfig):
    """The family's settings plus the region task; defaults follow the released Swin-T recipe (3.5).

    `koleo_weight > 0` adds the family's option (off by default, not in EsViT's recipe): the KoLeo
    spreading term on the student's pooled view feature of each global view, which keeps a short
    small-data run from narrowing the features it starts with (docs/methods/esvit.md).
    """

    head_keys = ("head", "region_head")

    name: str = "esvit"
    head: DINOHeadConfig = field(default_factory=lambda: DINOHeadConfig(norm_last_layer=False))
    region_head: DINOHeadConfig = field(default_factory=lambda: DINOHeadConfig(norm_last_layer=False))
    view_weight: float = 0.5
    region_weight: float = 0.5
    region_start_epoch: int = 0
    teacher_temp: float = 0.07
    warmup_teacher_temp_epochs: int = 30

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("view_weight", "region_weight"):
            require_number(f"method.{name}", getattr(self, name), lo=0.0)
        require_int("method.region_start_epoch", self.region_start_epoch, lo=0)


class EsViTNetwork(nn.Module):
    """Student or teacher: backbone, view head, region head."""

    def __init__(self, backbone: nn.Module, cfg: EsViTConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = DINOHead(backbone.embed_dim, cfg.head)
        self.region_head = DINOHead(backbone.embed_dim, cfg.region_head)

    def encode(self, views: list[torch.Tensor]) -> list[Tokens]:
        return encode_by_resolution(self.backbone, views)

    def view_logits(self, groups: list[Tokens], batch: int) -> torch.Tensor:
        logits = self.head(torch.cat([g.pooled for g in groups]))
        return logits.reshape(-1, batch, logits.shape[-1])

    def region_logits(self, tokens: torch.Tensor, batch: int) -> torch.Tensor:
        """(V_g * B, T, C) -> (V_g, B, T, K)."""
        t, c = tokens.shape[1:]
        logits = self.region_head(tokens.reshape(-1, c))
        return logits.reshape(-1, batch, t, logits.shape[-1])


def _per_view(tokens: torch.Tensor, batch: int) -> torch.Tensor:
    """(V_g * B, T, C) -> (V_g, B, T, C)."""
    return tokens.reshape(-1, batch, *tokens.shape[1:])


class EsViT(TeacherStudent):
    """The EsViT method: implements `vitssl.engine.protocol.Method`."""

    Config = EsViTConfig
    paper = "EsViT (Li et al., ICLR 2022)"
    cpu_preset = "demo_esvit_shapes"
    matches_regions = True
    benchmark_setups = (BenchmarkSetup("esvit", "EsViT Swin-T/W7 + region", "esvit_swin_tiny_w7", 64),)

    def __init__(self, cfg: EsViTConfig, backbone: BackboneConfig) -> None:
        super().__init__(cfg, *student_and_teacher(backbone, lambda b: EsViTNetwork(b, cfg)))
        # the region head gets no gradient before region_start_epoch: DDP must look for unused parameters
        self.find_unused_parameters = not (cfg.region_weight > 0 and cfg.region_start_epoch == 0)
        self.loss = DINOLoss(cfg.head.out_dim, cfg.student_temp, cfg.center_momentum)
        self.region_loss = RegionLoss(cfg.region_head.out_dim, cfg.student_temp, cfg.center_momentum)

    def last_layer_heads(self) -> tuple[nn.Module, ...]:
        return (self.student.head, self.student.region_head)

    def centers(self) -> tuple[Center, ...]:
        return (self.loss.center, self.region_loss.center)

    # -- the objective -------------------------------------------------------------------
    def region_active(self, epoch: int) -> bool:
        return self.cfg.region_weight > 0 and epoch >= self.cfg.region_start_epoch

    def training_step(self, batch: tuple[list[torch.Tensor], torch.Tensor], ctx: StepContext) -> StepOutput:
        views, _ = batch
        b, cfg = views[0].shape[0], self.cfg
        temp = self.teacher_temperature(ctx.epoch)
        with torch.no_grad():
            t_groups = self.teacher.encode(views[:2])
            t_view = self.teacher.view_logits(t_groups, b)
        s_groups = self.student.encode(views)
        probs = self.loss.teacher_probs(t_view, temp)
        view_loss = self.loss(self.student.view_logits(s_groups, b), t_view, temp, teacher_probs=probs)
        metrics: dict[str, Any] = {"view_loss": view_loss.detach(), **self.schedule_metrics(ctx, temp)}
        if self.region_active(ctx.epoch):
            with torch.no_grad():
                t_tokens = torch.cat([_per_view(g.patches, b) for g in t_groups])
                t_region = torch.cat([self.teacher.region_logits(g.patches, b) for g in t_groups])
            region_loss = self.region_loss(
                [self.student.region_logits(g.patches, b) for g in s_groups],
                [_per_view(g.patches, b) for g in s_groups], t_region, t_tokens, temp)
            loss = cfg.view_weight * view_loss + cfg.region_weight * region_loss
            metrics["region_loss"] = region_loss.detach()
        else:
            loss = view_loss
        loss = with_koleo(loss, metrics, _per_view(s_groups[0].pooled, b)[:2], cfg.koleo_weight)
        if ctx.logged:
            metrics.update(teacher_statistics(probs))
        return StepOutput(loss, metrics)
