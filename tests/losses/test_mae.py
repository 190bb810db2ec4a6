import math

import pytest
import torch

from vitssl.losses import (
    MAELoss,
    masked_mse,
    normalized_pixel_target,
    patchify,
    random_masking,
    unpatchify,
)


def test_patchify_layout_by_hand_and_round_trip():
    images = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    patches = patchify(images, 2)
    assert patches.shape == (2, 6, 12)  # 2x3 grid of 2x2x3 patches
    # patch (row 1, col 2) = index 5: pixels rows 2-3, cols 4-5, flattened as (p, q, channel)
    assert torch.equal(patches[1, 5], images[1, :, 2:4, 4:6].permute(1, 2, 0).reshape(-1))
    assert torch.equal(unpatchify(patches, 2, (2, 3)), images)


def test_unpatchify_rejects_a_wrong_grid():
    with pytest.raises(ValueError, match="do not fit"):
        unpatchify(torch.zeros(1, 6, 12), 2, (2, 2))


def test_normalized_pixel_target_by_hand():
    patch = torch.tensor([[[1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0]]])
    target = normalized_pixel_target(patch)
    var = ((1 - 2.5) ** 2 + (2 - 2.5) ** 2 + (3 - 2.5) ** 2 + (4 - 2.5) ** 2) / 3  # unbiased: 5/3
    expected = torch.tensor([-1.5, -0.5, 0.5, 1.5]) / math.sqrt(var + 1e-6)
    assert torch.allclose(target[0, 0], expected, atol=1e-6)
    assert torch.equal(target[0, 1], torch.zeros(4))  # a flat patch has a zero target, not NaN


def test_normalized_pixel_target_has_zero_mean_and_unit_unbiased_variance_per_patch():
    patches = torch.randn(3, 10, 48) * 5 + 2
    target = normalized_pixel_target(patches)
    assert torch.allclose(target.mean(-1), torch.zeros(3, 10), atol=1e-5)
    assert torch.allclose(target.var(-1), torch.ones(3, 10), atol=1e-5)


def test_masked_mse_by_hand_on_two_patches():
    pred = torch.tensor([[[1.0, 2.0], [0.0, 4.0]]])
    target = torch.tensor([[[0.0, 0.0], [2.0, 1.0]]])
    # per-patch MSE: (1 + 4) / 2 = 2.5 and (4 + 9) / 2 = 6.5
    assert masked_mse(pred, target, torch.tensor([[0.0, 1.0]])).item() == pytest.approx(6.5)
    assert masked_mse(pred, target, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(2.5)
    assert masked_mse(pred, target, torch.tensor([[1.0, 1.0]])).item() == pytest.approx(4.5)


def test_loss_ignores_visible_patches_and_sees_masked_ones():
    pred, target = torch.randn(2, 9, 12), torch.randn(2, 9, 12)
    _, mask, _ = random_masking(2, 9, 0.67, torch.Generator().manual_seed(0))
    loss = masked_mse(pred, target, mask)
    visible = (mask[0] == 0).nonzero()[0, 0]
    masked = (mask[0] == 1).nonzero()[0, 0]
    changed = pred.clone()
    changed[0, visible] += 10.0
    assert masked_mse(changed, target, mask).item() == loss.item()
    changed = pred.clone()
    changed[0, masked] += 10.0
    assert masked_mse(changed, target, mask).item() > loss.item() + 1.0


def test_loss_is_fp32_for_low_precision_predictions():
    loss = masked_mse(torch.randn(1, 4, 8).bfloat16(), torch.randn(1, 4, 8), torch.ones(1, 4))
    assert loss.dtype == torch.float32


def test_mae_loss_targets_raw_or_normalised_patches():
    images, pred = torch.randn(2, 3, 8, 8), torch.randn(2, 4, 48)
    mask = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0]])
    raw = MAELoss(patch_size=4, norm_pix_loss=False)(pred, images, mask)
    assert raw.item() == pytest.approx(masked_mse(pred, patchify(images, 4), mask).item())
    normed = MAELoss(patch_size=4, norm_pix_loss=True)(pred, images, mask)
    expected = masked_mse(pred, normalized_pixel_target(patchify(images, 4)), mask)
    assert normed.item() == pytest.approx(expected.item())
