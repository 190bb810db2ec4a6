"""Projection heads."""

from vitssl.heads.dino_head import DINOHead, DINOHeadConfig
from vitssl.heads.mae_decoder import MAEDecoder, MAEDecoderConfig

__all__ = ["DINOHead", "DINOHeadConfig", "MAEDecoder", "MAEDecoderConfig"]
