"""iBOT's masked-patch term against the published formula (iBOT Sec. 3, Algorithm 1;
bytedance/ibot main_ibot.py iBOTLoss) on numbers small enough to work out by hand."""

import math

import pytest
import torch

from vitssl.losses.masked_patch import MaskedPatchLoss, picked_patches


def masked_patch_cross_entropy(teacher_probs: torch.Tensor, student_logprobs: torch.Tensor,
                               masks: torch.Tensor) -> torch.Tensor:
    """teacher_probs, student_logprobs (V, B, N, K); masks (V, B, N) bool -> scalar L_MIM."""
    if teacher_probs.shape != student_logprobs.shape or masks.shape != teacher_probs.shape[:-1]:
        raise ValueError(f"patch targets {tuple(teacher_probs.shape)}, student {tuple(student_logprobs.shape)} "
                         f"and masks {tuple(masks.shape)} must cover the same views, images and patches")
    ce = -(teacher_probs * student_logprobs).sum(-1)  # (V, B, N)
    weight = masks.to(ce.dtype)
    per_image = (ce * weight).sum(-1) / weight.sum(-1).clamp_min(1.0)
    return per_image.mean()


def test_loss_is_the_mean_over_images_of_the_mean_over_masked_patches():
    # one view, two images, three patches, two prototypes
    teacher = torch.tensor([[[[0.5, 0.5], [1.0, 0.0], [0.2, 0.8]],
                             [[0.9, 0.1], [0.5, 0.5], [0.3, 0.7]]]])
    student = torch.tensor([[[[0.25, 0.75], [0.6, 0.4], [0.5, 0.5]],
                             [[0.1, 0.9], [0.7, 0.3], [0.4, 0.6]]]]).log()
    masks = torch.tensor([[[True, False, True], [False, True, False]]])
    # image 1: patches 1 and 3; image 2: patch 2
    ce1 = -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))
    ce3 = -(0.2 * math.log(0.5) + 0.8 * math.log(0.5))
    ce2b = -(0.5 * math.log(0.7) + 0.5 * math.log(0.3))
    want = ((ce1 + ce3) / 2 + ce2b) / 2
    assert masked_patch_cross_entropy(teacher, student, masks).item() == pytest.approx(want, rel=1e-6)


def test_an_image_with_nothing_masked_counts_as_zero_in_the_mean():
    """As the original's `loss2.mean()` over the batch with `mask.sum().clamp(min=1)`."""
    teacher = torch.full((2, 1, 2, 2), 0.5)  # two views, one image, two patches
    student = torch.tensor([0.25, 0.75]).log().expand(2, 1, 2, 2)
    masks = torch.tensor([[[True, True]], [[False, False]]])
    one_view = -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))
    assert masked_patch_cross_entropy(teacher, student, masks).item() == pytest.approx(one_view / 2, rel=1e-6)


def test_center_temperatures_and_center_update_follow_the_formula():
    loss = MaskedPatchLoss(out_dim=2, student_temp=0.5, center_momentum=0.9)
    loss.center.center.copy_(torch.tensor([[0.2, -0.2]]))
    t = torch.tensor([0.6, 0.1]).reshape(1, 1, 1, 2)
    s = torch.tensor([1.0, 0.0]).reshape(1, 1, 1, 2)
    tt = 0.1
    # P_t = softmax((t - c) / tt) = softmax([4, 3]); log P_s = log_softmax(s / 0.5) = log_softmax([2, 0])
    p0 = math.exp(4) / (math.exp(4) + math.exp(3))
    log_z = math.log(math.exp(2) + 1)
    want = -(p0 * (2 - log_z) + (1 - p0) * (0 - log_z))
    picked, weights = picked_patches(torch.ones(1, 1, 1, dtype=torch.bool), at_least=1)
    got = loss(s.reshape(1, 2), t, picked, weights, tt)
    assert got.item() == pytest.approx(want, rel=1e-6)
    loss.center.update()
    assert torch.allclose(loss.center.center, torch.tensor([[0.9 * 0.2 + 0.1 * 0.6, 0.9 * -0.2 + 0.1 * 0.1]]))


def test_the_center_averages_every_teacher_patch_masked_or_not():
    loss = MaskedPatchLoss(out_dim=3, center_momentum=0.0)
    teacher = torch.randn(2, 4, 5, 3)
    masks = torch.zeros(2, 4, 5, dtype=torch.bool)
    masks[0, 0, 0] = True
    picked, weights = picked_patches(masks)
    loss(torch.randn(len(picked), 3), teacher, picked, weights, 0.07)
    loss.center.update()
    assert torch.allclose(loss.center.center, teacher.reshape(-1, 3).mean(0, keepdim=True), atol=1e-6)


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="same views, images and patches"):
        masked_patch_cross_entropy(torch.rand(1, 2, 3, 4), torch.rand(1, 2, 3, 4), torch.ones(1, 2, 4, dtype=torch.bool))


def test_the_loss_on_the_picked_patches_equals_the_dense_formula():
    """The student's head runs on the masked tokens only; weighting them per image gives the
    same L_MIM as the dense form over every patch (images without a mask included)."""
    torch.manual_seed(0)
    v, b, n, k = 2, 3, 6, 5
    masks = torch.rand(v, b, n) < 0.4
    masks[1, 2] = False  # an image with nothing masked
    student, teacher = torch.randn(v, b, n, k), torch.randn(v, b, n, k)
    loss = MaskedPatchLoss(out_dim=k, student_temp=0.1)
    loss.center.center.copy_(torch.randn(1, k))
    want = masked_patch_cross_entropy(loss.teacher_probs(teacher, 0.07),
                                      torch.log_softmax(student / 0.1, dim=-1), masks)
    picked, weights = picked_patches(masks)
    got = loss(student.reshape(-1, k)[picked], teacher, picked, weights, 0.07)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_fewer_than_two_masked_patches_are_padded_with_weightless_ones():
    masks = torch.zeros(2, 4, dtype=torch.bool)
    masks[1, 3] = True
    picked, weights = picked_patches(masks)
    assert picked.tolist() == [7, 0] and weights.tolist() == [0.5, 0.0]
    picked, weights = picked_patches(torch.zeros(2, 4, dtype=torch.bool))
    assert len(picked) == 2 and weights.sum() == 0
