"""Blockwise patch masks for masked-patch distillation (BEiT, Bao et al. 2022, Sec. 2.2 and
Algorithm 1; iBOT, Zhou et al. 2022, Sec. 3; bytedance/ibot loader.py ImageFolderMask and the
README's pre-training commands): which of a global crop's patch tokens the student sees as the [MASK] embedding.

Each image is masked with probability `prob` (iBOT's released recipes: ratios "0 0.3", one drawn
per crop, so half of the crops are masked). A masked image draws its ratio r uniformly from
[ratio - var, ratio + var] and gets floor(r N) of its N patches masked as a union of random
rectangles: area between iBOT's smallest block, (min(h, w) // 3)^2 patches, and the patches still
to mask; aspect ratio log-uniform in [min_aspect, 1 / min_aspect]; a rectangle is kept if it adds
at least one and at most the remaining patches. Where ten rectangles in a row do not fit (the
budget left is smaller than any rectangle), single patches next to the mask finish it, so every
masked image gets exactly floor(r N) patches (the original stops short there).

The draws come from one seed taken from torch's global CPU generator per call: the trainer
checkpoints that generator, so a resumed run draws the same masks, on any device.
"""

from __future__ import annotations

import math
import random

import torch


def block_masks(n: int, grid: tuple[int, int], ratio: float, ratio_var: float, prob: float,
                min_aspect: float = 0.3, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n, h*w) bool CPU masks, True = masked, rows independent; see the module docstring."""
    seed = int(torch.randint(0, 2**62, (), generator=generator))
    rng = random.Random(seed)
    h, w = grid
    rows = []
    for _ in range(n):
        masked = rng.random() < prob
        r = rng.uniform(ratio - ratio_var, ratio + ratio_var) if masked else 0.0
        rows.append(one_block_mask(h, w, math.floor(r * h * w + 1e-6), rng, min_aspect))
    return torch.tensor(rows, dtype=torch.bool).reshape(n, h * w)


def one_block_mask(h: int, w: int, count: int, rng: random.Random, min_aspect: float = 0.3) -> list[bool]:
    """A row-major (h*w) mask with exactly `count` patches masked, rectangle by rectangle."""
    mask = [False] * (h * w)
    done = 0
    while done < count:
        added = _place_rectangle(mask, h, w, count - done, rng, min_aspect)
        if not added:
            added = _grow_by_one(mask, h, w, rng)
        done += added
    return mask


def _place_rectangle(mask: list[bool], h: int, w: int, budget: int, rng: random.Random,
                     min_aspect: float, attempts: int = 10) -> int:
    """Mask one random rectangle adding 1..budget new patches; 0 if none of `attempts` fits."""
    smallest = max(1, (min(h, w) // 3) ** 2)
    log_aspect = math.log(min_aspect)
    for _ in range(attempts):
        area = rng.uniform(min(smallest, budget), budget)
        aspect = math.exp(rng.uniform(log_aspect, -log_aspect))
        bh, bw = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if not (1 <= bh <= h and 1 <= bw <= w):
            continue
        top, left = rng.randint(0, h - bh), rng.randint(0, w - bw)
        new = [i * w + j for i in range(top, top + bh) for j in range(left, left + bw) if not mask[i * w + j]]
        if 0 < len(new) <= budget:
            for k in new:
                mask[k] = True
            return len(new)
    return 0


def _grow_by_one(mask: list[bool], h: int, w: int, rng: random.Random) -> int:
    """Mask one unmasked patch beside the mask (anywhere if nothing is masked yet); returns 1."""
    free = [k for k in range(h * w) if not mask[k]]
    beside = [k for k in free if any(mask[n] for n in _neighbours(k, h, w))]
    mask[rng.choice(beside or free)] = True
    return 1


def _neighbours(k: int, h: int, w: int) -> list[int]:
    i, j = divmod(k, w)
    return [a * w + b for a, b in ((i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)) if 0 <= a < h and 0 <= b < w]
