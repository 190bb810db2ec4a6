"""Objectives, one per module."""

from vitssl.losses.center import Center
from vitssl.losses.dino import DINOLoss, multicrop_cross_entropy

__all__ = ["Center", "DINOLoss", "multicrop_cross_entropy"]
