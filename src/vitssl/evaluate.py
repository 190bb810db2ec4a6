"""`vitssl eval knn|linear`: load a pre-trained backbone and evaluate its frozen features."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from vitssl.augment import EvalTransform
from vitssl.config import load_config, to_objects
from vitssl.data import BUILTIN_DATASETS, build_dataset
from vitssl.engine.checkpoint import CheckpointError, load_checkpoint, load_matching_state
from vitssl.engine.trainer import resolve_device
from vitssl.eval import extract_features, knn_classify, train_linear_probe
from vitssl.methods import build_method, method_configs


def load_pretrained(checkpoint: str | Path, which: str = "teacher") -> tuple[nn.Module, dict[str, Any]]:
    """The evaluation backbone of a vitssl checkpoint (the teacher for DINO) and its config.

    `which="student"` returns the student backbone instead, where the method has one.
    """
    payload = load_checkpoint(checkpoint)
    if "config" not in payload or "method" not in payload:
        raise CheckpointError(f"'{checkpoint}' is not a vitssl pre-training checkpoint (no config/method entries)")
    cfg = load_config(None, [], method_configs(), base=payload["config"])
    objs = to_objects(cfg)
    method = build_method(objs.method, objs.backbone)
    load_matching_state(method, payload["method"], "method")
    if which == "teacher":
        backbone = method.evaluation_backbone()
    elif which == "student":
        backbone = method.student_backbone()
    else:
        raise ValueError(f"unknown backbone choice '{which}': use teacher or student")
    return backbone.eval(), payload["config"]


def default_image_size(config: dict[str, Any]) -> int:
    """Evaluate at the size the backbone was trained on (global crop size, else img_size)."""
    crops = config.get("method", {}).get("crops", {})
    return int(crops.get("global_crops_size") or config.get("backbone", {}).get("img_size", 224))


class _Transformed(Dataset):
    def __init__(self, base: Dataset, transform: Any) -> None:
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image, label = self.base[i]
        return self.transform(image), label


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
    loader = DataLoader(_Transformed(dataset, transform), batch_size=batch_size,
                        num_workers=num_workers, shuffle=False)
    feats, labels = extract_features(backbone.to(device), loader, device, n_last_blocks=n_last_blocks,
                                     avgpool_patchtokens=avgpool_patchtokens)
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
    dev = resolve_device(device)
    size = image_size or default_image_size(config)
    kw = dict(n_last_blocks=n_last_blocks, avgpool_patchtokens=avgpool_patchtokens, resize_size=resize_size)
    tr_f, tr_y, n_cls = labelled_features(backbone, train, "train", size, dev, batch_size, num_workers, **kw)
    va_f, va_y, _ = labelled_features(backbone, val, "val", size, dev, batch_size, num_workers, **kw)
    return FeatureSplits((tr_f, tr_y), (va_f, va_y), n_cls, size, dev)


def run_knn(checkpoint: str | Path, train: str, val: str, ks: tuple[int, ...] = (10, 20, 100, 200),
            temperature: float = 0.07, image_size: int | None = None, resize_size: int | None = None,
            device: str = "auto", batch_size: int = 256, num_workers: int = 4,
            which: str = "teacher") -> dict[str, Any]:
    """DINO k-NN protocol (spec 1.6) on a checkpoint."""
    f = checkpoint_features(checkpoint, train, val, which, image_size, resize_size, device, batch_size, num_workers)
    results = knn_classify(*f.train, *f.val, ks=ks, temperature=temperature, num_classes=f.num_classes)
    return {"protocol": "knn", "checkpoint": str(checkpoint), "backbone": which, "train": train, "val": val,
            "image_size": f.image_size, "temperature": temperature,
            "results": {str(k): v for k, v in results.items()}}


def run_linear(checkpoint: str | Path, train: str, val: str, n_last_blocks: int = 4,
               avgpool_patchtokens: bool = False, epochs: int = 100, lr: float | None = None,
               lrs: list[float] | None = None, batch_size: int = 256, image_size: int | None = None,
               resize_size: int | None = None, device: str = "auto", num_workers: int = 4,
               which: str = "teacher") -> dict[str, Any]:
    """DINO linear protocol (spec 1.6) on pre-extracted frozen features."""
    f = checkpoint_features(checkpoint, train, val, which, image_size, resize_size, device, batch_size,
                            num_workers, n_last_blocks, avgpool_patchtokens)
    result = train_linear_probe(*f.train, *f.val, f.num_classes, epochs=epochs, lr=lr, lrs=lrs,
                                batch_size=batch_size, device=str(f.device))
    return {"protocol": "linear", "checkpoint": str(checkpoint), "backbone": which, "train": train, "val": val,
            "image_size": f.image_size, "n_last_blocks": n_last_blocks, "avgpool_patchtokens": avgpool_patchtokens,
            "epochs": epochs, "top1": result.top1, "top5": result.top5, "best_lr": result.best_lr}


def save_results(results: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))
    return path


def run_segmentation(checkpoint: str | Path, train: str, val: str, image_size: int | None = None, epochs: int = 20,
                     lr: float | None = None, batch_size: int = 64, device: str = "auto", seed: int = 0,
                     num_workers: int = 0, which: str = "teacher") -> dict[str, Any]:
    """Linear segmentation probe on a checkpoint's frozen patch features (spec 4.5, dense probe)."""
    from vitssl.eval.segmentation import run_segmentation_probe

    backbone, config = load_pretrained(checkpoint, which)
    kw: dict[str, Any] = dict(epochs=epochs, batch_size=batch_size, device=str(resolve_device(device)), seed=seed,
                              num_workers=num_workers, image_size=image_size or default_image_size(config))
    if lr is not None:
        kw["lr"] = lr
    result = run_segmentation_probe(backbone, train, val, **kw)
    result.update(protocol="segmentation", checkpoint=str(checkpoint), backbone=which, train=train, val=val)
    return result


def run_video_segmentation(checkpoint: str | Path, frames: str, first_mask: str, out_dir: str | Path,
                           gt_dir: str | None = None, short_side: int = 480, n_last_frames: int = 7, topk: int = 5,
                           size_mask_neighborhood: int = 12, device: str = "auto",
                           which: str = "teacher") -> dict[str, Any]:
    """DINO's DAVIS label propagation (spec 1.6) with a checkpoint's last-layer patch features."""
    from vitssl.eval.video_segmentation import run_label_propagation

    backbone, _ = load_pretrained(checkpoint, which)
    result = run_label_propagation(backbone.to(resolve_device(device)), frames, first_mask, out_dir, gt_dir=gt_dir,
                                   short_side=short_side, n_last_frames=n_last_frames, topk=topk,
                                   size_mask_neighborhood=size_mask_neighborhood)
    result.update(protocol="video-segmentation", checkpoint=str(checkpoint), backbone=which)
    return result
