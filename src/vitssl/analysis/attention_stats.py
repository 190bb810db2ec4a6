"""How far and how broadly each head looks: mean attention distance and entropy (MAE-Lite paper, layer and attention analyses; wangsr126/mae-lite projects/eval_tools/).

MAE-Lite's analysis (its Figs. on attention distance and entropy per layer and head) uses the
patch-to-patch part of each block's attention, averaged over images and query tokens:
- distance of query i = Σ_j a_ij · ‖pos_i − pos_j‖, positions on the patch grid;
- entropy of query i = −Σ_j a_ij log a_ij (natural log; 0 log 0 = 0).

Two choices, each reproducing the reference by default and keeping the alternative:
- `renormalise=True`: the reference drops the CLS row and column from the *logits* and applies
  the softmax afterwards, so each patch query's weights over the patches sum to 1. With
  `renormalise=False` the rows are cut from the full softmax and keep only the mass the query
  puts on patches (less than 1 when it also attends to CLS).
- `distance_unit`: "pixel" (grid distance × patch size, the paper's axis) by default; "grid"
  for patch units; "compat_x14" reproduces the reference code, which multiplies grid units by
  14 (the grid side at 224 px), not by the 16-px patch size.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import cycle
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from vitssl.backbones.attention_capture import AttentionCapture

DistanceUnit = Literal["pixel", "grid", "compat_x14"]


def patch_size_of(model: nn.Module) -> tuple[int, int]:
    """(height, width) of a ViT's patches, from `patch_embed.patch_size` or `patch_size`."""
    size = getattr(getattr(model, "patch_embed", None), "patch_size", None) or getattr(model, "patch_size", None)
    if size is None:
        raise ValueError(f"{type(model).__name__} has no patch_size: attention statistics need a patch-grid ViT")
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def grid_distances(grid: tuple[int, int], patch_size: tuple[int, int] = (1, 1),
                   unit: DistanceUnit = "pixel") -> torch.Tensor:
    """(N, N) Euclidean distance between the N = h*w patch positions (row-major) in `unit`."""
    if unit not in ("pixel", "grid", "compat_x14"):
        raise ValueError(f"unknown distance unit '{unit}': use 'pixel', 'grid' or 'compat_x14'")
    rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    step = {"pixel": patch_size, "grid": (1, 1), "compat_x14": (14, 14)}[unit]
    pos = torch.stack([rows.flatten() * step[0], cols.flatten() * step[1]], dim=1).double()
    return torch.cdist(pos, pos)


def patch_attention(probs: torch.Tensor, num_prefix: int, renormalise: bool = True) -> torch.Tensor:
    """(..., T, T) attention weights -> (..., N, N) patch-to-patch weights (prefix tokens cut)."""
    a = probs[..., num_prefix:, num_prefix:]
    return a / a.sum(dim=-1, keepdim=True) if renormalise else a


def attention_distance(attn: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
    """(..., N, N) patch attention and (N, N) distances -> (..., N) mean distance per query."""
    return (attn.double() * distances.to(attn.device)).sum(dim=-1)


def attention_entropy(attn: torch.Tensor) -> torch.Tensor:
    """(..., N, N) attention -> (..., N) entropy per query in nats."""
    a = attn.double()
    return -torch.special.xlogy(a, a).sum(dim=-1)


@torch.no_grad()
def attention_statistics(vit: nn.Module, batches: Iterable, distance_unit: DistanceUnit = "pixel",
                         renormalise: bool = True, max_images: int | None = None) -> dict[str, Any]:
    """Mean attention distance and entropy per block and head over image batches.

    `batches` yields (B, 3, H, W) tensors or (images, labels) pairs (a DataLoader), all of one
    size. Every block is captured at once, so memory grows as depth × B × heads × T²: keep
    batches modest for large models. Returns JSON-able lists indexed [block][head].
    """
    vit = vit.eval()
    device = next(vit.parameters()).device
    patch = patch_size_of(vit)
    dist_sum = ent_sum = None
    queries = images_seen = 0
    grid, prefix = None, 0
    capture = AttentionCapture(vit, range(len(vit.blocks)))
    for batch in batches:
        images = (batch[0] if isinstance(batch, (tuple, list)) else batch).to(device)
        if max_images is not None:
            images = images[: max_images - images_seen]
        if not len(images):
            break
        this_grid = (images.shape[-2] // patch[0], images.shape[-1] // patch[1])
        if grid is not None and this_grid != grid:
            raise ValueError(f"batches have different image sizes (grids {grid} and {this_grid}): "
                             "resize all images to one size")
        grid = this_grid
        distances = grid_distances(grid, patch, distance_unit).to(device)
        with capture:
            vit(images)
        per_layer = []
        for i in capture.layers:
            probs = capture.probs(i)
            prefix = probs.shape[-1] - grid[0] * grid[1]
            a = patch_attention(probs, prefix, renormalise)
            per_layer.append((attention_distance(a, distances).sum(dim=(0, 2)), attention_entropy(a).sum(dim=(0, 2))))
        capture.clear()
        d = torch.stack([p[0] for p in per_layer]).cpu()
        e = torch.stack([p[1] for p in per_layer]).cpu()
        dist_sum, ent_sum = (d, e) if dist_sum is None else (dist_sum + d, ent_sum + e)
        queries += images.shape[0] * grid[0] * grid[1]
        images_seen += images.shape[0]
    if dist_sum is None:
        raise ValueError("no images to analyse: pass a non-empty loader or list of batches")
    from vitssl.analysis.cka import warn_if_few_samples

    warn_if_few_samples("attention statistics", images_seen, vit.embed_dim)
    distance, entropy = dist_sum / queries, ent_sum / queries
    return {
        "distance": distance.tolist(),
        "entropy": entropy.tolist(),
        "mean_distance": distance.mean(dim=1).tolist(),
        "mean_entropy": entropy.mean(dim=1).tolist(),
        "distance_unit": distance_unit,
        "renormalise": renormalise,
        "patch_size": list(patch),
        "grid": list(grid),
        "num_prefix_tokens": prefix,
        "images": images_seen,
    }


def plot_attention_stats(stats: Mapping[str, Any], path: str | Path) -> Path:
    """PNG: distance and entropy against depth, one dot per head and a line through the means.

    `stats` is one result of `attention_statistics`, or a mapping name -> result to compare
    models in one figure (one colour each). Depth on the x axis counts blocks from 1.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    models = {"": stats} if "distance" in stats else dict(stats)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=120)
    for colour, (name, s) in zip(cycle(plt.rcParams["axes.prop_cycle"].by_key()["color"]), models.items()):
        for ax, key in zip(axes, ("distance", "entropy")):
            values = torch.tensor(s[key])
            depth = torch.arange(1, values.shape[0] + 1)
            ax.scatter(depth.repeat_interleave(values.shape[1]), values.flatten(), s=12, alpha=0.5, color=colour)
            ax.plot(depth, values.mean(dim=1), marker="*", color=colour, label=name or None)
    unit = next(iter(models.values()))["distance_unit"]
    axes[0].set_ylabel(f"mean attention distance ({'px' if unit == 'pixel' else unit})")
    axes[1].set_ylabel("attention entropy (nats)")
    for ax in axes:
        ax.set_xlabel("depth (block)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.set_ylim(bottom=0)
        if len(models) > 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
