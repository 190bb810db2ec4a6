"""benchmarks/esvit_cpu_evidence.py: the built-in set follows the preset unless named, the saved
config names the set actually trained on, and the raw-pixel baseline sits beside the two networks."""

import json

import pytest
from omegaconf import OmegaConf

from helpers import benchmark_module

TINY = ["--epochs", "1", "--knn-every", "0", "--corr-limit", "2", "--overrides", "train.max_steps_per_epoch=2",
        "train.num_workers=0", "train.progress=false"]


@pytest.fixture(scope="module")
def bench():
    yield from benchmark_module("esvit_cpu_evidence")


def test_the_set_defaults_to_the_presets_own_built_in_one(bench):
    assert bench.preset_data("esvit_resnet50_mnist_cpu") == "mnist"
    assert bench.preset_data("esvit_cvt_tiny_cpu") == "shapes"
    assert bench.preset_data("esvit_resnet50") == "shapes"  # an ImageNet preset names no built-in set


def test_a_run_records_the_set_it_trained_on_and_the_pixel_baseline(bench, tmp_path):
    bench.main(["--preset", "esvit_resnet50_mnist_cpu", "--out", str(tmp_path / "mnist"), *TINY])
    evidence = json.loads((tmp_path / "mnist" / "evidence.json").read_text())
    assert evidence["data"] == "mnist" and evidence["steps"] == 2
    assert OmegaConf.load(tmp_path / "mnist" / "config.yaml").data.path == "mnist"
    knn = evidence["knn20_top1"]
    assert knn["raw_pixels"] > 0.85  # 20-NN on MNIST pixels is around 0.9; chance is 0.1
    assert 0.1 < knn["random_init"] < 1 and 0 < knn["pretrained"] <= 1
    corr = evidence["correspondence"]
    assert corr["images"] == 2 and corr["chance"] == round(1 / 9, 4)  # 3x3 layer-4 cells at 96 px
    assert corr["difference"]["mean"] == pytest.approx(corr["pretrained"] - corr["random_init"], abs=1e-3)
    assert all(v is not None for v in (*corr["standard_error"].values(), corr["difference"]["standard_error"]))

    # named explicitly, another set replaces the preset's, in the data and in the saved config;
    # a second --overrides adds to the first instead of replacing it
    bench.main(["--preset", "esvit_resnet50_mnist_cpu", "--data", "digits", "--out", str(tmp_path / "digits"),
                "--overrides", "train.batch_size=8", *TINY])
    assert json.loads((tmp_path / "digits" / "evidence.json").read_text())["data"] == "digits"
    saved = OmegaConf.load(tmp_path / "digits" / "config.yaml")
    assert saved.data.path == "digits" and saved.train.batch_size == 8 and saved.train.max_steps_per_epoch == 2


def test_the_difference_is_paired_over_the_same_images(bench):
    """Per-image differences 0.5 and 0.0: mean 0.25, sd 0.3536 / sqrt 2 = 0.25; the two networks'
    own standard errors pass through."""
    random_init = {"accuracy": 0.5, "accuracy_standard_error": 0.25, "image_accuracy": [0.25, 0.75]}
    pretrained = {"accuracy": 0.75, "accuracy_standard_error": 0.0, "image_accuracy": [0.75, 0.75]}
    assert bench.compare_correspondence(random_init, pretrained) == {
        "random_init": 0.5, "pretrained": 0.75, "standard_error": {"random_init": 0.25, "pretrained": 0.0},
        "difference": {"mean": 0.25, "standard_error": 0.25}}
