"""Projection heads."""

from vitssl.heads.dino_head import DINOHead, DINOHeadConfig

__all__ = ["DINOHead", "DINOHeadConfig"]
