"""EsViT end to end through the CLI on a tiny Swin: pre-train, k-NN, linear, correspondence."""

import json

import pytest
from tiny_esvit import FAST, SMALL_HEADS, TINY_SWIN

from vitssl.cli import main


@pytest.fixture(scope="module")
def swin_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("esvit") / "run"
    assert main(["pretrain", "--config", "esvit_swin_tiny_w7", "--data", "digits", "--out", str(run),
                 *TINY_SWIN, *SMALL_HEADS, *FAST]) == 0
    return run


def test_knn_and_linear_on_a_swin_checkpoint(swin_run, tmp_path, capsys):
    assert main(["eval", "knn", "--checkpoint", str(swin_run), "--train", "digits", "--val", "digits",
                 "--num-workers", "0", "--ks", "5", "--out", str(tmp_path / "knn.json")]) == 0
    knn = json.loads((tmp_path / "knn.json").read_text())
    assert knn["image_size"] == 32 and 0 <= knn["results"]["5"]["top1"] <= 1
    assert main(["eval", "linear", "--checkpoint", str(swin_run), "--train", "digits", "--val", "digits",
                 "--num-workers", "0", "--n-last-blocks", "2", "--epochs", "2", "--out", str(tmp_path / "lin.json")]) == 0
    assert "linear probe (pre-trained) top-1" in capsys.readouterr().out


def test_last_blocks_cross_the_stage_boundary(swin_run):
    import torch

    from vitssl.eval.pretrained import load_pretrained

    backbone, _ = load_pretrained(swin_run)
    blocks = backbone.last_blocks(torch.randn(1, 3, 32, 32), 2)
    # depth 1 per stage: the last two blocks are stage 3 (64 wide) and stage 4 (128 wide)
    assert [b.pooled.shape[-1] for b in blocks] == [64, 128]


def test_correspondence_on_a_swin_checkpoint(swin_run, tmp_path, capsys):
    assert main(["analyze", "correspondence", "--checkpoint", str(swin_run), "--images", "digits",
                 "--limit", "2", "--top", "1", "--out", str(tmp_path), "--image-size", "64"]) == 0
    result = json.loads((tmp_path / "correspondence.json").read_text())
    assert result["pairs"] == 2 and result["chance"] == 0.25  # 2x2 last-stage regions at stride 32
    assert "chance 0.250" in capsys.readouterr().out
    # at its 32-px training size the last stage is one region, its own mirror: refused with the fix
    assert main(["analyze", "correspondence", "--checkpoint", str(swin_run), "--images", "digits",
                 "--limit", "2", "--out", str(tmp_path / "one")]) == 2
    assert "one region a side at stride 32" in capsys.readouterr().err and not (tmp_path / "one").exists()
