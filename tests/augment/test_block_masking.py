"""Blockwise masks for masked-patch distillation (BEiT Sec. 2.2; iBOT Sec. 3, bytedance/ibot loader.py)."""

import math

import pytest
import torch

from vitssl.augment.block_masking import block_masks


def components(row: torch.Tensor, grid: tuple[int, int]) -> int:
    """4-connected groups of masked patches in one (h*w) mask (flood fill)."""
    h, w = grid
    cells = {divmod(k, w) for k in row.nonzero().flatten().tolist()}
    groups = 0
    while cells:
        groups += 1
        stack = [cells.pop()]
        while stack:
            i, j = stack.pop()
            for nb in ((i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)):
                if nb in cells:
                    cells.remove(nb)
                    stack.append(nb)
    return groups


@pytest.mark.parametrize("grid", [(14, 14), (7, 7), (4, 4), (3, 5)])
def test_masked_count_lies_in_the_ratio_range_and_only_on_the_chosen_fraction(grid):
    torch.manual_seed(0)
    n, ratio, var, prob = 400, 0.3, 0.2, 0.5
    masks = block_masks(n, grid, ratio, var, prob)
    assert masks.shape == (n, grid[0] * grid[1]) and masks.dtype == torch.bool
    counts = masks.sum(1)
    masked = counts > 0
    patches = grid[0] * grid[1]
    lo, hi = math.floor((ratio - var) * patches + 1e-6), math.floor((ratio + var) * patches + 1e-6)
    assert all(lo <= c <= hi for c in counts[masked].tolist())
    # each image is masked with probability 0.5: 400 draws land within +-0.1 of it (about 4 sigma)
    if lo > 0:
        assert abs(masked.float().mean().item() - prob) < 0.1
    # the ratio is drawn per image, not once per batch
    assert len(set(counts[masked].tolist())) > 1


@pytest.mark.parametrize("prob, expect", [(0.0, 0.0), (1.0, 1.0)])
def test_prob_zero_masks_nothing_and_prob_one_masks_every_image(prob, expect):
    masks = block_masks(50, (7, 7), 0.3, 0.2, prob)
    assert (masks.sum(1) > 0).float().mean().item() == expect


def test_masks_are_blocks_not_scattered_patches():
    """A union of a few rectangles: few connected groups, where the same counts scattered at random
    fall apart into many (the check tells the two apart)."""
    torch.manual_seed(0)
    grid = (14, 14)
    masks = block_masks(100, grid, 0.3, 0.2, 1.0)
    blocky = [components(row, grid) for row in masks]
    scattered = []
    for row in masks:
        shuffled = torch.zeros_like(row)
        shuffled[torch.randperm(row.numel())[: int(row.sum())]] = True
        scattered.append(components(shuffled, grid))
    assert sum(blocky) / len(blocky) < 3 and max(blocky) <= 6
    assert sum(scattered) / len(scattered) > 15


def test_masks_follow_the_global_torch_generator():
    """The seed comes from torch's global generator (which the trainer checkpoints): the same
    state gives the same masks, and drawing advances it."""
    torch.manual_seed(3)
    first = block_masks(8, (7, 7), 0.3, 0.2, 0.5)
    second = block_masks(8, (7, 7), 0.3, 0.2, 0.5)
    torch.manual_seed(3)
    assert torch.equal(block_masks(8, (7, 7), 0.3, 0.2, 0.5), first)
    assert not torch.equal(first, second)
