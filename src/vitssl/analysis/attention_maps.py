"""DINO's picture: where the last block's attention goes, per head, over the image.

With a CLS token, a head's map is the attention of the CLS query to every patch (DINO's
`visualize_attention.py`). A CLS-free backbone (SelfPatch) has no such query; there the map is
the mean attention each patch *receives* over all queries, which highlights the same salient
regions but is smoother, so compare such pictures only among CLS-free models.

Optionally each head also gets DINO's mask: the fewest patches holding `threshold` (0.6) of
that head's attention mass, drawn as a contour.
"""

from __future__ import annotations

from math import ceil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from vitssl.analysis.attention_stats import patch_size_of
from vitssl.analysis.correspondence import square_crop
from vitssl.augment.photometric import to_normalized_tensor
from vitssl.backbones.attention_capture import AttentionCapture


@torch.no_grad()
def attention_heatmaps(backbone: nn.Module, image: torch.Tensor, layer: int = -1) -> torch.Tensor:
    """(3, H, W) normalised image -> (heads, h, w) attention over the patch grid (see module doc)."""
    ph, pw = patch_size_of(backbone)
    h, w = image.shape[-2] // ph, image.shape[-1] // pw
    with AttentionCapture(backbone, [layer]) as capture:
        backbone(image[None])
    probs = capture.probs(layer)[0].float()  # (heads, T, T)
    prefix = probs.shape[-1] - h * w
    if prefix < 0:
        raise ValueError(f"attention has {probs.shape[-1]} tokens, fewer than the {h}x{w} patches of the image")
    maps = probs[:, 0, prefix:] if prefix else probs.mean(dim=1)
    return maps.reshape(-1, h, w)


def mass_mask(maps: torch.Tensor, threshold: float = 0.6) -> torch.Tensor:
    """(heads, h, w) -> bool mask of the largest values that together hold `threshold` of each map's mass."""
    flat = maps.flatten(1)
    values, order = flat.sort(dim=1, descending=True)
    share = values / values.sum(dim=1, keepdim=True)
    before = share.cumsum(dim=1) - share  # mass of the larger values
    keep = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, order, before < threshold)
    return keep.reshape(maps.shape)


def _upsample(maps: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Patch grid -> pixels, nearest (each patch a flat square, as DINO draws it)."""
    return F.interpolate(maps[None].float(), size=size, mode="nearest")[0].cpu().numpy()


def _draw(picture: Image.Image, maps: torch.Tensor, masks: torch.Tensor | None, path: Path, alpha: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = (picture.height, picture.width)
    heat = _upsample(torch.cat([maps, maps.mean(dim=0, keepdim=True)]), size)
    outline = _upsample(masks, size) if masks is not None else None
    titles = ["image"] + [f"head {i}" for i in range(len(maps))] + ["mean of heads"]
    cols = min(len(titles), 7)
    rows = ceil(len(titles) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.3 * rows), dpi=100, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k >= len(titles):
            continue
        ax.imshow(picture)
        ax.set_title(titles[k], fontsize=9)
        if k == 0:
            continue
        ax.imshow(heat[k - 1], cmap="inferno", alpha=alpha)
        if outline is not None and k - 1 < len(outline) and outline[k - 1].any():
            ax.contour(outline[k - 1], levels=[0.5], colors="cyan", linewidths=1)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def save_attention_maps(backbone: nn.Module, images: list[Image.Image], out_dir: str | Path, image_size: int,
                        layer: int = -1, threshold: float | None = None, alpha: float = 0.6) -> list[Path]:
    """One PNG per image in `out_dir` (attention_000.png, ...): the centre crop, then an overlay
    per head and one of the heads' mean. `threshold` (e.g. 0.6) adds DINO's mass mask."""
    if not images:
        raise ValueError("no images to draw: pass at least one PIL image")
    ph, pw = patch_size_of(backbone)
    if image_size % ph or image_size % pw:
        raise ValueError(f"image size {image_size} is not a multiple of the patch size {ph}: "
                         f"pass an image size such as {max(image_size - image_size % ph, ph)}")
    if threshold is not None and not 0 < threshold <= 1:
        raise ValueError(f"threshold {threshold} is a share of attention mass: use a value in (0, 1], e.g. 0.6")
    backbone = backbone.eval()
    device = next(backbone.parameters()).device
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        picture = square_crop(image, image_size)
        maps = attention_heatmaps(backbone, to_normalized_tensor(picture).to(device), layer).cpu()
        masks = mass_mask(maps, threshold) if threshold is not None else None
        paths.append(_draw(picture, maps, masks, out_dir / f"attention_{i:03d}.png", alpha))
    return paths
