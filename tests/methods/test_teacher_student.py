"""The DINO family's shared base: the teacher momentum it logs is the one it averages with,
last layers of every head stay frozen at first, and every center moves after a step."""

import math

import pytest
import torch

from helpers import one_batch, tiny_method
from vitssl.engine.protocol import StepContext
from vitssl.methods.teacher_student import TeacherStudent

FAMILY = ("dino", "esvit", "selfpatch")


@pytest.mark.parametrize("name", FAMILY)
def test_logged_momentum_is_the_one_the_teacher_moves_by(name):
    method = tiny_method(name)
    assert isinstance(method, TeacherStudent)
    ctx = StepContext(step=3, epoch=1, steps_per_epoch=4, total_steps=8, epochs=2, logged=True)
    out = method.training_step(one_batch(method), ctx)
    expected = 1 - (1 - method.cfg.momentum_teacher) * (1 + math.cos(math.pi * 3 / 8)) / 2
    assert out.metrics["momentum"] == pytest.approx(expected)
    with torch.no_grad():
        for p in method.student.parameters():
            p.add_(1.0)
    before = {k: v.clone() for k, v in method.teacher.named_parameters()}
    student = dict(method.student.named_parameters())
    centers = [c.center.clone() for c in method.centers()]
    method.after_optimizer_step(ctx)
    m = out.metrics["momentum"]
    for k, v in method.teacher.named_parameters():
        torch.testing.assert_close(v, m * before[k] + (1 - m) * student[k], rtol=0, atol=1e-6)
    assert all(not torch.equal(c.center, old) for c, old in zip(method.centers(), centers))


@pytest.mark.parametrize("name", FAMILY)
def test_every_heads_last_layer_is_frozen_in_the_first_epochs(name):
    method = tiny_method(name)
    heads = method.last_layer_heads()
    assert len(heads) == (1 if name == "dino" else 2)
    for epoch, frozen in ((0, True), (1, False)):
        method.zero_grad(set_to_none=True)
        ctx = StepContext(step=0, epoch=epoch, steps_per_epoch=4, total_steps=8, epochs=2)
        method.training_step(one_batch(method), ctx).loss.backward()
        method.before_optimizer_step(ctx)
        grads = [p.grad for h in heads for p in h.last_layer.parameters() if p.requires_grad]
        assert grads and all((g is None) == frozen for g in grads)


@pytest.mark.parametrize("config", ["DINOConfig", "EsViTConfig", "SelfPatchConfig"])
@pytest.mark.parametrize("key, value, message", [
    ("momentum_teacher", 1.5, r"^method.momentum_teacher=1.5 is out of range: use a finite number in \[0, 1\]$"),
    ("student_temp", 0.0, r"^method.student_temp=0.0 is out of range: use a finite number > 0$"),
    ("freeze_last_layer", -1, r"^method.freeze_last_layer=-1 is out of range: use an integer >= 0$"),
])
def test_every_family_config_refuses_a_bad_shared_value_in_one_line(config, key, value, message):
    import vitssl.methods
    from vitssl.engine.validation import ConfigError

    with pytest.raises(ConfigError, match=message):
        getattr(vitssl.methods, config)(**{key: value})


@pytest.mark.parametrize("config, heads", [("EsViTConfig", "region_head"), ("SelfPatchConfig", "patch_head")])
def test_a_methods_own_head_is_checked_like_the_shared_one(config, heads):
    import vitssl.methods
    from vitssl.engine.validation import ConfigError
    from vitssl.heads import DINOHeadConfig

    with pytest.raises(ConfigError, match=rf"^method.{heads}.out_dim=0 "):
        getattr(vitssl.methods, config)(**{heads: DINOHeadConfig(out_dim=0)})
