"""Objectives, one per module."""

from vitssl.losses.center import Center
from vitssl.losses.dino import DINOLoss, multicrop_cross_entropy, teacher_statistics
from vitssl.losses.mae import (
    MAELoss,
    masked_mse,
    normalized_pixel_target,
    patchify,
    random_masking,
    unpatchify,
)

__all__ = [
    "Center",
    "DINOLoss",
    "MAELoss",
    "masked_mse",
    "multicrop_cross_entropy",
    "normalized_pixel_target",
    "patchify",
    "random_masking",
    "teacher_statistics",
    "unpatchify",
]
