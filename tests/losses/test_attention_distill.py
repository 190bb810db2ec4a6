"""The distillation MSE: a hand-computed value, the teacher detached, shapes never broadcast."""

import pytest
import torch

from vitssl.losses.attention_distill import distillation_mse


def test_value_by_hand_and_teacher_gets_no_gradient():
    student = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], requires_grad=True)  # (1, 1, 2, 2)
    teacher = torch.tensor([[[[0.0, 2.0], [5.0, 4.0]]]], requires_grad=True)
    loss = distillation_mse(student, teacher)
    assert loss.item() == pytest.approx((1 + 0 + 4 + 0) / 4)
    loss.backward()
    assert student.grad is not None and teacher.grad is None


def test_low_precision_inputs_are_compared_in_fp32():
    a, b = torch.randn(2, 3, 5, 5), torch.randn(2, 3, 5, 5)
    loss = distillation_mse(a.bfloat16(), b.bfloat16())
    assert loss.dtype == torch.float32


def test_mismatched_shapes_are_refused_not_broadcast():
    with pytest.raises(ValueError, match="same tokens"):
        distillation_mse(torch.zeros(2, 3, 5, 5), torch.zeros(2, 3, 1, 5))
