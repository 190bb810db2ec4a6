"""A small random affine warp (rotation, translation, shear) of the source image before its crop.

Off by default (every strength 0). For images whose identity is a shape rather than a texture
(handwritten digits, characters, line drawings), the resized crop alone only moves and scales
the shape; a few degrees of rotation and shear are the geometric variety that the classic
handwriting augmentations use (Simard et al. 2003, "Best practices for convolutional neural
networks applied to visual document analysis", Sec. 2; torchvision's RandomAffine).

The draws mirror torchvision's `RandomAffine.get_params` (angle, then translation, then the x
shear), from the caller's generator, so a generator seeded with s gives what that gives after
`torch.manual_seed(s)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode


@dataclass(frozen=True)
class AffineParams:
    """One view's warp: angle (clockwise) and x shear in degrees, translation in whole pixels."""

    angle: float
    translate_x: int
    translate_y: int
    shear: float


def affine_enabled(degrees: float, translate: float, shear: float) -> bool:
    """Whether any of the strengths asks for a warp."""
    return degrees > 0 or translate > 0 or shear > 0


def sample_affine(generator: torch.Generator, width: int, height: int, degrees: float, translate: float,
                  shear: float) -> AffineParams:
    """Angle ~ U[-degrees, degrees]; shift ~ U[-translate, translate] x image side (rounded);
    x shear ~ U[-shear, shear]; a strength of 0 draws nothing (as torchvision with None)."""
    angle = float(torch.empty(1).uniform_(-degrees, degrees, generator=generator).item())
    tx = ty = 0
    if translate > 0:
        max_dx, max_dy = translate * width, translate * height
        tx = int(round(torch.empty(1).uniform_(-max_dx, max_dx, generator=generator).item()))
        ty = int(round(torch.empty(1).uniform_(-max_dy, max_dy, generator=generator).item()))
    sx = float(torch.empty(1).uniform_(-shear, shear, generator=generator).item()) if shear > 0 else 0.0
    return AffineParams(angle, tx, ty, sx)


def apply_affine(img: Image.Image, params: AffineParams) -> Image.Image:
    """Warp about the image centre, bilinear, the uncovered corners filled with black."""
    return TF.affine(img, angle=params.angle, translate=[params.translate_x, params.translate_y], scale=1.0,
                     shear=[params.shear, 0.0], interpolation=InterpolationMode.BILINEAR, fill=0)
