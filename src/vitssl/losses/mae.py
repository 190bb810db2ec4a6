"""MAE's masked-patch pixel regression (He et al., 2022), spec 2.1.

Pure functions, each one step of the objective: draw a per-sample random mask, cut images into
patch vectors and back, normalise each patch (`norm_pix_loss`), and average the squared error
over the masked patches only:

    L = sum_i m_i * mean_j (pred_ij - target_ij)^2 / sum_i m_i,   m_i = 1 for a masked patch i.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def num_visible(num_patches: int, mask_ratio: float) -> int:
    """Patches kept per sample: floor(L * (1 - r)), as MAE's `int(L * (1 - mask_ratio))`.

    A 1e-6 guard keeps float round-off (e.g. 10 * (1 - 0.9) = 0.99999...) from dropping a patch.
    """
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask ratio must lie in [0, 1), got {mask_ratio}")
    return math.floor(num_patches * (1.0 - mask_ratio) + 1e-6)


def random_masking(
    batch: int,
    num_patches: int,
    mask_ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample random masking by argsort of uniform noise (MAE's `random_masking`).

    Returns
    - `ids_keep` (B, n_keep) long: indices of the visible patches, in shuffled order;
    - `mask` (B, L) float: 0 for visible, 1 for masked, in the original patch order;
    - `ids_restore` (B, L) long: `gather(shuffled, 1, ids_restore)` puts shuffled tokens
      (visible first, then masked) back in patch order.
    The noise is drawn from `generator` when given (on its own device, then moved to
    `device`), else from torch's global generator on `device`; a given `noise` (B, L) is used
    as is instead (the lowest values are kept), which makes a mask reproducible from outside.
    """
    keep = num_visible(num_patches, mask_ratio)
    if noise is None:
        noise = torch.rand(batch, num_patches, generator=generator,
                           device=generator.device if generator is not None else device)
    elif noise.shape != (batch, num_patches):
        raise ValueError(f"masking noise has shape {tuple(noise.shape)}, expected ({batch}, {num_patches})")
    if device is not None:
        noise = noise.to(device)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(batch, num_patches, device=noise.device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return ids_shuffle[:, :keep], mask, ids_restore


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
