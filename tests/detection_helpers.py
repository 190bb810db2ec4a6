"""Tiny pre-trained runs and COCO files for the detection and dense-segmentation tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from helpers import tiny_overrides
from vitssl.config import load_config, to_container, to_objects
from vitssl.engine.checkpoint import CHECKPOINT_FORMAT, save_checkpoint
from vitssl.methods import build_method, method_configs

SWIN_TINY = ["backbone.name=swin_tiny", "backbone.img_size=32", "backbone.embed_dim=16", "backbone.depth=1",
             "backbone.num_heads=1", "backbone.patch_size=4"]


def tiny_run(folder: Path, extra: list[str] = (), method: str = "dino") -> Path:
    """An untrained tiny run folder (checkpoint.pt with config), seeded."""
    cfg = load_config(None, [*tiny_overrides(method=method), f"method.name={method}", *extra], method_configs())
    with torch.random.fork_rng():
        torch.manual_seed(0)
        objs = to_objects(cfg)
        m = build_method(objs.method, objs.backbone)
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint({"format": CHECKPOINT_FORMAT, "config": to_container(cfg), "method": m.state_dict()},
                    folder / "checkpoint.pt")
    return folder


def write_coco(folder: Path, doc: dict, sizes: dict[str, tuple[int, int]]) -> str:
    """COCO JSON `doc` plus blank PNGs of the given (width, height) per file name; 'JSON:IMAGES'."""
    from PIL import Image

    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    for name, (w, h) in sizes.items():
        Image.new("RGB", (w, h), (90, 90, 90)).save(images / name)
    (folder / "ann.json").write_text(json.dumps(doc))
    return f"{folder / 'ann.json'}:{images}"


def segmentation_folder(root, n=6, size=(24, 20)):
    """An ADE20K-layout folder (images/, annotations/) of `n` noisy images with a 2-class box each."""
    rng = np.random.default_rng(0)
    for sub in ("images", "annotations"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        mask = np.zeros(size[::-1], np.uint8)
        mask[4:12, 3 + i:13 + i] = 1 + i % 2
        pixels = (rng.random((*size[::-1], 3)) * 60 + mask[..., None] * 90).astype(np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"{i}.png")
        Image.fromarray(mask, mode="L").save(root / "annotations" / f"{i}.png")
