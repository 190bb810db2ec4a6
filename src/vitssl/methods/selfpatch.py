"""SelfPatch: DINO plus a patch-level task with neighbour positives (Yun et al., CVPR 2022, arXiv 2206.07990; alinlab/SelfPatch).

The backbone has no CLS token and no final norm. One aggregation module A turns patch
tokens into everything the heads read: the image token `LN(A(q0; X))` replaces DINO's CLS,
the student's patch tokens are `LN(x_i)`, and the teacher's patch targets aggregate each
patch's k most similar 3x3-window neighbours, `LN(A(q0; P_i))`.
`L = L_img + lambda * L_patch`, the image term exactly DINO's over the 2 global teacher views.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn

from vitssl.augment import MultiCropConfig
from vitssl.backbones import BackboneConfig, Tokens
from vitssl.engine.protocol import BenchmarkSetup, StepContext, StepOutput
from vitssl.engine.validation import require_int, require_number
from vitssl.heads import DINOHead, DINOHeadConfig
from vitssl.heads.patch_aggregator import PatchAggregator
from vitssl.losses.center import Center
from vitssl.losses.dino import teacher_statistics
from vitssl.losses.koleo import with_koleo
from vitssl.losses.selfpatch import BORDER_MODES, PatchLoss, aggregate_positives, image_level_loss
from vitssl.methods.teacher_student import TeacherStudent, TeacherStudentConfig, student_and_teacher
from vitssl.methods.views import encode_by_resolution


@dataclass
class SelfPatchConfig(TeacherStudentConfig):
    """The family's settings plus SelfPatch's; defaults are the released recipe (alinlab/SelfPatch README and main_selfpatch.py defaults)."""

    head_keys = ("head", "patch_head")

    name: str = "selfpatch"
    patch_head: DINOHeadConfig = field(default_factory=lambda: DINOHeadConfig(out_dim=4096))
    crops: MultiCropConfig = field(default_factory=lambda: MultiCropConfig(
        global_crops_scale=(0.25, 1.0), local_crops_scale=(0.05, 0.25)))
    patch_loss_weight: float = 0.1
    num_neighbours: int = 4
    neighbour_border: str = "inside"
    aggregator_depth: int = 2
    teacher_local_views: bool = True
    image_center_views: str = "all"

    def __post_init__(self) -> None:
        super().__post_init__()
        require_number("method.patch_loss_weight", self.patch_loss_weight, lo=0.0)
        require_int("method.aggregator_depth", self.aggregator_depth, lo=0)
        require_int("method.num_neighbours", self.num_neighbours)
        if self.neighbour_border not in BORDER_MODES:
            raise ValueError(f"method.neighbour_border must be one of {BORDER_MODES}, got '{self.neighbour_border}'")
        if self.image_center_views not in ("all", "global"):
            raise ValueError(f"method.image_center_views must be 'all' or 'global', got '{self.image_center_views}'")
        if not 1 <= self.num_neighbours <= 8:
            raise ValueError(f"method.num_neighbours must lie in 1..8 (a 3x3 window), got {self.num_neighbours}")


class SelfPatchEncoder(nn.Module):
    """Backbone + aggregation module as one evaluation backbone: `Tokens.cls` is the image
    token SelfPatch trains (`LN(A(q0; X))`), `Tokens.patches` the normalised patch tokens."""

    def __init__(self, vit: nn.Module, aggregator: PatchAggregator) -> None:
        super().__init__()
        self.vit, self.aggregator = vit, aggregator
        self.embed_dim, self.patch_size = vit.embed_dim, vit.patch_size

    def _summarise(self, tokens: Tokens) -> Tokens:
        return Tokens(cls=self.aggregator(tokens.patches), patches=self.aggregator.norm(tokens.patches),
                      grid=tokens.grid)

    def forward(self, x: torch.Tensor) -> Tokens:
        return self._summarise(self.vit(x))

    def last_blocks(self, x: torch.Tensor, n: int) -> list[Tokens]:
        return [self._summarise(t) for t in self.vit.last_blocks(x, n)]


class SelfPatchNetwork(nn.Module):
    """Student or teacher: CLS-free ViT, aggregation module, image head, patch head."""

    def __init__(self, backbone: nn.Module, cfg: SelfPatchConfig) -> None:
        super().__init__()
        dim = backbone.embed_dim
        self.backbone = backbone
        if not hasattr(backbone, "blocks"):  # the aggregator takes its head count from the attention blocks
            raise ValueError(f"selfpatch needs a transformer backbone (its aggregation module attends like the "
                             f"backbone's blocks); {type(backbone).__name__} has no attention: use a ViT, Swin or CvT")
        self.aggregator = PatchAggregator(dim, backbone.blocks[0].attn.num_heads, cfg.aggregator_depth)
        self.image_head = DINOHead(dim, cfg.head)
        self.patch_head = DINOHead(dim, cfg.patch_head)

    def encode(self, views: list[torch.Tensor]) -> list[Tokens]:
        return encode_by_resolution(self.backbone, views)

    def image_tokens(self, groups: list[Tokens]) -> torch.Tensor:
        """(V * B, D) aggregated image tokens of every view, view-major (what evaluation reads)."""
        return torch.cat([self.aggregator(g.patches) for g in groups])

    def image_logits(self, tokens: torch.Tensor, batch: int) -> torch.Tensor:
        """(V, B, K) image-level logits from the (V * B, D) `image_tokens` of every view."""
        return self.image_head(tokens).reshape(-1, batch, self.image_head.last_layer.out_features)

    def patch_logits(self, tokens: torch.Tensor, batch: int) -> torch.Tensor:
        """(V_g * B, N, D) per-patch features -> (V_g, B, N, K_p) patch logits."""
        n, d = tokens.shape[1:]
        logits = self.patch_head(tokens.reshape(-1, d))
        return logits.reshape(-1, batch, n, logits.shape[-1])


class SelfPatch(TeacherStudent):
    """The SelfPatch method: implements `vitssl.engine.protocol.Method`."""

    Config = SelfPatchConfig
    paper = "SelfPatch (Yun et al., CVPR 2022)"
    cpu_preset = "demo_selfpatch_shapes"
    benchmark_setups = (BenchmarkSetup("selfpatch", "SelfPatch ViT-S/16", "selfpatch_vit_small16", 64),)

    def __init__(self, cfg: SelfPatchConfig, backbone: BackboneConfig) -> None:
        backbone = replace(backbone, class_token=False, final_norm=False)
        super().__init__(cfg, *student_and_teacher(backbone, lambda b: SelfPatchNetwork(b, cfg)))
        self.image_center = Center(cfg.head.out_dim, cfg.center_momentum)
        self.patch_loss = PatchLoss(cfg.patch_head.out_dim, cfg.student_temp, cfg.center_momentum)

    def last_layer_heads(self) -> tuple[nn.Module, ...]:
        return (self.student.image_head, self.student.patch_head)

    def centers(self) -> tuple[Center, ...]:
        return (self.image_center, self.patch_loss.center)

    # -- the objective -------------------------------------------------------------------
    def teacher_patch_targets(self, groups: list[Tokens], batch: int) -> list[torch.Tensor]:
        """Per resolution (V_g, B, N, K_p): the patch head on each patch's aggregated positives."""
        k, border = self.cfg.num_neighbours, self.cfg.neighbour_border
        return [self.teacher.patch_logits(aggregate_positives(g.patches, g.grid, self.teacher.aggregator, k, border),
                                          batch) for g in groups]

    def training_step(self, batch: tuple[list[torch.Tensor], torch.Tensor], ctx: StepContext) -> StepOutput:
        views, _ = batch
        b, cfg = views[0].shape[0], self.cfg
        temp = self.teacher_temperature(ctx.epoch)
        teacher_views = views if cfg.teacher_local_views else views[:2]
        with torch.no_grad():
            t_groups = self.teacher.encode(teacher_views)
            t_image = self.teacher.image_logits(self.teacher.image_tokens(t_groups), b)
            t_patch = self.teacher_patch_targets(t_groups, b)
        s_groups = self.student.encode(views)
        s_tokens = self.student.image_tokens(s_groups)
        s_image = self.student.image_logits(s_tokens, b)

        image_loss, probs = image_level_loss(s_image, t_image, self.image_center, temp, cfg.student_temp,
                                             cfg.image_center_views)

        # the student's patch tokens for exactly the views the teacher saw, same grouping
        s_patch = [self.student.patch_logits(self.student.aggregator.norm(s.patches[: len(t.patches)]), b)
                   for s, t in zip(s_groups, t_groups)]
        patch_loss = self.patch_loss(s_patch, t_patch, temp)
        metrics = {"image_loss": image_loss.detach(), "patch_loss": patch_loss.detach(),
                   **self.schedule_metrics(ctx, temp), **(teacher_statistics(probs) if ctx.logged else {})}
        loss = with_koleo(image_loss + cfg.patch_loss_weight * patch_loss, metrics, s_tokens[: 2 * b].split(b),
                          cfg.koleo_weight)
        return StepOutput(loss, metrics)

    def evaluation_backbone(self) -> nn.Module:
        return SelfPatchEncoder(self.teacher.backbone, self.teacher.aggregator)

    def student_backbone(self) -> nn.Module:
        return SelfPatchEncoder(self.student.backbone, self.student.aggregator)

    def backbone_network(self, student: bool = False) -> nn.Module:
        """The CLS-free ViT alone, without the aggregation module (not a timm part)."""
        return (self.student if student else self.teacher).backbone
