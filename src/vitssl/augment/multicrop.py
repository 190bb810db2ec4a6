"""DINO multi-crop augmentation (DINO paper Sec. 3.1 and App.; facebookresearch/dino main_dino.py DataAugmentationDINO): 2 global views and M local views per image.

All randomness comes from the generator passed to `MultiCrop.__call__`, so the views are a
pure function of (image, generator seed); see `vitssl.augment.photometric`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from vitssl.augment.photometric import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ViewParams,
    apply_view,
    sample_view_params,
)
from vitssl.engine.validation import require_int, require_number, require_numbers

GLOBAL_1, GLOBAL_2, LOCAL = 0, 1, 2  # index into the per-view probability lists


@dataclass
class MultiCropConfig:
    """Crop sizes/scales and augmentation strengths; `blur_prob` and `solarization_prob` are
    per view kind, ordered (global view 1, global view 2, each local view).

    `local_crops_number` and `local_crops_size` are ints, or equal-length lists for several
    local resolutions (e.g. [6, 2] crops of [96, 128] px), which EsViT's flags allow.
    """

    global_crops_size: int = 224
    global_crops_scale: list[float] = field(default_factory=lambda: [0.4, 1.0])
    local_crops_number: Any = 8
    local_crops_size: Any = 96
    local_crops_scale: list[float] = field(default_factory=lambda: [0.05, 0.4])
    flip_prob: float = 0.5
    color_jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_prob: float = 0.2
    blur_prob: list[float] = field(default_factory=lambda: [1.0, 0.1, 0.5])
    blur_radius: list[float] = field(default_factory=lambda: [0.1, 2.0])
    solarization_prob: list[float] = field(default_factory=lambda: [0.0, 0.2, 0.0])
    # A random affine warp of every view before its crop (vitssl.augment.affine), off at 0:
    # rotation in [-affine_degrees, affine_degrees], shift up to affine_translate x the image
    # side, x shear in [-affine_shear, affine_shear] degrees (CPU augmentation only).
    affine_degrees: float = 0.0
    affine_translate: float = 0.0
    affine_shear: float = 0.0
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))


def _check_pair(name: str, values: list[float], low_open: float, high: float) -> None:
    if len(values) != 2 or not (low_open < values[0] <= values[1] <= high):
        raise ValueError(
            f"method.crops.{name} must be [min, max] with {low_open} < min <= max <= {high}, got {list(values)}"
        )


def local_crop_groups(cfg: MultiCropConfig) -> list[tuple[int, int]]:
    """[(number, size)] of the local crops, one entry per local resolution."""
    numbers, sizes = cfg.local_crops_number, cfg.local_crops_size
    as_list = [isinstance(v, (list, tuple)) or hasattr(v, "__len__") for v in (numbers, sizes)]
    if as_list[0] != as_list[1] or (as_list[0] and len(numbers) != len(sizes)):
        raise ValueError("method.crops.local_crops_number and local_crops_size must both be ints or lists "
                         f"of the same length, got {numbers} and {sizes}")
    if not as_list[0]:
        numbers, sizes = [numbers], [sizes]
    try:
        return [(int(n), int(s)) for n, s in zip(numbers, sizes)]
    except (TypeError, ValueError):
        raise ValueError(f"method.crops.local_crops_number/size must be integers, got {numbers} and {sizes}") from None


def _check_types(cfg: MultiCropConfig) -> None:
    """Numbers finite, crop counts and sizes integers (a NaN passes every range comparison)."""
    for name in ("global_crops_scale", "local_crops_scale", "blur_radius", "blur_prob", "solarization_prob",
                 "mean", "std"):
        require_numbers(f"method.crops.{name}", getattr(cfg, name))
    for name in ("flip_prob", "color_jitter_prob", "brightness", "contrast", "saturation", "hue", "grayscale_prob"):
        require_number(f"method.crops.{name}", getattr(cfg, name))
    require_int("method.crops.global_crops_size", cfg.global_crops_size, lo=1)
    require_number("method.crops.affine_degrees", cfg.affine_degrees, 0.0, 180.0)
    require_number("method.crops.affine_translate", cfg.affine_translate, 0.0, 1.0, hi_open=True)
    require_number("method.crops.affine_shear", cfg.affine_shear, 0.0, 90.0, hi_open=True)
    for name in ("local_crops_number", "local_crops_size"):
        value = getattr(cfg, name)
        listed = hasattr(value, "__len__") and not isinstance(value, str)
        for i, v in enumerate(value if listed else [value]):
            require_int(f"method.crops.{name}" + (f"[{i}]" if listed else ""), v)


def validate_config(cfg: MultiCropConfig) -> None:
    """Raise a one-line ValueError for a config that cannot work (caught at start-up, not mid-run)."""
    _check_types(cfg)
    _check_pair("global_crops_scale", cfg.global_crops_scale, 0.0, 1.0)
    _check_pair("local_crops_scale", cfg.local_crops_scale, 0.0, 1.0)
    _check_pair("blur_radius", cfg.blur_radius, 0.0, float("inf"))
    for number, size in local_crop_groups(cfg):
        if number < 0:
            raise ValueError(f"method.crops.local_crops_number must be >= 0, got {cfg.local_crops_number}")
        if size <= 0:
            raise ValueError(f"method.crops.local_crops_size must be positive, got {cfg.local_crops_size}")
    if cfg.global_crops_size <= 0:
        raise ValueError(f"method.crops.global_crops_size must be positive, got {cfg.global_crops_size}")
    for name in ("blur_prob", "solarization_prob"):
        values = getattr(cfg, name)
        if len(values) != 3:
            raise ValueError(
                f"method.crops.{name} needs 3 values (global 1, global 2, local), got {list(values)}"
            )
    for name in ("mean", "std"):
        if len(getattr(cfg, name)) != 3:
            raise ValueError(f"method.crops.{name} needs 3 values (R, G, B), got {list(getattr(cfg, name))}")
    if any(s <= 0 for s in cfg.std):
        raise ValueError(f"method.crops.std must be positive, got {list(cfg.std)}")
    for name in ("brightness", "contrast", "saturation"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"method.crops.{name} must be >= 0, got {getattr(cfg, name)}")
    if not 0.0 <= cfg.hue <= 0.5:
        raise ValueError(f"method.crops.hue must be in [0, 0.5], got {cfg.hue}")
    probs = {"flip_prob": cfg.flip_prob, "color_jitter_prob": cfg.color_jitter_prob,
             "grayscale_prob": cfg.grayscale_prob}
    probs.update({f"blur_prob[{i}]": p for i, p in enumerate(cfg.blur_prob)})
    probs.update({f"solarization_prob[{i}]": p for i, p in enumerate(cfg.solarization_prob)})
    for name, p in probs.items():
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"method.crops.{name} must be a probability in [0, 1], got {p}")


class MultiCrop:
    """`(image, generator) -> [global_1, global_2, local_1, ..., local_M]` normalised tensors.

    Per view: bicubic RandomResizedCrop, flip, colour jitter, grayscale, PIL Gaussian blur and
    solarisation, with DINO's per-view probabilities (blur 1.0 / 0.1 / 0.5, solarise 0 / 0.2 / 0).
    """

    def __init__(self, cfg: MultiCropConfig) -> None:
        validate_config(cfg)
        self.cfg = cfg

    @property
    def num_views(self) -> int:
        """2 global + all local views."""
        return 2 + sum(n for n, _ in local_crop_groups(self.cfg))

    @property
    def view_sizes(self) -> list[int]:
        """Output side length of each view, in view order."""
        local = [size for number, size in local_crop_groups(self.cfg) for _ in range(number)]
        return [self.cfg.global_crops_size] * 2 + local

    def _sample_view(self, width: int, height: int, kind: int, generator: torch.Generator) -> ViewParams:
        c = self.cfg
        scale = c.global_crops_scale if kind < LOCAL else c.local_crops_scale
        return sample_view_params(
            generator, width, height, scale=scale, flip_prob=c.flip_prob,
            color_jitter_prob=c.color_jitter_prob, brightness=c.brightness, contrast=c.contrast,
            saturation=c.saturation, hue=c.hue, grayscale_prob=c.grayscale_prob,
            blur_prob=c.blur_prob[kind], blur_radius=c.blur_radius,
            solarization_prob=c.solarization_prob[kind],
            affine=(c.affine_degrees, c.affine_translate, c.affine_shear),
        )

    def sample_params(self, width: int, height: int, generator: torch.Generator) -> list[ViewParams]:
        """All random decisions for one width x height image, views in output order."""
        kinds = [GLOBAL_1, GLOBAL_2] + [LOCAL] * (self.num_views - 2)
        return [self._sample_view(width, height, kind, generator) for kind in kinds]

    def apply(self, img: Image.Image, params: list[ViewParams]) -> list[torch.Tensor]:
        """Render the views described by `params` (from `sample_params`); no randomness."""
        if img.mode != "RGB":
            img = img.convert("RGB")
        return [apply_view(img, p, size, self.cfg.mean, self.cfg.std)
                for p, size in zip(params, self.view_sizes, strict=True)]

    def __call__(self, img: Image.Image, generator: torch.Generator) -> list[torch.Tensor]:
        return self.apply(img, self.sample_params(img.width, img.height, generator))


def collate_views(batch: list[tuple[list[torch.Tensor], int]]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """[(views, label)] -> ([view 0 stacked (B, 3, S, S), view 1 stacked, ...], labels (B,)).

    One tensor per view keeps each resolution batched for the backbone.
    """
    if not batch:
        raise ValueError("collate_views got an empty batch")
    n_views = len(batch[0][0])
    if any(len(views) != n_views for views, _ in batch):
        raise ValueError("collate_views: every sample must have the same number of views")
    views = [torch.stack([sample[0][v] for sample in batch]) for v in range(n_views)]
    labels = torch.tensor([int(sample[1]) for sample in batch], dtype=torch.long)
    return views, labels
