"""D-MAE-Lite: MAE with attention distillation from a frozen MAE teacher (Wang et al., ICML 2023),
MAE-Lite paper, distillation section; wangsr126/mae-lite projects/mae_lite/mae_lite_distill_exp.py.

The student is an ordinary MAE (MAE paper Sec. 3; facebookresearch/mae models_mae.py, MAE-Lite recipe: wangsr126/mae-lite projects/mae_lite/mae_lite_exp.py). Each step, the frozen encoder
of a pre-trained MAE run (typically ViT-B, the student ViT-Tiny or ViT-Small) encodes the same
visible patches, in the same order, as the student. The student's pre-softmax attention logits
q·kᵀ/√d of the chosen blocks (default: the last), mixed over heads by a learnable 1x1 adapter,
regress the teacher's logits of the same blocks:

    L = L_MAE + attn_alpha * sum_l MSE(adapter_l(A_s^l), A_t^l)  [+ hidden_alpha * hidden term]

Only the distilled blocks leave timm's fused attention kernel (`AttentionCapture`). The optional
hidden-state term (off by default, as released) maps LayerNorm'd block inputs of the student to
the teacher's width with a Linear and regresses them the same way.

Layer indices are 0-based and apply to both models, each normalised by its own depth: -1 is the
last block of the student and of the teacher (the released code's `distill_attn_idx=(12,)`).
The teacher is rebuilt from `method.teacher` whenever the method is built (also on resume and
evaluation) and is left out of the method's state dict, so checkpoints hold the student only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from vitssl.backbones import BackboneConfig, create_backbone
from vitssl.backbones.attention_capture import AttentionCapture
from vitssl.engine.checkpoint import CheckpointError, load_checkpoint, load_matching_state
from vitssl.engine.protocol import StepContext, StepOutput
from vitssl.engine.validation import require_int, require_number
from vitssl.heads.attention_mixer import AttentionMixer
from vitssl.losses.attention_distill import distillation_mse
from vitssl.methods.mae import MAE, MAEConfig

TEACHER_METHODS = ("mae", "mae-distill")  # runs whose `encoder.*` weights make a teacher


@dataclass
class MAEDistillConfig(MAEConfig):
    """MAE's options plus the teacher and what to distil; defaults are the released recipe's.

    `teacher`: a vitssl MAE run folder or checkpoint .pt (required); its backbone comes from
    the config saved in it, so it may be larger than the student but must share its patch size.
    """

    name: str = "mae-distill"
    teacher: str = ""
    distill_attn_layers: list[int] = field(default_factory=lambda: [-1])
    attn_alpha: float = 1.0
    distill_hidden_layers: list[int] = field(default_factory=list)
    hidden_alpha: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("attn_alpha", "hidden_alpha"):
            require_number(f"method.{key}", getattr(self, key), lo=0.0)
        for key in ("distill_attn_layers", "distill_hidden_layers"):
            for i, layer in enumerate(getattr(self, key)):
                require_int(f"method.{key}[{i}]", layer)


def load_mae_teacher(path: str) -> nn.Module:
    """The frozen, eval-mode encoder of a vitssl MAE run, built from the config saved with it."""
    try:
        payload = load_checkpoint(path)
    except CheckpointError as e:
        raise CheckpointError(f"method.teacher: {e}") from e
    config, state = payload.get("config"), payload.get("method")
    if not isinstance(config, dict) or not isinstance(state, dict):
        raise CheckpointError(f"method.teacher '{path}' is not a vitssl pre-training checkpoint (no config/method "
                              "entries): pass the run folder or checkpoint.pt of a `vitssl pretrain --method mae` run")
    name = (config.get("method") or {}).get("name")
    if name not in TEACHER_METHODS:
        raise CheckpointError(f"method.teacher '{path}' is a '{name}' run: the teacher must be an MAE run "
                              f"(method {' or '.join(TEACHER_METHODS)})")
    try:
        backbone = BackboneConfig(**(config.get("backbone") or {}))
    except (TypeError, ValueError) as e:  # ValueError: a value this vitssl's checks refuse
        raise CheckpointError(f"method.teacher '{path}' has a backbone config this vitssl cannot read ({e})") from e
    encoder = create_backbone(replace(backbone, pos_embed="sincos", drop_path_rate=0.0))
    prefix = "encoder."
    load_matching_state(encoder, {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, "teacher")
    encoder.requires_grad_(False)
    return encoder.eval()


def resolve_layers(layers: Sequence[int], depth: int, key: str, who: str) -> list[int]:
    """Config block indices (negative allowed) -> distinct indices in 0..depth-1."""
    out = []
    for layer in layers:
        if not -depth <= layer < depth:
            raise ValueError(f"{key} has block {layer}, out of range for the {depth}-block {who}: "
                             f"use 0..{depth - 1} or -{depth}..-1")
        out.append(layer % depth)
    if len(set(out)) != len(out):
        raise ValueError(f"{key} names a block twice for the {who}: {list(layers)}")
    return out


@contextmanager
def normed_block_inputs(vit: nn.Module, layers: Sequence[int]) -> Iterator[dict[int, torch.Tensor]]:
    """While open, records `blocks[i].norm1(x)`, block i's LayerNorm'd input (B, T, D), by i."""
    store: dict[int, torch.Tensor] = {}
    hooks = [vit.blocks[i].norm1.register_forward_hook(lambda m, a, out, i=i: store.__setitem__(i, out))
             for i in layers]
    try:
        yield store
    finally:
        for hook in hooks:
            hook.remove()


def _drop_teacher_state(module: nn.Module, state: dict[str, Any], prefix: str, metadata: Any) -> None:
    for key in [k for k in state if k.startswith(prefix + "teacher.")]:
        del state[key]


def _teacher_not_missing(module: nn.Module, incompatible: Any) -> None:
    incompatible.missing_keys[:] = [k for k in incompatible.missing_keys
                                    if not (k.startswith("teacher.") or ".teacher." in k)]


class MAEDistill(MAE):
    """D-MAE-Lite: implements `vitssl.engine.protocol.Method` on top of `MAE`."""

    Config = MAEDistillConfig
    paper = "MAE-Lite (Wang et al., ICML 2023), D-MAE-Lite"
    cpu_preset = ""  # needs a teacher checkpoint: no preset runs it alone
    benchmark_setups = ()
    run_fields = MappingProxyType({"teacher": "mae"})

    @classmethod
    def evaluation_model(cls, cfg: MAEDistillConfig, backbone: BackboneConfig) -> MAE:
        """The student alone, rebuilt as a plain MAE (the adapters are training-only), so evaluating
        or exporting a D-MAE-Lite run does not need the teacher's checkpoint."""
        shared = {f.name for f in dataclasses.fields(MAEConfig)} - {"name"}
        return MAE(MAEConfig(**{k: v for k, v in vars(cfg).items() if k in shared}), backbone)

    def __init__(self, cfg: MAEDistillConfig, backbone: BackboneConfig) -> None:
        if not cfg.teacher:
            raise ValueError("mae-distill needs a teacher: pass --teacher CHECKPOINT (or method.teacher=PATH), "
                             "the run folder or checkpoint.pt of a vitssl MAE run")
        super().__init__(cfg, backbone)
        self.cfg: MAEDistillConfig = cfg
        self.teacher = load_mae_teacher(cfg.teacher)  # after MAE's init: keeps its loaded weights
        student, teacher = self.encoder, self.teacher
        if (teacher.patch_size, teacher.num_prefix_tokens) != (student.patch_size, student.num_prefix_tokens):
            raise ValueError(
                f"teacher '{cfg.teacher}' has patch size {teacher.patch_size} and {teacher.num_prefix_tokens} CLS "
                f"token(s), the student {student.patch_size} and {student.num_prefix_tokens}: their attention maps "
                "cover different tokens; use a teacher with the student's patch size")
        self.attn_layers = self._layer_pairs(cfg.distill_attn_layers, cfg.attn_alpha, "method.distill_attn_layers")
        self.hidden_layers = self._layer_pairs(cfg.distill_hidden_layers, cfg.hidden_alpha,
                                               "method.distill_hidden_layers")
        self.attn_adapters = nn.ModuleList([
            AttentionMixer(student.blocks[s].attn.num_heads, teacher.blocks[t].attn.num_heads)
            for s, t in self.attn_layers])
        self.hidden_adapters = nn.ModuleList([
            nn.Linear(student.embed_dim, teacher.embed_dim, bias=False) for _ in self.hidden_layers])
        self.register_state_dict_post_hook(_drop_teacher_state)
        self.register_load_state_dict_post_hook(_teacher_not_missing)

    def _layer_pairs(self, layers: Sequence[int], alpha: float, key: str) -> list[tuple[int, int]]:
        """(student block, teacher block) pairs of a term; none when its weight is 0 (term off)."""
        if alpha == 0:
            return []
        student = resolve_layers(layers, len(self.encoder.blocks), key, "student")
        teacher = resolve_layers(layers, len(self.teacher.blocks), key, "teacher")
        return list(zip(student, teacher))

    def train(self, mode: bool = True) -> MAEDistill:
        """The teacher stays in eval mode whatever the trainer asks."""
        super().train(mode)
        self.teacher.eval()
        return self

    # -- model: MAE's `forward` and `forward_with_keep` ------------------------------------
    @torch.no_grad()
    def teacher_targets(self, images: torch.Tensor, ids_keep: torch.Tensor
                        ) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
        """The teacher's logits and normed block inputs, by teacher block, on the student's visible patches."""
        with AttentionCapture(self.teacher, [t for _, t in self.attn_layers]) as attn, \
                normed_block_inputs(self.teacher, [t for _, t in self.hidden_layers]) as hidden:
            self.teacher.forward_masked(images, ids_keep)
        return attn.logits, hidden

    # -- optimisation --------------------------------------------------------------------
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], ctx: StepContext) -> StepOutput:
        images, _ = batch
        with AttentionCapture(self.encoder, [s for s, _ in self.attn_layers]) as attn, \
                normed_block_inputs(self.encoder, [s for s, _ in self.hidden_layers]) as hidden:
            pred, mask, ids_keep = self.forward_with_keep(images)
        mae_loss = self.loss(pred, images, mask)
        loss, metrics = mae_loss, {"mae_loss": mae_loss.detach()}
        if not (self.attn_layers or self.hidden_layers):
            return StepOutput(loss, metrics)
        teacher_attn, teacher_hidden = self.teacher_targets(images, ids_keep)
        if self.attn_layers:
            attn_loss = sum(distillation_mse(adapter(attn.logits[s]), teacher_attn[t], "attention")
                            for adapter, (s, t) in zip(self.attn_adapters, self.attn_layers))
            loss = loss + self.cfg.attn_alpha * attn_loss
            metrics["attn_loss"] = attn_loss.detach()
        if self.hidden_layers:
            hidden_loss = sum(distillation_mse(adapter(hidden[s]), teacher_hidden[t], "hidden-state")
                              for adapter, (s, t) in zip(self.hidden_adapters, self.hidden_layers))
            loss = loss + self.cfg.hidden_alpha * hidden_loss
            metrics["hidden_loss"] = hidden_loss.detach()
        return StepOutput(loss, metrics)
