import pytest
import torch
from torch import nn

from vitssl.engine.ema import ema_update


def test_ema_formula_on_every_parameter():
    student, teacher = nn.Linear(3, 2), nn.Linear(3, 2)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    ema_update(teacher, student, 0.9)
    for k, v in teacher.state_dict().items():
        assert torch.allclose(v, 0.9 * before[k] + 0.1 * student.state_dict()[k], atol=1e-7)


def test_momentum_one_keeps_teacher():
    student, teacher = nn.Linear(3, 2), nn.Linear(3, 2)
    before = teacher.weight.clone()
    ema_update(teacher, student, 1.0)
    assert torch.equal(teacher.weight, before)


def test_structure_mismatch_is_refused():
    with pytest.raises(ValueError, match="differ in parameters"):
        ema_update(nn.Linear(3, 2), nn.Sequential(nn.Linear(3, 2)), 0.9)
