"""Loader side of device-side augmentation (`train.augment_on=device`).

The CPU workers only decode: each sample becomes a uint8 (3, H, W) tensor at its own size, and
a batch is the list of them. The method's `device_transform()` (e.g. `GPUMultiCrop`) then crops
and recolours the whole batch on the accelerator inside the training step.
"""

from __future__ import annotations

from typing import Any

import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from vitssl.data.device_decode import EncodedJPEG, PackedBatch


def decoded_uint8(img: Image.Image | EncodedJPEG, generator: torch.Generator | None = None) -> torch.Tensor | EncodedJPEG:
    """PIL image -> uint8 (3, H, W); no random draws (the device step makes them). A JPEG kept
    encoded for the device decoder (`train.decode_on=device`) passes through."""
    if isinstance(img, EncodedJPEG):
        return img
    if img.mode != "RGB":
        img = img.convert("RGB")
    return TF.pil_to_tensor(img)


def collate_decoded(samples: list[tuple[torch.Tensor | EncodedJPEG, Any]]) -> tuple[list | PackedBatch, torch.Tensor]:
    """[(uint8 image or encoded JPEG, label)] -> (images, labels (B,)).

    Images is the list of uint8 images (sizes may differ), or, when the batch holds JPEGs kept
    encoded for the device decoder, a `PackedBatch` with their bytes in one tensor.
    """
    if not samples:
        raise ValueError("collate_decoded got an empty batch")
    images = [image for image, _ in samples]
    labels = torch.tensor([int(label) for _, label in samples], dtype=torch.long)
    if any(isinstance(image, EncodedJPEG) for image in images):
        return PackedBatch.pack(images), labels
    return images, labels
