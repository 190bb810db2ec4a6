"""Swin Transformer backbone for EsViT (EsViT paper Sec. 3.1; microsoft/esvit models/ and experiments/imagenet/) over timm's implementation, returning `Tokens`.

Keeps timm's modules and parameter names (weights export to timm's `SwinTransformer` unchanged)
and changes only how a block runs its windows on inputs other than the construction size:

- Window and shift per stage are fixed at construction from the `img_size` grid, as in the
  original: a stage whose grid is no larger than W attends globally (window = grid, no shift).
  Smaller crops (DINO's 96² locals) keep those windows and are zero-padded up to them.
- The order is the original's: pad the map to a multiple of the window, then roll by the shift,
  with the shifted-window mask computed for the padded size.
- By default padded tokens are masked out of attention, so they never act as keys for real
  tokens. `mask_padding=False` reproduces the original's unmasked zero padding (microsoft/esvit
  models/swin_transformer.py) for checkpoints trained with it.
- Masks are cached per (map size, device, dtype) instead of rebuilt every step.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from timm.models.swin_transformer import (
    SwinTransformer,
    SwinTransformerBlock,
    window_partition,
    window_reverse,
)
from torch import nn

from vitssl.backbones.tokens import Tokens

SHIFT_MASK_VALUE = -100.0  # the original's penalty between shift regions sharing a window


def _axis_labels(size: int, real: int, window: int, shift: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per position of one padded, rolled axis: its shift region (0-2) and whether it is padding.

    Regions follow the original's slices of the padded axis, [0, size-W), [size-W, size-s),
    [size-s, size): after the roll by -s the last s positions hold tokens wrapped around
    from the start of the map. Rolled position r holds padded position (r + s) % size.
    """
    pos = torch.arange(size)
    region = (pos >= size - window).long() + (pos >= size - shift).long() if shift else torch.zeros_like(pos)
    return region, (pos + shift) % size >= real


def window_attention_mask(
    grid: tuple[int, int],
    window: tuple[int, int],
    shift: tuple[int, int],
    mask_padding: bool = True,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor | None:
    """(nW, N, N) additive attention mask of one block, or None when nothing is masked.

    The (h, w) map is padded at the bottom and right to multiples of `window`, rolled by
    -`shift`, and cut into nW windows of N tokens (timm's window order). Tokens from different
    shift regions get `SHIFT_MASK_VALUE` (the original's -100); with `mask_padding`, padding
    keys get -inf for real queries. Padding queries are left unmasked: their outputs are
    discarded, and keeping each row finite keeps gradients free of NaN.
    """
    (h, w), (wh, ww), (sh, sw) = grid, window, shift
    hp, wp = -(-h // wh) * wh, -(-w // ww) * ww
    if not any(shift) and not (mask_padding and (hp, wp) != (h, w)):
        return None
    region_h, pad_h = _axis_labels(hp, h, wh, sh)
    region_w, pad_w = _axis_labels(wp, w, ww, sw)
    region = (region_h[:, None] * 3 + region_w[None, :]).reshape(1, hp, wp, 1)
    padding = (pad_h[:, None] | pad_w[None, :]).reshape(1, hp, wp, 1)
    region = window_partition(region, (wh, ww)).reshape(-1, wh * ww)
    padding = window_partition(padding, (wh, ww)).reshape(-1, wh * ww)
    mask = torch.zeros(region.shape[0], wh * ww, wh * ww)
    mask.masked_fill_(region[:, :, None] != region[:, None, :], SHIFT_MASK_VALUE)
    if mask_padding:
        mask.masked_fill_(padding[:, None, :] & ~padding[:, :, None], float("-inf"))
    return mask.to(device=device, dtype=dtype)


class PaddedWindowBlock(SwinTransformerBlock):
    """timm's Swin block with the original's pad-then-shift order and an optional padding mask.

    Not built directly: `Swin` converts timm's blocks in place, so parameters, names and
    initialisation stay timm's. Only the window step (`_attn`) differs.
    """

    mask_padding: bool
    _masks: dict[tuple, torch.Tensor | None]

    def _mask(self, grid: tuple[int, int], x: torch.Tensor) -> torch.Tensor | None:
        key = (grid, x.device, x.dtype, self.mask_padding)
        if key not in self._masks:
            self._masks[key] = window_attention_mask(
                grid, self.window_size, self.shift_size, self.mask_padding, x.device, x.dtype
            )
        return self._masks[key]

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) normed tokens -> (B, H, W, C) windowed attention output."""
        _, h, w, c = x.shape
        (wh, ww), (sh, sw) = self.window_size, self.shift_size
        padded = F.pad(x, (0, 0, 0, -w % ww, 0, -h % wh))
        hp, wp = padded.shape[1:3]
        if sh or sw:
            padded = torch.roll(padded, shifts=(-sh, -sw), dims=(1, 2))
        windows = window_partition(padded, self.window_size).reshape(-1, self.window_area, c)
        windows = self.attn(windows, mask=self._mask((h, w), x))
        out = window_reverse(windows.reshape(-1, wh, ww, c), self.window_size, hp, wp)
        if sh or sw:
            out = torch.roll(out, shifts=(sh, sw), dims=(1, 2))
        return out[:, :h, :w].contiguous()


class Swin(SwinTransformer):
    """Swin Transformer as EsViT uses it (EsViT paper Sec. 3.1; microsoft/esvit models/ and experiments/imagenet/): patch 4 with patch norm, relative position
    bias, shifted windows on odd blocks, LayerNorm eps 1e-6, qkv bias, MLP ratio 4, final norm,
    no absolute position embedding and no classifier.

    `forward(x)` returns the last-stage tokens after the final norm, so `Tokens.pooled` (their
    mean) is EsViT's view feature and `Tokens.patches` its region tokens. Inputs may be any size
    that is a multiple of the patch-embedding stride `embed_stride` (4); `patch_size` is the
    total stride (32), the granularity evaluations should pick image sizes in. `embed_dim` and
    `num_features` are the output width (timm keeps the stage-1 width in `embed_dim`; here it
    is the output width, as for every vitssl backbone).
    """

    def __init__(
        self,
        embed_dim: int = 96,
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (3, 6, 12, 24),
        window_size: int = 7,
        patch_size: int = 4,
        img_size: int = 224,
        drop_path_rate: float = 0.0,
        mlp_ratio: float = 4.0,
        final_norm: bool = True,
        mask_padding: bool = True,
    ) -> None:
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            num_classes=0,
            embed_dim=embed_dim,
            depths=tuple(depths),
            num_heads=tuple(num_heads),
            window_size=window_size,
            strict_img_size=False,
            mlp_ratio=mlp_ratio,
            qkv_bias=True,
            drop_path_rate=drop_path_rate,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
        )
        self.embed_dim = self.num_features
        self.embed_stride = patch_size
        self.patch_size = patch_size * 2 ** (len(depths) - 1)
        if not final_norm:
            self.norm = nn.Identity()
        for block in self.blocks:
            block.__class__ = PaddedWindowBlock  # same modules and parameters; our window step
            block._masks = {}
            block.attn.fused_attn = True  # scaled_dot_product_attention (timm marks it experimental)
        self.mask_padding = mask_padding

    @property
    def mask_padding(self) -> bool:
        """Whether padded tokens are masked out of attention (False: the original's behaviour)."""
        return self.blocks[0].mask_padding

    @mask_padding.setter
    def mask_padding(self, value: bool) -> None:
        for block in self.blocks:
            block.mask_padding = value

    @property
    def blocks(self) -> list[PaddedWindowBlock]:
        """All blocks in order, across stages (like ViT's `blocks`)."""
        return [block for stage in self.layers for block in stage.blocks]

    def _check_size(self, x: torch.Tensor) -> None:
        h, w = x.shape[-2:]
        if h % self.embed_stride or w % self.embed_stride:
            raise ValueError(
                f"input {h}x{w} is not a multiple of the patch size {self.embed_stride}; "
                f"resize or crop images to a multiple of {self.embed_stride}"
            )

    @staticmethod
    def _tokens(x: torch.Tensor) -> Tokens:
        b, h, w, c = x.shape
        return Tokens(cls=None, patches=x.reshape(b, h * w, c), grid=(h, w))

    def forward(self, x: torch.Tensor) -> Tokens:
        """(B, 3, H, W) images -> last-stage Tokens (B, h*w, C) after the final norm, no CLS."""
        self._check_size(x)
        return self._tokens(self.forward_features(x))

    def last_blocks(self, x: torch.Tensor, n: int) -> list[Tokens]:
        """Tokens of the last n blocks across stage boundaries (EsViT's linear-probe features).

        Blocks of the last stage pass through the final norm, earlier ones are returned as they
        are, as in EsViT's `forward_return_n_last_blocks`; the probe concatenates their
        `.pooled` means (Swin-T, n=4: 384 + 384 + 768 + 768 = 2304).
        """
        self._check_size(x)
        first = len(self.blocks) - n
        x = self.patch_embed(x)
        outputs, index = [], 0
        for i, stage in enumerate(self.layers):
            x = stage.downsample(x)
            for block in stage.blocks:
                x = block(x)
                if index >= first:
                    outputs.append(self._tokens(self.norm(x) if i == len(self.layers) - 1 else x))
                index += 1
        return outputs

    def no_weight_decay(self) -> set[str]:
        """Empty on purpose, as for ViT: param groups decide. EsViT decays the relative position
        bias tables (microsoft/esvit models/swin_transformer.py no_weight_decay_keywords); exempt them with `no_weight_decay_names`."""
        return set()
