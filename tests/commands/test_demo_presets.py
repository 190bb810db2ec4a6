"""The demo presets: the MNIST demo carries the options that keep its teacher informative, while
the shapes demos (DINO and SelfPatch, measured on the shared recipe) keep that recipe unchanged."""

from vitssl.config import load_config
from vitssl.methods import method_configs


def preset(name):
    return load_config(name, [], method_configs())


def test_mnist_demo_uses_the_conv_stem_koleo_and_milder_crops():
    cfg = preset("demo_mnist")
    assert cfg.backbone.stem == "conv" and cfg.method.koleo_weight == 0.1
    assert list(cfg.method.crops.global_crops_scale) == [0.6, 1.0]
    assert list(cfg.method.crops.local_crops_scale) == [0.3, 0.6]
    assert cfg.train.epochs == 4 and cfg.train.batch_size == 32  # 500 steps: the demo's time


def test_the_digits_demo_is_the_mnist_recipe_at_32_px():
    mnist, digits = preset("demo_mnist"), preset("demo_digits")
    assert digits.backbone.stem == "conv" and digits.method.koleo_weight == mnist.method.koleo_weight
    assert digits.backbone.img_size == digits.method.crops.global_crops_size == 32


def test_the_shapes_demos_keep_the_shared_recipe():
    base = preset("demo_base")
    for name in ("demo_shapes", "demo_selfpatch_shapes"):
        cfg = preset(name)
        assert cfg.backbone.stem == "patch", name
        assert list(cfg.method.crops.global_crops_scale) == list(base.method.crops.global_crops_scale), name
    assert preset("demo_selfpatch_shapes").method.name == "selfpatch"  # no DINO-only key inherited
