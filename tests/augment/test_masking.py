import math

import pytest
import torch

from vitssl.augment.masking import num_visible, random_masking


@pytest.mark.parametrize("num_patches, ratio, keep", [(196, 0.75, 49), (49, 0.75, 12), (10, 0.9, 1), (16, 0.5, 8)])
def test_number_of_visible_patches_is_floor_of_kept_fraction(num_patches, ratio, keep):
    assert num_visible(num_patches, ratio) == keep == math.floor(round(num_patches * (1 - ratio), 9))


def test_masking_keeps_exactly_the_kept_fraction_per_sample_and_differs_between_samples():
    ids_keep, mask, ids_restore = random_masking(8, 49, 0.75, torch.Generator().manual_seed(0))
    assert ids_keep.shape == (8, 12) and mask.shape == (8, 49) and ids_restore.shape == (8, 49)
    assert torch.equal(mask.sum(1), torch.full((8,), 37.0))
    for b in range(8):
        assert len(set(ids_keep[b].tolist())) == 12
        assert torch.equal(mask[b, ids_keep[b]], torch.zeros(12))  # kept = visible = 0
    assert len({tuple(m.tolist()) for m in mask}) == 8


def test_ids_restore_inverts_the_shuffle():
    batch, n = 4, 16
    ids_keep, mask, ids_restore = random_masking(batch, n, 0.75, torch.Generator().manual_seed(1))
    ids_shuffle = torch.argsort(ids_restore, dim=1)
    assert torch.equal(ids_shuffle[:, :4], ids_keep)
    tokens = torch.randn(batch, n, 3)
    index = ids_shuffle.unsqueeze(-1).expand(-1, -1, 3)
    shuffled = torch.gather(tokens, 1, index)  # visible first, then masked, as the decoder sees them
    restored = torch.gather(shuffled, 1, ids_restore.unsqueeze(-1).expand(-1, -1, 3))
    assert torch.equal(restored, tokens)
    assert torch.equal(torch.gather(ids_shuffle, 1, ids_restore), torch.arange(n).expand(batch, n))


def test_masking_is_a_function_of_the_generator_seed():
    a = random_masking(3, 25, 0.6, torch.Generator().manual_seed(5))
    b = random_masking(3, 25, 0.6, torch.Generator().manual_seed(5))
    c = random_masking(3, 25, 0.6, torch.Generator().manual_seed(6))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[1], c[1])
