"""EsViT's correspondence analysis (EsViT paper, correspondence analysis; microsoft/esvit analyze_models.py): does a model find the same region in a
mirrored, recoloured copy of an image?

The copy is flipped horizontally, colour-jittered and grayscaled, so the only way to match a
region is by what it shows. Each region of the original is matched to the copy's region with
the highest cosine similarity of last-layer tokens; among the `top` most similar pairs, a
match is correct when it lands exactly on the mirrored position. Reported: that accuracy and
the mean distance in pixels between the matched and the true position.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch import nn
from torchvision.transforms import InterpolationMode

from vitssl.augment.photometric import (
    color_jitter,
    grayscale,
    horizontal_flip,
    sample_color_jitter,
    to_normalized_tensor,
)


@dataclass
class Matches:
    """Top region matches of one image pair, positions as (row, col) on the token grid."""

    source: torch.Tensor  # (top, 2)
    target: torch.Tensor  # (top, 2) matched positions in the copy
    truth: torch.Tensor   # (top, 2) mirrored positions
    similarity: torch.Tensor  # (top,)
    grid: tuple[int, int]

    @property
    def correct(self) -> torch.Tensor:
        return (self.target == self.truth).all(dim=1)


def distorted_copy(image: Image.Image, seed: int = 0) -> Image.Image:
    """Flip, colour jitter (DINO strengths) and grayscale: the copy the analysis matches into."""
    g = torch.Generator().manual_seed(seed)
    b, c, s, h, order = sample_color_jitter(g, 0.4, 0.4, 0.2, 0.1)
    return grayscale(color_jitter(horizontal_flip(image.convert("RGB")), b, c, s, h, order))


@torch.no_grad()
def match_regions_top(backbone: nn.Module, original: torch.Tensor, copy: torch.Tensor, top: int = 10) -> Matches:
    """Best match in `copy` for every region of `original` ((3, H, W) tensors); keep the `top`."""
    a, b = backbone(original[None]), backbone(copy[None])
    h, w = a.grid
    sims = F.normalize(a.patches[0].float(), dim=-1) @ F.normalize(b.patches[0].float(), dim=-1).T
    best, index = sims.max(dim=1)
    order = best.argsort(descending=True)[: min(top, len(best))]
    source = torch.stack([order // w, order % w], dim=1)
    target = torch.stack([index[order] // w, index[order] % w], dim=1)
    truth = torch.stack([source[:, 0], w - 1 - source[:, 1]], dim=1)
    return Matches(source, target, truth, best[order], (h, w))


def correspondence_scores(matches: list[Matches], image_size: int) -> dict[str, Any]:
    """Accuracy over all kept pairs, mean distance error in pixels (patch-centre units), and each
    image's accuracy with their standard error.

    The pairs of one image share its content and are not independent, so the standard error is
    taken over images (None for one image); two networks scored on the same images compare
    through the per-image differences (`image_accuracy`)."""
    correct = torch.cat([m.correct for m in matches]).float()
    per_image = torch.stack([m.correct.float().mean() for m in matches])
    errors = []
    for m in matches:
        stride = image_size / m.grid[1]
        errors.append((m.target - m.truth).float().norm(dim=1) * stride)
    chance = sum(1 / (m.grid[0] * m.grid[1]) for m in matches) / len(matches)  # a uniformly random match
    return {"accuracy": correct.mean().item(), "distance_error_px": torch.cat(errors).mean().item(),
            "pairs": int(correct.numel()), "images": len(matches), "chance": chance,
            "accuracy_standard_error": standard_error(per_image.tolist()),
            "image_accuracy": [round(a, 4) for a in per_image.tolist()]}


def standard_error(values: list[float]) -> float | None:
    """Standard error of the mean (sample standard deviation / sqrt(n)); None below two values."""
    if len(values) < 2:
        return None
    return statistics.stdev(values) / math.sqrt(len(values))


def draw_matches(original: Image.Image, copy: Image.Image, m: Matches, path: str | Path) -> Path:
    """Side by side, a line per kept match: green when it hits the mirrored region, red otherwise."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = original.width
    stride = size / m.grid[1]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    ax.imshow(np.concatenate([np.asarray(original), np.asarray(copy)], axis=1))
    for (r0, c0), (r1, c1), ok in zip(m.source.tolist(), m.target.tolist(), m.correct.tolist()):
        x0, y0 = (c0 + 0.5) * stride, (r0 + 0.5) * stride
        x1, y1 = size + (c1 + 0.5) * stride, (r1 + 0.5) * stride
        ax.plot([x0, x1], [y0, y1], color="limegreen" if ok else "red", linewidth=1.2)
        ax.scatter([x0, x1], [y0, y1], s=8, color="yellow")
    ax.set_axis_off()
    ax.set_title(f"top {len(m.correct)} region matches: {int(m.correct.sum())} at the mirrored position")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def square_crop(image: Image.Image, size: int) -> Image.Image:
    """Short side to `size` (bicubic), centre crop: the picture the model sees, unnormalised."""
    image = TF.resize(image.convert("RGB"), [size], interpolation=InterpolationMode.BICUBIC)
    return TF.center_crop(image, [size, size])


def analyze_correspondence(backbone: nn.Module, images: list[Image.Image], image_size: int, out_dir: str | Path,
                           top: int = 10, seed: int = 0, max_pictures: int = 8) -> dict[str, object]:
    """Scores over all images and a PNG per image (up to `max_pictures`) in `out_dir`.

    The copy is made from the square crop, so the mirrored position is exact.
    """
    if not images:
        raise ValueError("no images to analyse: pass a folder with at least one readable image")
    stride = backbone.patch_size
    if image_size % stride:
        raise ValueError(f"image size {image_size} is not a multiple of the backbone stride {stride}: "
                         f"pass --image-size {max(image_size - image_size % stride, 2 * stride)}")
    if image_size // stride < 2:  # one region a side is its own mirror: every match would count as right
        raise ValueError(f"image size {image_size} gives one region a side at stride {stride}, which is its own "
                         f"mirror, so there is nothing to match: pass --image-size {3 * stride} (3x3 regions) or more")
    backbone = backbone.eval()
    device = next(backbone.parameters()).device
    matches, pictures = [], []
    for i, image in enumerate(images):
        original = square_crop(image, image_size)
        copy = distorted_copy(original, seed + i)
        m = match_regions_top(backbone, to_normalized_tensor(original).to(device),
                              to_normalized_tensor(copy).to(device), top)
        matches.append(m)
        if i < max_pictures:
            pictures.append(str(draw_matches(original, copy, m, Path(out_dir) / f"correspondence_{i:03d}.png")))
    return {**correspondence_scores(matches, image_size), "top": top, "image_size": image_size, "pictures": pictures}
