"""SimMIM's pixel term against the published formula (Xie et al. 2022, Sec. 3, Eq. 1;
microsoft/SimMIM simmim.py: `(|x - x_rec| * mask).sum() / mask.sum() / in_chans`)."""

import pytest
import torch

from vitssl.losses.mae import patchify
from vitssl.losses.masked_pixels import masked_pixel_l1


def test_loss_is_the_mean_absolute_error_over_the_masked_values_by_hand():
    # two images, two patches each, patches of 2 values; masked: image 0 patch 0, image 1 both
    pred = torch.tensor([[[1.0, 2.0], [9.0, 9.0]], [[0.5, 0.0], [0.0, -3.0]]])
    target = torch.zeros(2, 2, 2)
    masks = torch.tensor([[True, False], [True, True]])
    # |1| + |2| + |0.5| + |0| + |0| + |-3| = 6.5 over 3 masked patches x 2 values (the batch's
    # masked values, not a mean of per-image means, which would give (1.5 + 0.875) / 2)
    assert masked_pixel_l1(pred, target, masks).item() == pytest.approx(6.5 / 6)


def test_it_matches_simmims_pixel_mask_formula_on_images():
    g = torch.Generator().manual_seed(0)
    p, c = 2, 3
    images, recon = torch.randn(2, c, 6, 4, generator=g), torch.randn(2, c, 6, 4, generator=g)
    masks = torch.rand(2, 6, generator=g) < 0.5  # a 3 x 2 patch grid
    masks[0, 0] = True
    pixel_mask = masks.reshape(2, 1, 3, 2).float().repeat_interleave(p, 2).repeat_interleave(p, 3)
    want = ((images - recon).abs() * pixel_mask).sum() / pixel_mask.sum() / c
    got = masked_pixel_l1(patchify(recon, p), patchify(images, p), masks)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


def test_only_masked_patches_count_and_get_a_gradient():
    g = torch.Generator().manual_seed(1)
    pred, target = torch.randn(3, 5, 12, generator=g), torch.randn(3, 5, 12, generator=g)
    masks = torch.rand(3, 5, generator=g) < 0.5
    masks[0, 0], masks[0, 1] = True, False
    changed = pred.clone()
    changed[~masks] += 100.0  # the prediction of every unmasked patch
    assert torch.equal(masked_pixel_l1(changed, target, masks), masked_pixel_l1(pred, target, masks))
    pred.requires_grad_(True)
    masked_pixel_l1(pred, target, masks).backward()
    assert pred.grad[~masks].abs().sum() == 0 and pred.grad[masks].abs().sum() > 0


def test_nothing_masked_gives_zero_and_mismatched_shapes_are_refused():
    pred = torch.ones(2, 3, 4, requires_grad=True)
    loss = masked_pixel_l1(pred, torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()  # still part of the graph
    with pytest.raises(ValueError, match="must cover the same images and patches"):
        masked_pixel_l1(pred, torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.bool))
