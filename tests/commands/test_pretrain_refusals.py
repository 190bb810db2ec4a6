"""A pre-training the config cannot run is refused before its run folder is made.

Each case fails at a different stage of `pretrain` (the method, the input pipeline, the
online k-NN, the initial weights); none may leave a folder behind for the user to find.
"""

from __future__ import annotations

import pytest

from helpers import tiny_overrides
from vitssl.commands.pretrain import pretrain
from vitssl.config import load_config
from vitssl.methods import method_configs

CASES = {
    "affine warp with device augmentation": (
        ["train.augment_on=device", "method.crops.affine_degrees=10"], "CPU augmentation only"),
    "batch larger than the data": (["train.batch_size=5000"], "fewer than one step"),
    "online k-NN without its data": (["train.knn_every_epochs=1"], "train.knn_data"),
    "initial weights that do not exist": (["init_from=/nonexistent/run"], "nonexistent"),
    "iBOT masking on a Swin": (["method.mim_weight=1", "backbone.name=swin_tiny"], "mim"),
}


@pytest.mark.parametrize("overrides, message", CASES.values(), ids=CASES.keys())
def test_refused_before_the_run_folder_exists(tmp_path, overrides, message):
    with pytest.raises(Exception, match=message):  # some are config errors, caught when it is read
        pretrain(load_config(None, [*tiny_overrides("digits"), *overrides], method_configs()), tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("dataset", ["mnist", "mae-mnist"])
def test_a_demo_with_an_impossible_override_leaves_no_folder(tmp_path, dataset):
    from vitssl.commands.demo import run_demo
    from vitssl.commands.demo_mae import run_mae_demo

    with pytest.raises(ValueError, match="fewer than one step"):
        if dataset == "mnist":
            run_demo(tmp_path / "run", "mnist", overrides=["train.batch_size=5000"])
        else:
            run_mae_demo(tmp_path / "run", "mnist", overrides=["train.batch_size=5000"])
    assert not (tmp_path / "run").exists()
