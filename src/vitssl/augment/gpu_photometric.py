"""Photometric ops on batches of float views (N, 3, H, W) in [0, 1], one parameter per view:
colour jitter in each view's own order, grayscale, Gaussian blur, solarisation, normalisation.

The device counterpart of `vitssl.augment.photometric` (PIL, one view at a time); every op is
`torch.where`-selected per view, so there is no Python loop over views and no host sync.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from vitssl.augment.photometric import BRIGHTNESS, CONTRAST, HUE

if TYPE_CHECKING:
    from vitssl.augment.gpu_multicrop import ViewBatchParams

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale
SOLARIZE_THRESHOLD = 128 / 255  # PIL's threshold 128 on uint8, on [0, 1] floats


def _per_view(values: torch.Tensor) -> torch.Tensor:
    return values.reshape(-1, 1, 1, 1)


def rgb_to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 1, H, W) luma with torchvision's weights."""
    r, g, b = x.unbind(dim=-3)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(-3)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """factor * x + (1 - factor) * other, clamped to [0, 1]; factor (N,) broadcast per view."""
    f = _per_view(factor).to(x.dtype)
    return (f * x + (1 - f) * other).clamp_(0.0, 1.0)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scale intensities by factor (N,) (torchvision's blend with black)."""
    return _blend(x, torch.zeros_like(x), factor)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with each view's mean luma."""
    return _blend(x, rgb_to_grayscale(x).mean(dim=(-3, -2, -1), keepdim=True), factor)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the per-pixel luma."""
    return _blend(x, rgb_to_grayscale(x), factor)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> HSV with hue in [0, 1) (hexcone model)."""
    r, g, b = x.unbind(dim=-3)
    value, _ = x.max(dim=-3)
    chroma = value - x.min(dim=-3).values
    safe_chroma = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    sat = chroma / torch.where(value > 0, value, torch.ones_like(value))
    hue = torch.where(value == r, (g - b) / safe_chroma,
                      torch.where(value == g, 2.0 + (b - r) / safe_chroma, 4.0 + (r - g) / safe_chroma))
    hue = torch.where(chroma > 0, hue, torch.zeros_like(hue))
    return torch.stack([torch.remainder(hue / 6.0, 1.0), sat, value], dim=-3)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Inverse of `rgb_to_hsv`: channel n in (R, G, B) is v - v s clamp(min(k, 4 - k), 0, 1), k = (n + 6h) mod 6."""
    hue, sat, value = hsv.unbind(dim=-3)
    n = torch.arange(5.0, 0.0, -2.0, device=hsv.device, dtype=hsv.dtype).reshape(3, 1, 1)  # 5, 3, 1: a fill, no copy
    k = torch.remainder(n + 6.0 * hue.unsqueeze(-3), 6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)
    return value.unsqueeze(-3) * (1.0 - sat.unsqueeze(-3) * ramp)


def adjust_hue(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by factor (N,) in [-0.5, 0.5] turns."""
    hsv = rgb_to_hsv(x)
    hue = torch.remainder(hsv[:, 0] + factor.reshape(-1, 1, 1).to(x.dtype), 1.0)
    return hsv_to_rgb(torch.cat([hue.unsqueeze(1), hsv[:, 1:]], dim=1))


def _blend_at(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor, position: int,
              active: torch.Tensor) -> torch.Tensor:
    """Each view's brightness, contrast or saturation op at `position` where `active` (N,) holds.

    The three are one blend whose reference (black, mean luma, luma) is chosen per view; a view
    that is inactive here, or whose op at `position` is the hue, gets factor 1: an exact identity.
    """
    op = order[:, position]
    factor = factors.gather(1, op[:, None]).squeeze(1)
    gray = rgb_to_grayscale(x)
    mean = gray.mean(dim=(-3, -2, -1), keepdim=True)
    other = torch.where(_per_view(op == BRIGHTNESS), torch.zeros_like(gray),
                        torch.where(_per_view(op == CONTRAST), mean, gray))
    return _blend(x, other, torch.where(active & (op != HUE), factor, torch.ones_like(factor)))


def color_jitter(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast, saturation and hue in each view's own order.

    factors (N, 4) in op-index order, order (N, 4) a permutation per view. The hue rotation
    (an RGB->HSV->RGB round trip, the costly op) runs once over all views: first every view's
    ops that come before its hue (positions 0-2), then the hue, then the ops after it
    (positions 1-3); at each position a view whose op is elsewhere in its order gets an identity
    blend. Identity hue factors are skipped like the CPU pipeline skips them.
    """
    hue_at = (order == HUE).int().argmax(dim=1)  # each view's hue position
    for position in range(3):
        x = _blend_at(x, factors, order, position, position < hue_at)
    hue = factors[:, HUE]
    x = torch.where(_per_view(hue != 0), adjust_hue(x, hue), x)
    for position in range(1, 4):
        x = _blend_at(x, factors, order, position, position > hue_at)
    return x


def gaussian_kernels(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """(N,) sigmas -> (N, 2 * radius + 1) normalised 1-D Gaussian kernels."""
    t = torch.arange(-radius, radius + 1, device=sigma.device, dtype=torch.float32)
    logits = -0.5 * (t / sigma.float().clamp_min(1e-6)[:, None]) ** 2
    return torch.softmax(logits, dim=1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Blur view n with its own sigma[n]: separable depthwise convolution, reflected borders."""
    n, c, h, w = x.shape
    radius = min(radius, h - 1, w - 1)
    k = gaussian_kernels(sigma, radius).to(x.dtype).repeat_interleave(c, dim=0)  # (N * C, K)
    padded = F.pad(x, (radius, radius, radius, radius), mode="reflect").reshape(1, n * c, h + 2 * radius, w + 2 * radius)
    out = F.conv2d(padded, k[:, None, :, None], groups=n * c)
    out = F.conv2d(out, k[:, None, None, :], groups=n * c)
    return out.reshape(n, c, h, w)


def solarize(x: torch.Tensor, threshold: float = SOLARIZE_THRESHOLD) -> torch.Tensor:
    """Invert every value >= threshold."""
    return torch.where(x >= threshold, 1.0 - x, x)


def photometric(x: torch.Tensor, p: ViewBatchParams, mean: torch.Tensor, std: torch.Tensor,
                blur_radius: int, blur: str = "drawn") -> torch.Tensor:
    """Flip, jitter, grayscale, blur, solarise and normalise views (N, 3, S, S) in [0, 1].

    `blur`: "drawn" blurs the views whose sigma is > 0; "all" / "none" are for view groups
    whose blur probability is 1 / 0, where the per-view select (or the whole blur) is skipped.
    Blurring only the drawn views would need their count on the host, a sync that costs a GPU
    more than the depthwise convolution it saves, so a mixed group blurs every view and selects.
    """
    x = torch.where(_per_view(p.flip), x.flip(-1), x)
    x = color_jitter(x, p.factors, p.order)
    x = torch.where(_per_view(p.grayscale), rgb_to_grayscale(x).expand_as(x), x)
    if blur == "all":
        x = gaussian_blur(x, p.blur_sigma, blur_radius)
    elif blur == "drawn":
        drawn = p.blur_sigma > 0
        x = torch.where(_per_view(drawn), gaussian_blur(x, torch.where(drawn, p.blur_sigma, 1.0), blur_radius), x)
    x = torch.where(_per_view(p.solarize), solarize(x), x)
    return (x - mean.reshape(1, 3, 1, 1)) / std.reshape(1, 3, 1, 1)
