"""Per-view augmentation ops of DINO's multi-crop (DINO paper Sec. 3.1 and App.; facebookresearch/dino main_dino.py DataAugmentationDINO), with explicit randomness.

Sampling (`sample_*`, every draw from a caller's `torch.Generator`) is kept apart from
application (`apply_view` and the ops on PIL images), so that:
- augmentation is a pure function of the generator's seed: the trainer seeds one generator per
  (seed, epoch, sample index) and gets the same views whatever the worker count or resume point;
- the global RNGs (`random`, numpy, torch's default) are never touched;
- a batched device implementation can reuse the samplers, and tests can check probabilities
  on the sampled parameters without decoding images.

The draws mirror torchvision's own (`RandomResizedCrop.get_params`, `ColorJitter.get_params`):
a generator seeded with s gives the crop boxes and jitter factors that those give after
`torch.manual_seed(s)`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageFilter, ImageOps
from torchvision.transforms import InterpolationMode

from vitssl.augment.affine import AffineParams, affine_enabled, apply_affine, sample_affine

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# Index of each colour-jitter op in `ViewParams.jitter_order`, as in torchvision's ColorJitter.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3


# -- sampling ----------------------------------------------------------------------------------

def uniform(generator: torch.Generator, low: float, high: float) -> float:
    """One draw from U[low, high), the same way torchvision draws (`torch.empty(1).uniform_`)."""
    return float(torch.empty(1).uniform_(low, high, generator=generator))


def bernoulli(generator: torch.Generator, p: float) -> bool:
    """True with probability p; always consumes one draw so other decisions keep their stream."""
    return bool(torch.rand(1, generator=generator).item() < p)


def sample_resized_crop(
    width: int,
    height: int,
    scale: Sequence[float],
    generator: torch.Generator,
    ratio: Sequence[float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """Crop box (top, left, h, w) by torchvision's RandomResizedCrop rule.

    Up to 10 tries of area ~ U(scale) * image area and log-uniform aspect ratio; if none fits,
    the largest centred crop whose aspect ratio is clamped to `ratio`.
    """
    area = width * height
    log_ratio = torch.log(torch.tensor([float(ratio[0]), float(ratio[1])]))
    for _ in range(10):
        target_area = area * uniform(generator, scale[0], scale[1])
        aspect = math.exp(uniform(generator, float(log_ratio[0]), float(log_ratio[1])))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator).item())
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator).item())
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def sample_color_jitter(
    generator: torch.Generator,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
) -> tuple[float, float, float, float, tuple[int, int, int, int]]:
    """(brightness, contrast, saturation, hue factors, op order) as torchvision's ColorJitter.

    Factors ~ U[max(0, 1 - s), 1 + s] and hue ~ U[-h, h]; a strength of 0 draws nothing and
    leaves the identity factor (1 or 0), which `color_jitter` skips, as torchvision drops the op.
    """
    o = [int(i) for i in torch.randperm(4, generator=generator).tolist()]
    order = (o[0], o[1], o[2], o[3])

    def factor(strength: float) -> float:
        return uniform(generator, max(0.0, 1 - strength), 1 + strength) if strength > 0 else 1.0

    b, c, s = factor(brightness), factor(contrast), factor(saturation)
    h = uniform(generator, -hue, hue) if hue > 0 else 0.0
    return b, c, s, h, order


@dataclass(frozen=True)
class ViewParams:
    """Every random decision for one view; `apply_view` turns it into a tensor."""

    top: int
    left: int
    height: int
    width: int
    flip: bool
    jitter: bool
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    hue: float = 0.0
    jitter_order: tuple[int, int, int, int] = (0, 1, 2, 3)
    grayscale: bool = False
    blur: bool = False
    blur_radius: float = 0.0
    solarize: bool = False
    affine: AffineParams | None = None  # a warp of the source image before the crop, when enabled

    @property
    def crop(self) -> tuple[int, int, int, int]:
        """(top, left, height, width) in the source image."""
        return self.top, self.left, self.height, self.width


def sample_view_params(
    generator: torch.Generator,
    width: int,
    height: int,
    *,
    scale: Sequence[float],
    flip_prob: float = 0.5,
    color_jitter_prob: float = 0.8,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.2,
    hue: float = 0.1,
    grayscale_prob: float = 0.2,
    blur_prob: float = 0.5,
    blur_radius: Sequence[float] = (0.1, 2.0),
    solarization_prob: float = 0.0,
    ratio: Sequence[float] = (3 / 4, 4 / 3),
    affine: Sequence[float] = (0.0, 0.0, 0.0),
) -> ViewParams:
    """Draw one view's decisions in DINO's pipeline order (crop, flip, jitter, gray, blur, solarize).

    `affine` is (degrees, translate, shear) of `vitssl.augment.affine`; its warp is drawn last and
    only when a strength is > 0, so the other draws are the same with it on or off.
    """
    top, left, h, w = sample_resized_crop(width, height, scale, generator, ratio)
    flip = bernoulli(generator, flip_prob)
    jitter = bernoulli(generator, color_jitter_prob)
    b, c, s, hu, order = (
        sample_color_jitter(generator, brightness, contrast, saturation, hue)
        if jitter
        else (1.0, 1.0, 1.0, 0.0, (0, 1, 2, 3))
    )
    gray = bernoulli(generator, grayscale_prob)
    blur = bernoulli(generator, blur_prob)
    radius = uniform(generator, blur_radius[0], blur_radius[1]) if blur else 0.0
    sol = bernoulli(generator, solarization_prob)
    warp = sample_affine(generator, width, height, *affine) if affine_enabled(*affine) else None
    return ViewParams(top, left, h, w, flip, jitter, b, c, s, hu, order, gray, blur, radius, sol, warp)


# -- application -------------------------------------------------------------------------------

def resized_crop(img: Image.Image, box: tuple[int, int, int, int], size: int) -> Image.Image:
    """Cut (top, left, h, w) and resize it to size x size with bicubic interpolation."""
    top, left, h, w = box
    return TF.resized_crop(img, top, left, h, w, [size, size], interpolation=InterpolationMode.BICUBIC)


def horizontal_flip(img: Image.Image) -> Image.Image:
    """Mirror left-right."""
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def color_jitter(
    img: Image.Image,
    brightness: float = 1.0,
    contrast: float = 1.0,
    saturation: float = 1.0,
    hue: float = 0.0,
    order: Sequence[int] = (0, 1, 2, 3),
) -> Image.Image:
    """torchvision's colour-jitter maths in the given op order; identity factors are skipped."""
    for i in order:
        if i == BRIGHTNESS and brightness != 1.0:
            img = TF.adjust_brightness(img, brightness)
        elif i == CONTRAST and contrast != 1.0:
            img = TF.adjust_contrast(img, contrast)
        elif i == SATURATION and saturation != 1.0:
            img = TF.adjust_saturation(img, saturation)
        elif i == HUE and hue != 0.0:
            img = TF.adjust_hue(img, hue)
    return img


def grayscale(img: Image.Image) -> Image.Image:
    """ITU-R 601 luma copied to three channels (what torchvision's RandomGrayscale does)."""
    return img.convert("L").convert("RGB")


def gaussian_blur(img: Image.Image, radius: float) -> Image.Image:
    """PIL's Gaussian blur with a radius, as DINO uses (not torchvision's kernel-size blur)."""
    return img.filter(ImageFilter.GaussianBlur(radius=radius))


def solarize(img: Image.Image, threshold: int = 128) -> Image.Image:
    """Invert every channel value >= threshold (PIL ImageOps.solarize)."""
    return ImageOps.solarize(img, threshold)


def to_normalized_tensor(
    img: Image.Image,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """PIL RGB -> (3, H, W) float32 in [0, 1], then (x - mean) / std per channel."""
    x = TF.to_dtype(TF.pil_to_tensor(img), torch.float32, scale=True)
    return TF.normalize(x, [float(m) for m in mean], [float(s) for s in std])


def apply_view(
    img: Image.Image,
    params: ViewParams,
    size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """Deterministically render one view (3, size, size) from its sampled decisions."""
    if img.mode != "RGB":
        img = img.convert("RGB")
    if params.affine is not None:
        img = apply_affine(img, params.affine)
    view = resized_crop(img, params.crop, size)
    if params.flip:
        view = horizontal_flip(view)
    if params.jitter:
        view = color_jitter(view, params.brightness, params.contrast, params.saturation, params.hue,
                            params.jitter_order)
    if params.grayscale:
        view = grayscale(view)
    if params.blur:
        view = gaussian_blur(view, params.blur_radius)
    if params.solarize:
        view = solarize(view)
    return to_normalized_tensor(view, mean, std)
