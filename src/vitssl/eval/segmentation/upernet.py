"""UperNet head (Xiao et al. 2018, "Unified Perceptual Parsing", sec. 3.1), the ADE20K head of
BEiT, MAE and Swin (mmseg `UPerHead`).

A pyramid pooling module (PSPNet's PPM) on the coarsest level: the map average-pooled to s x s
for each pool scale s, each through a 1x1 convolution, upsampled back, concatenated with the map
and fused by a 3x3 convolution. It tops an FPN over all levels: 1x1 laterals, top-down
upsample-and-add, a 3x3 convolution per level; every level is then upsampled to the finest,
concatenated and fused by a 3x3 convolution before the 1x1 classifier.

Features: for a plain ViT, four blocks through the `blocks` pyramid of `eval.detection.pyramid`
(BEiT's and MAE's deconvolution / identity / max-pool adapters); for Swin, CvT and ResNet, their
raw stage outputs, since UperNet brings its own FPN. Not included: mmseg's auxiliary FCN head
(a second loss on level 2, weight 0.4).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vitssl.backbones import ViT
from vitssl.eval.detection.pyramid import (
    ViTPyramid,
    build_pyramid,
    require_adaptable,
    stage_maps,
    stage_widths,
)

POOL_SCALES = (1, 2, 3, 6)  # PSPNet's, kept by UperNet and mmseg's UPerHead


def check_pool_scales(scales: Sequence[int]) -> tuple[int, ...]:
    """The pool scales as a tuple, or a one-line error: distinct whole numbers >= 1."""
    values = tuple(scales)
    if not values or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in values):
        raise ValueError(f"pool scales {list(values)} must be whole numbers >= 1, e.g. 1,2,3,6 (UperNet's)")
    if len(set(values)) != len(values):
        raise ValueError(f"pool scales {list(values)} repeat a scale: give each output size once, e.g. 1,2,3,6")
    return values


def _conv(c_in: int, c_out: int, kernel: int) -> nn.Sequential:
    """Conv + GroupNorm + ReLU (GroupNorm for mmseg's SyncBN: batch-size independent)."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
                         nn.GroupNorm(math.gcd(32, c_out), c_out), nn.ReLU(inplace=True))


def _resize(x: torch.Tensor, size: torch.Size) -> torch.Tensor:
    return x if x.shape[-2:] == size else F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class PyramidPooling(nn.Module):
    """PPM: pooled branches (conv with bias + ReLU, no norm: a per-image norm would erase the 1x1
    branch) concatenated with the input and fused by a 3x3 conv + norm + ReLU."""

    def __init__(self, in_channels: int, channels: int, pool_scales: Sequence[int] = POOL_SCALES) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), nn.Conv2d(in_channels, channels, 1), nn.ReLU(inplace=True))
            for s in check_pool_scales(pool_scales))
        self.bottleneck = _conv(in_channels + len(self.branches) * channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = [_resize(branch(x), x.shape[-2:]) for branch in self.branches]
        return self.bottleneck(torch.cat([x, *pooled], dim=1))


class UperNetHead(nn.Module):
    """Levels '0'..'n-1' (finest first, widths `in_channels`) -> logits at the finest stride."""

    def __init__(self, in_channels: Sequence[int], channels: int, num_classes: int,
                 pool_scales: Sequence[int] = POOL_SCALES, dropout: float = 0.1) -> None:
        super().__init__()
        *fine, coarsest = list(in_channels)
        self.ppm = PyramidPooling(coarsest, channels, pool_scales)
        self.laterals = nn.ModuleList(_conv(c, channels, 1) for c in fine)
        self.smooth = nn.ModuleList(_conv(channels, channels, 3) for _ in fine)
        self.fuse = _conv(len(in_channels) * channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)  # mmseg's decode heads: 0.1 before the classifier
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        maps = [features[str(i)] for i in range(len(self.laterals) + 1)]
        levels = [lateral(m) for lateral, m in zip(self.laterals, maps)] + [self.ppm(maps[-1])]
        for i in range(len(levels) - 1, 0, -1):  # top-down: each coarser level added to the next finer
            levels[i - 1] = levels[i - 1] + _resize(levels[i], levels[i - 1].shape[-2:])
        outs = [smooth(level) for smooth, level in zip(self.smooth, levels)] + [levels[-1]]
        size = outs[0].shape[-2:]
        fused = self.fuse(torch.cat([_resize(o, size) for o in outs], dim=1))
        return self.classifier(self.dropout(fused))


class StageMaps(nn.Module):
    """A hierarchical backbone's four stage outputs as levels '0'..'3' (no FPN: UperNet has one)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.body, self.widths = backbone, stage_widths(backbone)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict((str(i), m) for i, m in enumerate(stage_maps(self.body, x)))


def upernet_features(backbone: nn.Module, vit_channels: int) -> tuple[nn.Module, list[int]]:
    """The multi-level adapter UperNet reads for `backbone`, and the widths of its four levels."""
    if isinstance(backbone, ViT):
        pyramid = build_pyramid(backbone, vit_channels, "blocks")
        assert isinstance(pyramid, ViTPyramid)
        return pyramid, [vit_channels] * 4
    require_adaptable(backbone)  # the other dense heads' one-line refusal
    maps = StageMaps(backbone)
    return maps, maps.widths
