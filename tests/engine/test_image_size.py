"""`data.image_size` / `pretrain --image-size N`: one knob sets the backbone size and every crop
size of every method, the local crops at DINO's 96/224 of the global ones in whole patches."""

import pytest
import torch

from helpers import one_batch, tiny_overrides
from vitssl.config import ConfigError, load_config, to_objects
from vitssl.engine.image_size import local_crop_size
from vitssl.engine.protocol import StepContext
from vitssl.methods import METHODS, build_method, method_configs

SIZE_KEYS = ("backbone.img_size=", "method.crops.global_crops_size=", "method.crops.local_crops_size=",
             "method.crop.size=")


def sized(method: str, *extra: str):
    """Tiny overrides without their size keys, plus `extra`."""
    base = [o for o in tiny_overrides(method=method) if not o.startswith(SIZE_KEYS)]
    return load_config(None, [f"method.name={method}", *base, *extra], method_configs())


def test_local_size_is_dinos_ratio_in_whole_patches():
    assert local_crop_size(224, 16) == 96 and local_crop_size(224, 8) == 96 and local_crop_size(224, 4) == 96
    assert local_crop_size(64, 16) == 32  # 27.4 px -> 1.7 patches -> 2
    assert local_crop_size(16, 16) == 16  # never below one patch


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_trains_at_the_set_size(name, one_thread):
    cfg = sized(name, "data.image_size=24")
    objs = to_objects(cfg)
    assert objs.backbone.img_size == 24
    method = build_method(objs.method, objs.backbone)
    batch = one_batch(method, n=2)
    views = batch[0] if isinstance(batch, (tuple, list)) else batch
    views = views if isinstance(views, (list, tuple)) else [views]
    sizes = sorted({v.shape[-1] for v in views}, reverse=True)
    expected = [24, 12] if "crops" in cfg.method else [24]  # 24 x 96/224 = 10.3 px -> 3 patches of 4
    assert sizes == expected
    out = method.training_step(batch, StepContext(step=0, epoch=0, steps_per_epoch=1, total_steps=1, epochs=1))
    assert torch.isfinite(out.loss)


def test_explicit_local_size_is_kept():
    cfg = sized("dino", "data.image_size=32", "method.crops.local_crops_size=8")
    assert cfg.method.crops.global_crops_size == 32 and cfg.method.crops.local_crops_size == 8


def test_a_list_of_local_sizes_keeps_its_length():
    cfg = sized("dino", "method.crops.local_crops_number=[2,2]", "method.crops.local_crops_size=[8,8]")
    cfg = load_config(None, ["data.image_size=32"], method_configs(), base=cfg)
    assert list(cfg.method.crops.local_crops_size) == [12, 12]


def test_size_off_the_patch_grid_is_one_line():
    with pytest.raises(ConfigError, match=r"data.image_size=30 is not a multiple of the patch size 4.*28 or 32"):
        sized("dino", "data.image_size=30")


def test_saved_config_is_not_re_derived():
    """A resumed run's config already holds its sizes: an explicit local size there stays."""
    cfg = sized("dino", "data.image_size=32", "method.crops.local_crops_size=8")
    again = load_config(None, ["train.epochs=3"], method_configs(), base=cfg)
    assert again.method.crops.local_crops_size == 8


def test_cli_option_sets_the_sizes(tmp_path, capsys):
    from vitssl.cli import main

    assert main(["config", "--config", "dino_vit_small16", "data.image_size=64"]) == 0
    out = capsys.readouterr().out
    assert "global_crops_size: 64" in out and "local_crops_size: 32" in out and "img_size: 64" in out
    from vitssl.cli import build_parser
    from vitssl.commands.pretrain_command import _pretrain_overrides

    args = build_parser().parse_args(["pretrain", "--out", str(tmp_path), "--image-size", "64"])
    assert "data.image_size=64" in _pretrain_overrides(args)
