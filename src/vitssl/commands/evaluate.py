"""`vitssl eval knn|linear|finetune`: load a pre-trained backbone and evaluate its frozen features,
or fine-tune it end to end."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from vitssl.data import build_dataset
from vitssl.engine.device import resolve_device
from vitssl.engine.launch import init_distributed
from vitssl.engine.logging import log
from vitssl.engine.outputs import check_output_dir
from vitssl.eval import knn_classify, train_linear_probe
from vitssl.eval.baselines import RawPixels
from vitssl.eval.features import labelled_features
from vitssl.eval.pretrained import (
    evaluation_input,
    image_size_or_default,
    load_pretrained,
    load_run,
    normalization,
    untrained_backbone,
)


@dataclass
class FeatureSplits:
    """Frozen features of a checkpoint on a train and a val set, with what produced them."""

    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    num_classes: int
    image_size: int
    device: torch.device
    pixels: tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None


PIXEL_BUDGET_BYTES = 2 << 30  # raw-pixel features larger than this (train + val, float32) are not extracted


def checkpoint_features(checkpoint: str | Path, train: str, val: str, which: str = "teacher",
                        image_size: int | None = None, resize_size: int | None = None, device: str = "auto",
                        batch_size: int = 256, num_workers: int = 4, n_last_blocks: int = 1,
                        avgpool_patchtokens: bool = False, scratch: bool = False, seed: int | None = None,
                        pixels: bool = False) -> FeatureSplits:
    """Load a checkpoint's backbone once and extract train and val features with it, the images
    normalised as the run's crops were. `scratch`: the same network at its seeded initialisation
    instead of the trained weights; `pixels`: also the raw-pixel features of the same images (the
    baseline), unless they would exceed `PIXEL_BUDGET_BYTES`."""
    run = load_run(checkpoint, which)
    backbone = untrained_backbone(checkpoint, seed)[0] if scratch else run.backbone
    dev = resolve_device(init_distributed(device)[0])  # under torchrun: this rank's GPU, shards gathered
    size = run.eval_input.image_size if image_size is None else image_size_or_default(image_size, run.config)
    kw = dict(resize_size=resize_size, normalization=normalization(run.eval_input))
    blocks = dict(n_last_blocks=n_last_blocks, avgpool_patchtokens=avgpool_patchtokens)
    tr_f, tr_y, n_cls = labelled_features(backbone, train, "train", size, dev, batch_size, num_workers, **blocks, **kw)
    va_f, va_y, _ = labelled_features(backbone, val, "val", size, dev, batch_size, num_workers, **blocks, **kw)
    raw = None
    if pixels and (len(tr_y) + len(va_y)) * 3 * size * size * 4 <= PIXEL_BUDGET_BYTES:
        raw_tr = labelled_features(RawPixels(size), train, "train", size, dev, batch_size, num_workers, **kw)
        raw_va = labelled_features(RawPixels(size), val, "val", size, dev, batch_size, num_workers, **kw)
        raw = (raw_tr[:2], raw_va[:2])
    elif pixels:
        log.warning("raw-pixel baseline skipped: %d images of 3x%dx%d would take more than %d GiB",
                    len(tr_y) + len(va_y), size, size, PIXEL_BUDGET_BYTES >> 30)
    return FeatureSplits((tr_f, tr_y), (va_f, va_y), n_cls, size, dev, raw)


DEFAULT_KS = (10, 20, 100, 200)  # DINO's


def knn_ks(ks: tuple[int, ...] | None, train: str) -> tuple[int, ...]:
    """The k values to report: a k above the memory bank (the labelled train images) would be
    clipped to it and reported under the wrong k, so an asked-for one is refused and DINO's
    defaults (`ks=None`) are cut to those that fit."""
    bank = len(build_dataset(train, split="train"))
    if ks is None:
        fits = tuple(k for k in DEFAULT_KS if k <= bank) or (bank,)
        if len(fits) < len(DEFAULT_KS):
            log.warning("k-NN: the memory bank holds %d train images of '%s': k = %s skipped (larger than the bank)",
                        bank, train, ", ".join(str(k) for k in DEFAULT_KS if k > bank))
        return fits
    too_big = [k for k in ks if k > bank]
    if too_big:
        raise ValueError(f"--ks {' '.join(map(str, too_big))}: the k-NN memory bank holds only {bank} train images "
                         f"of '{train}': use k <= {bank}")
    return tuple(ks)


def run_knn(checkpoint: str | Path, train: str, val: str, ks: tuple[int, ...] | None = None,
            temperature: float = 0.07, image_size: int | None = None, resize_size: int | None = None,
            device: str = "auto", batch_size: int = 256, num_workers: int = 4,
            which: str = "teacher", scratch: bool = False, seed: int | None = None, pixels: bool = True) -> dict[str, Any]:
    """DINO k-NN protocol (DINO paper Sec. 3.2; facebookresearch/dino eval_knn.py, eval_linear.py) on a checkpoint; `ks=None`: DINO's 10, 20, 100, 200
    where they fit. `scratch`: the network at its seeded initialisation; `pixels`: a raw-pixel row too."""
    ks = knn_ks(ks, train)
    f = checkpoint_features(checkpoint, train, val, which, image_size, resize_size, device, batch_size, num_workers,
                            scratch=scratch, seed=seed, pixels=pixels)
    results = knn_classify(*f.train, *f.val, ks=ks, temperature=temperature, num_classes=f.num_classes)
    out = {"protocol": "knn", "checkpoint": str(checkpoint), "backbone": which, "train": train, "val": val,
           "image_size": f.image_size, "temperature": temperature, "scratch": scratch,
           "results": {str(k): v for k, v in results.items()}}
    if f.pixels is not None:
        raw = knn_classify(*f.pixels[0], *f.pixels[1], ks=ks, temperature=temperature, num_classes=f.num_classes)
        out["raw_pixels"] = {str(k): v for k, v in raw.items()}
    return out


def run_linear(checkpoint: str | Path, train: str, val: str, n_last_blocks: int = 4,
               avgpool_patchtokens: bool = False, epochs: int = 100, lr: float | None = None,
               lrs: list[float] | None = None, batch_size: int = 256, image_size: int | None = None,
               resize_size: int | None = None, device: str = "auto", num_workers: int = 4,
               which: str = "teacher", batchnorm: bool = False, scratch: bool = False, seed: int | None = None,
               pixels: bool = True) -> dict[str, Any]:
    """DINO linear protocol (DINO paper Sec. 3.2; facebookresearch/dino eval_knn.py, eval_linear.py) on pre-extracted frozen features; `batchnorm` puts
    MAE's BatchNorm1d(affine=False) before the Linear layer (MAE paper App. A.1, Tables 9-10; facebookresearch/mae FINETUNE.md). `scratch`: the
    network at its seeded initialisation; `pixels`: the same probe on raw pixels too."""
    f = checkpoint_features(checkpoint, train, val, which, image_size, resize_size, device, batch_size,
                            num_workers, n_last_blocks, avgpool_patchtokens, scratch=scratch, seed=seed, pixels=pixels)
    probe = dict(epochs=epochs, lr=lr, lrs=lrs, batch_size=batch_size, device=str(f.device), batchnorm=batchnorm)
    result = train_linear_probe(*f.train, *f.val, f.num_classes, **probe)
    out = {"protocol": "linear", "checkpoint": str(checkpoint), "backbone": which, "train": train, "val": val,
           "image_size": f.image_size, "n_last_blocks": n_last_blocks, "avgpool_patchtokens": avgpool_patchtokens,
           "epochs": epochs, "batchnorm": batchnorm, "scratch": scratch, "top1": result.top1, "top5": result.top5,
           "best_lr": result.best_lr}
    if f.pixels is not None:
        raw = train_linear_probe(*f.pixels[0], *f.pixels[1], f.num_classes, **probe)
        out["raw_pixels"] = {"top1": raw.top1, "top5": raw.top5, "best_lr": raw.best_lr}
    return out


def run_finetune(checkpoint: str | Path | None, train: str, val: str, recipe: str = "mae_lite_impr",
                 overrides: list[str] | None = None, epochs: int | None = None, lr: float | None = None,
                 batch_size: int | None = None, scratch: bool = False, backbone_config: str | None = None,
                 train_fraction: float | None = None, samples_per_class: int | None = None,
                 image_size: int | None = None, resize_size: int | None = None, device: str = "auto",
                 seed: int = 0, num_workers: int = 4, which: str = "teacher") -> dict[str, Any]:
    """End-to-end fine-tuning (MAE paper App. A.1, Tables 9-10; facebookresearch/mae FINETUNE.md; wangsr126/mae-lite projects/eval_tools/finetuning_exp.py) of a checkpoint's backbone, or with `scratch` of a
    random one shaped like `backbone_config` (a preset, YAML or checkpoint; default: the
    checkpoint's own architecture)."""
    from vitssl.eval.finetune import finetune_backbone, finetune_data, resolve_recipe

    extra = [f"{k}={v}" for k, v in (("epochs", epochs), ("batch_size", batch_size)) if v is not None]
    chosen = resolve_recipe(recipe, [*(overrides or []), *extra])
    if scratch:
        if checkpoint is None and backbone_config is None:
            raise ValueError("--scratch needs --backbone-config (a preset or YAML) or --checkpoint for the architecture")
        backbone, config = untrained_backbone(backbone_config or checkpoint, seed)  # type: ignore[arg-type]
    elif checkpoint is None:
        raise ValueError("pass --checkpoint RUN, or --scratch --backbone-config PRESET for a from-scratch baseline")
    else:
        backbone, config = load_pretrained(checkpoint, which)
    run_input = evaluation_input(config)  # the size and normalisation the run trained with
    size = run_input.image_size if image_size is None else image_size_or_default(image_size, config)
    mean, std = normalization(run_input)
    data = finetune_data(train, val, chosen, size, mean, std, resize_size, train_fraction, samples_per_class, seed)
    result = finetune_backbone(backbone, data, chosen, lr, resolve_device(device), seed, num_workers)
    return {"protocol": "finetune", "checkpoint": None if scratch else str(checkpoint), "scratch": scratch,
            "backbone_config": str(backbone_config or checkpoint) if scratch else None,
            "backbone": None if scratch else which, "train": train, "val": val, "train_images": len(data.train),
            "val_images": len(data.val), "image_size": size, "seed": seed, "recipe": recipe,
            "recipe_values": asdict(chosen), "lr": result.lr, "batch_size": result.batch_size,
            "top1": result.top1, "top5": result.top5, "best_top1": result.best_top1, "history": result.history}


def run_segmentation(checkpoint: str | Path, train: str, val: str, image_size: int | None = None, epochs: int = 20,
                     lr: float | None = None, batch_size: int = 64, device: str = "auto", seed: int = 0,
                     num_workers: int = 0, which: str = "teacher") -> dict[str, Any]:
    """Linear segmentation probe on a checkpoint's frozen patch features (SelfPatch paper Sec. 4; alinlab/SelfPatch README, dense probe)."""
    from vitssl.eval.segmentation import run_segmentation_probe

    run = load_run(checkpoint, which)
    backbone, config = run.backbone, run.config
    kw: dict[str, Any] = dict(epochs=epochs, batch_size=batch_size, device=str(resolve_device(device)), seed=seed,
                              num_workers=num_workers, image_size=image_size_or_default(image_size, config),
                              normalization=normalization(run.eval_input))
    if lr is not None:
        kw["lr"] = lr
    result = run_segmentation_probe(backbone, train, val, **kw)
    result.update(protocol="segmentation", checkpoint=str(checkpoint), backbone=which, train=train, val=val)
    return result


def run_video_segmentation(checkpoint: str | Path, frames: str, first_mask: str, out_dir: str | Path,
                           gt_dir: str | None = None, short_side: int = 480, n_last_frames: int = 7, topk: int = 5,
                           size_mask_neighborhood: int = 12, device: str = "auto",
                           which: str = "teacher", overwrite: bool = True) -> dict[str, Any]:
    """DINO's DAVIS label propagation (DINO paper Sec. 4.2, Table 5; facebookresearch/dino eval_video_segmentation.py) with a checkpoint's last-layer patch features;
    `overwrite=False` refuses an `out_dir` that already holds masks or results."""
    from vitssl.eval.video_segmentation import run_label_propagation

    check_output_dir(out_dir, overwrite, ("*.png", "video_segmentation.json"))
    run = load_run(checkpoint, which)
    result = run_label_propagation(run.backbone.to(resolve_device(device)), frames, first_mask, out_dir, gt_dir=gt_dir,
                                   short_side=short_side, n_last_frames=n_last_frames, topk=topk,
                                   size_mask_neighborhood=size_mask_neighborhood,
                                   normalization=normalization(run.eval_input))
    result.update(protocol="video-segmentation", checkpoint=str(checkpoint), backbone=which)
    return result
