"""`vitssl eval knn|linear|finetune`: load a pre-trained backbone and evaluate its frozen features,
or fine-tune it end to end."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from vitssl.augment import EvalTransform
from vitssl.config import load_config, to_objects
from vitssl.data import BUILTIN_DATASETS, build_dataset, report_skips
from vitssl.distributed import is_main_process
from vitssl.engine.checkpoint import (
    CheckpointError,
    check_tensors,
    load_checkpoint,
    load_matching_state,
)
from vitssl.engine.launch import init_distributed
from vitssl.engine.trainer import resolve_device
from vitssl.eval import extract_features, knn_classify, train_linear_probe
from vitssl.eval.features import gather_features, rank_shard
from vitssl.methods import build_method, method_class, method_configs
from vitssl.outputs import check_output_dir, write_text_atomic


def load_pretrained(checkpoint: str | Path, which: str = "teacher") -> tuple[nn.Module, dict[str, Any]]:
    """The evaluation backbone of a vitssl checkpoint (the teacher for DINO) and its config.

    `which="student"` returns the student backbone instead, where the method has one.
    """
    payload = load_checkpoint(checkpoint)
    if "config" not in payload or "method" not in payload:
        raise CheckpointError(f"'{checkpoint}' is not a vitssl pre-training checkpoint (no config/method entries)")
    if not isinstance(payload["config"], dict):
        raise CheckpointError(f"'{checkpoint}' holds a {type(payload['config']).__name__} as its config, not a "
                              "mapping: the file is damaged or not a vitssl checkpoint")
    check_tensors(payload["method"], f"checkpoint '{checkpoint}'")
    cfg = load_config(None, [], method_configs(), base=payload["config"])
    objs = to_objects(cfg)
    method, state = _evaluation_method(objs, payload["method"])
    load_matching_state(method, state, "method")
    if which == "teacher":
        backbone = method.evaluation_backbone()
    elif which == "student":
        backbone = method.student_backbone()
    else:
        raise ValueError(f"unknown backbone choice '{which}': use teacher or student")
    return backbone.eval(), payload["config"]


def _evaluation_method(objs: Any, state: dict[str, torch.Tensor]) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """The method to load for evaluation, and the part of the saved state it holds.

    A method class may name a simpler one to be evaluated as (`evaluated_as`: D-MAE-Lite's
    student is an MAE; its adapters are training-only); its config is the shared fields.
    """
    target = getattr(method_class(objs.method.name), "evaluated_as", None)
    if target is None:
        return build_method(objs.method, objs.backbone), state
    cls = method_class(target)
    shared = {f.name for f in dataclasses.fields(cls.Config)}
    cfg = cls.Config(**{k: v for k, v in vars(objs.method).items() if k in shared and k != "name"})
    method = cls(cfg, objs.backbone)
    own = method.state_dict()
    return method, {k: v for k, v in state.items() if k in own}


def default_image_size(config: dict[str, Any]) -> int:
    """Evaluate at the size the backbone was trained on (global crop size, else img_size)."""
    crops = config.get("method", {}).get("crops", {})
    return int(crops.get("global_crops_size") or config.get("backbone", {}).get("img_size", 224))


def image_size_or_default(image_size: int | None, config: dict[str, Any]) -> int:
    """An asked-for evaluation size, else the training one; 0 or less is refused, not read as "default"."""
    if image_size is None:
        return default_image_size(config)
    if image_size < 1:
        raise ValueError(f"image size {image_size} is out of range: use an integer >= 1 (or leave it out for the "
                         "training crop size)")
    return image_size


class _Transformed(Dataset):
    def __init__(self, base: Dataset, transform: Any) -> None:
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image, label = self.base[i]
        return self.transform(image), label


def default_normalization(config: dict[str, Any]) -> tuple[list[float], list[float]]:
    """Mean and std of the pre-training crops (method.crop or method.crops), else ImageNet's."""
    method = config.get("method", {})
    crops = method.get("crop") or method.get("crops") or {}
    eval_default = EvalTransform()
    return list(crops.get("mean", eval_default.mean)), list(crops.get("std", eval_default.std))


def untrained_backbone(source: str | Path, seed: int = 0) -> tuple[nn.Module, dict[str, Any]]:
    """A randomly initialised evaluation backbone (seeded) with the architecture of a
    pre-training preset, config YAML or checkpoint: the from-scratch baseline."""
    from vitssl.config import to_container

    path = Path(source)
    if path.is_dir() or path.suffix == ".pt":
        base = load_checkpoint(source).get("config")
        if base is None:
            raise CheckpointError(f"'{source}' is not a vitssl pre-training checkpoint (no config entry)")
        cfg = load_config(None, [], method_configs(), base=base)
    else:
        cfg = load_config(str(source), [], method_configs())
    objs = to_objects(cfg)
    torch.manual_seed(seed)
    method, _ = _evaluation_method(objs, {})  # D-MAE-Lite: a plain MAE, no teacher file needed
    return method.evaluation_backbone(), to_container(cfg)


def eval_transform(source: str, image_size: int, resize_size: int | None = None) -> EvalTransform:
    """DINO's Resize(size x 256/224) + CenterCrop(size) for image folders; built-in sets are
    already at their training resolution, so they are only resized to `image_size`."""
    if resize_size is None and source in BUILTIN_DATASETS:
        resize_size = image_size
    return EvalTransform(image_size, resize_size)


def labelled_features(
    backbone: nn.Module, source: str, split: str, image_size: int, device: torch.device,
    batch_size: int = 256, num_workers: int = 4, n_last_blocks: int = 1, avgpool_patchtokens: bool = False,
    resize_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Features and labels of a labelled data set (ImageFolder layout or a built-in set)."""
    dataset = build_dataset(source, split=split)
    if getattr(dataset, "num_classes", 0) < 2:
        raise ValueError(f"'{source}' has no class sub-folders: evaluation needs an ImageFolder layout with labels")
    transform = eval_transform(source, image_size, resize_size)
    loader = DataLoader(rank_shard(_Transformed(dataset, transform)), batch_size=batch_size,
                        num_workers=num_workers, shuffle=False)  # under torchrun: each rank reads 1/W
    feats, labels = extract_features(backbone.to(device), loader, device, n_last_blocks=n_last_blocks,
                                     avgpool_patchtokens=avgpool_patchtokens)
    feats, labels = gather_features(feats, labels, len(dataset))
    report_skips(dataset)
    return feats, labels, int(dataset.num_classes)


@dataclass
class FeatureSplits:
    """Frozen features of a checkpoint on a train and a val set, with what produced them."""

    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    num_classes: int
    image_size: int
    device: torch.device


def checkpoint_features(checkpoint: str | Path, train: str, val: str, which: str = "teacher",
                        image_size: int | None = None, resize_size: int | None = None, device: str = "auto",
                        batch_size: int = 256, num_workers: int = 4, n_last_blocks: int = 1,
                        avgpool_patchtokens: bool = False) -> FeatureSplits:
    """Load a checkpoint's backbone once and extract train and val features with it."""
    backbone, config = load_pretrained(checkpoint, which)
    dev = resolve_device(init_distributed(device)[0])  # under torchrun: this rank's GPU, shards gathered
    size = image_size_or_default(image_size, config)
    kw = dict(n_last_blocks=n_last_blocks, avgpool_patchtokens=avgpool_patchtokens, resize_size=resize_size)
    tr_f, tr_y, n_cls = labelled_features(backbone, train, "train", size, dev, batch_size, num_workers, **kw)
    va_f, va_y, _ = labelled_features(backbone, val, "val", size, dev, batch_size, num_workers, **kw)
    return FeatureSplits((tr_f, tr_y), (va_f, va_y), n_cls, size, dev)


DEFAULT_KS = (10, 20, 100, 200)  # DINO's


def knn_ks(ks: tuple[int, ...] | None, train: str) -> tuple[int, ...]:
    """The k values to report: a k above the memory bank (the labelled train images) would be
    clipped to it and reported under the wrong k, so an asked-for one is refused and DINO's
    defaults (`ks=None`) are cut to those that fit."""
    bank = len(build_dataset(train, split="train"))
    if ks is None:
        return tuple(k for k in DEFAULT_KS if k <= bank) or (bank,)
    too_big = [k for k in ks if k > bank]
    if too_big:
        raise ValueError(f"--ks {' '.join(map(str, too_big))}: the k-NN memory bank holds only {bank} train images "
                         f"of '{train}': use k <= {bank}")
    return tuple(ks)


def run_knn(checkpoint: str | Path, train: str, val: str, ks: tuple[int, ...] | None = None,
            temperature: float = 0.07, image_size: int | None = None, resize_size: int | None = None,
            device: str = "auto", batch_size: int = 256, num_workers: int = 4,
            which: str = "teacher") -> dict[str, Any]:
    """DINO k-NN protocol (spec 1.6) on a checkpoint; `ks=None`: DINO's 10, 20, 100, 200 where they fit."""
    ks = knn_ks(ks, train)
    f = checkpoint_features(checkpoint, train, val, which, image_size, resize_size, device, batch_size, num_workers)
    results = knn_classify(*f.train, *f.val, ks=ks, temperature=temperature, num_classes=f.num_classes)
    return {"protocol": "knn", "checkpoint": str(checkpoint), "backbone": which, "train": train, "val": val,
            "image_size": f.image_size, "temperature": temperature,
            "results": {str(k): v for k, v in results.items()}}


def run_linear(checkpoint: str | Path, train: str, val: str, n_last_blocks: int = 4,
               avgpool_patchtokens: bool = False, epochs: int = 100, lr: float | None = None,
               lrs: list[float] | None = None, batch_size: int = 256, image_size: int | None = None,
               resize_size: int | None = None, device: str = "auto", num_workers: int = 4,
               which: str = "teacher", batchnorm: bool = False) -> dict[str, Any]:
    """DINO linear protocol (spec 1.6) on pre-extracted frozen features; `batchnorm` puts MAE's
    BatchNorm1d(affine=False) before the Linear layer (spec 2.3)."""
    f = checkpoint_features(checkpoint, train, val, which, image_size, resize_size, device, batch_size,
                            num_workers, n_last_blocks, avgpool_patchtokens)
    result = train_linear_probe(*f.train, *f.val, f.num_classes, epochs=epochs, lr=lr, lrs=lrs,
                                batch_size=batch_size, device=str(f.device), batchnorm=batchnorm)
    return {"protocol": "linear", "checkpoint": str(checkpoint), "backbone": which, "train": train, "val": val,
            "image_size": f.image_size, "n_last_blocks": n_last_blocks, "avgpool_patchtokens": avgpool_patchtokens,
            "epochs": epochs, "batchnorm": batchnorm, "top1": result.top1, "top5": result.top5,
            "best_lr": result.best_lr}


def run_finetune(checkpoint: str | Path | None, train: str, val: str, recipe: str = "mae_lite_impr",
                 overrides: list[str] | None = None, epochs: int | None = None, lr: float | None = None,
                 batch_size: int | None = None, scratch: bool = False, backbone_config: str | None = None,
                 train_fraction: float | None = None, samples_per_class: int | None = None,
                 image_size: int | None = None, resize_size: int | None = None, device: str = "auto",
                 seed: int = 0, num_workers: int = 4, which: str = "teacher") -> dict[str, Any]:
    """End-to-end fine-tuning (spec 2.3, 5.4) of a checkpoint's backbone, or with `scratch` of a
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
    size = image_size_or_default(image_size, config)
    mean, std = default_normalization(config)
    data = finetune_data(train, val, chosen, size, mean, std, resize_size, train_fraction, samples_per_class, seed)
    result = finetune_backbone(backbone, data, chosen, lr, resolve_device(device), seed, num_workers)
    return {"protocol": "finetune", "checkpoint": None if scratch else str(checkpoint), "scratch": scratch,
            "backbone_config": str(backbone_config or checkpoint) if scratch else None,
            "backbone": None if scratch else which, "train": train, "val": val, "train_images": len(data.train),
            "val_images": len(data.val), "image_size": size, "seed": seed, "recipe": recipe,
            "recipe_values": asdict(chosen), "lr": result.lr, "batch_size": result.batch_size,
            "top1": result.top1, "top5": result.top5, "best_top1": result.best_top1, "history": result.history}


def save_results(results: dict[str, Any], path: str | Path) -> Path:
    """Write `results` as JSON through a temp file: a failed write leaves any previous file whole."""
    path = Path(path)
    if not is_main_process():  # under torchrun every rank has the results; rank 0 writes them
        return path
    return write_text_atomic(path, json.dumps(results, indent=2))


def run_segmentation(checkpoint: str | Path, train: str, val: str, image_size: int | None = None, epochs: int = 20,
                     lr: float | None = None, batch_size: int = 64, device: str = "auto", seed: int = 0,
                     num_workers: int = 0, which: str = "teacher") -> dict[str, Any]:
    """Linear segmentation probe on a checkpoint's frozen patch features (spec 4.5, dense probe)."""
    from vitssl.eval.segmentation import run_segmentation_probe

    backbone, config = load_pretrained(checkpoint, which)
    kw: dict[str, Any] = dict(epochs=epochs, batch_size=batch_size, device=str(resolve_device(device)), seed=seed,
                              num_workers=num_workers, image_size=image_size_or_default(image_size, config))
    if lr is not None:
        kw["lr"] = lr
    result = run_segmentation_probe(backbone, train, val, **kw)
    result.update(protocol="segmentation", checkpoint=str(checkpoint), backbone=which, train=train, val=val)
    return result


def run_video_segmentation(checkpoint: str | Path, frames: str, first_mask: str, out_dir: str | Path,
                           gt_dir: str | None = None, short_side: int = 480, n_last_frames: int = 7, topk: int = 5,
                           size_mask_neighborhood: int = 12, device: str = "auto",
                           which: str = "teacher", overwrite: bool = True) -> dict[str, Any]:
    """DINO's DAVIS label propagation (spec 1.6) with a checkpoint's last-layer patch features;
    `overwrite=False` refuses an `out_dir` that already holds masks or results."""
    from vitssl.eval.video_segmentation import run_label_propagation

    check_output_dir(out_dir, overwrite, ("*.png", "video_segmentation.json"))
    backbone, _ = load_pretrained(checkpoint, which)
    result = run_label_propagation(backbone.to(resolve_device(device)), frames, first_mask, out_dir, gt_dir=gt_dir,
                                   short_side=short_side, n_last_frames=n_last_frames, topk=topk,
                                   size_mask_neighborhood=size_mask_neighborhood)
    result.update(protocol="video-segmentation", checkpoint=str(checkpoint), backbone=which)
    return result
