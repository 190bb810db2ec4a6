"""DINO multi-crop (DINO paper Sec. 3.1 and App.; facebookresearch/dino main_dino.py DataAugmentationDINO) run batched on the device that holds the decoded images.

The CPU pipeline (`vitssl.augment.multicrop`) renders one view at a time with PIL, which caps
the originals at ~455 images/s on 15 cores (docs/performance.md); this module renders all views
of a batch with a handful of kernels instead. One `MultiCropConfig` drives both.

Input: decoded uint8 images (3, H, W) of any sizes on one device (what
`torchvision.io.decode_jpeg(..., device="cuda")` returns) and a `torch.Generator`. Output: the
list the CPU pipeline + `collate_views` give, one normalised float tensor (B, 3, S, S) per view:
global 1, global 2, then the local views.

Stages:
1. `sample_params`: every random decision for all B x V views in one draw from the generator
   (on the generator's device), vectorised: RandomResizedCrop boxes by torchvision's rule (10
   tries of area ~ U(scale), log-uniform aspect ratio, first fitting try, centred fallback),
   flip, jitter factors and a random op order per view, grayscale, blur sigma, solarisation.
2. `resample_crops`: `torchvision.ops.roi_align` cuts and resizes every crop of one output
   size in one call (or one call per image when padding the images to a batch would waste
   memory). roi_align was chosen over `F.grid_sample` with per-crop affine grids because its
   adaptive sampling (ceil(box / output) bilinear samples per output pixel, averaged) is an
   antialiased area filter when a crop shrinks (local crops shrink ~3x, global up to ~2x),
   where grid_sample samples one point per pixel and aliases; when a crop is enlarged it is
   plain bilinear (align_corners=False), like `F.interpolate`. It reads the crop straight from
   the source image, so no grid tensor is built, and it takes the boxes as a device tensor.
   Difference from the CPU pipeline: PIL's bicubic resize (with its support widened by the
   shrink factor, i.e. antialiased) is sharper than bilinear/area filtering: on natural images
   the views differ by a few grey levels at edges and are slightly softer, not shifted.
3. `photometric`: flip, colour jitter, grayscale, blur, solarisation and normalisation over all
   views of one size at once, with per-view parameters as tensors; the ops are
   `torch.where`-selected, so there is no Python loop over views, no data-dependent shape and
   no host-device synchronisation (so it suits `torch.compile`; not yet tried).

Other differences from the CPU pipeline, all small: the views stay in float between ops (PIL
rounds to uint8 after each), grayscale uses torchvision's weights (0.2989, 0.587, 0.114; PIL's
are 0.299, 0.587, 0.114), and the blur is a true Gaussian truncated at 3 sigma with reflected
borders (PIL approximates it with three box blurs). The draws follow torchvision's
distributions but not its draw order, so a seed gives different views here than on the CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from vitssl.augment.multicrop import (
    GLOBAL_1,
    GLOBAL_2,
    LOCAL,
    MultiCropConfig,
    local_crop_groups,
    validate_config,
)
from vitssl.augment.photometric import BRIGHTNESS, CONTRAST, HUE

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale
SOLARIZE_THRESHOLD = 128 / 255  # PIL's threshold 128 on uint8, on [0, 1] floats
CROP_TRIES = 10  # torchvision's RandomResizedCrop.get_params
MAX_PADDING_OVERHEAD = 1.25  # pad images to one batch only if that adds at most 25% pixels

# Columns of the single uniform draw per view.
_AREA, _RATIO = slice(0, CROP_TRIES), slice(CROP_TRIES, 2 * CROP_TRIES)
_TOP, _LEFT, _FLIP, _JITTER = 20, 21, 22, 23
_FACTORS, _ORDER = slice(24, 28), slice(28, 32)
_GRAY, _BLUR, _SIGMA, _SOLARIZE = 32, 33, 34, 35
_DRAWS = 36


# -- parameters --------------------------------------------------------------------------------

@dataclass
class ViewBatchParams:
    """Every random decision for N views (view-major: view v of image i is row v * B + i).

    boxes (N, 4): crop (top, left, height, width) in source pixels; factors (N, 4): brightness,
    contrast, saturation, hue (identity where jitter is off); order (N, 4): the jitter ops'
    order (indices as in `photometric.BRIGHTNESS`...); blur_sigma is 0 where blur is off.
    """

    boxes: torch.Tensor
    flip: torch.Tensor
    factors: torch.Tensor
    order: torch.Tensor
    grayscale: torch.Tensor
    blur_sigma: torch.Tensor
    solarize: torch.Tensor

    def to(self, device: torch.device | str) -> ViewBatchParams:
        return ViewBatchParams(*(t.to(device, non_blocking=True) for t in vars(self).values()))

    def rows(self, start: int, stop: int) -> ViewBatchParams:
        """The parameters of rows [start, stop) (views of one output size)."""
        return ViewBatchParams(*(t[start:stop] for t in vars(self).values()))


def sample_crop_boxes(
    heights: torch.Tensor,
    widths: torch.Tensor,
    scale_low: torch.Tensor,
    scale_high: torch.Tensor,
    u_area: torch.Tensor,
    u_ratio: torch.Tensor,
    u_top: torch.Tensor,
    u_left: torch.Tensor,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """RandomResizedCrop boxes (N, 4) = (top, left, h, w) from uniforms, torchvision's rule vectorised.

    heights/widths/scale_* (N,); u_area, u_ratio (N, tries) and u_top, u_left (N,) in [0, 1).
    Try t has area fraction ~ U(scale) and aspect ratio exp(U(log ratio)); the first try that
    fits wins; if none does, the largest centred crop with the aspect ratio clamped to `ratio`.
    """
    h_img, w_img = heights.double()[:, None], widths.double()[:, None]
    target = h_img * w_img * (scale_low.double()[:, None] + u_area.double() * (scale_high - scale_low).double()[:, None])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + u_ratio.double() * (log_hi - log_lo))
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    fits = (w > 0) & (w <= w_img) & (h > 0) & (h <= h_img)
    first = fits.int().argmax(dim=1, keepdim=True)  # index of the first fitting try
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    h_img, w_img = h_img.squeeze(1), w_img.squeeze(1)
    top = torch.minimum(torch.floor(u_top.double() * (h_img - h + 1)), h_img - h)
    left = torch.minimum(torch.floor(u_left.double() * (w_img - w + 1)), w_img - w)
    # Fallback: the whole image, or its centre at the nearest allowed aspect ratio.
    in_ratio = w_img / h_img
    fb_w = torch.where(in_ratio > ratio[1], torch.round(h_img * ratio[1]), w_img)
    fb_h = torch.where(in_ratio < ratio[0], torch.round(w_img / ratio[0]), h_img)
    fb_top, fb_left = torch.div(h_img - fb_h, 2, rounding_mode="floor"), torch.div(w_img - fb_w, 2, rounding_mode="floor")
    found = fits.any(dim=1)
    return torch.stack([torch.where(found, top, fb_top), torch.where(found, left, fb_left),
                        torch.where(found, h, fb_h), torch.where(found, w, fb_w)], dim=1).float()


def _between(u: torch.Tensor, low: float, high: float) -> torch.Tensor:
    return low + u * (high - low)


# -- photometric ops on float (N, 3, H, W) in [0, 1], one factor per view -------------------------

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


# -- crops -------------------------------------------------------------------------------------

def _as_rgb_float(img: torch.Tensor) -> torch.Tensor:
    return img.expand(3, -1, -1).float() if img.shape[0] == 1 else img.float()


def _paste_with_edge(canvas: torch.Tensor, img: torch.Tensor) -> None:
    """Copy img (3, h, w) into the top-left of canvas plus one replicated row and column, so
    bilinear samples in the image's last half pixel read what roi_align's own edge clamp gives."""
    h, w = img.shape[-2:]
    canvas[:, :h, :w] = img
    if h < canvas.shape[-2]:
        canvas[:, h, :w] = img[:, -1]
    if w < canvas.shape[-1]:
        canvas[:, : h + 1, w] = canvas[:, : h + 1, w - 1]


@dataclass
class PaddedImages:
    """A batch of images of mixed sizes as few zero-padded float canvases, built once per batch.

    `canvases[j]` (g_j, 3, H_j, W_j) holds the images `members[j]` (indices into the batch).
    Images are grouped by orientation (landscape, portrait), since padding one to the other's
    shape roughly doubles the pixels; a group becomes one canvas when padding adds at most
    `MAX_PADDING_OVERHEAD`, else one canvas per image. `inverse` maps rows in group order back
    to batch order and `order` batch order to group order (None when the groups already are in
    batch order).
    """

    canvases: list[torch.Tensor]
    members: list[list[int]]
    order: torch.Tensor | None
    inverse: torch.Tensor | None

    @classmethod
    def build(cls, images: list[torch.Tensor]) -> PaddedImages:
        shapes = [tuple(img.shape[-2:]) for img in images]
        members: list[list[int]] = []
        for landscape in (True, False):
            group = [i for i, (h, w) in enumerate(shapes) if (w >= h) == landscape]
            if not group:
                continue
            max_h, max_w = max(shapes[i][0] for i in group), max(shapes[i][1] for i in group)
            if len(group) * max_h * max_w <= MAX_PADDING_OVERHEAD * sum(shapes[i][0] * shapes[i][1] for i in group):
                members.append(group)
            else:
                members.extend([i] for i in group)
        canvases = []
        for group in members:
            h, w = max(shapes[i][0] for i in group), max(shapes[i][1] for i in group)
            canvas = images[0].new_zeros((len(group), 3, h, w), dtype=torch.float32)
            for row, i in enumerate(group):
                _paste_with_edge(canvas[row], _as_rgb_float(images[i]))
            canvases.append(canvas)
        grouped = [i for group in members for i in group]
        if grouped == list(range(len(images))):
            return cls(canvases, members, None, None)
        order = torch.tensor(grouped, device=images[0].device)  # one host copy of B indices, mixed batches only
        return cls(canvases, members, order, order.argsort())


def resample_crops(images: list[torch.Tensor] | PaddedImages, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Cut boxes (n, B, 4) = (top, left, h, w) from B images and resize to size x size.

    Returns (n * B, 3, size, size) float in [0, 1], row v * B + i = crop v of image i. One
    roi_align call per canvas of `PaddedImages` (pass one to reuse it across output sizes).
    """
    padded = images if isinstance(images, PaddedImages) else PaddedImages.build(images)
    n, batch = boxes.shape[:2]
    top, left, h, w = boxes.unbind(-1)
    xyxy = torch.stack([left, top, left + w, top + h], dim=-1)  # (n, B, 4)
    if padded.order is not None:
        xyxy = xyxy[:, padded.order]
    start, outs = 0, []
    for canvas, group in zip(padded.canvases, padded.members):
        g = len(group)
        rows = xyxy[:, start:start + g]
        index = torch.arange(g, device=xyxy.device, dtype=xyxy.dtype).expand(n, g)
        rois = torch.cat([index[..., None], rows], dim=-1).reshape(n * g, 5)
        crops = roi_align(canvas, rois, size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        outs.append(crops.reshape(n, g, 3, size, size))
        start += g
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
    if padded.inverse is not None:
        out = out[:, padded.inverse]
    return out.reshape(n * batch, 3, size, size).div_(255.0)


# -- the pipeline ------------------------------------------------------------------------------

class GPUMultiCrop:
    """`(images, generator) -> [global_1, global_2, local_1, ..., local_M]`, each (B, 3, S, S).

    Same `MultiCropConfig` and the same distributions as `MultiCrop` (CPU, PIL), rendered
    batched on the images' device; see the module docstring for the differences.
    """

    def __init__(self, cfg: MultiCropConfig) -> None:
        validate_config(cfg)
        self.cfg = cfg
        groups = [(2, cfg.global_crops_size)] + [(n, s) for n, s in local_crop_groups(cfg) if n > 0]
        self.size_groups = groups  # (number of views, side) per output resolution, in view order
        self.view_kinds = [GLOBAL_1, GLOBAL_2] + [LOCAL] * sum(n for n, _ in groups[1:])
        self.blur_radius = max(1, math.ceil(3 * cfg.blur_radius[1]))  # kernel support: 3 sigma
        self.group_blur = [self._blur_mode(group) for group in range(len(groups))]
        self._constants: dict[torch.device, dict[str, torch.Tensor]] = {}

    def _blur_mode(self, group: int) -> str:
        """"all", "none" or "drawn": what the blur probabilities of a size group's views allow."""
        first = sum(n for n, _ in self.size_groups[:group])
        probs = {self.cfg.blur_prob[kind] for kind in self.view_kinds[first:first + self.size_groups[group][0]]}
        return "all" if probs == {1.0} else "none" if probs == {0.0} else "drawn"

    def constants(self, device: torch.device) -> dict[str, torch.Tensor]:
        """Per-view tables and normalisation on `device`, copied from the host once per device."""
        if device not in self._constants:
            c = self.cfg
            self._constants[device] = {
                "kinds": torch.tensor(self.view_kinds, device=device),
                "blur_prob": torch.tensor([c.blur_prob[k] for k in self.view_kinds], device=device),
                "solarize_prob": torch.tensor([c.solarization_prob[k] for k in self.view_kinds], device=device),
                "identity": torch.tensor([1.0, 1.0, 1.0, 0.0], device=device),
                "mean": torch.tensor(c.mean, device=device),
                "std": torch.tensor(c.std, device=device),
            }
        return self._constants[device]

    @property
    def num_views(self) -> int:
        return len(self.view_kinds)

    @property
    def view_sizes(self) -> list[int]:
        return [s for n, s in self.size_groups for _ in range(n)]

    def sample_params(self, image_sizes: list[tuple[int, int]], generator: torch.Generator) -> ViewBatchParams:
        """Draw every decision for B images of (H, W) sizes, on the generator's device."""
        c, device, batch = self.cfg, generator.device, len(image_sizes)
        const = self.constants(device)
        u = torch.rand(self.num_views * batch, _DRAWS, generator=generator, device=device)
        kinds = const["kinds"].repeat_interleave(batch)
        # the step's one host-to-device copy: the batch's image sizes
        sizes = torch.tensor(image_sizes, device=device, dtype=torch.float64).repeat(self.num_views, 1)
        is_local = kinds == LOCAL
        scale_low = torch.where(is_local, c.local_crops_scale[0], c.global_crops_scale[0])
        scale_high = torch.where(is_local, c.local_crops_scale[1], c.global_crops_scale[1])
        boxes = sample_crop_boxes(sizes[:, 0], sizes[:, 1], scale_low, scale_high, u[:, _AREA], u[:, _RATIO],
                                  u[:, _TOP], u[:, _LEFT])
        jitter = u[:, _JITTER] < c.color_jitter_prob
        f = u[:, _FACTORS]
        drawn = torch.stack([_between(f[:, 0], max(0.0, 1 - c.brightness), 1 + c.brightness),
                             _between(f[:, 1], max(0.0, 1 - c.contrast), 1 + c.contrast),
                             _between(f[:, 2], max(0.0, 1 - c.saturation), 1 + c.saturation),
                             _between(f[:, 3], -c.hue, c.hue)], dim=1)
        identity = const["identity"]
        blur_prob = const["blur_prob"].repeat_interleave(batch)
        sigma = _between(u[:, _SIGMA], c.blur_radius[0], c.blur_radius[1])
        return ViewBatchParams(
            boxes=boxes,
            flip=u[:, _FLIP] < c.flip_prob,
            factors=torch.where(jitter[:, None], drawn, identity),
            order=u[:, _ORDER].argsort(dim=1),
            grayscale=u[:, _GRAY] < c.grayscale_prob,
            blur_sigma=torch.where(u[:, _BLUR] < blur_prob, sigma, 0.0),
            solarize=u[:, _SOLARIZE] < const["solarize_prob"].repeat_interleave(batch),
        )

    def render(self, images: list[torch.Tensor], params: ViewBatchParams) -> list[torch.Tensor]:
        """Deterministically render the views `params` describes (from `sample_params`)."""
        device, batch = images[0].device, len(images)
        params = params.to(device)
        const = self.constants(device)
        padded = PaddedImages.build(images)  # once for every output size
        views: list[torch.Tensor] = []
        start = 0
        for (number, size), blur in zip(self.size_groups, self.group_blur):
            p = params.rows(start * batch, (start + number) * batch)
            crops = resample_crops(padded, p.boxes.reshape(number, batch, 4), size)
            out = photometric(crops, p, const["mean"], const["std"], self.blur_radius, blur)
            views.extend(out.reshape(number, batch, 3, size, size).unbind(0))
            start += number
        return views

    def __call__(self, images: list[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
        if not images:
            raise ValueError("GPUMultiCrop got an empty list of images")
        if any(img.dtype != torch.uint8 or img.ndim != 3 or img.shape[0] not in (1, 3) for img in images):
            raise ValueError("GPUMultiCrop takes decoded uint8 images of shape (3, H, W) (or (1, H, W))")
        sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        return self.render(images, self.sample_params(sizes, generator))
