"""Deterministic evaluation transform (DINO k-NN / linear: Resize 256 bicubic, CenterCrop 224)."""

from __future__ import annotations

import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from vitssl.augment.photometric import IMAGENET_MEAN, IMAGENET_STD, to_normalized_tensor


class EvalTransform:
    """Resize the short side to `resize_size` (default crop * 256/224), centre-crop, normalise."""

    def __init__(self, crop_size: int = 224, resize_size: int | None = None,
                 mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD) -> None:
        self.crop_size = crop_size
        self.resize_size = resize_size or int(round(crop_size * 256 / 224))
        self.mean, self.std = mean, std

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = img.convert("RGB") if img.mode != "RGB" else img
        img = TF.resize(img, [self.resize_size], interpolation=InterpolationMode.BICUBIC)
        img = TF.center_crop(img, [self.crop_size, self.crop_size])
        return to_normalized_tensor(img, self.mean, self.std)
