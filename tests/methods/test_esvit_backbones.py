"""cvt_tiny, vil_tiny and resnet50 inside the DINO-family methods: one CPU step each, gradients only in
the student, the teacher's BatchNorm as in EsViT, and SelfPatch's refusal where it cannot work."""

import pytest
import torch

from helpers import TINY_BACKBONE_BY_NAME, TINY_CROPS_BY_NAME, one_batch
from vitssl.config import load_config, to_objects
from vitssl.engine.protocol import StepContext
from vitssl.methods import build_method, method_configs

TINY = {"cvt_tiny": ["backbone.embed_dim=8", "backbone.depth=1", "backbone.num_heads=1"],
        "vil_tiny": [f"backbone.{k}={v}" for k, v in TINY_BACKBONE_BY_NAME["vil_tiny"].items()],
        "resnet50": [f"backbone.{k}={v}" for k, v in TINY_BACKBONE_BY_NAME["resnet50"].items()]}
HEADS = [f"method.{head}.{kv}" for head in ("head", "region_head") for kv in ("out_dim=32", "hidden_dim=16", "bottleneck_dim=8")]
CTX = StepContext(step=0, epoch=1, steps_per_epoch=10, total_steps=20, epochs=2)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """One intra-op thread for these tiny tensors (the shared `one_thread` fixture)."""


def tiny(method, backbone, *extra):
    heads = HEADS if method == "esvit" else HEADS[:3]
    overrides = [f"method.name={method}", f"backbone.name={backbone}", *TINY[backbone], "backbone.drop_path_rate=0.0",
                 *heads, "method.crops.global_crops_size=32", "method.crops.local_crops_size=16",
                 "method.crops.local_crops_number=2", *TINY_CROPS_BY_NAME.get(backbone, []), *extra]
    objs = to_objects(load_config(None, overrides, method_configs()))
    return build_method(objs.method, objs.backbone)


@pytest.mark.parametrize("method", ["esvit", "dino"])
@pytest.mark.parametrize("backbone", ["cvt_tiny", "vil_tiny", "resnet50"])
def test_one_step_trains_exactly_the_student(method, backbone):
    model = tiny(method, backbone)
    model.train()
    out = model.training_step(one_batch(model), CTX)
    assert torch.isfinite(out.loss) and ("region_loss" in out.metrics) == (method == "esvit")
    out.loss.backward()
    trainable = {id(p) for _, p in model.trainable_parameters()}
    for name, p in model.named_parameters():
        assert (p.grad is not None) == (id(p) in trainable), name
    if backbone != "vil_tiny":  # ViL has no BatchNorm
        assert any(".bn1." in n or "qkv_bn" in n for n, _ in model.trainable_parameters())  # BatchNorm trains


def test_the_teacher_normalises_with_its_own_batch_statistics_and_the_ema_leaves_them():
    """EsViT keeps both networks in training mode: the teacher's BatchNorm uses batch statistics
    and updates its own running statistics; the EMA averages parameters only."""
    model = tiny("esvit", "resnet50")
    model.train()
    bn = model.teacher.backbone.bn1
    before = bn.running_mean.clone()
    model.training_step(one_batch(model), CTX)
    assert not torch.equal(bn.running_mean, before) and bn.training
    after_step = bn.running_mean.clone()
    with torch.no_grad():
        model.student.backbone.bn1.running_mean.add_(5.0)
    model.ema.update(0.5)
    assert torch.equal(bn.running_mean, after_step)


def test_selfpatch_on_a_network_without_attention_is_one_clear_error():
    with pytest.raises(ValueError, match="selfpatch needs a transformer backbone.*ResNet has no attention"):
        tiny("selfpatch", "resnet50", "method.patch_head.out_dim=32", "method.patch_head.hidden_dim=16",
             "method.patch_head.bottleneck_dim=8")
