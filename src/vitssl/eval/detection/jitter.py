"""Large-scale jitter (LSJ), ViTDet's training augmentation (Li et al. 2022, sec. 4; from Ghiasi
et al. 2021, "Simple Copy-Paste"; detectron2 `ResizeScale` + `FixedSizeCrop`).

The image is resized, keeping its aspect ratio, so that it fits a `size` x `size` square times a
scale drawn uniformly from `scale_range` (0.1-2.0), then a random `size`² window is cut from it
where it is larger, and it is padded (bottom and right) where it is smaller. Boxes follow the
same resize and crop and are clipped to the crop; masks are resized (nearest) and cropped with
the image. An object whose clipped box is under a pixel wide or tall has left the crop and is
dropped with its label and mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PAD_VALUE = 128 / 255  # detectron2's FixedSizeCrop pads with 128 on 0-255 pixels
MIN_SIDE = 1.0  # pixels a clipped box needs in width and height to stay


def draw_jitter(height: int, width: int, size: int, scale_range: tuple[float, float],
                generator: torch.Generator | None = None) -> tuple[tuple[int, int], int, int]:
    """A random resized (height, width) and the crop's top and left corner for one image."""
    lo, hi = scale_range
    scale = lo + (hi - lo) * float(torch.rand((), generator=generator))
    ratio = min(size * scale / height, size * scale / width)
    resized = (max(1, round(height * ratio)), max(1, round(width * ratio)))
    top = int(torch.randint(0, max(resized[0] - size, 0) + 1, (), generator=generator))
    left = int(torch.randint(0, max(resized[1] - size, 0) + 1, (), generator=generator))
    return resized, top, left


def apply_jitter(image: torch.Tensor, target: dict[str, torch.Tensor], size: int, resized: tuple[int, int],
                 top: int, left: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Resize `image` (3, H, W) and its target (xyxy `boxes`, `labels`, (N, H, W) `masks`) to
    `resized`, cut the `size`² crop at (top, left), pad it to `size`², drop objects it lost."""
    (h, w), (nh, nw) = image.shape[-2:], resized
    image = F.interpolate(image[None], size=resized, mode="bilinear", align_corners=False, antialias=True)[0]
    masks = target["masks"]
    masks = F.interpolate(masks[None].float(), size=resized, mode="nearest-exact")[0].to(masks.dtype) if len(masks) \
        else masks.new_zeros((0, nh, nw))
    image = image[:, top:top + size, left:left + size]
    masks = masks[:, top:top + size, left:left + size]
    ch, cw = image.shape[-2:]
    boxes = target["boxes"] * torch.tensor([nw / w, nh / h, nw / w, nh / h])
    boxes = boxes - torch.tensor([left, top, left, top], dtype=boxes.dtype)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, cw)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, ch)
    keep = (boxes[:, 2] - boxes[:, 0] >= MIN_SIDE) & (boxes[:, 3] - boxes[:, 1] >= MIN_SIDE)
    image = F.pad(image, (0, size - cw, 0, size - ch), value=PAD_VALUE)
    masks = F.pad(masks, (0, size - cw, 0, size - ch))
    return image, {**target, "boxes": boxes[keep], "labels": target["labels"][keep], "masks": masks[keep]}


def large_scale_jitter(image: torch.Tensor, target: dict[str, torch.Tensor], size: int,
                       scale_range: tuple[float, float] = (0.1, 2.0),
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One random LSJ of an image and its target (see the module's description)."""
    resized, top, left = draw_jitter(image.shape[-2], image.shape[-1], size, scale_range, generator)
    return apply_jitter(image, target, size, resized, top, left)
