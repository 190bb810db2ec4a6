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


def test_teacher_ema_matches_ema_update_and_pairs_parameters_once(monkeypatch):
    from vitssl.engine.ema import TeacherEMA

    student = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    teacher, reference = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4)), nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    reference.load_state_dict(teacher.state_dict())
    ema = TeacherEMA(teacher, student)
    walks = []
    original = teacher.named_parameters
    monkeypatch.setattr(teacher, "named_parameters", lambda *a, **k: walks.append(1) or original(*a, **k))
    for momentum in (0.9, 0.5, 0.99):
        with torch.no_grad():
            for p in student.parameters():
                p.add_(torch.randn_like(p))  # the optimizer step changes the student in place
        ema.update(momentum)
        ema_update(reference, student, momentum)
    assert len(walks) == 1
    for (name, a), b in zip(teacher.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(a, b), name
