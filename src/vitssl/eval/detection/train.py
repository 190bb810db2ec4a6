"""Fine-tune a Mask R-CNN end to end and score it with COCO AP.

AdamW over layer-decay groups (`vitssl.engine.layer_decay`: the backbone's blocks decayed
towards its embeddings, pyramid and heads at the full rate), linear warm-up then x0.1 steps,
bf16 autocast on CUDA and DistributedDataParallel under torchrun, as the other evaluations.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from vitssl.engine.layer_decay import layer_decay_groups, stage_depths
from vitssl.eval.detection.coco import CocoDetection, CocoSet, collate
from vitssl.eval.detection.coco_eval import coco_ap, prediction_entries
from vitssl.eval.detection.presets import DetectionPreset

log = logging.getLogger("vitssl.detection")
BACKBONE_PREFIX = "backbone.body."  # MaskRCNN.backbone is the pyramid; its .body the vitssl backbone


def step_lr(step: int, total: int, preset: DetectionPreset) -> float:
    """Linear warm-up from 0.1% of the lr, then x0.1 at each of `preset.lr_steps` (fractions)."""
    lr = preset.lr * 0.1 ** sum(step >= round(f * total) for f in preset.lr_steps)
    if step < preset.warmup_iters:
        lr *= 0.001 + (1 - 0.001) * step / preset.warmup_iters
    return lr


def detection_optimizer(model: nn.Module, preset: DetectionPreset) -> torch.optim.Optimizer:
    body = model.backbone.body
    groups = layer_decay_groups(model.named_parameters(), stage_depths(body), preset.layer_decay,
                                preset.weight_decay, prefix=BACKBONE_PREFIX)
    return torch.optim.AdamW(groups, lr=0.0, betas=(0.9, 0.999))


@torch.no_grad()
def predict(model: nn.Module, coco: CocoSet, device: torch.device, batch_size: int = 8) -> list[dict]:
    """COCO result entries of the model's predictions on every image of `coco` (eval mode)."""
    was_training = model.training
    model.eval()
    data = CocoDetection(coco)
    entries: list[dict] = []
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    try:
        for images, targets in DataLoader(data, batch_size=batch_size, collate_fn=collate):
            with autocast:
                outputs = model([im.to(device) for im in images])
            for target, out in zip(targets, outputs):
                entries += prediction_entries(int(target["image_id"]), out, coco.category_ids)
    finally:
        model.train(was_training)
    return entries


def evaluate_detector(model: nn.Module, coco: CocoSet, device: torch.device) -> dict[str, dict]:
    return coco_ap(coco, predict(model, coco, device))


@dataclass
class DetectionResult:
    """Final COCO AP (box and mask), the schedule actually run and a loss record."""

    metrics: dict[str, dict]
    iterations: int
    batch_size: int
    seconds_per_iter: float
    history: list[dict[str, float]] = field(default_factory=list)


def _loader(data: CocoDetection, batch: int, seed: int, num_workers: int) -> DataLoader:
    distributed = dist.is_available() and dist.is_initialized()
    sampler = DistributedSampler(data, shuffle=True, seed=seed, drop_last=True) if distributed else None
    g = torch.Generator().manual_seed(seed)
    return DataLoader(data, batch_size=batch, shuffle=sampler is None, sampler=sampler, drop_last=True,
                      collate_fn=collate, generator=g, num_workers=num_workers)


def _wrap(model: nn.Module, device: torch.device) -> nn.Module:
    if dist.is_available() and dist.is_initialized():
        ids = [device.index] if device.type == "cuda" else None
        # a batch without positives leaves the mask head unused; the blocks pyramid, the final norm
        return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)
    return model


def train_detector(model: nn.Module, train: CocoSet, val: CocoSet, preset: DetectionPreset,
                   device: torch.device | str = "cpu", seed: int = 0, num_workers: int = 0,
                   max_iters: int | None = None, log_every: int = 20) -> DetectionResult:
    """Fine-tune `model` for `preset.epochs` (or `max_iters`) and return its val COCO AP."""
    device = torch.device(device)
    torch.manual_seed(seed)
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    jitter = (preset.min_size, *preset.lsj_scale) if preset.lsj_scale else None
    data = CocoDetection(train, hflip=preset.hflip, jitter=jitter)
    batch = max(1, min(preset.batch_size // world, len(data) // world))
    loader = _loader(data, batch, seed, num_workers)
    total = max(1, preset.epochs * len(loader)) if max_iters is None else max_iters
    model.to(device)
    optimizer = detection_optimizer(model, preset)
    net = _wrap(model, device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    log.info("detection fine-tuning: %d images, %d iterations of %d x %d, peak lr %.2e", len(data), total,
             batch, world, preset.lr)
    step, history, started = 0, [], time.perf_counter()
    net.train()
    while step < total:
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(step)
        for images, targets in loader:
            for group in optimizer.param_groups:
                group["lr"] = step_lr(step, total, preset) * group["lr_scale"]
            images = [im.to(device) for im in images]
            targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
            with autocast:
                losses = net(images, targets)
            loss = sum(losses.values())
            if not math.isfinite(loss.item()):
                raise RuntimeError(f"detection loss is {loss.item()} at iteration {step + 1}: lower the lr (--lr)")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            history.append({"iter": step + 1, "loss": loss.item(), **{k: v.item() for k, v in losses.items()}})
            if (step + 1) % log_every == 0 or step + 1 == total:
                log.info("iter %d/%d  loss %.4f", step + 1, total, loss.item())
            step += 1
            if step >= total:
                break
    per_iter = (time.perf_counter() - started) / total
    metrics = evaluate_detector(model, val, device) if not dist.is_initialized() or dist.get_rank() == 0 else {}
    return DetectionResult(metrics, total, batch * world, per_iter, history)


def summary(metrics: dict[str, Any]) -> str:
    """'box AP 0.412 (AP50 ..., AP75 ...)  mask AP ...' for the console."""
    parts = []
    for iou_type, name in (("bbox", "box"), ("segm", "mask")):
        m = metrics.get(iou_type)
        if m:
            parts.append(f"{name} AP {m['AP']:.3f} (AP50 {m['AP50']:.3f}, AP75 {m['AP75']:.3f}, "
                         f"s/m/l {m['APs']:.3f}/{m['APm']:.3f}/{m['APl']:.3f})")
    return "  ".join(parts)
