"""DINO's SimMIM pixel option (Xie et al. 2022, Sec. 3): weight 0 is today's step, the term
turns the masking on by itself, its gradient reaches the student and its head only."""

import pytest
import torch
from dino_steps import CTX, dino, one_update

from helpers import one_batch
from vitssl.backbones import BackboneConfig
from vitssl.config import ConfigError, RunConfig
from vitssl.losses.mae import patchify
from vitssl.losses.masked_pixels import masked_pixel_l1
from vitssl.methods import DINOConfig


@pytest.mark.parametrize("base", [(), ("method.mim_weight=1.0",)])
def test_weight_zero_is_todays_step_bit_for_bit(base):
    """Same parameters, state-dict keys, loss and first update as without the key."""
    today, off = one_update(dino(*base)), one_update(dino(*base, "method.pixel_weight=0"))
    assert torch.equal(today[0], off[0])
    assert today[2].keys() == off[2].keys() and not any("pixel" in k for k in off[2])
    assert all(torch.equal(today[2][k], off[2][k]) for k in today[2])
    assert "pixel_loss" not in off[1]


def test_the_pixel_term_alone_turns_the_masking_on_without_patch_distillation():
    method = dino("method.pixel_weight=0.5", "method.mim.prob=1", "method.mim.shared_head=false")
    assert method.patch_loss is None and method.student.mim.last_layer is None  # no patch prototypes
    out = method.training_step(one_batch(method), CTX)
    m = out.metrics
    assert m["masked_fraction"] > 0 and "mim_loss" not in m
    assert out.loss.item() == pytest.approx(m["cls_loss"].item() + 0.5 * m["pixel_loss"].item(), rel=1e-6)


def test_with_both_terms_the_step_loss_adds_both_weighted():
    method = dino("method.mim_weight=0.5", "method.pixel_weight=2.0", "method.mim.prob=1")
    out = method.training_step(one_batch(method), CTX)
    m = out.metrics
    want = m["cls_loss"] + 0.5 * m["mim_loss"] + 2.0 * m["pixel_loss"]
    assert out.loss.item() == pytest.approx(want.item(), rel=1e-6)


@pytest.mark.parametrize("stem", ["patch", "conv"])
def test_the_target_is_each_masked_patchs_input_pixels(stem):
    """The head maps the student's masked-view tokens to p*p*3 values; the loss compares them
    with the patchified global crops (with the conv stem too: still the patch's own pixels)."""
    from vitssl.methods.masked_patch import masked_distillation

    method = dino("method.pixel_weight=1.0", "method.mim.prob=1", f"backbone.stem={stem}").eval()
    views, _ = one_batch(method)
    p = method.student.backbone.patch_size
    assert method.pixel_head.out_features == p * p * 3
    torch.manual_seed(3)
    step = masked_distillation(method.student, method.teacher, None, views, method.cfg.mim, 0.07)
    assert torch.equal(step.globals_, torch.cat(views[:2]))
    metrics: dict = {}
    loss = method.add_masked_terms(torch.tensor(0.0), step, metrics)
    want = masked_pixel_l1(method.pixel_head(step.patches), patchify(torch.cat(views[:2]), p), step.masks)
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)
    assert metrics["pixel_loss"].item() == pytest.approx(want.item(), rel=1e-6)


def test_the_pixel_term_trains_the_student_and_its_head_never_the_teacher():
    from vitssl.methods.masked_patch import masked_distillation

    method = dino("method.pixel_weight=1.0", "method.mim.prob=1")
    views, _ = one_batch(method)
    step = masked_distillation(method.student, method.teacher, None, views, method.cfg.mim, 0.07)
    pixel_loss = method.add_masked_terms(torch.tensor(0.0), step, {})  # the pixel term alone
    pixel_loss.backward()
    student = method.student
    assert method.pixel_head.weight.grad.abs().sum() > 0
    assert student.mim.mask_token.grad.abs().sum() > 0
    assert student.backbone.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert student.head.mlp[0].weight.grad is None  # the DINO head is not on the pixel path
    assert all(p.grad is None and not p.requires_grad for p in method.teacher.parameters())
    names = [n for n, _ in method.trainable_parameters()]
    assert {"pixel_head.weight", "pixel_head.bias"} <= set(names) and len(names) == len(set(names))
    assert not any(n.startswith("teacher") for n in names)


@pytest.mark.parametrize("build, message", [
    (lambda: DINOConfig(pixel_weight=-1.0), r"^method.pixel_weight=-1.0 is out of range"),
    (lambda: DINOConfig(pixel_weight=float("nan")), r"^method.pixel_weight=nan is not finite"),
    (lambda: RunConfig(method=DINOConfig(pixel_weight=1.0, crops=crops_for(32)),
                       backbone=BackboneConfig(name="swin_tiny", img_size=32)),
     r"^method.pixel_weight=1.0 needs a ViT backbone .* not 'swin_tiny': use a vit_\* backbone or method.pixel_weight=0$"),
])
def test_bad_values_are_refused_in_one_line(build, message):
    with pytest.raises(ConfigError, match=message) as err:
        build()
    assert "\n" not in str(err.value)


def crops_for(size):
    from vitssl.augment import MultiCropConfig
    return MultiCropConfig(global_crops_size=size, local_crops_size=size // 2)
