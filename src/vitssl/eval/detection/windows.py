"""ViTDet's windowed attention for a plain ViT in a detector (Li et al. 2022, sec. 3 "Backbone
adaptation"; detectron2 `ViT(window_size=14, window_block_indexes=...)`).

Most blocks attend within non-overlapping `window` x `window` squares of the patch grid; a few
("global" blocks, 2, 5, 8, 11 of a 12-block ViT: the last of each quarter) keep attending over
the whole map and carry information across windows. The cost of a windowed block is linear in
the number of patches (each window's score matrix is (window² + prefix)²) instead of quadratic.

Applied to the detection copy of a ViT only: the block's attention module keeps its class and
parameters (so checkpoints, layer decay and export read the same names); its forward
partitions the grid, runs the module's own attention on each window, and reassembles.
Details, as implemented here:
- a grid not divisible by the window is padded with zero tokens (as ViTDet) that are masked
  out as keys, so padding changes nothing; a window larger than the grid shrinks to it;
- prefix tokens (CLS) join every window as extra keys and queries; their output is the mean
  over the windows (ViTDet has no CLS token in the detector);
- no relative position bias (ViTDet adds decomposed relative positions, initialised to zero):
  positions stay the pre-trained absolute embedding, interpolated to the detection grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vitssl.backbones import ViT


def _windows(x: torch.Tensor, grid: tuple[int, int], window: int) -> tuple[torch.Tensor, torch.Tensor | None,
                                                                             tuple[int, int, int, int]]:
    """(B, h*w, C) patch tokens -> (B*n, wh*ww, C) windows, the key-padding mask (None without
    padding) and the layout (wh, ww, rows, cols) needed to put them back."""
    b, _, c = x.shape
    h, w = grid
    wh, ww = min(window, h), min(window, w)
    ph, pw = -h % wh, -w % ww
    x = F.pad(x.reshape(b, h, w, c), (0, 0, 0, pw, 0, ph))
    rows, cols = (h + ph) // wh, (w + pw) // ww
    out = x.reshape(b, rows, wh, cols, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(b * rows * cols, wh * ww, c)
    mask = None
    if ph or pw:
        valid = torch.zeros(h + ph, w + pw, dtype=torch.bool, device=x.device)
        valid[:h, :w] = True
        mask = valid.reshape(rows, wh, cols, ww).permute(0, 2, 1, 3).reshape(rows * cols, wh * ww)
        mask = mask.repeat(b, 1)
    return out, mask, (wh, ww, rows, cols)


def _unwindow(x: torch.Tensor, b: int, grid: tuple[int, int], layout: tuple[int, int, int, int]) -> torch.Tensor:
    wh, ww, rows, cols = layout
    c = x.shape[-1]
    x = x.reshape(b, rows, cols, wh, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(b, rows * wh, cols * ww, c)
    return x[:, :grid[0], :grid[1]].reshape(b, grid[0] * grid[1], c)


class WindowedAttention(nn.Module):
    """Mixin class swapped onto a timm `Attention` instance: same parameters, windowed forward.
    `window_state["grid"]` is the current patch grid, set by the ViT's forward pre-hook."""

    window: int
    prefix: int
    window_state: dict

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            raise ValueError("windowed attention takes no attention mask")
        grid, p, (b, _, c) = self.window_state["grid"], self.prefix, x.shape
        patches, key_ok, layout = _windows(x[:, p:], grid, self.window)
        n = len(patches) // b
        if p:
            patches = torch.cat([x[:, :p].repeat_interleave(n, dim=0), patches], dim=1)
            if key_ok is not None:
                key_ok = torch.cat([key_ok.new_ones(len(key_ok), p), key_ok], dim=1)
        mask = key_ok[:, None, None, :] if key_ok is not None else None
        out = super().forward(patches, attn_mask=mask)
        merged = _unwindow(out[:, p:], b, grid, layout)
        if not p:
            return merged
        return torch.cat([out[:, :p].reshape(b, n, p, c).mean(dim=1), merged], dim=1)


_WINDOWED: dict[type, type] = {}


def _windowed_class(cls: type) -> type:
    """`cls` with `WindowedAttention`'s forward, made once per attention class."""
    if issubclass(cls, WindowedAttention):
        return cls
    if cls not in _WINDOWED:
        _WINDOWED[cls] = type(f"Windowed{cls.__name__}", (WindowedAttention, cls), {})
    return _WINDOWED[cls]


def window_attention(vit: ViT, window: int, global_blocks: Sequence[int]) -> None:
    """Make every block of `vit` not in `global_blocks` attend within `window` x `window` windows
    (in place, for the detector's copy); a one-line error for indices outside the ViT."""
    depth = len(vit.blocks)
    if window < 1:
        raise ValueError(f"window size {window} must be >= 1 (ViTDet: 14)")
    wrong = [i for i in global_blocks if not 0 <= i < depth]
    if wrong:
        raise ValueError(f"global attention blocks {list(global_blocks)} include {wrong}, outside this "
                         f"{depth}-block ViT: give indices 0..{depth - 1} (ViTDet, 12 blocks: 2, 5, 8, 11)")
    state: dict = {}
    for i, block in enumerate(vit.blocks):
        if i in global_blocks:
            continue
        attn = block.attn
        attn.__class__ = _windowed_class(type(attn))
        attn.window, attn.prefix, attn.window_state = window, int(vit.num_prefix_tokens), state
    vit.register_forward_pre_hook(lambda module, args: state.__setitem__("grid", module._grid(args[0])))
    vit.attention_windows = {"window": window, "global_blocks": list(global_blocks)}
