"""Library users get the same checks as the command line: a config dataclass refuses a bad value
when it is built, naming the full key, before any model is made."""

import math

import pytest

from vitssl.backbones import BackboneConfig, create_backbone
from vitssl.commands.evaluate import knn_ks
from vitssl.config import ConfigError, RunConfig
from vitssl.engine.optim import OptimConfig
from vitssl.engine.train_config import TrainConfig
from vitssl.eval.pretrained import image_size_or_default
from vitssl.methods import DINOConfig, MAEConfig


@pytest.mark.parametrize("build, message", [
    (lambda: TrainConfig(batch_size=0), r"^train.batch_size=0 is out of range: use an integer >= 1$"),
    (lambda: TrainConfig(accum_steps=True), r"^train.accum_steps=True is not an integer"),
    (lambda: OptimConfig(lr=math.nan), r"^optim.lr=nan is not finite: use a finite number >= 0$"),
    (lambda: OptimConfig(weight_decay=-1.0), r"^optim.weight_decay=-1.0 is out of range"),
    (lambda: BackboneConfig(num_heads=5), r"^backbone.num_heads=5 does not divide the width 384"),
    (lambda: DINOConfig(teacher_temp=0.0), r"^method.teacher_temp=0.0 is out of range: use a finite number > 0$"),
    (lambda: RunConfig(method=DINOConfig(), backbone=BackboneConfig(patch_size=14)),
     r"^method.crops.local_crops_size=96 is not a multiple of the patch size 14"),
    (lambda: RunConfig(method=MAEConfig(), backbone=BackboneConfig(embed_dim=390, num_heads=6)),
     r"^backbone.embed_dim=390 is not a multiple of 4 \(sin-cos positions\)"),
])
def test_a_bad_value_is_refused_when_the_config_is_built(build, message):
    with pytest.raises(ConfigError, match=message) as err:
        build()
    assert "\n" not in str(err.value)


def test_heads_not_dividing_the_width_never_reach_timm():
    cfg = BackboneConfig(name="vit_tiny", img_size=16, patch_size=4)
    cfg.num_heads = 5  # edited after it was built
    with pytest.raises(ConfigError, match="backbone.num_heads=5"):
        create_backbone(cfg)


def test_image_size_zero_is_refused_not_read_as_the_default():
    assert image_size_or_default(None, {"backbone": {"img_size": 32}}) == 32
    with pytest.raises(ValueError, match="image size 0 is out of range"):
        image_size_or_default(0, {"backbone": {"img_size": 32}})


def test_knn_ks_fit_the_memory_bank():
    assert knn_ks(None, "digits") == (10, 20, 100, 200)  # 1438 train images
    assert knn_ks((1, 5), "digits") == (1, 5)
    with pytest.raises(ValueError, match="--ks 5000: the k-NN memory bank holds only 1438"):
        knn_ks((20, 5000), "digits")
