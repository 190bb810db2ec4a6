"""Tiny configs and builders shared by tests (importable: tests/ is on pythonpath)."""

from __future__ import annotations

import torch
from PIL import Image

from vitssl.config import load_config, to_objects
from vitssl.methods import build_method, method_configs

TINY_BACKBONE = dict(name="vit_tiny", patch_size=4, img_size=16, embed_dim=32, depth=2, num_heads=2,
                     drop_path_rate=0.0)


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


def tiny_method(name: str):
    cfg = to_objects(load_config(None, [f"method.name={name}", *tiny_overrides()], method_configs()))
    return build_method(cfg.method, cfg.backbone)


def one_batch(method, n: int = 4):
    g = torch.Generator().manual_seed(0)
    images = [Image.fromarray((torch.rand(20, 20, 3, generator=g) * 255).byte().numpy()) for _ in range(n)]
    transform = method.train_transform()
    return method.collate([(transform(im, g), 0) for im in images])
