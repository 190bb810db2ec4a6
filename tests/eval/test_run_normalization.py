"""Evaluation feeds a run's backbone images normalised as its training crops were, not with
ImageNet's statistics whatever the run used (issue 20)."""

import pytest
import torch

from helpers import tiny_overrides
from vitssl.augment.multicrop import MultiCrop
from vitssl.augment.photometric import ViewParams
from vitssl.cli import main
from vitssl.commands.evaluate import checkpoint_features, run_knn
from vitssl.config import load_config, to_container, to_objects
from vitssl.data import build_dataset
from vitssl.engine.logging import read_metrics
from vitssl.eval.features import labelled_features
from vitssl.eval.pretrained import evaluation_input, load_run
from vitssl.methods import method_configs

MEAN, STD = [0.2, 0.3, 0.4], [0.1, 0.2, 0.3]  # far from ImageNet's (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("norm") / "run"
    assert main(["pretrain", "--data", "digits", "--out", str(folder), *tiny_overrides("digits")[1:],
                 f"method.crops.mean=[{','.join(map(str, MEAN))}]", f"method.crops.std=[{','.join(map(str, STD))}]",
                 "train.knn_every_epochs=1", "train.knn_data=digits", "train.knn_k=5"]) == 0
    return folder


def whole_image_views(run_dir, images):
    """The method's own training transform with every random choice off: the whole image,
    resized to the global crop size and normalised as in training."""
    crops = MultiCrop(to_objects(load_config(str(run_dir / "config.yaml"), [], method_configs())).method.crops)
    views = []
    for image in images:
        whole = ViewParams(top=0, left=0, height=image.height, width=image.width, flip=False, jitter=False)
        views.append(crops.apply(image, [whole] * crops.num_views)[0])
    return torch.stack(views)


def test_eval_features_are_those_of_the_training_transform(run):
    features = checkpoint_features(run, "digits", "digits", device="cpu", num_workers=0)
    assert features.image_size == 16
    val = build_dataset("digits", "val")
    images = [val[i][0] for i in range(8)]
    backbone = load_run(run).backbone
    with torch.no_grad():
        own = backbone(whole_image_views(run, images)).pooled
    torch.testing.assert_close(features.val[0][:8], own, atol=1e-4, rtol=1e-4)
    imagenet, _, _ = labelled_features(backbone, "digits", "val", 16, torch.device("cpu"), num_workers=0)
    assert not torch.allclose(imagenet[:8], own, atol=1e-2)  # what evaluation computed before


def test_online_knn_agrees_with_eval_knn(run):
    """Online k-NN reads the same images as `vitssl eval knn` (so, by the test above, as training)."""
    online = [r["knn_top1"] for r in read_metrics(run) if "knn_top1" in r]
    offline = run_knn(run, "digits", "digits", ks=(5,), device="cpu", num_workers=0)["results"]["5"]["top1"]
    assert online == [pytest.approx(offline, abs=1e-6)]


@pytest.mark.parametrize("name,section", [("dino", "crops"), ("mae", "crop")])
def test_evaluation_input_is_the_training_crops(name, section):
    overrides = [f"method.name={name}", *tiny_overrides(method=name)]
    config = load_config(None, overrides, method_configs())
    plain = to_container(config)
    plain["method"][section].update(mean=MEAN, std=STD)
    got = evaluation_input(plain)
    assert (got.image_size, list(got.mean), list(got.std)) == (16, MEAN, STD)
