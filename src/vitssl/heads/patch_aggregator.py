"""SelfPatch's aggregation module (SelfPatch paper Sec. 3; alinlab/SelfPatch selfpatch_vision_transformer.py): a learned query reads a set of tokens.

Two CaiT-style class-attention blocks: only the query token attends (keys and values are
[query; set]), pre-norm, MLP ratio 4, no drop-path, then a LayerNorm. With no position
information and one query, the output does not depend on the order of the set, which is
what lets the same module summarise a whole view (SelfPatch's image token) and a handful of
neighbouring patches (its patch targets).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn


class ClassAttention(nn.Module):
    """Multi-head attention with one query (the first token) over all tokens."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"aggregator width {dim} is not divisible by its {num_heads} heads")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, 1+n, D), key_mask (B, 1+n) bool (True = attend) -> (B, 1, D)."""
        b, t, d = x.shape
        h = self.num_heads
        q = self.q(x[:, :1]).reshape(b, 1, h, d // h).transpose(1, 2)
        k, v = self.kv(x).reshape(b, t, 2, h, d // h).permute(2, 0, 3, 1, 4)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(b, 1, d))


class ClassAttentionBlock(nn.Module):
    """`q <- q + CA(LN([q; set]))`, `q <- q + MLP(LN(q))`: the set itself is not updated."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ClassAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, tokens: torch.Tensor, query: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        query = query + self.attn(self.norm1(torch.cat([query, tokens], dim=1)), key_mask)
        return query + self.mlp(self.norm2(query))


class PatchAggregator(nn.Module):
    """`A(q0; X)` followed by LayerNorm; `norm` is also SelfPatch's per-patch normalisation."""

    def __init__(self, dim: int, num_heads: int, depth: int = 2, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(ClassAttentionBlock(dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        nn.init.trunc_normal_(self.query, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, tokens: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, n, D), valid (B, n) bool or None (all valid) -> (B, D) normalised summary.

        Invalid tokens are masked out of the attention; the query always attends to itself,
        so an all-invalid set still gives a finite output.
        """
        b = tokens.shape[0]
        key_mask = None
        if valid is not None:
            key_mask = torch.cat([valid.new_ones(b, 1), valid], dim=1)
        query = self.query.expand(b, -1, -1).to(tokens.dtype)
        for block in self.blocks:
            query = block(tokens, query, key_mask)
        return self.norm(query[:, 0])
