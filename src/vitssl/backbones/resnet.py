"""ResNet-50 as an EsViT backbone (EsViT paper Sec. 3.1; microsoft/esvit models/ and experiments/imagenet/): region tokens are the flattened layer-4 map.

Built on timm's ResNet, whose parameter names are torchvision's (`conv1`, `bn1`, `layer1.0.conv1`,
... `layer4.2.bn3`), the names EsViT's `ResNetWrapper` wraps: its checkpoints load after a
prefix strip. No classifier (EsViT replaces `fc` by an identity), torchvision's initialisation
(the last BatchNorm of each block is not zeroed).

BatchNorm follows the reference: student and teacher both run in training mode, so the teacher
normalises with its own batch statistics and keeps its own running statistics (the EMA averages
parameters only); the trainer converts BatchNorm to SyncBatchNorm under DDP on GPUs
(`engine.parallel.convert_sync_batchnorm`), as `main_esvit.py` does for both networks.
"""

from __future__ import annotations

import torch
from timm.models.resnet import Bottleneck
from timm.models.resnet import ResNet as TimmResNet

from vitssl.backbones.tokens import Tokens


class ResNet(TimmResNet):
    """Bottleneck ResNet returning `Tokens` (no CLS): `patches` = layer-4 map (B, h*w, C),
    `pooled` = its average, EsViT's view feature.

    `width` is the first stage's bottleneck width (64 for ResNet-50; the output is 32x it; the
    7x7 stem stays 64 wide), `depths` the bottleneck blocks per stage. Any input size works: the map is ceil(H/32)
    cells a side (7x7 at 224, 3x3 at 96). `patch_size` is the total stride, 32.
    """

    def __init__(self, width: int = 64, depths: tuple[int, ...] = (3, 4, 6, 3), drop_path_rate: float = 0.0) -> None:
        super().__init__(
            Bottleneck, layers=tuple(depths), num_classes=0,
            channels=tuple(width * 2**i for i in range(len(depths))), drop_path_rate=drop_path_rate,
            zero_init_last=False,
        )
        self.embed_dim = self.num_features
        self.patch_size = 2 ** (len(depths) + 1)

    @property
    def stages(self) -> list[torch.nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    @property
    def stage_depths(self) -> list[int]:
        return [len(stage) for stage in self.stages]

    @property
    def residual_blocks(self) -> list[Bottleneck]:
        """All residual blocks in order, across stages (there is no attention: no `blocks`)."""
        return [block for stage in self.stages for block in stage]

    @staticmethod
    def _tokens(x: torch.Tensor) -> Tokens:
        b, c, h, w = x.shape
        return Tokens(cls=None, patches=x.flatten(2).transpose(1, 2), grid=(h, w))

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.act1(self.bn1(self.conv1(x))))

    def forward(self, x: torch.Tensor) -> Tokens:
        """(B, 3, H, W) images -> Tokens of the layer-4 map (B, h*w, C)."""
        return self._tokens(self.forward_features(x))

    def last_blocks(self, x: torch.Tensor, n: int) -> list[Tokens]:
        """Maps of the last n residual blocks across stage boundaries, as Tokens (their `.pooled`
        means are the linear-probe features, as for Swin)."""
        first = len(self.residual_blocks) - n
        x, outputs, index = self._stem(x), [], 0
        for stage in self.stages:
            for block in stage:
                x = block(x)
                if index >= first:
                    outputs.append(self._tokens(x))
                index += 1
        return outputs

    def timm_spec(self) -> tuple[str, dict]:
        """`timm.create_model` name and arguments that rebuild this network (for `vitssl export`)."""
        return "resnet50", dict(layers=[len(s) for s in self.stages], channels=[s[0].conv1.out_channels for s in self.stages])

    def no_weight_decay(self) -> set[str]:
        """Empty on purpose, as for ViT and Swin: the param groups decide (1-d tensors undecayed)."""
        return set()
