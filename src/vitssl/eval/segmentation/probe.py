"""Linear semantic-segmentation probe on frozen patch features (dense evaluation, SelfPatch paper Sec. 4; alinlab/SelfPatch README).

SelfPatch claims better features *per patch*. A 1x1 convolution on the frozen last-layer patch
tokens measures exactly that, without the capacity of a Semantic-FPN decoder that could hide the
difference. As with the linear probe (eval/linear.py), the backbone runs once per image and the
probe trains on the cached features, so trying several learning rates is cheap.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from vitssl.augment.photometric import IMAGENET_MEAN, IMAGENET_STD, to_normalized_tensor
from vitssl.eval.segmentation.data import build_segmentation_dataset
from vitssl.eval.segmentation.metrics import confusion_matrix, segmentation_metrics

_HALF_ABOVE_BYTES = 2 << 30  # cache features as float16 when float32 would exceed 2 GiB
_DEFAULT_LR = {"adamw": 1e-3, "sgd": 1e-2}


# ----------------------------------------------------------------------------------- features

@dataclass
class PatchFeatures:
    """Frozen patch features (N, D, h, w) on CPU and their masks: one (N, S, S) tensor when
    resized to the image size (training), else a list of (H, W) masks at full size (scoring)."""

    features: torch.Tensor
    masks: torch.Tensor | list[torch.Tensor]


def _resize_labels(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Nearest-neighbour (pixel-centre) resize of an (H, W) label map to (size, size)."""
    if mask.shape == (size, size):
        return mask
    return F.interpolate(mask[None, None].double(), size=(size, size), mode="nearest-exact")[0, 0].long()


def _compact(mask: torch.Tensor) -> torch.Tensor:
    """uint8 when every label fits (ADE20K, VOC, shapes), so cached masks stay small."""
    return mask.to(torch.uint8) if int(mask.min()) >= 0 and int(mask.max()) <= 255 else mask.int()


class _ProbeInputs(Dataset):
    def __init__(self, pairs: Dataset, image_size: int, label_size: int | None,
                 normalization: tuple[Sequence[float], Sequence[float]] | None = None) -> None:
        self.pairs, self.image_size, self.label_size = pairs, image_size, label_size
        self.mean, self.std = normalization or (IMAGENET_MEAN, IMAGENET_STD)

    def __len__(self) -> int:
        return len(self.pairs)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.pairs[index]
        size = (self.image_size, self.image_size)
        x = to_normalized_tensor(image.convert("RGB").resize(size, Image.Resampling.BICUBIC), self.mean, self.std)
        m = torch.as_tensor(np.asarray(mask)).long()
        return x, _compact(_resize_labels(m, self.label_size) if self.label_size else m)


def _collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    return torch.stack([x for x, _ in batch]), [m for _, m in batch]


def patch_feature_maps(backbone: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, D, h, w): the backbone's final `Tokens.patches` laid out on their grid."""
    tokens = backbone(images)
    (h, w), (b, n, d) = tokens.grid, tokens.patches.shape
    if n != h * w:
        raise ValueError(f"backbone returned {n} patch tokens for a {h}x{w} grid: dense probes need every patch")
    return tokens.patches.reshape(b, h, w, d).permute(0, 3, 1, 2)


@torch.no_grad()
def extract_patch_features(backbone: nn.Module, pairs: Dataset, image_size: int,
                           device: torch.device | str = "cpu", batch_size: int = 64, num_workers: int = 0,
                           label_size: int | None = None, progress: bool = False,
                           normalization: tuple[Sequence[float], Sequence[float]] | None = None) -> PatchFeatures:
    """Run the frozen backbone (eval mode, already on `device`) once over (image, mask) pairs.

    Images are resized to image_size x image_size (bicubic) and normalised with `normalization`
    (mean, std: the run's, ImageNet's when None); masks are resized (nearest) to label_size, or
    kept at full size when it is None.
    """
    loader = DataLoader(_ProbeInputs(pairs, image_size, label_size, normalization), batch_size=batch_size,
                        num_workers=num_workers, shuffle=False, collate_fn=_collate)
    n, feats, masks, start = len(pairs), None, [], 0  # type: ignore[arg-type]
    was_training = backbone.training
    backbone.eval()
    try:
        for images, batch_masks in tqdm(loader, desc="patch features", disable=not progress, leave=False):
            out = patch_feature_maps(backbone, images.to(device)).float().cpu()
            if feats is None:  # allocate once: a second copy from torch.cat could not fit at ADE20K scale
                half = n * out[0].numel() * 4 > _HALF_ABOVE_BYTES
                feats = torch.empty((n, *out.shape[1:]), dtype=torch.float16 if half else torch.float32)
            feats[start:start + len(out)] = out
            start += len(out)
            masks.extend(batch_masks)
    finally:
        backbone.train(was_training)
    if feats is None:
        raise ValueError("the segmentation set is empty: nothing to extract features from")
    return PatchFeatures(feats, torch.stack(masks) if label_size else masks)


# -------------------------------------------------------------------------------------- probe

@dataclass
class SegmentationProbeResult:
    """Val metrics of the kept probe (see `segmentation_metrics`), its lr and its weights."""

    metrics: dict[str, Any]
    lr: float
    state_dict: dict[str, torch.Tensor] = field(default_factory=dict)


def _new_probe(dim: int, num_classes: int, generator: torch.Generator) -> nn.Conv2d:
    """1x1 conv = one linear classifier shared by every patch; init N(0, 0.01), bias 0 (DINO's)."""
    probe = nn.Conv2d(dim, num_classes, kernel_size=1)
    with torch.no_grad():
        probe.weight.copy_(torch.randn(probe.weight.shape, generator=generator) * 0.01)
        probe.bias.zero_()
    return probe


def _fit(train: PatchFeatures, num_classes: int, epochs: int, lr: float, optimizer: str,
         weight_decay: float, batch_size: int, device: torch.device | str, seed: int,
         ignore_index: int) -> nn.Conv2d:
    """One probe at one lr; every random draw comes from a generator seeded with `seed`."""
    g = torch.Generator().manual_seed(seed)
    probe = _new_probe(train.features.shape[1], num_classes, g).to(device)
    if optimizer == "adamw":
        opt: torch.optim.Optimizer = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(probe.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    labels = train.masks
    assert isinstance(labels, torch.Tensor)  # checked by train_segmentation_probe
    for epoch in range(epochs):
        for group in opt.param_groups:  # cosine to 0, once per epoch as eval/linear.py
            group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
        for idx in torch.randperm(len(labels), generator=g).split(batch_size):
            y = labels[idx].to(device).long()
            if not (y != ignore_index).any():
                continue  # nothing labelled: cross-entropy would be NaN
            logits = probe(train.features[idx].to(device).float())
            logits = F.interpolate(logits, size=y.shape[-2:], mode="bilinear", align_corners=False)
            loss = F.cross_entropy(logits, y, ignore_index=ignore_index)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return probe


@torch.no_grad()
def probe_confusion(probe: nn.Module, data: PatchFeatures, num_classes: int, ignore_index: int = 255,
                    device: torch.device | str = "cpu", batch_size: int = 64) -> torch.Tensor:
    """Confusion matrix of a probe whose logits are bilinearly upsampled to each mask's size."""
    conf = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for start in range(0, len(data.features), batch_size):
        logits = probe(data.features[start:start + batch_size].to(device).float())
        for i, mask in enumerate(data.masks[start:start + batch_size]):
            up = F.interpolate(logits[i:i + 1], size=mask.shape[-2:], mode="bilinear", align_corners=False)
            conf += confusion_matrix(up[0].argmax(0).cpu(), mask.long(), num_classes, ignore_index)
    return conf


def train_segmentation_probe(train: PatchFeatures, val: PatchFeatures, num_classes: int, epochs: int = 20,
                             lr: float | None = None, lrs: Sequence[float] | None = None,
                             optimizer: str = "adamw", weight_decay: float = 1e-4, batch_size: int = 64,
                             device: torch.device | str = "cpu", seed: int = 0,
                             ignore_index: int = 255) -> SegmentationProbeResult:
    """Train a 1x1-conv probe with cross-entropy (ignore_index skipped) and score it on `val`.

    Logits at patch resolution are bilinearly upsampled to the label resolution; cosine lr over
    `epochs`. `lrs` trains one probe per lr (same seed) and keeps the best val mIoU (ties: the
    earlier lr), as DINO selects its probe lr on the validation split. Same seed, same probe on
    CPU (GPU upsampling backward uses atomic adds, so it may differ in the last bits).
    """
    if optimizer not in _DEFAULT_LR:
        raise ValueError(f"unknown optimizer '{optimizer}': use adamw or sgd")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    if lr is not None and lrs is not None:
        raise ValueError("pass either lr or lrs (a sweep), not both")
    candidates = list(lrs) if lrs is not None else [lr if lr is not None else _DEFAULT_LR[optimizer]]
    if not candidates or min(candidates) <= 0:
        raise ValueError(f"learning rates must be > 0 and at least one, got {candidates}")
    if not isinstance(train.masks, torch.Tensor):
        raise ValueError("train masks are at full size: extract train features with label_size=image_size")
    best: SegmentationProbeResult | None = None
    for candidate in candidates:
        probe = _fit(train, num_classes, epochs, float(candidate), optimizer, weight_decay, batch_size,
                     device, seed, ignore_index)
        metrics = segmentation_metrics(probe_confusion(probe, val, num_classes, ignore_index, device, batch_size))
        if best is None or metrics["miou"] > best.metrics["miou"]:
            state = {k: v.detach().cpu().clone() for k, v in probe.state_dict().items()}
            best = SegmentationProbeResult(metrics, float(candidate), state)
    assert best is not None
    return best


# --------------------------------------------------------------------------------- top level

def _image_size(image_size: int | None, patch: int, source: Any) -> int:
    """The given size (checked), else 32 for 'shapes' (its native size) or 224, rounded up to patches."""
    if image_size is None:
        base = 32 if isinstance(source, str) and source in ("shapes", "shapes-fg") else 224
        return math.ceil(base / patch) * patch
    if image_size < patch or image_size % patch:
        raise ValueError(f"image_size {image_size} is not a positive multiple of the patch size {patch}: "
                         f"pass e.g. {max(1, round(image_size / patch)) * patch}")
    return image_size


def _largest_label(data: Sequence[PatchFeatures], ignore_index: int) -> int:
    largest = -1
    for d in data:
        for mask in [d.masks] if isinstance(d.masks, torch.Tensor) else d.masks:
            labelled = mask.long()[mask.long() != ignore_index]
            if labelled.numel():
                largest = max(largest, int(labelled.max()))
    return largest


def _num_classes(given: int | None, pairs: Dataset, data: Sequence[PatchFeatures], ignore_index: int) -> int:
    """Given, else the data set's class count, else the largest label seen + 1."""
    seen = _largest_label(data, ignore_index)
    names = getattr(pairs, "class_names", None)
    n = given or (len(names) if names else seen + 1)
    if seen >= n:
        raise ValueError(f"masks hold label {seen} but num_classes is {n}: raise num_classes or set ignore_index")
    if n < 2:
        raise ValueError(f"need at least 2 classes, found {n}: are the masks all background or ignore_index?")
    return n


def run_segmentation_probe(
    backbone: nn.Module, train_source: str | os.PathLike[str] | Dataset,
    val_source: str | os.PathLike[str] | Dataset, image_size: int | None = None, epochs: int = 20,
    lr: float | None = None, batch_size: int = 64, device: torch.device | str = "cpu", seed: int = 0,
    num_workers: int = 0, lrs: Sequence[float] | None = None, optimizer: str = "adamw",
    weight_decay: float = 1e-4, num_classes: int | None = None, ignore_index: int = 255,
    reduce_zero_label: bool = False, progress: bool = False,
    normalization: tuple[Sequence[float], Sequence[float]] | None = None,
) -> dict[str, Any]:
    """Linear segmentation probe on frozen last-layer patch features; a JSON-able result.

    Sources: 'shapes', a segmentation folder (see `SegmentationDataset`) or a dataset of
    (image, mask) pairs. The backbone is moved to `device` and run once per image at
    image_size x image_size (a multiple of `backbone.patch_size`), normalised with the run's
    `normalization` (mean, std); the probe trains on masks resized to that size and is scored
    on full-size val masks.
    """
    patch = int(getattr(backbone, "patch_size", 1))
    size = _image_size(image_size, patch, train_source)
    train_pairs = build_segmentation_dataset(train_source, "train", ignore_index, reduce_zero_label)
    val_pairs = build_segmentation_dataset(val_source, "val", ignore_index, reduce_zero_label)
    backbone.to(device)
    kw = dict(device=device, batch_size=batch_size, num_workers=num_workers, progress=progress,
              normalization=normalization)
    train = extract_patch_features(backbone, train_pairs, size, label_size=size, **kw)  # type: ignore[arg-type]
    val = extract_patch_features(backbone, val_pairs, size, **kw)  # type: ignore[arg-type]
    n_cls = _num_classes(num_classes, train_pairs, [train, val], ignore_index)
    result = train_segmentation_probe(train, val, n_cls, epochs=epochs, lr=lr, lrs=lrs, optimizer=optimizer,
                                      weight_decay=weight_decay, batch_size=batch_size, device=device,
                                      seed=seed, ignore_index=ignore_index)
    return {
        **result.metrics,
        "num_classes": n_cls,
        "class_names": getattr(train_pairs, "class_names", None),
        "settings": {"image_size": size, "feature_grid": list(train.features.shape[-2:]), "epochs": epochs,
                     "lr": result.lr, "lrs": list(lrs) if lrs is not None else None, "optimizer": optimizer,
                     "weight_decay": weight_decay, "batch_size": batch_size, "seed": seed,
                     "ignore_index": ignore_index, "reduce_zero_label": reduce_zero_label,
                     "train_images": len(train.features), "val_images": len(val.features)},
    }
