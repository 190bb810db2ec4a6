"""End-to-end fine-tuning of a backbone with a classification head (MAE paper App. A.1, Tables 9-10; facebookresearch/mae FINETUNE.md; wangsr126/mae-lite projects/eval_tools/finetuning_exp.py).

Unlike the k-NN and linear protocols, every weight trains: AdamW (or SGD for small-data
transfer) with layer-wise lr decay (`vitssl.engine.layer_decay`), a per-step warm-up + cosine
schedule, and timm's RandAugment, Mixup/CutMix and soft-target losses. The head follows MAE's
`models_vit` with global pooling: the final norm is dropped, the patch tokens are averaged and
pass through a fresh LayerNorm (`fc_norm`) into a Linear classifier.

Recipes are named `FinetuneRecipe` presets in `RECIPES`; any field can be overridden with
`key=value` strings (`resolve_recipe`).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from PIL import Image, ImageOps
from timm.data import Mixup, create_transform
from timm.data.auto_augment import RandAugment
from timm.layers import DropPath, trunc_normal_
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from torch import nn
from torch.utils.data import DataLoader, Dataset

from vitssl.augment import EvalTransform
from vitssl.data import build_dataset
from vitssl.engine.layer_decay import layer_decay_groups, stage_depths
from vitssl.engine.schedules import cosine_schedule
from vitssl.engine.validation import (
    require_choice,
    require_int,
    require_number,
    require_numbers,
    require_probability,
    require_range_pair,
)
from vitssl.engine.wording import counted

log = logging.getLogger("vitssl.finetune")


@dataclass
class FinetuneRecipe:
    """Fine-tuning hyper-parameters; the defaults are MAE-Lite's "impr." recipe (MAE-Lite paper, fine-tuning recipe; wangsr126/mae-lite projects/eval_tools/finetuning_exp.py).

    The lr is `blr x batch_size / 256` unless given outright. `layer_decay` scales block i's
    lr by `layer_decay ** (L - i)` (embeddings: `** (L + 1)`). `rand_augment` is a timm
    RandAugment string ("" for none); as in every timm-based recipe, timm ignores
    `color_jitter` while RandAugment is on. `mixup`/`cutmix` are Beta alphas (0: off) and
    `label_smoothing` also softens mixed targets. `hflip` and `crop_scale` are there for data
    where a mirrored or tiny crop changes the class (digits).
    """

    optimizer: str = "adamw"
    blr: float = 1e-3
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    layer_decay: float = 0.85
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    momentum: float = 0.9
    nesterov: bool = False
    clip_grad: float = 0.0
    epochs: int = 300
    warmup_epochs: int = 5
    batch_size: int = 1024
    drop_path: float = 0.0
    global_pool: bool = True
    rand_augment: str = "rand-m10-mstd0.5-inc1"
    color_jitter: float = 0.3
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    hflip: float = 0.5
    interpolation: str = "bicubic"
    reprob: float = 0.0
    mixup: float = 0.2
    cutmix: float = 0.0
    label_smoothing: float = 0.0
    head_init_std: float = 2e-5

    def __post_init__(self) -> None:
        check_recipe(self)


def check_recipe(r: FinetuneRecipe) -> None:
    """Every recipe field (keys as typed in `key=value` overrides); one line per problem."""
    require_choice("optimizer", r.optimizer, ("adamw", "sgd"))
    for name in ("blr", "min_lr", "weight_decay", "clip_grad", "color_jitter", "mixup", "cutmix", "head_init_std"):
        require_number(name, getattr(r, name), lo=0.0)
    require_number("layer_decay", r.layer_decay, 0.0, 1.0, lo_open=True)
    require_numbers("betas", r.betas, length=2, lo=0.0, hi=1.0, hi_open=True)
    for name in ("momentum", "hflip", "reprob"):
        require_probability(name, getattr(r, name))
    for name in ("drop_path", "label_smoothing"):
        require_number(name, getattr(r, name), 0.0, 1.0, hi_open=True)
    require_int("epochs", r.epochs, lo=1)
    require_int("batch_size", r.batch_size, lo=1)
    require_int("warmup_epochs", r.warmup_epochs, lo=0)
    require_range_pair("crop_scale", r.crop_scale, 0.0, 1.0)
    require_choice("interpolation", r.interpolation, INTERPOLATIONS)


INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "random")


RECIPES: dict[str, FinetuneRecipe] = {
    # MAE-Lite ViT-Tiny "impr." (MAE-Lite paper, fine-tuning recipe; wangsr126/mae-lite projects/eval_tools/finetuning_exp.py): 300 epochs, bs 1024, lr 1e-3 x bs/256, layer decay 0.85.
    "mae_lite_impr": FinetuneRecipe(),
    # MAE ViT-B (MAE paper App. A.1, Tables 9-10; facebookresearch/mae FINETUNE.md): blr 5e-4, layer decay 0.65, drop path 0.1, RandAug m9, random
    # erasing 0.25, mixup 0.8 + cutmix 1.0, label smoothing 0.1, 100 epochs; no colour jitter.
    "mae": FinetuneRecipe(blr=5e-4, layer_decay=0.65, epochs=100, drop_path=0.1, rand_augment="rand-m9-mstd0.5-inc1",
                          color_jitter=0.0, reprob=0.25, mixup=0.8, cutmix=1.0, label_smoothing=0.1),
    # MAE-Lite small-data transfer (MAE-Lite paper, fine-tuning recipe; wangsr126/mae-lite projects/eval_tools/finetuning_exp.py): SGD Nesterov, wd 0, clip 1.0, layer decay 0.75,
    # RRC + flip only; lr 0.1 at bs 512, 50 epochs with 10 of warm-up.
    "transfer": FinetuneRecipe(optimizer="sgd", blr=0.05, weight_decay=0.0, nesterov=True, clip_grad=1.0,
                               layer_decay=0.75, epochs=50, warmup_epochs=10, batch_size=512, rand_augment="",
                               color_jitter=0.0, mixup=0.0),
}


def resolve_recipe(name: str, overrides: Sequence[str] = ()) -> FinetuneRecipe:
    """The named recipe with `key=value` overrides applied (unknown keys fail, naming the key)."""
    if name not in RECIPES:
        raise ValueError(f"unknown fine-tuning recipe '{name}': choose one of {sorted(RECIPES)}")
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"recipe override '{item}' has no '=': write key=value, e.g. layer_decay=0.75")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(RECIPES[name]), OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as e:
        raise ValueError(f"bad recipe override {list(overrides)}: {str(e).splitlines()[0]}; "
                         f"keys are {sorted(asdict(RECIPES[name]))}") from None
    recipe = OmegaConf.to_object(merged)  # checks every value (FinetuneRecipe.__post_init__)
    assert isinstance(recipe, FinetuneRecipe)
    return recipe


class Classifier(nn.Module):
    """Backbone + head. With `global_pool` (MAE): the backbone's final norm is replaced by
    `fc_norm` on the mean patch token; otherwise the Linear reads `Tokens.pooled` (the CLS token
    after the final norm, or the mean token of a CLS-free backbone)."""

    def __init__(self, backbone: nn.Module, num_classes: int, global_pool: bool = True,
                 head_init_std: float = 2e-5) -> None:
        super().__init__()
        dim = int(backbone.embed_dim)
        if global_pool and isinstance(getattr(backbone, "norm", None), nn.Module):
            backbone.norm = nn.Identity()
        self.backbone = backbone
        self.global_pool = global_pool
        self.fc_norm = nn.LayerNorm(dim, eps=1e-6) if global_pool else nn.Identity()
        self.head = nn.Linear(dim, num_classes)
        trunc_normal_(self.head.weight, std=head_init_std)  # MAE: a near-zero classifier at the start
        nn.init.zeros_(self.head.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images -> (B, num_classes) logits."""
        tokens = self.backbone(images)
        features = tokens.patches.mean(dim=1) if self.global_pool else tokens.pooled
        return self.head(self.fc_norm(features))


def set_drop_path(backbone: nn.Module, rate: float) -> None:
    """Stochastic depth rising linearly from 0 (first block) to `rate` (last), as timm builds
    it; replaces the blocks' DropPath modules, so a backbone pre-trained without drop path
    gets one for fine-tuning."""
    blocks = list(getattr(backbone, "residual_blocks", None) or backbone.blocks)  # ResNet: no attention blocks
    for i, block in enumerate(blocks):
        p = rate * i / max(len(blocks) - 1, 1)
        for attr in ("drop_path1", "drop_path2", "drop_path"):  # timm ViT/Swin; CvT, timm ResNet
            if hasattr(block, attr):
                setattr(block, attr, DropPath(p) if p > 0 else nn.Identity())


def labelled_subset(labels: Sequence[int], fraction: float | None = None, per_class: int | None = None,
                    seed: int = 0) -> np.ndarray:
    """Sorted indices of a class-balanced random subset: `per_class` images of every class
    (all of a class that has fewer), or `fraction` of each class (at least one); all indices
    when neither is given."""
    labels = np.asarray(labels)
    if fraction is not None and per_class is not None:
        raise ValueError("give --train-fraction or --samples-per-class, not both")
    if fraction is None and per_class is None:
        return np.arange(len(labels))
    if fraction is not None and not 0.0 < fraction <= 1.0:
        raise ValueError(f"train fraction must be in (0, 1], got {fraction}")
    if per_class is not None and per_class < 1:
        raise ValueError(f"samples per class must be >= 1, got {per_class}")
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = per_class if per_class is not None else max(1, round(len(idx) * fraction))
        chosen.append(idx[:n])
    return np.sort(np.concatenate(chosen))


class _Transformed(Dataset):
    def __init__(self, base: Dataset, indices: np.ndarray, transform: Any) -> None:
        self.base, self.indices, self.transform = base, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image, label = self.base[int(self.indices[i])]
        return self.transform(image), label


def _posterize(img: Image.Image, bits_to_keep: int, **_: Any) -> Image.Image:
    """PIL posterize, where keeping 0 bits gives a black image as Pillow < 11 did: RandAugment's
    "inc1" posterize reaches 0 bits at magnitude 10, which newer Pillow rejects."""
    if bits_to_keep >= 8:
        return img
    return ImageOps.posterize(img, bits_to_keep) if bits_to_keep > 0 else Image.new(img.mode, img.size)


def train_transform(recipe: FinetuneRecipe, size: int, mean: Sequence[float], std: Sequence[float]) -> Any:
    """timm's ImageNet training pipeline: RandomResizedCrop, flip, RandAugment, erasing."""
    transform = create_transform(size, is_training=True, scale=tuple(recipe.crop_scale), hflip=recipe.hflip,
                                 color_jitter=recipe.color_jitter or None, auto_augment=recipe.rand_augment or None,
                                 interpolation=recipe.interpolation, re_prob=recipe.reprob, re_mode="pixel",
                                 mean=tuple(mean), std=tuple(std))
    for step in transform.transforms:
        if isinstance(step, RandAugment):
            for op in step.ops:
                if op.name.startswith("Posterize"):
                    op.aug_fn = _posterize
    return transform


@dataclass
class FinetuneData:
    """Train and val image sets, already transformed, with their class count."""

    train: Dataset
    val: Dataset
    num_classes: int


def finetune_data(train: str, val: str, recipe: FinetuneRecipe, image_size: int, mean: Sequence[float],
                  std: Sequence[float], resize_size: int | None = None, train_fraction: float | None = None,
                  samples_per_class: int | None = None, seed: int = 0) -> FinetuneData:
    """Labelled train split (optionally a small class-balanced subset) and the val split."""
    train_set, val_set = build_dataset(train, split="train"), build_dataset(val, split="val")
    num_classes = int(getattr(train_set, "num_classes", 0))
    if num_classes < 2:
        raise ValueError(f"'{train}' has no class sub-folders: fine-tuning needs an ImageFolder layout with labels")
    if int(getattr(val_set, "num_classes", 0)) != num_classes:
        raise ValueError(f"'{val}' has {counted(getattr(val_set, 'num_classes', 0), 'class', 'classes')}, '{train}' has {num_classes}")
    keep = labelled_subset(train_set.targets, train_fraction, samples_per_class, seed)
    evaluation = EvalTransform(image_size, resize_size, mean, std)
    return FinetuneData(_Transformed(train_set, keep, train_transform(recipe, image_size, mean, std)),
                        _Transformed(val_set, np.arange(len(val_set)), evaluation), num_classes)


@dataclass
class FinetuneResult:
    """Final-epoch val top-1/top-5 (fractions), the best top-1 seen and one record per epoch."""

    top1: float
    top5: float
    lr: float
    batch_size: int
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def best_top1(self) -> float:
        return max((h["top1"] for h in self.history), default=self.top1)


@torch.no_grad()
def evaluate_classifier(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[float, float]:
    """Top-1 and top-5 (top-min(5, C)) accuracy as fractions, in eval mode."""
    model.eval()
    hits1 = hits5 = total = 0
    for images, labels in loader:
        logits = model(images.to(device)).float()
        labels = labels.to(device)
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices == labels[:, None]
        hits1 += int(top[:, 0].sum())
        hits5 += int(top.any(dim=1).sum())
        total += len(labels)
    return hits1 / total, hits5 / total


def _optimizer(model: nn.Module, recipe: FinetuneRecipe) -> torch.optim.Optimizer:
    groups = layer_decay_groups(model.named_parameters(), stage_depths(model.backbone), recipe.layer_decay,
                                recipe.weight_decay)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=0.0, momentum=recipe.momentum, nesterov=recipe.nesterov)
    return torch.optim.AdamW(groups, lr=0.0, betas=(recipe.betas[0], recipe.betas[1]))


def _criterion(recipe: FinetuneRecipe, num_classes: int) -> tuple[Mixup | None, nn.Module]:
    if recipe.mixup > 0 or recipe.cutmix > 0:
        mixup = Mixup(mixup_alpha=recipe.mixup, cutmix_alpha=recipe.cutmix, label_smoothing=recipe.label_smoothing,
                      num_classes=num_classes)
        return mixup, SoftTargetCrossEntropy()
    if recipe.label_smoothing > 0:
        return None, LabelSmoothingCrossEntropy(recipe.label_smoothing)
    return None, nn.CrossEntropyLoss()


def _seed_everything(seed: int) -> torch.Generator:
    """timm's augmentations draw from Python's and torch's global generators: seed both."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def train_classifier(model: Classifier, data: FinetuneData, recipe: FinetuneRecipe, lr: float | None = None,
                     device: torch.device | str = "cpu", seed: int = 0, num_workers: int = 0) -> FinetuneResult:
    """Fine-tune `model` on `data.train`, measuring val top-1/top-5 after every epoch.

    The batch is the recipe's, capped at the train-set size (and even, as Mixup needs); the
    lr is set every step to `cosine(step) x lr_scale` of each layer-decay group.
    """
    device = torch.device(device)
    batch = min(recipe.batch_size, len(data.train))
    mixup, criterion = _criterion(recipe, data.num_classes)
    if mixup is not None:
        batch -= batch % 2
    if batch < 1 or (mixup is not None and batch < 2):
        raise ValueError(f"the train set has {len(data.train)} image(s): too few for a batch")
    peak_lr = lr if lr is not None else recipe.blr * batch / 256
    g = _seed_everything(seed)
    train_loader = DataLoader(data.train, batch_size=batch, shuffle=True, drop_last=True, generator=g,
                              num_workers=num_workers, persistent_workers=num_workers > 0)
    val_loader = DataLoader(data.val, batch_size=max(batch, 256), num_workers=num_workers)
    model.to(device)
    optimizer = _optimizer(model, recipe)
    steps = len(train_loader)
    total, warmup = recipe.epochs * steps, recipe.warmup_epochs * steps
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    log.info("fine-tuning on %s (%s), %s x %s of %d, peak lr %.2e", counted(len(data.train), "image"),
             counted(data.num_classes, "class", "classes"), counted(recipe.epochs, "epoch"), counted(steps, "step"),
             batch, peak_lr)
    result = FinetuneResult(0.0, 0.0, peak_lr, batch)
    for epoch in range(recipe.epochs):
        model.train()
        losses = []
        for i, (images, targets) in enumerate(train_loader):
            step_lr = cosine_schedule(epoch * steps + i, total, peak_lr, recipe.min_lr, warmup)
            for group in optimizer.param_groups:
                group["lr"] = step_lr * group["lr_scale"]
            images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            if mixup is not None:
                images, targets = mixup(images, targets)
            with autocast:
                loss = criterion(model(images), targets)
            if not math.isfinite(loss.item()):
                raise RuntimeError(f"fine-tuning loss is {loss.item()} at epoch {epoch + 1}: lower the lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.clip_grad > 0:
                nn.utils.clip_grad_norm_(model.parameters(), recipe.clip_grad)
            optimizer.step()
            losses.append(loss.item())
        result.top1, result.top5 = evaluate_classifier(model, val_loader, device)
        result.history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "top1": result.top1,
                               "top5": result.top5, "lr": step_lr})
        log.info("epoch %d/%d  loss %.4f  val top-1 %.4f  top-5 %.4f", epoch + 1, recipe.epochs,
                 result.history[-1]["loss"], result.top1, result.top5)
    return result


def finetune_backbone(backbone: nn.Module, data: FinetuneData, recipe: FinetuneRecipe, lr: float | None = None,
                      device: torch.device | str = "cpu", seed: int = 0, num_workers: int = 0) -> FinetuneResult:
    """Put the recipe's drop path and a fresh head (seeded) on `backbone` and fine-tune it."""
    set_drop_path(backbone, recipe.drop_path)
    torch.manual_seed(seed)
    model = Classifier(backbone, data.num_classes, recipe.global_pool, recipe.head_init_std)
    return train_classifier(model, data, recipe, lr, device, seed, num_workers)
