"""`eval knn|linear --scratch` and the raw-pixel row: baselines computed the way their names say."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from helpers import tiny_overrides
from vitssl.cli import main
from vitssl.data import build_dataset
from vitssl.eval import knn_classify
from vitssl.eval.features import eval_transform, extract_features
from vitssl.eval.pretrained import load_run, normalization, untrained_backbone


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("baselines") / "run"
    assert main(["pretrain", "--method", "dino", "--backbone", "vit_tiny", "--data", "digits", "--out", str(out),
                 *tiny_overrides("digits")[1:]]) == 0
    return out


class Flattened(torch.nn.Module):
    """The images themselves as the feature."""

    def forward(self, images: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(pooled=images.flatten(1))


def features(backbone, split, size, norm):
    data = build_dataset("digits", split=split)
    transform = eval_transform("digits", size, None, norm)
    images = torch.stack([transform(data[i][0]) for i in range(len(data))])
    labels = torch.tensor([data[i][1] for i in range(len(data))])
    return extract_features(backbone, [(images, labels)], "cpu")


def knn20(backbone, size, norm):
    return knn_classify(*features(backbone, "train", size, norm), *features(backbone, "val", size, norm),
                        ks=(20,), temperature=0.07, num_classes=10)[20]["top1"]


def test_scratch_is_the_seeded_initialisation_and_pixels_are_the_flattened_images(run_dir, capsys):
    assert main(["eval", "knn", "--checkpoint", str(run_dir), "--train", "digits", "--val", "digits", "--ks", "20",
                 "--scratch", "--seed", "3", "--device", "cpu", "--num-workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "random init:" in out and "raw pixels" in out
    result = json.loads((run_dir / "eval_knn_scratch.json").read_text())
    run = load_run(run_dir)
    norm, size = normalization(run.eval_input), run.eval_input.image_size
    scratch = untrained_backbone(run_dir, seed=3)[0]
    assert result["scratch"] and result["results"]["20"]["top1"] == pytest.approx(knn20(scratch, size, norm))
    assert result["raw_pixels"]["20"]["top1"] == pytest.approx(knn20(Flattened(), size, norm))
    assert not (run_dir / "eval_knn.json").exists()  # the pre-trained result file is not the baseline's


def test_no_pixels_leaves_the_row_out_and_linear_reports_both(run_dir, capsys, tmp_path):
    assert main(["eval", "knn", "--checkpoint", str(run_dir), "--train", "digits", "--val", "digits", "--ks", "5",
                 "--no-pixels", "--device", "cpu", "--num-workers", "0", "--out", str(tmp_path / "k.json")]) == 0
    assert "raw_pixels" not in json.loads((tmp_path / "k.json").read_text())
    assert main(["eval", "linear", "--checkpoint", str(run_dir), "--train", "digits", "--val", "digits",
                 "--n-last-blocks", "1", "--epochs", "3", "--device", "cpu", "--num-workers", "0",
                 "--out", str(tmp_path / "l.json")]) == 0
    linear = json.loads((tmp_path / "l.json").read_text())
    assert 0.1 < linear["raw_pixels"]["top1"] <= 1.0 and not linear["scratch"]
    capsys.readouterr()


def test_scratch_defaults_to_the_network_the_run_started_from(tmp_path):
    """A run seeded 2: `--scratch` without `--seed` is its own initial network, the one the
    trainer saved before its first step, not the seed-0 network of the same architecture."""
    from vitssl.engine.checkpoint import load_checkpoint

    run = tmp_path / "seeded"
    assert main(["pretrain", "--method", "dino", "--backbone", "vit_tiny", "--data", "digits", "--out", str(run),
                 *tiny_overrides("digits")[1:], "train.seed=2"]) == 0
    saved = load_checkpoint(run / "checkpoint-step0000000.pt")["method"]
    initial = {k.removeprefix("teacher.backbone."): v for k, v in saved.items() if k.startswith("teacher.backbone.")}

    def same(backbone):
        state = backbone.state_dict()
        return state.keys() == initial.keys() and all(torch.equal(state[k], initial[k]) for k in state)

    assert same(untrained_backbone(run)[0])
    assert not same(untrained_backbone(run, seed=0)[0])
