"""EsViT runs on cvt_tiny, vil_tiny and resnet50 through the command line, as on Swin: pre-train, k-NN,
linear probe on the last blocks, correspondence analysis; attention maps refused in one line."""

import json

import pytest

from helpers import TINY_BACKBONE_BY_NAME, tiny_overrides
from vitssl.cli import main

TINY = {"cvt_tiny": ["backbone.embed_dim=8", "backbone.depth=1", "backbone.num_heads=1"],
        "resnet50": [f"backbone.{k}={v}" for k, v in TINY_BACKBONE_BY_NAME["resnet50"].items()],
        "vil_tiny": [f"backbone.{k}={v}" for k, v in TINY_BACKBONE_BY_NAME["vil_tiny"].items()]}
EVAL = ["--image-size", "64", "--batch-size", "16", "--num-workers", "0", "--device", "cpu"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("backbone", sorted(TINY))
def test_pretrain_evaluate_and_analyse(backbone, tmp_path, capsys):
    tiny = [o for o in tiny_overrides("digits", method="esvit")[1:] if not o.startswith("backbone.")]
    code, _, err = run(capsys, "pretrain", "--method", "esvit", "--backbone", backbone, "--data", "digits",
                       "--out", tmp_path / "run", *tiny, *TINY[backbone], "method.crops.global_crops_size=64",
                       "method.crops.local_crops_size=32")
    assert code == 0, err
    code, out, _ = run(capsys, "eval", "knn", "--checkpoint", tmp_path / "run", "--train", "digits", "--val", "digits",
                       "--ks", "5", *EVAL)
    assert code == 0 and json.loads((tmp_path / "run" / "eval_knn.json").read_text())["results"]["5"]["top1"] > 0.2
    code, out, _ = run(capsys, "eval", "linear", "--checkpoint", tmp_path / "run", "--train", "digits", "--val",
                       "digits", "--epochs", "1", "--n-last-blocks", "2", *EVAL)
    assert code == 0 and "linear probe (pre-trained) top-1" in out
    code, out, _ = run(capsys, "analyze", "correspondence", "--checkpoint", tmp_path / "run", "--images", "digits",
                       "--out", tmp_path / "corr", "--top", "2", "--limit", "4", "--image-size", "64", "--device", "cpu")
    result = json.loads((tmp_path / "corr" / "correspondence.json").read_text())
    assert code == 0 and result["images"] == 4 and "correspondence accuracy" in out
    code, _, err = run(capsys, "analyze", "attention", "--checkpoint", tmp_path / "run", "--images", "digits",
                       "--out", tmp_path / "att", "--limit", "1", "--device", "cpu")
    assert code == 2 and "need a ViT backbone" in err and len(err.strip().splitlines()) == 1
