"""SelfPatch method: DINO when the patch weight is 0, the teacher's targets, centers, switches."""

import pytest
import torch
import torch.nn.functional as F

from helpers import one_batch, tiny_overrides
from vitssl.config import load_config, to_objects
from vitssl.engine.protocol import StepContext
from vitssl.losses.dino import DINOLoss
from vitssl.losses.selfpatch import gather_positives, neighbour_indices, select_positives
from vitssl.methods import build_method, method_configs

CTX = StepContext(step=0, epoch=1, steps_per_epoch=10, total_steps=20, epochs=2)


def selfpatch(*overrides):
    small = ["method.patch_head.out_dim=32", "method.patch_head.hidden_dim=32", "method.patch_head.bottleneck_dim=16"]
    cfg = to_objects(load_config(None, ["method.name=selfpatch", *tiny_overrides(), *small, *overrides], method_configs()))
    torch.manual_seed(0)
    return build_method(cfg.method, cfg.backbone)


def test_backbone_has_no_cls_token_and_no_final_norm():
    method = selfpatch()
    vit = method.student.backbone
    assert vit.num_prefix_tokens == 0 and isinstance(vit.norm, torch.nn.Identity)
    tokens = method.evaluation_backbone()(torch.randn(2, 3, 16, 16))
    raw = method.teacher.backbone(torch.randn(2, 3, 16, 16))
    assert raw.cls is None and tokens.cls.shape == (2, 32) and tokens.patches.shape == (2, 16, 32)
    assert tokens.grid == (4, 4)


def test_zero_patch_weight_is_plain_dino_on_the_aggregated_token():
    method = selfpatch("method.patch_loss_weight=0.0")
    batch = one_batch(method)
    out = method.training_step(batch, CTX)
    views = batch[0]
    with torch.no_grad():
        teacher = method.teacher.image_logits(method.teacher.image_tokens(method.teacher.encode(views[:2])), 4)
        student = method.student.image_logits(method.student.image_tokens(method.student.encode(views)), 4)
    dino = DINOLoss(64, student_temp=0.1)
    assert torch.allclose(out.loss, dino(student, teacher, 0.04), atol=1e-5)
    out.loss.backward()
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in method.student.patch_head.parameters())


def test_teacher_targets_aggregate_the_most_similar_neighbours():
    method = selfpatch().eval()
    views = one_batch(method)[0]
    groups = method.teacher.encode(views[:2])
    targets = method.teacher_patch_targets(groups, 4)[0]  # (2 views, 4 images, 16 patches, K_p)
    # patch 5 of view 1, image 2, by hand
    tokens = groups[0].patches[4 + 2]
    index, valid = neighbour_indices((4, 4), "inside")
    sims = F.cosine_similarity(tokens[5][None], tokens[index[5]], dim=-1)
    chosen = index[5][sims.topk(4).indices]
    want = method.teacher.patch_head(method.teacher.aggregator(tokens[chosen][None]))
    assert torch.allclose(targets[1, 2, 5], want[0], atol=1e-5)
    positives, _ = select_positives(groups[0].patches, index, valid, 4)
    assert 5 not in positives[6, 5].tolist()  # a patch is never its own positive
    assert gather_positives(groups[0].patches, positives).shape == (8, 16, 4, 32)


def test_teacher_view_switch_and_center_policies():
    seen = {}
    for local, center in ((True, "all"), (False, "all"), (True, "global")):
        method = selfpatch(f"method.teacher_local_views={local}", f"method.image_center_views={center}")
        batch = one_batch(method)
        calls = []
        original = method.patch_loss.forward
        method.patch_loss.forward = lambda s, t, temp: calls.append([x.shape[0] for x in t]) or original(s, t, temp)
        method.training_step(batch, CTX)
        seen[(local, center)] = (calls[0], method.image_center._count, method.patch_loss.center._count)
    # 2 global (4x4 tokens) + 2 local (2x2 tokens) views of 4 images
    assert seen[(True, "all")] == ([2, 2], 4 * 4, 4 * (2 * 16 + 2 * 4))
    assert seen[(False, "all")] == ([2], 2 * 4, 4 * 2 * 16)
    assert seen[(True, "global")][1] == 2 * 4


def test_both_last_layers_are_frozen_in_the_first_epoch():
    method = selfpatch("method.freeze_last_layer=1")
    out = method.training_step(one_batch(method), CTX)
    out.loss.backward()
    method.before_optimizer_step(StepContext(step=0, epoch=0, steps_per_epoch=10, total_steps=20, epochs=2))
    for head in (method.student.image_head, method.student.patch_head):
        assert all(p.grad is None for p in head.last_layer.parameters())
    assert method.student.aggregator.query.grad is not None


def test_wrap_border_mode_runs():
    method = selfpatch("method.neighbour_border=wrap")
    assert torch.isfinite(method.training_step(one_batch(method), CTX).loss)


def test_koleo_term_adds_its_weighted_value_on_the_global_views_image_tokens():
    """The family's `method.koleo_weight`: KoLeo of the student's aggregated image token (the
    feature evaluation reads) of each global view, added at its weight and reaching the ViT."""
    from vitssl.losses.koleo import koleo_loss

    method = selfpatch("backbone.drop_path_rate=0.0").eval()  # two passes agree
    batch = one_batch(method)
    plain = method.training_step(batch, CTX)
    assert "koleo" not in plain.metrics  # off by default
    method.cfg.koleo_weight = 0.1
    out = method.training_step(batch, CTX)
    views, _ = batch
    tokens = [method.student_backbone()(v).cls for v in views[:2]]
    expected = koleo_loss(tokens[0]) + koleo_loss(tokens[1])
    assert out.metrics["koleo"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(plain.loss.item() + 0.1 * expected.item(), rel=1e-5)
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.student.backbone.parameters())


def test_koleo_weight_is_one_declaration_for_the_teacher_student_family():
    from vitssl.engine.validation import ConfigError
    from vitssl.methods.teacher_student import TeacherStudentConfig

    assert TeacherStudentConfig().koleo_weight == 0.0
    with pytest.raises(ConfigError, match=r"method\.koleo_weight=-1\.0 is out of range"):
        selfpatch("method.koleo_weight=-1")
