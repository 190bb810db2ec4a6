"""MAE's masked-patch pixel regression (He et al., 2022), MAE paper Sec. 3; facebookresearch/mae models_mae.py.

Pure functions, each one step of the objective: cut images into patch vectors and back,
normalise each patch (`norm_pix_loss`), and average the squared error over the masked patches
only (the mask itself is drawn by `vitssl.augment.masking`, re-exported here):

    L = sum_i m_i * mean_j (pred_ij - target_ij)^2 / sum_i m_i,   m_i = 1 for a masked patch i.
"""

from __future__ import annotations

import torch
from torch import nn

from vitssl.augment.masking import num_visible, random_masking

__all__ = ["MAELoss", "masked_mse", "normalized_pixel_target", "num_visible", "patch_statistics", "patchify",
           "random_masking", "unpatchify"]


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, L, p*p*C), patches row-major, each flattened as (p, p, C) like MAE."""
    b, c, h, w = images.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"image {h}x{w} is not a multiple of the patch size {p}")
    x = images.reshape(b, c, h // p, p, w // p, p)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(patches: torch.Tensor, patch_size: int, grid: tuple[int, int], channels: int = 3) -> torch.Tensor:
    """(B, L, p*p*C) -> (B, C, h*p, w*p) for a (h, w) patch grid; the inverse of `patchify`."""
    b = patches.shape[0]
    (h, w), p = grid, patch_size
    if patches.shape[1] != h * w or patches.shape[2] != p * p * channels:
        raise ValueError(f"patches {tuple(patches.shape)} do not fit a {h}x{w} grid of {p}x{p}x{channels} patches")
    x = patches.reshape(b, h, w, p, p, channels)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(b, channels, h * p, w * p)


def patch_statistics(patches: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-patch mean and std (B, L, 1): std = sqrt(unbiased var + eps), over the p*p*C values."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)  # unbiased, torch's (and MAE's) default
    return mean, (var + eps).sqrt()


def normalized_pixel_target(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """MAE's `norm_pix_loss` target: each patch (B, L, P) minus its mean over sqrt(var + eps)."""
    mean, std = patch_statistics(patches, eps)
    return (patches - mean) / std


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over each patch's values of the squared error, then mean over masked patches.

    pred, target (B, L, P); mask (B, L) with 1 = masked (counted), 0 = visible (ignored).
    Computed in fp32 whatever the autocast dtype.
    """
    per_patch = (pred.float() - target.float()).pow(2).mean(dim=-1)
    mask = mask.float()
    return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)


class MAELoss(nn.Module):
    """Images and per-patch predictions -> masked-patch MSE against (normalised) pixels."""

    def __init__(self, patch_size: int, norm_pix_loss: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        self.patch_size, self.norm_pix_loss, self.eps = patch_size, norm_pix_loss, eps

    def target(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, L, p*p*3) regression target, in fp32."""
        patches = patchify(images.float(), self.patch_size)
        return normalized_pixel_target(patches, self.eps) if self.norm_pix_loss else patches

    def forward(self, pred: torch.Tensor, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """pred (B, L, p*p*3), images (B, 3, H, W), mask (B, L) -> scalar loss."""
        return masked_mse(pred, self.target(images), mask)
