"""Export to timm: the weights rebuilt by timm alone give the same features."""

import json

import pytest
import torch
from tiny_esvit import FAST, SMALL_HEADS, TINY_SWIN

from helpers import tiny_overrides
from vitssl.cli import main
from vitssl.commands.export import export_backbone, load_exported
from vitssl.eval.pretrained import load_pretrained


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    made = {}
    for name, argv in {
        "dino": ["--method", "dino", "--backbone", "vit_tiny", *tiny_overrides("digits")[1:]],
        "selfpatch": ["--method", "selfpatch", "--backbone", "vit_tiny", *tiny_overrides("digits")[1:]],
        "esvit": ["--config", "esvit_swin_tiny_w7", *TINY_SWIN, *SMALL_HEADS, *FAST],
    }.items():
        assert main(["pretrain", "--data", "digits", "--out", str(root / name), *argv]) == 0
        made[name] = root / name
    return made


@pytest.mark.parametrize("name,fmt,size", [("dino", "safetensors", 16), ("dino", "timm", 16),
                                           ("selfpatch", "safetensors", 16), ("esvit", "safetensors", 224)])
def test_round_trip_through_timm_gives_the_same_features(runs, tmp_path, name, fmt, size):
    export_backbone(runs[name], tmp_path, fmt)
    ours, _ = load_pretrained(runs[name])
    ours = getattr(ours, "vit", ours)
    theirs = load_exported(tmp_path).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        want = ours(x)
        got = theirs.forward_features(x)
    prefix = getattr(theirs, "num_prefix_tokens", 0)
    got = got.reshape(2, -1, got.shape[-1])
    assert torch.allclose(got[:, prefix:], want.patches, atol=1e-5)
    if want.cls is not None:
        assert torch.allclose(got[:, 0], want.cls, atol=1e-5)


def test_export_cli_and_bad_format(runs, tmp_path, capsys):
    assert main(["export", "--checkpoint", str(runs["dino"]), "--out", str(tmp_path / "e")]) == 0
    out = capsys.readouterr().out
    assert "timm.create_model('vit_small_patch16_224'" in out
    assert json.loads((tmp_path / "e" / "timm_model.json").read_text())["kwargs"]["embed_dim"] == 32
    with pytest.raises(ValueError, match="unknown export format"):
        export_backbone(runs["dino"], tmp_path, "onnx")
