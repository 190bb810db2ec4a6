"""The demo presets: the MNIST and SelfPatch shapes demos carry the options that keep their teacher
informative, while the DINO shapes demo (measured on the shared recipe) keeps that recipe."""

from vitssl.config import load_config
from vitssl.methods import method_configs


def preset(name):
    return load_config(name, [], method_configs())


def test_mnist_demo_uses_the_conv_stem_koleo_and_milder_crops():
    cfg = preset("demo_mnist")
    assert cfg.backbone.stem == "conv" and cfg.method.koleo_weight == 0.1
    assert list(cfg.method.crops.global_crops_scale) == [0.6, 1.0]
    assert list(cfg.method.crops.local_crops_scale) == [0.3, 0.6]
    assert cfg.train.epochs == 10 and cfg.train.batch_size == 32  # 1250 steps: the demo's time
    assert cfg.backbone.img_size == cfg.method.crops.global_crops_size == 24  # 6x6 tokens: a cheaper step
    assert cfg.method.crops.local_crops_size == 12  # DINO's 96/224 of 24 px in whole 4-px patches
    assert cfg.method.mim_weight == 1.0 and cfg.method.pixel_weight == 2.0  # iBOT's and SimMIM's terms


def test_the_digits_demo_is_the_mnist_recipe_at_32_px():
    mnist, digits = preset("demo_mnist"), preset("demo_digits")
    assert digits.backbone.stem == "conv" and digits.method.koleo_weight == mnist.method.koleo_weight
    assert digits.backbone.img_size == digits.method.crops.global_crops_size == 32
    assert digits.method.mim_weight == 1.0 and digits.method.pixel_weight == 0  # lower over 3 seeds


def test_the_dino_shapes_demo_keeps_the_shared_recipe():
    base, cfg = preset("demo_base"), preset("demo_shapes")
    assert cfg.backbone.stem == "patch" and cfg.method.koleo_weight == 0
    assert list(cfg.method.crops.global_crops_scale) == list(base.method.crops.global_crops_scale)


def test_the_selfpatch_shapes_demo_uses_the_conv_stem_koleo_and_milder_crops():
    cfg, mnist = preset("demo_selfpatch_shapes"), preset("demo_mnist")
    assert cfg.method.name == "selfpatch"  # no DINO-only key inherited
    assert cfg.backbone.stem == "conv" and cfg.method.koleo_weight == mnist.method.koleo_weight
    assert list(cfg.method.crops.global_crops_scale) == list(mnist.method.crops.global_crops_scale)
    assert list(cfg.method.crops.local_crops_scale) == list(mnist.method.crops.local_crops_scale)
    assert cfg.backbone.img_size == cfg.method.crops.global_crops_size == 32  # shapes' size, 8x8 tokens
