"""Capture pre-softmax attention logits (q·kᵀ·scale) of chosen ViT blocks.

D-MAE-Lite distils the teacher's last-block attention logits into the student (MAE-Lite paper, distillation section; wangsr126/mae-lite projects/mae_lite/mae_lite_distill_exp.py), and
the analysis tools read attention maps (MAE-Lite paper, layer and attention analyses; wangsr126/mae-lite projects/eval_tools/). The reference code forces every block onto
an explicit attention path so that a hook can see the logits; here only the chosen blocks take
that path, for as long as the context is open, and every other block keeps timm's fused
`scaled_dot_product_attention`. The captured logits are the very tensor the block's output is
computed from, so there is no second computation and a loss on them reaches the student.

    with AttentionCapture(student, layers=[-1]) as cap:
        out = student(x)
    loss = F.mse_loss(mixer(cap.logits[depth - 1]), teacher_logits)
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from torch import nn

from vitssl.engine.wording import counted

_REQUIRED = ("qkv", "num_heads", "head_dim", "scale", "q_norm", "k_norm", "attn_drop", "proj", "proj_drop")
_NO_FORWARD = object()  # marks "no instance-level forward before we came"


def additive_mask(attn_mask: torch.Tensor | None, is_causal: bool, n: int, like: torch.Tensor) -> torch.Tensor | None:
    """SDPA's mask semantics as an additive bias: bool True = may attend, float = added as is."""
    if is_causal:
        return torch.full((n, n), float("-inf"), dtype=like.dtype, device=like.device).triu_(1)
    if attn_mask is None or attn_mask.dtype != torch.bool:
        return attn_mask
    return torch.zeros_like(attn_mask, dtype=like.dtype).masked_fill_(~attn_mask, float("-inf"))


def _capturing_forward(attn: nn.Module, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                       is_causal: bool = False, *, capture: AttentionCapture, layer: int) -> torch.Tensor:
    """timm `Attention.forward` on the explicit path, recording the logits before the softmax."""
    b, n, _ = x.shape
    width = attn.num_heads * attn.head_dim
    gate = attn.gate(x).sigmoid() if getattr(attn, "gate", None) is not None else None
    q, k, v = attn.qkv(x).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    logits = (q * attn.scale) @ k.transpose(-2, -1)  # (B, heads, T, T)
    bias = additive_mask(attn_mask, is_causal, n, logits)
    capture.logits[layer] = logits
    capture.biases[layer] = bias
    probs = (logits if bias is None else logits + bias).softmax(dim=-1)
    out = (attn.attn_drop(probs) @ v).transpose(1, 2).reshape(b, n, width)
    if getattr(attn, "norm", None) is not None:  # timm's optional output norm (scale_norm)
        out = attn.norm(out)
    if gate is not None:
        out = out * gate
    return attn.proj_drop(attn.proj(out))


class AttentionCapture:
    """Context manager recording the attention logits of `model.blocks[i]` for i in `layers`.

    `logits[i]` (non-negative i) holds the latest (B, heads, T, T) logits of block i, with the
    autograd graph when grad is enabled; any attn_mask is *not* included (it is kept apart and
    applied by `probs`), so a distillation loss never sees -inf. On exit the blocks' forwards
    are restored exactly; the recorded logits stay readable.
    """

    def __init__(self, model: nn.Module, layers: Sequence[int]) -> None:
        blocks = getattr(model, "blocks", None)
        if not isinstance(blocks, (nn.Sequential, nn.ModuleList)):
            raise ValueError(f"{type(model).__name__} has no `.blocks` list of transformer blocks: "
                             "pass the ViT itself (e.g. the `.vit` of a wrapper)")
        depth = len(blocks)
        self.layers: tuple[int, ...] = tuple(dict.fromkeys(_normalise(i, depth) for i in layers))
        self._attns = {i: blocks[i].attn for i in self.layers}
        for i, attn in self._attns.items():
            missing = [name for name in _REQUIRED if not hasattr(attn, name)]
            if missing:
                raise TypeError(f"blocks[{i}].attn ({type(attn).__name__}) lacks {missing}: "
                                "capture supports timm's `Attention` only")
        self.depth = depth
        self.logits: dict[int, torch.Tensor] = {}
        self.biases: dict[int, torch.Tensor | None] = {}
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> AttentionCapture:
        if self._saved:
            raise RuntimeError("this AttentionCapture is already open: make a new one for a nested capture")
        for i, attn in self._attns.items():
            previous = attn.__dict__.get("forward", _NO_FORWARD)
            if getattr(previous, "func", None) is _capturing_forward:
                self._restore()
                raise RuntimeError(f"block {i} is already captured by another AttentionCapture: "
                                   "capture it once and read that capture's logits")
            self._saved[i] = previous
            attn.forward = partial(_capturing_forward, attn, capture=self, layer=i)
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()

    def _restore(self) -> None:
        for i, previous in self._saved.items():
            attn = self._attns[i]
            if previous is _NO_FORWARD:
                del attn.forward
            else:
                attn.forward = previous
        self._saved = {}

    def probs(self, layer: int) -> torch.Tensor:
        """(B, heads, T, T) attention weights of `layer`: softmax of its logits (and mask, if any)."""
        i = _normalise(layer, self.depth)
        if i not in self.logits:
            raise KeyError(f"no logits for block {i}: capture it (layers={list(self.layers)}) "
                           "and run a forward inside the `with` block first")
        bias = self.biases.get(i)
        logits = self.logits[i]
        return (logits if bias is None else logits + bias).softmax(dim=-1)

    def clear(self) -> None:
        """Drop the recorded tensors (and the graphs they hold)."""
        self.logits.clear()
        self.biases.clear()


def _normalise(layer: int, depth: int) -> int:
    if not -depth <= layer < depth:
        raise IndexError(f"block index {layer} is out of range for a model with {counted(depth, 'block')}: "
                         f"use 0..{depth - 1} or -{depth}..-1")
    return layer % depth
