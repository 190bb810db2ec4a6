"""Device crops for the batched multi-crop (`vitssl.augment.gpu_multicrop`) and MAE's device crop:
RandomResizedCrop boxes drawn by torchvision's rule, vectorised, and every crop of one output
size cut and resized with one `torchvision.ops.roi_align` call.

roi_align rather than `F.grid_sample` with per-crop affine grids: its adaptive sampling
(ceil(box / output) bilinear samples per output pixel, averaged) is an antialiased area filter
when a crop shrinks, where grid_sample samples one point per pixel and aliases; it reads the crop
straight from the source image and takes the boxes as a device tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torchvision.ops import roi_align

CROP_TRIES = 10  # torchvision's RandomResizedCrop.get_params
MAX_PADDING_OVERHEAD = 1.25  # pad images to one batch only if that adds at most 25% pixels


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
