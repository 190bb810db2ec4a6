"""DINO multi-crop augmentation (spec 1.4): 2 global views and M local views per image."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from vitssl.augment.photometric import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ColorJitterParams,
    apply_color_jitter,
    bernoulli,
    gaussian_blur,
    grayscale,
    sample_color_jitter,
    sample_resized_crop,
    solarize,
    to_normalized_tensor,
    uniform,
)


@dataclass
class MultiCropConfig:
    """Crop sizes and scales, and per-view probabilities ordered (global 1, global 2, each local)."""

    global_crops_size: int = 224
    global_crops_scale: list[float] = field(default_factory=lambda: [0.4, 1.0])
    local_crops_number: int = 8
    local_crops_size: int = 96
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
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))


@dataclass
class ViewParams:
    """Every random decision for one view; `apply_view` turns it into a tensor."""

    size: int
    crop: tuple[int, int, int, int]
    flip: bool
    color_jitter: ColorJitterParams | None
    grayscale: bool
    blur_radius: float | None
    solarize: bool


def _check_scale(name: str, scale: list[float]) -> None:
    if len(scale) != 2 or not (0 < scale[0] <= scale[1] <= 1):
        raise ValueError(f"method.crops.{name} must be [min, max] with 0 < min <= max <= 1, got {list(scale)}")


def validate(cfg: MultiCropConfig) -> None:
    """One-line errors for configs that cannot work."""
    _check_scale("global_crops_scale", cfg.global_crops_scale)
    _check_scale("local_crops_scale", cfg.local_crops_scale)
    if cfg.local_crops_number < 0:
        raise ValueError(f"method.crops.local_crops_number must be >= 0, got {cfg.local_crops_number}")
    if cfg.global_crops_size <= 0 or cfg.local_crops_size <= 0:
        raise ValueError("method.crops.global_crops_size and local_crops_size must be positive")
    for name in ("blur_prob", "solarization_prob"):
        values = getattr(cfg, name)
        if len(values) != 3:
            raise ValueError(f"method.crops.{name} needs 3 values (global 1, global 2, local), got {list(values)}")
    probs = {"flip_prob": cfg.flip_prob, "color_jitter_prob": cfg.color_jitter_prob,
             "grayscale_prob": cfg.grayscale_prob}
    probs.update({f"blur_prob[{i}]": p for i, p in enumerate(cfg.blur_prob)})
    probs.update({f"solarization_prob[{i}]": p for i, p in enumerate(cfg.solarization_prob)})
    for name, p in probs.items():
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"method.crops.{name} must be a probability in [0, 1], got {p}")
    if len(cfg.blur_radius) != 2 or not 0 < cfg.blur_radius[0] <= cfg.blur_radius[1]:
        raise ValueError(f"method.crops.blur_radius must be [min, max] with 0 < min <= max, got {list(cfg.blur_radius)}")


class MultiCrop:
    """`(image, generator) -> [global_1, global_2, local_1, ..., local_M]` normalised tensors.

    Per view: bicubic RandomResizedCrop, flip, colour jitter (p=0.8), grayscale (p=0.2),
    PIL Gaussian blur (p = 1.0 / 0.1 / 0.5) and solarisation (p = 0 / 0.2 / 0), as in DINO.
    """

    def __init__(self, cfg: MultiCropConfig) -> None:
        validate(cfg)
        self.cfg = cfg

    @property
    def num_views(self) -> int:
        return 2 + self.cfg.local_crops_number

    def _sample_view(self, width: int, height: int, kind: int, generator: torch.Generator) -> ViewParams:
        c = self.cfg
        is_global = kind < 2
        size = c.global_crops_size if is_global else c.local_crops_size
        scale = c.global_crops_scale if is_global else c.local_crops_scale
        crop = sample_resized_crop(width, height, (scale[0], scale[1]), generator)
        flip = bernoulli(generator, c.flip_prob)
        jitter = (sample_color_jitter(c.brightness, c.contrast, c.saturation, c.hue, generator)
                  if bernoulli(generator, c.color_jitter_prob) else None)
        gray = bernoulli(generator, c.grayscale_prob)
        blur = uniform(generator, *c.blur_radius) if bernoulli(generator, c.blur_prob[kind]) else None
        sol = bernoulli(generator, c.solarization_prob[kind])
        return ViewParams(size, crop, flip, jitter, gray, blur, sol)

    def sample_params(self, width: int, height: int, generator: torch.Generator) -> list[ViewParams]:
        """Random decisions for all views of one image (kind 0, 1 = globals, 2 = locals)."""
        kinds = [0, 1] + [2] * self.cfg.local_crops_number
        return [self._sample_view(width, height, kind, generator) for kind in kinds]

    def apply_view(self, img: Image.Image, p: ViewParams) -> torch.Tensor:
        top, left, h, w = p.crop
        view = TF.resized_crop(img, top, left, h, w, [p.size, p.size], interpolation=InterpolationMode.BICUBIC)
        if p.flip:
            view = TF.horizontal_flip(view)
        if p.color_jitter is not None:
            view = apply_color_jitter(view, p.color_jitter)
        if p.grayscale:
            view = grayscale(view)
        if p.blur_radius is not None:
            view = gaussian_blur(view, p.blur_radius)
        if p.solarize:
            view = solarize(view)
        return to_normalized_tensor(view, self.cfg.mean, self.cfg.std)

    def __call__(self, img: Image.Image, generator: torch.Generator) -> list[torch.Tensor]:
        img = img.convert("RGB") if img.mode != "RGB" else img
        return [self.apply_view(img, p) for p in self.sample_params(img.width, img.height, generator)]


def collate_views(samples: list[tuple[list[torch.Tensor], int]]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """[(views, label)] -> ([stacked view 0, stacked view 1, ...], labels): one tensor per view."""
    n_views = len(samples[0][0])
    views = [torch.stack([s[0][v] for s in samples]) for v in range(n_views)]
    labels = torch.tensor([s[1] for s in samples], dtype=torch.long)
    return views, labels
