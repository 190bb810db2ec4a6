"""EsViT method: DINO when the region weight is 0, gradients, the view-then-region schedule."""

import pytest
import torch

from helpers import one_batch, tiny_overrides
from vitssl.config import load_config, to_objects
from vitssl.engine.protocol import StepContext
from vitssl.methods import DINO, build_method, method_configs

CTX = StepContext(step=0, epoch=1, steps_per_epoch=10, total_steps=20, epochs=2)
SMALL_REGION_HEAD = ["method.region_head.out_dim=48", "method.region_head.hidden_dim=32",
                     "method.region_head.bottleneck_dim=16"]


def build(name, *overrides):
    cfg = to_objects(load_config(None, [f"method.name={name}", *tiny_overrides(), *overrides], method_configs()))
    torch.manual_seed(0)
    return build_method(cfg.method, cfg.backbone)


def test_zero_region_weight_gives_exactly_the_dino_loss():
    same = ["method.teacher_temp=0.04", "method.warmup_teacher_temp_epochs=0", "method.head.norm_last_layer=true"]
    esvit = build("esvit", "method.view_weight=1.0", "method.region_weight=0.0", *same, *SMALL_REGION_HEAD)
    dino = build("dino", "method.momentum_teacher=0.996")
    assert isinstance(dino, DINO)
    dino.student.backbone.load_state_dict(esvit.student.backbone.state_dict())
    dino.student.head.load_state_dict(esvit.student.head.state_dict())
    dino.teacher.load_state_dict(dino.student.state_dict())
    batch = one_batch(dino)
    assert torch.allclose(esvit.training_step(batch, CTX).loss, dino.training_step(batch, CTX).loss, atol=1e-6)


def test_gradients_reach_the_student_backbone_and_both_heads_never_the_teacher():
    method = build("esvit", *SMALL_REGION_HEAD)
    out = method.training_step(one_batch(method), CTX)
    assert "region_loss" in out.metrics
    out.loss.backward()
    for part in (method.student.backbone, method.student.head, method.student.region_head):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    assert all(p.grad is None for p in method.teacher.parameters())


def test_region_loss_starts_at_its_epoch():
    method = build("esvit", "method.region_start_epoch=2", *SMALL_REGION_HEAD)
    batch = one_batch(method)
    before = method.training_step(batch, CTX)
    after = method.training_step(batch, StepContext(step=0, epoch=2, steps_per_epoch=10, total_steps=30, epochs=3))
    assert "region_loss" not in before.metrics and torch.allclose(before.loss, before.metrics["view_loss"])
    want = 0.5 * after.metrics["view_loss"] + 0.5 * after.metrics["region_loss"]
    assert torch.allclose(after.loss, want)


def test_several_local_crop_sizes_in_one_step():
    method = build("esvit", "method.crops.local_crops_number=[2,1]", "method.crops.local_crops_size=[8,12]",
                   *SMALL_REGION_HEAD)
    views, _ = one_batch(method)
    assert [v.shape[-1] for v in views] == [16, 16, 8, 8, 12]
    out = method.training_step((views, None), CTX)
    assert torch.isfinite(out.loss)


@pytest.mark.parametrize("border", ["inside", "wrap"])
def test_selfpatch_and_esvit_share_the_backbone_interface(border):
    # the same ViT config builds both methods; neither special-cases the architecture
    sp = build("selfpatch", f"method.neighbour_border={border}")
    es = build("esvit", *SMALL_REGION_HEAD)
    assert sp.evaluation_backbone()(torch.randn(1, 3, 16, 16)).patches.shape == \
        es.evaluation_backbone()(torch.randn(1, 3, 16, 16)).patches.shape


def test_koleo_term_adds_its_weighted_value_on_the_global_views_pooled_features():
    from vitssl.losses.koleo import koleo_loss

    method = build("esvit", "backbone.drop_path_rate=0.0", *SMALL_REGION_HEAD).eval()  # two passes agree
    batch = one_batch(method)
    plain = method.training_step(batch, CTX).loss
    method.cfg.koleo_weight = 0.1
    out = method.training_step(batch, CTX)
    views, _ = batch
    pooled = [method.student.backbone(v).pooled for v in views[:2]]
    expected = koleo_loss(pooled[0]) + koleo_loss(pooled[1])
    assert out.metrics["koleo"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(plain.item() + 0.1 * expected.item(), rel=1e-5)
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.student.backbone.parameters())


def test_koleo_weight_is_validated_in_one_line():
    from vitssl.engine.validation import ConfigError

    with pytest.raises(ConfigError, match=r"method\.koleo_weight=-1\.0 is out of range"):
        build("esvit", "method.koleo_weight=-1")
