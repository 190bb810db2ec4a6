"""Deterministic evaluation transform (DINO k-NN / linear: Resize 256 bicubic, CenterCrop 224)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from vitssl.augment.photometric import IMAGENET_MEAN, IMAGENET_STD, to_normalized_tensor


class EvalTransform:
    """Resize the short side to `resize_size` (default round(crop * 256 / 224)), bicubic; centre
    crop `crop_size`; normalise. No randomness, so features are comparable across runs."""

    def __init__(
        self,
        crop_size: int = 224,
        resize_size: int | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        if crop_size <= 0:
            raise ValueError(f"crop_size must be positive, got {crop_size}")
        if resize_size is None:
            resize_size = int(round(crop_size * 256 / 224))
        if resize_size < crop_size:
            raise ValueError(f"resize_size ({resize_size}) must be >= crop_size ({crop_size})")
        self.crop_size = crop_size
        self.resize_size = resize_size
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        if img.mode != "RGB":
            img = img.convert("RGB")
        img = TF.resize(img, [self.resize_size], interpolation=InterpolationMode.BICUBIC)
        img = TF.center_crop(img, [self.crop_size, self.crop_size])
        return to_normalized_tensor(img, self.mean, self.std)

    def __repr__(self) -> str:
        return f"EvalTransform(crop_size={self.crop_size}, resize_size={self.resize_size})"
