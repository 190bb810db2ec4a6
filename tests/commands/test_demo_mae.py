"""`vitssl demo --method mae`: held-out reconstruction improves and the picture is written."""

import json

import pytest
from PIL import Image

from helpers import assert_runs_trained_the_same
from vitssl.cli import main
from vitssl.commands.demo_mae import run_mae_demo
from vitssl.commands.pretrain import pretrain
from vitssl.config import load_config
from vitssl.methods import method_configs

# a smaller network and 60 steps: the shape of the real demo in seconds
FAST = ["backbone.embed_dim=64", "backbone.depth=2", "backbone.num_heads=2", "method.decoder.depth=1",
        "method.decoder.embed_dim=64", "method.decoder.num_heads=2", "train.batch_size=32",
        "train.max_steps_per_epoch=60", "train.num_workers=0", "optim.warmup_epochs=0", "train.progress=false",
        "train.tensorboard=false", "train.device=cpu", "train.precision=fp32"]


def test_short_mae_demo_lowers_held_out_loss_and_draws_the_grid(tmp_path, capsys):
    out = tmp_path / "mae"
    results = run_mae_demo(out=out, epochs=1, overrides=FAST)
    printed = capsys.readouterr().out
    assert all(row in printed for row in ("random init", "predict the mean", "MAE pre-trained", "raw pixels"))
    saved = json.loads((out / "results.json").read_text())
    assert saved == results and saved["steps"] == 60
    # the representation beside the reconstruction, as the DINO demo records it
    knn = saved["knn_top1"]
    assert set(knn) == {"random_init", "pretrained", "raw_pixels"} and saved["k"] == 20
    assert all(0.1 <= v <= 1.0 for v in knn.values()), knn  # 10 digit classes: chance is 0.1
    assert 0.8 < knn["raw_pixels"] <= 1.0, knn  # MNIST's pixels alone: about 0.9
    assert f"{knn['pretrained']:.3f}" in printed and f"{knn['raw_pixels']:.3f}" in printed
    loss = saved["masked_patch_loss"]
    # measured: random init 2.16, predicting the mean 1.01, after 60 steps 0.85
    assert loss["pretrained"] < 0.5 * loss["random_init"]
    assert loss["pretrained"] < loss["predict_mean"]
    grid = Image.open(out / "reconstructions.png")
    # 3 rows (original, masked, reconstruction) x 8 columns of 28-px digits drawn 4x, 2-px padding
    assert grid.size == (2 + 8 * (4 * 28 + 2), 2 + 3 * (4 * 28 + 2))


def test_masked_input_row_is_grey_where_masked(tmp_path):
    run_mae_demo(out=tmp_path / "m", epochs=1, overrides=[*FAST, "train.max_steps_per_epoch=1"])
    import numpy as np

    pixels = np.asarray(Image.open(tmp_path / "m" / "reconstructions.png").convert("L"))
    cell = 4 * 28 + 2
    masked_row = pixels[2 + cell: 2 + cell + 4 * 28, 2: 2 + 4 * 28]
    grey = np.isclose(masked_row, 128, atol=1).mean()
    assert 0.6 < grey < 0.9  # mask ratio 0.75 of the patches


def test_mae_demo_refuses_other_data_sets_with_the_fix(tmp_path):
    with pytest.raises(ValueError, match="--dataset mnist"):
        run_mae_demo(out=tmp_path / "x", dataset="shapes")
    assert main(["demo", "--method", "mae", "--dataset", "shapes", "--out", str(tmp_path / "y")]) != 0


@pytest.mark.slow  # two short runs and three 20-NN passes over MNIST: ~15 s idle, ~40 s on a loaded machine
def test_the_demo_trains_exactly_as_pretrain_does(tmp_path):
    """Its 20-NN before training must not shift the random stream the masks are drawn from:
    the demo's network is the one `vitssl pretrain --config demo_mae_mnist` trains."""
    steps = [*FAST, "train.max_steps_per_epoch=3"]
    run_mae_demo(out=tmp_path / "demo", epochs=1, seed=0, overrides=steps)
    pretrain(load_config("demo_mae_mnist", ["train.seed=0", "train.epochs=1", *steps], method_configs()),
             tmp_path / "plain")
    assert_runs_trained_the_same(tmp_path / "demo", tmp_path / "plain")
