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
2. `resample_crops` (`gpu_crops`): `torchvision.ops.roi_align` cuts and resizes every crop of one output
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
3. `photometric` (`gpu_photometric`): flip, colour jitter, grayscale, blur, solarisation and normalisation over all
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

from vitssl.augment.affine import affine_enabled
from vitssl.augment.gpu_crops import CROP_TRIES, PaddedImages, resample_crops, sample_crop_boxes
from vitssl.augment.gpu_photometric import photometric
from vitssl.augment.multicrop import (
    GLOBAL_1,
    GLOBAL_2,
    LOCAL,
    MultiCropConfig,
    local_crop_groups,
    validate_config,
)

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

def _between(u: torch.Tensor, low: float, high: float) -> torch.Tensor:
    return low + u * (high - low)

# -- the pipeline ------------------------------------------------------------------------------

class GPUMultiCrop:
    """`(images, generator) -> [global_1, global_2, local_1, ..., local_M]`, each (B, 3, S, S).

    Same `MultiCropConfig` and the same distributions as `MultiCrop` (CPU, PIL), rendered
    batched on the images' device; see the module docstring for the differences.
    """

    def __init__(self, cfg: MultiCropConfig) -> None:
        validate_config(cfg)
        if affine_enabled(cfg.affine_degrees, cfg.affine_translate, cfg.affine_shear):
            raise ValueError("method.crops.affine_degrees/translate/shear are CPU augmentation only: "
                             "set them to 0 or use train.augment_on=cpu")
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
