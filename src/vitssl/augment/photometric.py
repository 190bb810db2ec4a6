"""Photometric and geometric ops with explicitly sampled parameters (spec 1.4).

Sampling (`sample_*`, from a `torch.Generator`) is separate from application (`apply_*`, on a
PIL image), so seeded per-sample augmentation is reproducible whatever the worker layout, and
a batched device implementation can reuse the same samplers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageFilter, ImageOps

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def bernoulli(generator: torch.Generator, p: float) -> bool:
    return p > 0 and torch.rand((), generator=generator).item() < p


def sample_resized_crop(width: int, height: int, scale: tuple[float, float], generator: torch.Generator,
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(top, left, h, w) by torchvision's RandomResizedCrop rule: 10 tries, then a centre crop."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * uniform(generator, scale[0], scale[1])
        aspect = math.exp(uniform(generator, *log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (), generator=generator))
            left = int(torch.randint(0, width - w + 1, (), generator=generator))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@dataclass
class ColorJitterParams:
    """Factors of torchvision's ColorJitter and the order its four ops run in."""

    brightness: float
    contrast: float
    saturation: float
    hue: float
    order: list[int]


def sample_color_jitter(brightness: float, contrast: float, saturation: float, hue: float,
                        generator: torch.Generator) -> ColorJitterParams:
    order = torch.randperm(4, generator=generator).tolist()
    return ColorJitterParams(
        brightness=uniform(generator, max(0.0, 1 - brightness), 1 + brightness),
        contrast=uniform(generator, max(0.0, 1 - contrast), 1 + contrast),
        saturation=uniform(generator, max(0.0, 1 - saturation), 1 + saturation),
        hue=uniform(generator, -hue, hue),
        order=order,
    )


def apply_color_jitter(img: Image.Image, p: ColorJitterParams) -> Image.Image:
    ops = [
        lambda x: TF.adjust_brightness(x, p.brightness),
        lambda x: TF.adjust_contrast(x, p.contrast),
        lambda x: TF.adjust_saturation(x, p.saturation),
        lambda x: TF.adjust_hue(x, p.hue),
    ]
    for i in p.order:
        img = ops[i](img)
    return img


def grayscale(img: Image.Image) -> Image.Image:
    """ITU-R 601 luma copied to three channels (torchvision's RandomGrayscale)."""
    return img.convert("L").convert("RGB")


def gaussian_blur(img: Image.Image, radius: float) -> Image.Image:
    """PIL's Gaussian blur with a radius, as DINO uses (not torchvision's kernel-size blur)."""
    return img.filter(ImageFilter.GaussianBlur(radius=radius))


def solarize(img: Image.Image, threshold: int = 128) -> Image.Image:
    """Invert every pixel value >= threshold."""
    return ImageOps.solarize(img, threshold)


def to_normalized_tensor(img: Image.Image, mean: tuple[float, ...] | list[float],
                         std: tuple[float, ...] | list[float]) -> torch.Tensor:
    """PIL RGB -> (3, H, W) float32 normalised by mean/std."""
    x = TF.to_dtype(TF.pil_to_tensor(img), torch.float32, scale=True)
    return TF.normalize(x, list(mean), list(std))
