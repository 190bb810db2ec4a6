"""Masked-patch distillation for DINO: iBOT's masked image modelling (Zhou et al., ICLR 2022,
arXiv 2111.07832, Sec. 3 and Algorithm 1; bytedance/ibot main_ibot.py), an option of the DINO
method (`method.mim_weight > 0`), not a method of its own.

The student sees its two global crops with some patch embeddings replaced by a learned [MASK]
embedding (`augment/block_masking.py`); the teacher sees them unmasked. The [CLS] loss is DINO's,
computed from the masked student views as in iBOT; each masked patch's output must also predict
the teacher's centred, sharpened output on that patch (`losses/masked_patch.py`). Local crops are
never masked.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vitssl.augment.block_masking import block_masks
from vitssl.engine.validation import fail, require_number, require_probability
from vitssl.heads.dino_head import DINOHead, DINOHeadConfig, prototype_layer
from vitssl.losses.masked_patch import MaskedPatchLoss, picked_patches
from vitssl.methods.views import concat_views, encode_by_resolution


@dataclass
class MaskedPatchConfig:
    """`method.mim.*`; defaults are iBOT's released ViT recipes (bytedance/ibot README:
    `--pred_ratio 0 0.3 --pred_ratio_var 0 0.2 --shared_head true --teacher_temp 0.07`;
    main_ibot.py: `--teacher_patch_temp 0.07`, `--warmup_teacher_patch_temp 0.04`, `center_momentum2`
    0.9, aspect ratios (0.3, 1/0.3)).

    - `ratio`, `ratio_var`: a masked image masks a fraction drawn from [ratio - var, ratio + var];
    - `prob`: the fraction of global crops that are masked at all;
    - `min_aspect`: block aspect ratios lie in [min_aspect, 1 / min_aspect];
    - `teacher_temp`, `warmup_teacher_temp`: the patch targets' temperature, warmed up over
      `method.warmup_teacher_temp_epochs` like the [CLS] one;
    - `center_momentum`: of the patch targets' own center;
    - `shared_head`: patches use the [CLS] head; False gives them their own prototypes on the
      head's shared MLP (the original's `shared_head=False`).
    """

    ratio: float = 0.3
    ratio_var: float = 0.2
    prob: float = 0.5
    min_aspect: float = 0.3
    teacher_temp: float = 0.07
    warmup_teacher_temp: float = 0.04
    center_momentum: float = 0.9
    shared_head: bool = True

    def validate(self, prefix: str) -> None:
        require_number(f"{prefix}.ratio", self.ratio, 0.0, 1.0, lo_open=True, hi_open=True)
        require_number(f"{prefix}.ratio_var", self.ratio_var, lo=0.0)
        if self.ratio_var > min(self.ratio, 1.0 - self.ratio):
            fail(f"{prefix}.ratio_var", self.ratio_var, f"takes the ratio {self.ratio:g} outside [0, 1]",
                 f"use at most {min(self.ratio, 1.0 - self.ratio):g}")
        require_probability(f"{prefix}.prob", self.prob)
        require_number(f"{prefix}.min_aspect", self.min_aspect, 0.0, 1.0, lo_open=True)
        for key in ("teacher_temp", "warmup_teacher_temp"):
            require_number(f"{prefix}.{key}", getattr(self, key), lo=0.0, lo_open=True)
        require_probability(f"{prefix}.center_momentum", self.center_momentum)
        if not isinstance(self.shared_head, bool):
            fail(f"{prefix}.shared_head", self.shared_head, "is not a boolean", "use true or false")


class PatchParts(nn.Module):
    """What a network needs for masked patches beside DINO's: the [MASK] embedding (zeros at
    start, as the original's `masked_embed`) and, without a shared head, patch prototypes."""

    def __init__(self, dim: int, head: DINOHeadConfig, shared_head: bool) -> None:
        super().__init__()
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.last_layer = None if shared_head else prototype_layer(head)

    def logits(self, head: DINOHead, patches: torch.Tensor) -> torch.Tensor:
        """(..., D) patch tokens -> (..., K) logits through `head` (its MLP and, unless
        shared, these prototypes), as one batch."""
        flat = patches.reshape(-1, patches.shape[-1])
        out = head(flat) if self.last_layer is None else self.last_layer(head.embed(flat))
        return out.reshape(*patches.shape[:-1], -1)


@dataclass
class MaskedStep:
    """One step's forward passes with masked global crops (`masked_distillation`).

    `teacher_cls` (2, B, K) [CLS] logits of the unmasked globals; `student_cls` (V, B, K) from
    the masked globals and the unmasked locals, `features` (V, B, D) the backbone features they
    come from; `globals_` (2B, 3, S, S) the global crops and `patches` (2B, N, D) the student's
    final (normed) patch tokens on them, masked where `masks` (2B, N) bool (on the device) is
    True; `mim_loss` L_MIM (None without a patch loss); `masked` the fraction of patches masked.
    """

    teacher_cls: torch.Tensor
    student_cls: torch.Tensor
    features: torch.Tensor
    globals_: torch.Tensor
    patches: torch.Tensor
    masks: torch.Tensor
    mim_loss: torch.Tensor | None
    masked: float


def masked_distillation(student: nn.Module, teacher: nn.Module, loss: MaskedPatchLoss | None,
                        views: list[torch.Tensor], cfg: MaskedPatchConfig, patch_temp: float) -> MaskedStep:
    """One step's forward passes with masked global crops.

    `student`/`teacher` are DINO's `StudentTeacher`s with `mim` parts; without `loss` (only the
    pixel term wants the masks) the teacher's patch head is not run and there is no L_MIM.
    The masks and the indices of the masked patches are made on the host, so picking the
    student's masked tokens (its patch head runs on those only) waits for nothing on a device.
    """
    b, device = views[0].shape[0], views[0].device
    globals_ = concat_views(views[:2])
    patch = student.backbone.patch_size
    grid = (globals_.shape[-2] // patch, globals_.shape[-1] // patch)
    masks = block_masks(2 * b, grid, cfg.ratio, cfg.ratio_var, cfg.prob, cfg.min_aspect)
    if loss is not None:
        picked, weights = (t.to(device, non_blocking=True) for t in picked_patches(masks))
    with torch.no_grad():
        t_tokens = teacher.backbone(globals_)
        t_cls = teacher.head(t_tokens.pooled).reshape(2, b, -1)
        t_patch = teacher.mim.logits(teacher.head, t_tokens.patches) if loss is not None else None
    device_masks = masks.to(device, non_blocking=True)
    s_tokens = student.backbone.forward_with_token_mask(globals_, device_masks, student.mim.mask_token)
    features = torch.cat([s_tokens.pooled, *[t.pooled for t in encode_by_resolution(student.backbone, views[2:])]])
    s_cls = student.head(features).reshape(len(views), b, -1)
    mim = None
    if loss is not None:
        s_patches = s_tokens.patches.reshape(-1, s_tokens.patches.shape[-1]).index_select(0, picked)
        mim = loss(student.mim.logits(student.head, s_patches), t_patch, picked, weights, patch_temp)
    return MaskedStep(t_cls, s_cls, features.reshape(len(views), b, -1), globals_, s_tokens.patches,
                      device_masks, mim, masks.float().mean().item())
