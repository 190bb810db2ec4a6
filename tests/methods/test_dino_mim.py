"""DINO's masked-patch distillation option (iBOT, Zhou et al. 2022, Sec. 3): the [MASK] path in
the ViT, where the gradient goes, the centers' gating, and that weight 0 is plain DINO."""

import pytest
import torch
from dino_steps import CTX, dino, one_update

from helpers import one_batch
from vitssl.backbones import BackboneConfig, create_backbone
from vitssl.config import ConfigError, RunConfig
from vitssl.engine.protocol import StepContext
from vitssl.methods import DINOConfig


class Recorder(torch.nn.Module):
    """Stands in for the ViT's (identity) `norm_pre`: keeps the tokens the blocks receive."""

    def forward(self, x):
        self.seen = x.detach().clone()
        return x


def test_the_mask_token_replaces_only_the_masked_patch_embeddings_before_positions():
    torch.manual_seed(0)
    vit = create_backbone(BackboneConfig(name="vit_tiny", img_size=16, patch_size=4, embed_dim=32, depth=2,
                                         num_heads=2, drop_path_rate=0.0)).eval()
    vit.norm_pre = Recorder()
    x, token = torch.randn(2, 3, 16, 16), torch.randn(1, 32)
    plain = vit(x)
    plain_in = vit.norm_pre.seen
    none = vit.forward_with_token_mask(x, torch.zeros(2, 16, dtype=torch.bool), token)
    assert torch.equal(none.cls, plain.cls) and torch.equal(none.patches, plain.patches)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[0, [1, 2, 5]] = True
    vit.forward_with_token_mask(x, mask, token)
    masked_in = vit.norm_pre.seen[:, 1:]  # after the CLS token
    keep = ~mask
    assert torch.equal(masked_in[keep], plain_in[:, 1:][keep])
    positions = vit.pos_embed[0, 1:].detach()
    assert torch.allclose(masked_in[0, [1, 2, 5]], token + positions[[1, 2, 5]])
    assert torch.equal(vit.norm_pre.seen[:, 0], plain_in[:, 0])  # the CLS token is never masked


def test_weight_zero_is_plain_dino_loss_and_optimizer_step():
    """`mim.*` set but weight 0: same parameters, state-dict keys, loss and first update as
    the default config (nothing built, no random draw taken)."""
    plain = dino()
    off = dino("method.mim_weight=0", "method.mim.ratio=0.5", "method.mim.shared_head=false")
    assert plain.state_dict().keys() == off.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), off.state_dict().values()))
    results = [one_update(method) for method in (plain, off)]
    assert torch.equal(results[0][0], results[1][0])
    assert all(torch.equal(results[0][2][k], results[1][2][k]) for k in results[0][2])
    assert "mim_loss" not in results[1][1]


def test_without_masks_the_cls_loss_is_plain_dinos_and_the_patch_loss_is_zero():
    plain = dino().eval()  # eval: no drop path, so two forward passes agree
    mim = dino("method.mim_weight=1.0", "method.mim.prob=0").eval()
    mim.load_state_dict(plain.state_dict(), strict=False)
    batch = one_batch(plain)
    want = plain.training_step(batch, CTX).loss
    out = mim.training_step(batch, CTX)
    assert out.metrics["masked_fraction"] == 0.0 and out.metrics["mim_loss"] == 0.0
    assert out.metrics["cls_loss"].item() == pytest.approx(want.item(), rel=1e-5)


@pytest.mark.parametrize("shared", ["true", "false"])
def test_the_patch_loss_trains_the_student_and_its_mask_token_never_the_teacher(shared):
    from vitssl.methods.masked_patch import masked_distillation

    method = dino("method.mim_weight=1.0", "method.mim.prob=1", f"method.mim.shared_head={shared}")
    views, _ = one_batch(method)
    step = masked_distillation(method.student, method.teacher, method.patch_loss, views, method.cfg.mim, 0.07)
    patch_loss, masked = step.mim_loss, step.masked
    assert masked > 0 and patch_loss > 0
    patch_loss.backward()  # the patch term alone
    student = method.student
    assert student.mim.mask_token.grad.abs().sum() > 0
    assert student.backbone.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert student.head.mlp[0].weight.grad.abs().sum() > 0
    if shared == "false":
        assert student.mim.last_layer.parametrizations.weight.original1.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in method.teacher.parameters())
    assert {"student.mim.mask_token", "teacher.mim.mask_token"} <= set(method.state_dict())


def test_the_step_loss_adds_the_weighted_patch_term():
    method = dino("method.mim_weight=0.5", "method.mim.prob=1")
    out = method.training_step(one_batch(method), CTX)
    m = out.metrics
    assert out.loss.item() == pytest.approx(m["cls_loss"].item() + 0.5 * m["mim_loss"].item(), rel=1e-6)


def test_separate_patch_prototypes_are_frozen_with_the_last_layer():
    method = dino("method.mim_weight=1.0", "method.mim.shared_head=false", "method.freeze_last_layer=1")
    method.training_step(one_batch(method), CTX).loss.backward()
    method.before_optimizer_step(CTX)
    assert all(p.grad is None for p in method.student.mim.last_layer.parameters())


@pytest.mark.parametrize("applied", [True, False])
def test_the_patch_center_moves_only_on_an_applied_step(applied):
    method = dino("method.mim_weight=1.0")
    method.training_step(one_batch(method), CTX)
    before = method.patch_loss.center.center.clone()
    ctx = StepContext(0, 0, 10, 20, 2, applied=torch.tensor(applied))
    method.after_optimizer_step(ctx)
    assert torch.equal(method.patch_loss.center.center, before) != applied


def test_patch_temperature_warms_up_with_the_cls_one():
    method = dino("method.mim_weight=1.0", "method.warmup_teacher_temp_epochs=2", "method.mim.teacher_temp=0.08",
                  "method.mim.warmup_teacher_temp=0.02")
    assert [method.patch_temperature(e) for e in range(3)] == pytest.approx([0.02, 0.08, 0.08])


@pytest.mark.parametrize("build, message", [
    (lambda: DINOConfig(mim_weight=-1.0), r"^method.mim_weight=-1.0 is out of range"),
    (lambda: DINOConfig(mim_weight=float("nan")), r"^method.mim_weight=nan is not finite"),
    (lambda: DINOConfig(mim=mim_config(ratio=0.0)), r"^method.mim.ratio=0.0 is out of range"),
    (lambda: DINOConfig(mim=mim_config(ratio=0.3, ratio_var=0.4)), r"^method.mim.ratio_var=0.4 takes the ratio"),
    (lambda: DINOConfig(mim=mim_config(prob=1.5)), r"^method.mim.prob=1.5 is out of range"),
    (lambda: DINOConfig(mim=mim_config(min_aspect=0.0)), r"^method.mim.min_aspect=0.0 is out of range"),
    (lambda: DINOConfig(mim=mim_config(teacher_temp=0.0)), r"^method.mim.teacher_temp=0.0 is out of range"),
    (lambda: DINOConfig(mim=mim_config(center_momentum=2.0)), r"^method.mim.center_momentum=2.0 is out of range"),
    (lambda: DINOConfig(mim=mim_config(shared_head="yes")), r"^method.mim.shared_head='yes' is not a boolean"),
    (lambda: RunConfig(method=DINOConfig(mim_weight=1.0, crops=crops_for(32)),
                       backbone=BackboneConfig(name="swin_tiny", img_size=32)),
     r"^method.mim_weight=1.0 needs a ViT backbone .* not 'swin_tiny': use a vit_\* backbone or method.mim_weight=0$"),
])
def test_bad_values_are_refused_in_one_line(build, message):
    with pytest.raises(ConfigError, match=message) as err:
        build()
    assert "\n" not in str(err.value)


def mim_config(**kw):
    from vitssl.methods.masked_patch import MaskedPatchConfig
    return MaskedPatchConfig(**kw)


def crops_for(size):
    from vitssl.augment import MultiCropConfig
    return MultiCropConfig(global_crops_size=size, local_crops_size=size // 2)
