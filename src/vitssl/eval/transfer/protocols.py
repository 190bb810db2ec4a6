"""What a suite does on one set: a logistic-regression probe on cached frozen features, or an
end-to-end fine-tuning with a recipe. Each returns the row of the suite table for that set."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from vitssl.augment import EvalTransform
from vitssl.eval.features import _Transformed, extract_features
from vitssl.eval.transfer.cache import cache_key, load_cached, save_cached
from vitssl.eval.transfer.logreg import sweep_c
from vitssl.eval.transfer.registry import TransferSet
from vitssl.eval.transfer.sets import SetSplits

log = logging.getLogger("vitssl.transfer")
PARTS = ("train", "val", "test")


@dataclass
class TransferOptions:
    """Everything besides the checkpoint and the sets that shapes a suite's numbers."""

    image_size: int | None = None
    resize_size: int | None = None
    batch_size: int | None = None  # linear: 256 for extraction; finetune: the recipe's
    num_workers: int = 4
    device: str = "auto"
    which: str = "teacher"
    n_last_blocks: int = 1
    cs: list[float] | None = None
    solver: str = "auto"
    recipe: str = "transfer"
    overrides: list[str] = field(default_factory=list)
    epochs: int | None = None
    lr: float | None = None
    samples_per_class: int | None = None
    seed: int = 0
    random_init: bool = False  # the checkpoint's architecture, randomly initialised (seeded): the baseline

    def shaping(self, protocol: str) -> dict[str, Any]:
        """The options a finished set's numbers depend on (compared when a suite resumes)."""
        common = dict(image_size=self.image_size, resize_size=self.resize_size, which=self.which,
                      random_init=self.random_init, **({"seed": self.seed} if self.random_init else {}))
        if protocol == "linear":
            return {**common, "n_last_blocks": self.n_last_blocks, "cs": self.cs}
        return {**common, "recipe": self.recipe, "overrides": list(self.overrides), "epochs": self.epochs,
                "lr": self.lr, "batch_size": self.batch_size, "samples_per_class": self.samples_per_class,
                "seed": self.seed}

    def backbone(self, checkpoint: Any) -> tuple[nn.Module, dict[str, Any]]:
        """The backbone to evaluate: the checkpoint's, or a seeded random one shaped like it."""
        from vitssl.eval.pretrained import load_pretrained, untrained_backbone

        if self.random_init:
            if Path(checkpoint).suffix in (".safetensors", ".pth", ".bin"):  # a timm file has no config
                raise ValueError(f"--random-init builds the architecture from a vitssl run's config, and "
                                 f"'{checkpoint}' is a weights file: pass a vitssl run folder or checkpoint .pt")
            return untrained_backbone(checkpoint, self.seed)
        return load_pretrained(checkpoint, self.which)


def eval_transform_for(spec: TransferSet, size: int, resize: int | None,
                       normalization: tuple[list[float], list[float]] | None = None) -> EvalTransform:
    """Resize(size x 256/224) + CenterCrop(size); built-in sets only resize to `size`. Normalised
    with `normalization` (the run's mean and std; ImageNet's when None)."""
    mean_std = normalization or (EvalTransform().mean, EvalTransform().std)
    return EvalTransform(size, resize if resize is not None else (size if spec.builtin else None), *mean_std)


def _features(backbone: nn.Module, dataset: Dataset, transform: Any, device: torch.device,
              opts: TransferOptions) -> tuple[torch.Tensor, torch.Tensor]:
    loader = DataLoader(_Transformed(dataset, transform), batch_size=opts.batch_size or 256, shuffle=False,
                        num_workers=opts.num_workers)
    return extract_features(backbone, loader, device, n_last_blocks=opts.n_last_blocks)


def set_features(backbone: nn.Module, spec: TransferSet, splits: SetSplits, key_parts: dict[str, Any],
                 cache_dir: Path, device: torch.device, opts: TransferOptions, size: int,
                 normalization: tuple[list[float], list[float]] | None = None
                 ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Train/val/test features of one set, from the cache when its key matches."""
    transform = eval_transform_for(spec, size, opts.resize_size, normalization)
    key = cache_key({**key_parts, "set": spec.name, "source": splits.source, "sizes": splits.sizes(),
                     "transform": repr(transform), "mean": transform.mean, "std": transform.std,
                     "n_last_blocks": opts.n_last_blocks})
    path = cache_dir / f"{spec.name}.pt"
    cached = load_cached(path, key)
    if cached is not None:
        log.info("%s: features from the cache %s", spec.name, path)
        return cached
    backbone.to(device)
    parts = {name: _features(backbone, getattr(splits, name), transform, device, opts) for name in PARTS}
    save_cached(path, key, parts)
    return parts


def linear_row(backbone: nn.Module, spec: TransferSet, splits: SetSplits, key_parts: dict[str, Any],
               cache_dir: Path, device: torch.device, opts: TransferOptions, size: int,
               normalization: tuple[list[float], list[float]] | None = None) -> dict[str, Any]:
    """CLIP/ELEVATER linear probe on one set: C chosen on val, refit on train + val, test score.
    Images are normalised with the run's `normalization` (mean, std), as in fine-tuning."""
    feats = set_features(backbone, spec, splits, key_parts, cache_dir, device, opts, size, normalization)
    as_np = {k: (f.double().numpy(), y.numpy()) for k, (f, y) in feats.items()}
    backend = opts.solver if opts.solver != "auto" else ("torch" if device.type == "cuda" else "sklearn")
    result = sweep_c(as_np["train"], as_np["val"], as_np["test"], spec.metric, splits.num_classes,
                     grid=opts.cs, refine=opts.cs is None, backend=backend, device=str(device))
    return {"C": result.best_c, "score": result.test_score, "val_scores": {f"{c:.6g}": s for c, s in
                                                                          result.val_scores.items()},
            "solver": backend, "feature_dim": int(feats["train"][0].shape[1])}


class _Targets(Dataset):
    """ConcatDataset of labelled parts, with the joined `targets` for class-balanced subsets."""

    def __init__(self, parts: list[Any]) -> None:
        self.joined = ConcatDataset(parts)
        self.targets = [t for p in parts for t in p.targets]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> Any:
        return self.joined[i]


def finetune_row(backbone: nn.Module, config: dict[str, Any], spec: TransferSet, splits: SetSplits,
                 device: torch.device, opts: TransferOptions, size: int) -> dict[str, Any]:
    """MAE-Lite transfer fine-tuning on one set: train + val for training, test scored."""
    from vitssl.eval.finetune import (
        FinetuneData,
        finetune_backbone,
        labelled_subset,
        resolve_recipe,
        train_transform,
    )
    from vitssl.eval.finetune import _Transformed as Indexed
    from vitssl.eval.pretrained import default_normalization

    extra = [f"{k}={v}" for k, v in (("epochs", opts.epochs), ("batch_size", opts.batch_size)) if v is not None]
    recipe = resolve_recipe(opts.recipe, [*opts.overrides, *extra])
    mean, std = default_normalization(config)
    train = _Targets([splits.train, splits.val])
    keep = labelled_subset(train.targets, None, opts.samples_per_class, opts.seed)
    resize = opts.resize_size if opts.resize_size is not None else (size if spec.builtin else None)
    test = Indexed(splits.test, np.arange(len(splits.test)), EvalTransform(size, resize, mean, std))
    data = FinetuneData(Indexed(train, keep, train_transform(recipe, size, mean, std)), test, splits.num_classes)
    result = finetune_backbone(backbone, data, recipe, opts.lr, device, opts.seed, opts.num_workers)
    return {"score": result.top1, "top5": result.top5, "best_top1": result.best_top1, "lr": result.lr,
            "epochs": recipe.epochs, "train_images": len(keep), "history": result.history}
