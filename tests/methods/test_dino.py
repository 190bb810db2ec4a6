import math

import pytest
import torch

from helpers import one_batch, tiny_method
from vitssl.engine.protocol import StepContext


def test_teacher_starts_as_student_copy_and_has_no_drop_path():
    method = tiny_method("dino")
    s, t = method.student.state_dict(), method.teacher.state_dict()
    assert all(torch.equal(s[k], t[k]) for k in s)
    assert all(not p.requires_grad for p in method.teacher.parameters())


def test_views_grouped_by_resolution_match_one_by_one():
    method = tiny_method("dino").eval()
    views, _ = one_batch(method)
    together = method.student(views)
    separately = torch.stack([method.student([v])[0] for v in views])
    assert together.shape == (len(views), views[0].shape[0], 64)
    assert torch.allclose(together, separately, atol=1e-5)


def test_last_layer_frozen_in_first_epochs_only():
    method = tiny_method("dino")
    method.cfg.freeze_last_layer = 1
    out = method.training_step(one_batch(method), StepContext(0, 0, 10, 20, 2))
    out.loss.backward()
    method.before_optimizer_step(StepContext(0, 0, 10, 20, 2))
    assert all(p.grad is None for p in method.student.head.last_layer.parameters())
    assert method.student.head.mlp[0].weight.grad is not None


def test_after_step_moves_teacher_by_ema_and_updates_center():
    method = tiny_method("dino")
    ctx = StepContext(step=5, epoch=0, steps_per_epoch=10, total_steps=20, epochs=2)
    method.training_step(one_batch(method), ctx)
    with torch.no_grad():
        for p in method.student.parameters():
            p.add_(1.0)
    before = {k: v.clone() for k, v in method.teacher.named_parameters()}
    student = dict(method.student.named_parameters())
    method.after_optimizer_step(ctx)
    m = 1 - (1 - 0.996) * (1 + math.cos(math.pi * 5 / 20)) / 2
    assert method.teacher_momentum(ctx) == pytest.approx(m)
    for k, v in method.teacher.named_parameters():
        assert torch.allclose(v, m * before[k] + (1 - m) * student[k], atol=1e-6)
    assert method.loss.center.center.abs().sum() > 0


def test_teacher_temperature_schedule_is_per_epoch():
    method = tiny_method("dino")
    method.cfg.warmup_teacher_temp, method.cfg.teacher_temp, method.cfg.warmup_teacher_temp_epochs = 0.04, 0.07, 3
    assert [method.teacher_temperature(e) for e in range(4)] == pytest.approx([0.04, 0.055, 0.07, 0.07])


def test_sinkhorn_centering_uses_sinkhorn_targets_and_leaves_the_center_alone():
    from vitssl.losses.dino import multicrop_cross_entropy
    from vitssl.losses.sinkhorn import sinkhorn_knopp

    method = tiny_method("dino")
    method.cfg.centering, method.cfg.sinkhorn_iterations = "sinkhorn_knopp", 3
    batch, ctx = one_batch(method), StepContext(0, 0, 10, 20, 2)
    out = method.training_step(batch, ctx)
    views, _ = batch
    with torch.no_grad():
        targets = sinkhorn_knopp(method.teacher(views[:2]), method.teacher_temperature(0), 3)
        student = torch.log_softmax(method.student(views) / method.cfg.student_temp, dim=-1)
    assert out.loss.item() == pytest.approx(multicrop_cross_entropy(targets, student).item(), rel=1e-5)
    assert "center_norm" not in out.metrics
    method.after_optimizer_step(ctx)
    assert method.loss.center.center.abs().sum() == 0  # never accumulated, so never moved


def test_koleo_term_adds_its_weighted_value_and_reaches_the_backbone():
    from vitssl.losses.koleo import koleo_loss

    method = tiny_method("dino").eval()  # no drop path: two forward passes agree
    batch, ctx = one_batch(method), StepContext(0, 0, 10, 20, 2)
    plain = method.training_step(batch, ctx).loss
    method.loss.center.discard_pending()
    method.cfg.koleo_weight = 0.1
    out = method.training_step(batch, ctx)
    views, _ = batch
    _, features = method.student.logits_and_features(views)
    expected = koleo_loss(features[0]) + koleo_loss(features[1])
    assert out.metrics["koleo"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(plain.item() + 0.1 * expected.item(), rel=1e-5)
    out.loss.backward()
    assert method.student.backbone.patch_embed.proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("override, message", [
    ("method.centering=mean", "method.centering='mean'"),
    ("method.sinkhorn_iterations=0", "method.sinkhorn_iterations=0 is out of range"),
    ("method.koleo_weight=-1", "method.koleo_weight=-1.0 is out of range"),
])
def test_new_options_are_validated_in_one_line(override, message):
    from vitssl.config import load_config, to_objects
    from vitssl.engine.validation import ConfigError
    from vitssl.methods import method_configs

    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        to_objects(load_config(None, ["method.name=dino", override], method_configs()))
