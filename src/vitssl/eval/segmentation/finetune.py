"""Semantic segmentation with a trained head (Semantic FPN, UperNet or linear), the backbone frozen or
fine-tuned with it (SelfPatch's ADE20K protocol: AdamW, linear warm-up, poly decay).

Training crops are the images resized to `image_size`² with horizontal flips; scoring resizes
each val image's short side to `image_size`, slides `window`² crops over it (stride 2/3 of the
window, logits averaged where crops overlap, as mmseg's `slide` mode) and upsamples the logits
to the full-size mask.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from vitssl.augment.photometric import IMAGENET_MEAN, IMAGENET_STD, to_normalized_tensor
from vitssl.engine.layer_decay import layer_decay_groups, stage_depths
from vitssl.eval.segmentation.data import build_segmentation_dataset
from vitssl.eval.segmentation.heads import Segmenter
from vitssl.eval.segmentation.metrics import confusion_matrix, segmentation_metrics
from vitssl.eval.segmentation.upernet import POOL_SCALES, check_pool_scales

log = logging.getLogger("vitssl.segmentation")


@dataclass
class DenseRecipe:
    """Optimiser and schedule; SelfPatch's Semantic FPN: AdamW lr 6e-5, wd 0.01, poly power 1."""

    lr: float = 6e-5
    weight_decay: float = 0.01
    layer_decay: float = 1.0
    warmup_fraction: float = 0.0375  # 1500 of 40k iterations
    fpn_channels: int = 256
    head_channels: int | None = None  # None: the head's mmseg width (FPN 128, UperNet 512)
    pool_scales: tuple[int, ...] = POOL_SCALES  # UperNet's pyramid pooling output sizes

    def __post_init__(self) -> None:
        self.pool_scales = check_pool_scales(self.pool_scales)


Normalization = tuple[Sequence[float], Sequence[float]]  # (mean, std), the run's `eval_input`


class _TrainPairs(Dataset):
    def __init__(self, pairs: Dataset, size: int, seed: int, normalization: Normalization | None = None) -> None:
        self.pairs, self.size, self.g = pairs, size, np.random.default_rng(seed)
        self.mean, self.std = normalization or (IMAGENET_MEAN, IMAGENET_STD)

    def __len__(self) -> int:
        return len(self.pairs)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.pairs[index]
        size = (self.size, self.size)
        x = to_normalized_tensor(image.convert("RGB").resize(size, Image.Resampling.BICUBIC), self.mean, self.std)
        m = torch.as_tensor(np.asarray(mask)).long()
        m = F.interpolate(m[None, None].double(), size=size, mode="nearest-exact")[0, 0].long()
        if self.g.random() < 0.5:
            x, m = x.flip(-1), m.flip(-1)
        return x, m


def slide_logits(model: nn.Module, image: torch.Tensor, window: int, num_classes: int) -> torch.Tensor:
    """(1, C, H, W) logits of a (1, 3, H, W) image from window² crops at stride 2/3 window,
    averaged where they overlap; an image smaller than the window is padded then cropped back."""
    _, _, h, w = image.shape
    ph, pw = max(window - h, 0), max(window - w, 0)
    padded = F.pad(image, (0, pw, 0, ph))
    hp, wp = padded.shape[-2:]
    stride = max(1, window * 2 // 3)
    logits = torch.zeros(1, num_classes, hp, wp, device=image.device)
    counts = torch.zeros(1, 1, hp, wp, device=image.device)
    rows = list(range(0, hp - window, stride)) + [hp - window]
    cols = list(range(0, wp - window, stride)) + [wp - window]
    for top in rows:
        for left in cols:
            crop = padded[..., top:top + window, left:left + window]
            logits[..., top:top + window, left:left + window] += model(crop).float()
            counts[..., top:top + window, left:left + window] += 1
    return (logits / counts)[..., :h, :w]


@torch.no_grad()
def dense_confusion(model: nn.Module, pairs: Dataset, image_size: int, window: int, num_classes: int,
                    device: torch.device, ignore_index: int = 255,
                    normalization: Normalization | None = None) -> torch.Tensor:
    """Confusion matrix over `pairs` with sliding-window inference at full mask resolution."""
    mean, std = normalization or (IMAGENET_MEAN, IMAGENET_STD)
    was_training = model.training
    model.eval()
    conf = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    try:
        for i in range(len(pairs)):  # type: ignore[arg-type]
            image, mask = pairs[i]
            scale = image_size / min(image.size)
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            x = to_normalized_tensor(image.convert("RGB").resize(size, Image.Resampling.BICUBIC), mean, std)
            x = x[None].to(device)
            logits = slide_logits(model, x, window, num_classes)
            target = torch.as_tensor(np.asarray(mask)).long()
            up = F.interpolate(logits, size=target.shape, mode="bilinear", align_corners=False)
            conf += confusion_matrix(up[0].argmax(0).cpu(), target, num_classes, ignore_index)
    finally:
        model.train(was_training)
    return conf


def _optimizer(model: Segmenter, recipe: DenseRecipe, finetune: bool) -> torch.optim.Optimizer:
    for p in model.body.parameters():
        p.requires_grad_(finetune)
    prefix = "pyramid.body." if model.pyramid is not None else "head.body."
    groups = layer_decay_groups(model.named_parameters(), stage_depths(model.body), recipe.layer_decay,
                                recipe.weight_decay, prefix=prefix)
    return torch.optim.AdamW(groups, lr=0.0)


def train_segmenter(model: Segmenter, pairs: Dataset, image_size: int, num_classes: int, recipe: DenseRecipe,
                    epochs: int, batch_size: int, finetune: bool, device: torch.device, seed: int = 0,
                    num_workers: int = 0, ignore_index: int = 255,
                    normalization: Normalization | None = None) -> list[float]:
    """Train head (and backbone with `finetune`) with cross-entropy; the loss of every step.
    Images are normalised with `normalization` (the run's mean and std; ImageNet's when None)."""
    torch.manual_seed(seed)
    data = _TrainPairs(pairs, image_size, seed, normalization)
    batch = min(batch_size, len(data))
    loader = DataLoader(data, batch_size=batch, shuffle=True, drop_last=True, num_workers=num_workers,
                        generator=torch.Generator().manual_seed(seed))
    model.to(device).train()
    if not finetune:
        model.body.eval()  # frozen: no drop path, no batch-norm updates
    optimizer = _optimizer(model, recipe, finetune)
    total = epochs * len(loader)
    warmup = round(recipe.warmup_fraction * total)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    losses, step = [], 0
    for _ in range(epochs):
        for x, y in loader:
            lr = recipe.lr * (1 - step / total) * (min(1.0, (step + 1) / warmup) if warmup else 1.0)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]
            with autocast:
                loss = F.cross_entropy(model(x.to(device)).float(), y.to(device), ignore_index=ignore_index)
            if not math.isfinite(loss.item()):
                raise RuntimeError(f"segmentation loss is {loss.item()} at step {step + 1}: lower the lr (--lr)")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
    return losses


def _num_classes(pairs: Dataset, ignore_index: int) -> int:
    names = getattr(pairs, "class_names", None)
    if names:
        return len(names)
    largest = max(int(np.max(np.where(np.asarray(m) == ignore_index, -1, np.asarray(m)))) for _, m in pairs)
    if largest < 1:
        raise ValueError("the train masks hold fewer than 2 classes: check the annotations and ignore_index")
    return largest + 1


def run_dense_segmentation(checkpoint: str | os.PathLike[str] | Path, train: str, val: str, head: str = "fpn",
                           finetune: bool = True, image_size: int | None = None, epochs: int = 20,
                           lr: float | None = None, batch_size: int = 16, window: int | None = None,
                           device: str = "auto", seed: int = 0, num_workers: int = 0, which: str = "teacher",
                           ignore_index: int = 255, recipe: DenseRecipe | None = None,
                           reduce_zero_label: bool = False, pool_scales: Sequence[int] | None = None
                           ) -> dict[str, Any]:
    """Train a segmentation head on a checkpoint's backbone (fine-tuned with `finetune`); val mIoU.
    `pool_scales`: UperNet's pyramid pooling sizes (default 1, 2, 3, 6)."""
    from vitssl.engine.device import resolve_device
    from vitssl.eval.pretrained import load_run, normalization
    from vitssl.eval.segmentation.probe import _image_size

    recipe = recipe or DenseRecipe(lr=lr if lr is not None else (6e-5 if finetune else 1e-3),
                                   pool_scales=tuple(pool_scales or POOL_SCALES))
    run = load_run(checkpoint, which)
    backbone = run.network  # SelfPatch: its ViT, without the aggregator
    stats = normalization(run.eval_input)  # the mean/std the run trained with, as every evaluation
    size = _image_size(image_size, int(getattr(backbone, "patch_size", 1)), train)
    window = window or size
    train_pairs = build_segmentation_dataset(train, "train", ignore_index, reduce_zero_label)
    val_pairs = build_segmentation_dataset(val, "val", ignore_index, reduce_zero_label)
    n_cls = _num_classes(train_pairs, ignore_index)
    dev = resolve_device(device)
    torch.manual_seed(seed)
    model = Segmenter(backbone, n_cls, head, recipe.fpn_channels, recipe.head_channels, recipe.pool_scales)
    losses = train_segmenter(model, train_pairs, size, n_cls, recipe, epochs, batch_size, finetune, dev, seed,
                             num_workers, ignore_index, stats)
    metrics = segmentation_metrics(dense_confusion(model, val_pairs, size, window, n_cls, dev, ignore_index, stats))
    return {"protocol": "segmentation", "head": head, "finetune": finetune, "checkpoint": str(checkpoint),
            "backbone": which, "train": train, "val": val, **metrics, "num_classes": n_cls,
            "settings": {"image_size": size, "window": window, "epochs": epochs, "batch_size": batch_size,
                         "lr": recipe.lr, "weight_decay": recipe.weight_decay, "layer_decay": recipe.layer_decay,
                         "seed": seed, "steps": len(losses), "reduce_zero_label": reduce_zero_label,
                         "mean": list(stats[0]), "std": list(stats[1]),
                         **({"pool_scales": list(recipe.pool_scales)} if head == "upernet" else {})},
            "first_loss": losses[0] if losses else None, "final_loss": losses[-1] if losses else None}
