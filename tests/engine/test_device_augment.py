"""`train.augment_on=device`: workers decode, the method's device transform augments the batch."""

import pytest
import torch

from helpers import tiny_overrides
from vitssl.commands.pretrain import pretrain
from vitssl.config import load_config, to_objects
from vitssl.data import build_dataset
from vitssl.data.pipeline import InputPipeline
from vitssl.engine.trainer import Trainer
from vitssl.methods import build_method, method_configs


def trainer_for(method_name, tmp_path, *extra):
    cfg = load_config(None, [f"method.name={method_name}", *tiny_overrides("digits", method=method_name), *extra],
                      method_configs())
    objs = to_objects(cfg)
    torch.manual_seed(0)
    method = build_method(objs.method, objs.backbone)
    return Trainer(method, InputPipeline(method, build_dataset("digits", "train"), objs.train), objs.train, objs.optim,
                   tmp_path)


@pytest.mark.parametrize("method_name", ["dino", "esvit", "selfpatch", "mae"])
def test_device_augmentation_gives_the_views_the_cpu_path_gives(method_name, tmp_path):
    cpu = trainer_for(method_name, tmp_path / "cpu")
    dev = trainer_for(method_name, tmp_path / "dev", "train.augment_on=device")
    cpu_views, cpu_labels = cpu._prepare(next(cpu._batches(0, 0)), 0)
    raw = next(dev._batches(0, 0))
    assert all(img.dtype == torch.uint8 and img.shape[0] == 3 for img in raw[0])  # workers only decode
    dev_views, dev_labels = dev._prepare(raw, 0)
    assert [v.shape for v in dev_views] == [v.shape for v in cpu_views]
    assert torch.equal(dev_labels, cpu_labels)  # the same images in the same order
    assert all(v.dtype == torch.float32 and v.isfinite().all() for v in dev_views)
    again, _ = dev._prepare(raw, 0)
    assert all(torch.equal(a, b) for a, b in zip(again, dev_views))  # seeded by (seed, step, rank, micro)
    other, _ = dev._prepare(raw, 1)
    assert not torch.equal(other[0], dev_views[0])  # another micro-batch draws other views


@pytest.mark.parametrize("method_name", ["dino", "esvit", "selfpatch", "mae"])
def test_a_short_run_trains_with_device_augmentation(method_name, tmp_path):
    cfg = load_config(None, [f"method.name={method_name}", *tiny_overrides("digits", method=method_name),
                             "train.augment_on=device"], method_configs())
    trainer = pretrain(cfg, tmp_path / "run")
    assert trainer.step == 2 and trainer.skipped_steps == 0


def test_device_augmentation_resumes_exactly(tmp_path):
    overrides = ["train.augment_on=device", "train.epochs=2", "train.save_every_epochs=1"]
    straight = trainer_for("dino", tmp_path / "a", *overrides)
    straight.fit()
    resumed = trainer_for("dino", tmp_path / "b", *overrides)
    resumed.resume(tmp_path / "a" / "checkpoint_epoch0001.pt")  # the state after epoch 1
    assert resumed.step == 2
    resumed.fit()
    for (name, a), b in zip(straight.method.state_dict().items(), resumed.method.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_methods_without_a_device_transform_are_refused_with_the_fix(tmp_path):
    cfg = load_config(None, [*tiny_overrides("digits"), "train.augment_on=device"], method_configs())
    objs = to_objects(cfg)
    method = build_method(objs.method, objs.backbone)
    method.__class__ = type("PlainDINO", (type(method),), {"device_transform": None})  # a method without one
    with pytest.raises(ValueError, match="train.augment_on=cpu"):
        Trainer(method, InputPipeline(method, build_dataset("digits", "train"), objs.train), objs.train, objs.optim,
                tmp_path)
    with pytest.raises(ValueError, match="train.augment_on=.gpu. is not a choice: use .cpu. or .device."):
        trainer_for("dino", tmp_path, "train.augment_on=gpu")
