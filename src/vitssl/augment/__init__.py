"""Augmentations: seeded multi-crop for training, a deterministic transform for evaluation."""

from vitssl.augment.eval_transform import EvalTransform
from vitssl.augment.multicrop import MultiCrop, MultiCropConfig, collate_views
from vitssl.augment.photometric import ViewParams, apply_view, sample_view_params

__all__ = [
    "EvalTransform",
    "MultiCrop",
    "MultiCropConfig",
    "ViewParams",
    "apply_view",
    "collate_views",
    "sample_view_params",
]
