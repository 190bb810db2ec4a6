"""Multi-scale feature maps from any vitssl backbone, for Mask R-CNN and Semantic FPN.

A plain ViT has one map at stride P (the patch size). ViTDet (Li et al. 2022, sec. 3) builds
strides P/4 .. 2P from that last map alone: two stride-2 transposed convolutions, one, the map
itself, and a 2x2 max-pool, each followed by a 1x1 and a 3x3 convolution with LayerNorm.
SelfPatch's adapters instead take four blocks and send each to its own stride (`blocks`
pyramid): blocks 4, 6, 8, 12 (0-based 3, 5, 7, 11) of a 12-block ViT-S in its mmdet detector,
3, 6, 9, 12 (out_indices 2, 5, 8, 11) in its mmseg segmenter; evenly spaced by default. Hierarchical backbones (Swin, CvT, ResNet) give their
four stage outputs to torchvision's FPN. All return an OrderedDict '0'..'3' plus 'pool'
(a stride-2 max-pool of the coarsest level, the P6 level torchvision's RPN expects).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from vitssl.backbones import Swin, ViT
from vitssl.backbones.cvt import CvT
from vitssl.backbones.resnet import ResNet

PYRAMIDS = ("simple", "blocks")


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a (B, C, H, W) map (ViTDet's norm in its pyramid)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _rescale(dim: int, scale: float) -> tuple[nn.Module, int]:
    """Module taking a stride-P map to stride P/scale, and its output width (ViTDet's widths)."""
    if scale == 4:
        return nn.Sequential(nn.ConvTranspose2d(dim, dim // 2, 2, 2), LayerNorm2d(dim // 2), nn.GELU(),
                             nn.ConvTranspose2d(dim // 2, dim // 4, 2, 2)), dim // 4
    if scale == 2:
        return nn.ConvTranspose2d(dim, dim // 2, 2, 2), dim // 2
    if scale == 1:
        return nn.Identity(), dim
    return nn.MaxPool2d(2, 2), dim


def _vit_map(tokens, b: int) -> torch.Tensor:
    (h, w), d = tokens.grid, tokens.patches.shape[-1]
    return tokens.patches.reshape(b, h, w, d).permute(0, 3, 1, 2)


class ViTPyramid(nn.Module):
    """ViT -> strides P/4, P/2, P, 2P (+ pool). `pyramid='simple'`: all from the last map
    (ViTDet); `'blocks'`: from four evenly spaced blocks (SelfPatch's mmdet adapter)."""

    def __init__(self, vit: ViT, out_channels: int = 256, pyramid: str = "simple",
                 block_ids: tuple[int, ...] | None = None) -> None:
        super().__init__()
        if pyramid not in PYRAMIDS:
            raise ValueError(f"unknown pyramid '{pyramid}': use one of {PYRAMIDS}")
        self.body, self.pyramid, self.out_channels = vit, pyramid, out_channels
        depth, dim = len(vit.blocks), int(vit.embed_dim)
        self.block_ids = list(block_ids or [max(0, round(depth * k / 4) - 1) for k in (1, 2, 3, 4)])  # 12: 2, 5, 8, 11
        if len(self.block_ids) != 4 or not all(0 <= i < depth for i in self.block_ids):
            raise ValueError(f"block_ids {self.block_ids} must be 4 block indices of the {depth}-block ViT")
        self.scales, self.outputs = nn.ModuleList(), nn.ModuleList()
        for scale in (4, 2, 1, 0.5):
            up, width = _rescale(dim, scale)
            self.scales.append(up)
            self.outputs.append(nn.Sequential(nn.Conv2d(width, out_channels, 1, bias=False), LayerNorm2d(out_channels),
                                              nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                                              LayerNorm2d(out_channels)))

    def _maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.pyramid == "simple":
            return [_vit_map(self.body(x), len(x))] * 4
        caught: dict[int, torch.Tensor] = {}
        hooks = [self.body.blocks[i].register_forward_hook(lambda m, a, out, i=i: caught.__setitem__(i, out))
                 for i in self.block_ids]
        try:
            grid = self.body(x).grid
        finally:
            for hook in hooks:
                hook.remove()
        prefix = int(self.body.num_prefix_tokens)
        return [caught[i][:, prefix:].reshape(len(x), *grid, -1).permute(0, 3, 1, 2) for i in self.block_ids]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        out = OrderedDict((str(i), head(up(m))) for i, (m, up, head)
                          in enumerate(zip(self._maps(x), self.scales, self.outputs)))
        out["pool"] = F.max_pool2d(out["3"], 1, 2)
        return out


def stage_maps(backbone: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """(B, C_s, H/stride_s, W/stride_s) output of every stage, the last after the final norm."""
    if isinstance(backbone, Swin):
        backbone._check_size(x)
        y, maps = backbone.patch_embed(x), []
        for stage in backbone.layers:
            y = stage(y)
            maps.append(y)
        maps[-1] = backbone.norm(maps[-1])
        return [m.permute(0, 3, 1, 2) for m in maps]
    if isinstance(backbone, CvT):
        y, maps = x.permute(0, 2, 3, 1), []
        for stage in backbone.stages:
            y = stage.embed(y)
            for block in stage.blocks:
                y = block(y)
            maps.append(y)
        maps[-1] = backbone.norm(maps[-1])
        return [m.permute(0, 3, 1, 2) for m in maps]
    y, maps = backbone._stem(x), []
    for stage in backbone.stages:
        y = stage(y)
        maps.append(y)
    return maps


def stage_widths(backbone: nn.Module) -> list[int]:
    """Channels of each stage output, read off a forward pass of a 64x64 image."""
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            return [m.shape[1] for m in stage_maps(backbone, torch.zeros(1, 3, 64, 64))]
    finally:
        backbone.train(was_training)


class StagePyramid(nn.Module):
    """Swin / CvT / ResNet stage outputs through torchvision's FPN (+ max-pool P6)."""

    def __init__(self, backbone: nn.Module, out_channels: int = 256) -> None:
        super().__init__()
        self.body, self.out_channels = backbone, out_channels
        self.fpn = FeaturePyramidNetwork(stage_widths(backbone), out_channels, extra_blocks=LastLevelMaxPool())

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        maps = stage_maps(self.body, x)
        return self.fpn(OrderedDict((str(i), m) for i, m in enumerate(maps)))


def build_pyramid(backbone: nn.Module, out_channels: int = 256, pyramid: str = "simple",
                  block_ids: tuple[int, ...] | None = None) -> nn.Module:
    """The multi-scale adapter for `backbone`, or a one-line error for one that has none."""
    require_adaptable(backbone)
    if isinstance(backbone, ViT):
        return ViTPyramid(backbone, out_channels, pyramid, block_ids)
    return StagePyramid(backbone, out_channels)


def require_adaptable(backbone: nn.Module) -> None:
    """A one-line error for a backbone that no dense adapter reads (neither a ViT nor staged)."""
    if isinstance(backbone, (ViT, Swin, CvT, ResNet)):
        return
    raise ValueError(f"cannot adapt a {type(backbone).__name__} backbone to a feature pyramid: dense fine-tuning "
                     "supports vitssl's ViT (simple feature pyramid), Swin, CvT and ResNet (FPN on their stages)")


def pyramid_strides(adapter: nn.Module) -> list[int]:
    """Strides of levels '0'..'3' (input pixels per feature cell)."""
    body = adapter.body
    if isinstance(adapter, ViTPyramid):
        p = int(body.patch_size)
        return [max(p // 4, 1), max(p // 2, 1), p, 2 * p]
    total = int(body.patch_size)
    return [total // 8, total // 4, total // 2, total]
