"""MAE's training augmentation (MAE paper App. A.1, Table 8; facebookresearch/mae PRETRAIN.md; wangsr126/mae-lite projects/mae_lite/mae_lite_exp.py): one RandomResizedCrop and a horizontal flip.

No colour or blur: masking is the augmentation. Every draw comes from the generator passed
in (crop box as torchvision's `RandomResizedCrop.get_params`, then the flip as
`RandomHorizontalFlip`), so a view is a pure function of (image, generator seed).

`MAEDeviceCrop` is the same augmentation for a whole batch on the accelerator
(`train.augment_on=device`): MAE-Lite's step consumes thousands of images per second, more than a
few CPU workers can crop and resize.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from vitssl.augment.gpu_crops import CROP_TRIES, resample_crops, sample_crop_boxes
from vitssl.augment.photometric import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    bernoulli,
    horizontal_flip,
    sample_resized_crop,
    to_normalized_tensor,
)
from vitssl.engine.validation import require_int, require_number, require_numbers

INTERPOLATIONS = ("bicubic", "bilinear", "random")


@dataclass
class MAECropConfig:
    """RandomResizedCrop(size, scale, ratio, interpolation) + flip; defaults are MAE's.

    MAE-Lite uses scale (0.08, 1) and timm's "random" interpolation (bilinear or bicubic with
    equal odds, drawn per image after the crop box).
    """

    size: int = 224
    scale: list[float] = field(default_factory=lambda: [0.2, 1.0])
    ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])
    interpolation: str = "bicubic"
    flip_prob: float = 0.5
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))

    def __post_init__(self) -> None:
        require_int("method.crop.size", self.size)
        require_numbers("method.crop.scale", self.scale)
        require_numbers("method.crop.ratio", self.ratio)
        require_number("method.crop.flip_prob", self.flip_prob)
        if self.size <= 0:
            raise ValueError(f"method.crop.size must be positive, got {self.size}")
        if len(self.scale) != 2 or not 0.0 < self.scale[0] <= self.scale[1] <= 1.0:
            raise ValueError(f"method.crop.scale must be [min, max] with 0 < min <= max <= 1, got {list(self.scale)}")
        if len(self.ratio) != 2 or not 0.0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"method.crop.ratio must be [min, max] with 0 < min <= max, got {list(self.ratio)}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"method.crop.interpolation must be one of {INTERPOLATIONS}, got '{self.interpolation}'")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError(f"method.crop.flip_prob must be a probability in [0, 1], got {self.flip_prob}")
        require_numbers("method.crop.mean", self.mean, length=3)
        require_numbers("method.crop.std", self.std, length=3, lo=0.0, lo_open=True)
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise ValueError("method.crop.mean and std need 3 values each (R, G, B), std positive")


class MAETransform:
    """`(image, generator) -> (3, size, size)` normalised tensor."""

    def __init__(self, cfg: MAECropConfig) -> None:
        self.cfg = cfg

    def __call__(self, img: Image.Image, generator: torch.Generator) -> torch.Tensor:
        c = self.cfg
        if img.mode != "RGB":
            img = img.convert("RGB")
        top, left, h, w = sample_resized_crop(img.width, img.height, c.scale, generator, c.ratio)
        mode = c.interpolation
        if mode == "random":
            mode = "bicubic" if bernoulli(generator, 0.5) else "bilinear"
        interpolation = InterpolationMode.BICUBIC if mode == "bicubic" else InterpolationMode.BILINEAR
        view = TF.resized_crop(img, top, left, h, w, [c.size, c.size], interpolation=interpolation)
        if bernoulli(generator, c.flip_prob):
            view = horizontal_flip(view)
        return to_normalized_tensor(view, c.mean, c.std)


def collate_images(samples: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """[(image (3, H, W), label)] -> (images (B, 3, H, W), labels (B,))."""
    if not samples:
        raise ValueError("collate_images got an empty batch")
    images = torch.stack([image for image, _ in samples])
    labels = torch.tensor([int(label) for _, label in samples], dtype=torch.long)
    return images, labels


class MAEDeviceCrop:
    """`(list of uint8 (3, H, W) images on one device, generator) -> (B, 3, size, size)` normalised.

    The crop boxes follow the same rule with the same probabilities as `MAETransform` (torchvision's
    10 tries, then the centred fallback; `sample_crop_boxes`), drawn from one `torch.rand` per
    batch; crops are resized with `roi_align` (bilinear, area-averaged when shrinking: an
    antialiased filter like PIL's) for every interpolation setting, so "random" and "bicubic"
    differ from the CPU pipeline by filter only, not by crop statistics.
    """

    def __init__(self, cfg: MAECropConfig) -> None:
        self.cfg = cfg
        self._normalisation: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def normalisation(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std (1, 3, 1, 1) on `device`, copied from the host once per device."""
        if device not in self._normalisation:
            self._normalisation[device] = (torch.tensor(self.cfg.mean, device=device).reshape(1, 3, 1, 1),
                                           torch.tensor(self.cfg.std, device=device).reshape(1, 3, 1, 1))
        return self._normalisation[device]

    def __call__(self, images: list[torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        c, b, device = self.cfg, len(images), images[0].device
        draws = generator.device
        sizes = torch.tensor([tuple(img.shape[-2:]) for img in images], dtype=torch.float64, device=draws)
        u = torch.rand(b, 2 * CROP_TRIES + 3, generator=generator, device=draws)
        boxes = sample_crop_boxes(sizes[:, 0], sizes[:, 1], torch.full((b,), c.scale[0], device=draws),
                                  torch.full((b,), c.scale[1], device=draws), u[:, :CROP_TRIES],
                                  u[:, CROP_TRIES:2 * CROP_TRIES], u[:, -3], u[:, -2], ratio=tuple(c.ratio))
        x = resample_crops(images, boxes.to(device)[None], c.size)
        flip = (u[:, -1] < c.flip_prob).to(device).reshape(-1, 1, 1, 1)
        x = torch.where(flip, x.flip(-1), x)
        mean, std = self.normalisation(device)
        return (x - mean) / std
