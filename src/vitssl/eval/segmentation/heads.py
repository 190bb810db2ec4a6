"""Segmentation heads trained with (or on) a backbone: Semantic FPN, UperNet (`upernet`) and a
linear head.

Semantic FPN (Kirillov et al. 2019, Panoptic FPN sec. 3; the head of SelfPatch's ADE20K
protocol, mmseg `FPNHead`): every pyramid level goes through 3x3 conv + norm + ReLU stages, each
level upsampled 2x per stage until stride 4 (level 0: one stage, no upsampling); the four maps
are summed and a 1x1 convolution gives the class logits. The pyramid is the detector's
(`eval.detection.pyramid`): four ViT blocks for a plain ViT (SelfPatch's out_indices), stage
outputs through an FPN for Swin, CvT and ResNet.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vitssl.eval.detection.pyramid import build_pyramid
from vitssl.eval.segmentation.upernet import POOL_SCALES, UperNetHead, upernet_features

HEADS = ("linear", "fpn", "upernet")
HEAD_CHANNELS = {"fpn": 128, "upernet": 512, "linear": 0}  # mmseg FPNHead / UPerHead `channels`


def _norm(channels: int) -> nn.GroupNorm:
    """GroupNorm (up to 32 groups): batch-size independent, unlike mmseg's SyncBN at 4 images/GPU."""
    return nn.GroupNorm(math.gcd(32, channels), channels)


def _stage(c_in: int, c_out: int, upsample: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), _norm(c_out), nn.ReLU(inplace=True)]
    if upsample:
        layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
    return nn.Sequential(*layers)


class SemanticFPNHead(nn.Module):
    """Pyramid levels '0'..'3' (strides s, 2s, 4s, 8s; width `in_channels`) -> logits at stride s."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, levels: int = 4) -> None:
        super().__init__()
        self.scale_heads = nn.ModuleList()
        for level in range(levels):
            n = max(1, level)
            self.scale_heads.append(nn.Sequential(*[_stage(in_channels if i == 0 else channels, channels, level > 0)
                                                    for i in range(n)]))
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        out = None
        for level, head in enumerate(self.scale_heads):
            y = head(features[str(level)])
            if out is not None and y.shape[-2:] != out.shape[-2:]:
                y = F.interpolate(y, size=out.shape[-2:], mode="bilinear", align_corners=False)
            out = y if out is None else out + y
        return self.classifier(out)


class LinearHead(nn.Module):
    """1x1 convolution on the backbone's last patch map (the probe's head, here trainable end to end)."""

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.body = backbone
        self.classifier = nn.Conv2d(int(self.body.embed_dim), num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from vitssl.eval.segmentation.probe import patch_feature_maps

        return self.classifier(patch_feature_maps(self.body, x))


class Segmenter(nn.Module):
    """Backbone + head; `forward` gives logits upsampled to the input size. `body` is the
    vitssl backbone (layer decay and freezing read it)."""

    def __init__(self, backbone: nn.Module, num_classes: int, head: str = "fpn", fpn_channels: int = 256,
                 head_channels: int | None = None, pool_scales: Sequence[int] = POOL_SCALES) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown segmentation head '{head}': use one of {HEADS}")
        head_channels = head_channels or HEAD_CHANNELS[head]
        if head == "upernet":
            self.pyramid, widths = upernet_features(backbone, fpn_channels)
            self.head: nn.Module = UperNetHead(widths, head_channels, num_classes, pool_scales)
            self.body = self.pyramid.body
        elif head == "fpn":
            self.pyramid = build_pyramid(backbone, fpn_channels, "blocks")
            self.head = SemanticFPNHead(fpn_channels, head_channels, num_classes)
            self.body = self.pyramid.body
        else:
            self.pyramid = None
            self.head = LinearHead(backbone, num_classes)
            self.body = self.head.body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.pyramid(x)) if self.pyramid is not None else self.head(x)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
