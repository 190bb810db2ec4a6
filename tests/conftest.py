"""Seeded tiny fixtures shared by the test suite."""

from __future__ import annotations

import pytest
import torch

from vitssl.backbones import BackboneConfig

TINY_BACKBONE = dict(name="vit_tiny", patch_size=4, img_size=16, embed_dim=32, depth=2, num_heads=2,
                     drop_path_rate=0.0)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def tiny_backbone_cfg() -> BackboneConfig:
    return BackboneConfig(**TINY_BACKBONE)


def tiny_overrides(data: str = "mnist") -> list[str]:
    """Overrides that shrink any preset to seconds on CPU (2 steps of 8 images)."""
    return [
        f"data.path={data}",
        *[f"backbone.{k}={v}" for k, v in TINY_BACKBONE.items() if k != "name"],
        "method.head.out_dim=64", "method.head.hidden_dim=32", "method.head.bottleneck_dim=16",
        "method.crops.global_crops_size=16", "method.crops.local_crops_size=8", "method.crops.local_crops_number=2",
        "train.batch_size=8", "train.epochs=1", "train.max_steps_per_epoch=2", "train.num_workers=0",
        "train.progress=false", "train.tensorboard=false", "train.log_every=1", "train.device=cpu",
        "train.precision=fp32", "optim.warmup_epochs=0",
    ]
