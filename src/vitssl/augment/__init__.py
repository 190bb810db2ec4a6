"""Augmentations: multi-crop for training, a deterministic transform for evaluation."""

from vitssl.augment.eval_transform import EvalTransform
from vitssl.augment.multicrop import MultiCrop, MultiCropConfig, ViewParams, collate_views

__all__ = ["EvalTransform", "MultiCrop", "MultiCropConfig", "ViewParams", "collate_views"]
