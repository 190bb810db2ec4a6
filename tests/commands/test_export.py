"""Export to timm: the weights rebuilt by timm alone give the same features."""

import json

import pytest
import timm
import torch
from tiny_esvit import FAST, SMALL_HEADS, TINY_SWIN

from helpers import tiny_overrides
from vitssl.backbones import create_backbone
from vitssl.cli import main
from vitssl.commands.export import export_backbone, load_exported, timm_model_spec
from vitssl.commands.export_timm import swin_padded_stages
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


def test_cli_prints_a_call_that_rebuilds_the_architecture(runs, tmp_path, capsys):
    assert main(["export", "--checkpoint", str(runs["dino"]), "--out", str(tmp_path / "e")]) == 0
    out = capsys.readouterr().out
    assert "timm.models.vision_transformer.VisionTransformer(num_classes=0, img_size=16, patch_size=4" in out
    assert "vit_small_patch16_224" not in out  # no registered name describes a 32-wide, 2-deep ViT
    assert json.loads((tmp_path / "e" / "timm_model.json").read_text())["kwargs"]["embed_dim"] == 32
    with pytest.raises(ValueError, match="unknown export format"):
        export_backbone(runs["dino"], tmp_path, "onnx")


@pytest.mark.parametrize("name, kwargs, timm_name", [
    ("vit_tiny", dict(patch_size=8), None),  # ViT-Ti/8: timm registers no such name
    ("vit_small", dict(patch_size=8), "vit_small_patch8_224"),
    ("vit_small", {}, "vit_small_patch16_224"),
    ("swin_tiny", {}, "swin_tiny_patch4_window7_224"),
    ("swin_tiny_w14", {}, None),  # EsViT's window 14: not a registered timm model
])
def test_printed_name_is_the_architectures(name, kwargs, timm_name):
    backbone = create_backbone(name, **kwargs)
    got, cls, spec = timm_model_spec(backbone)
    assert got == timm_name
    if got is None:  # then the class and the arguments say it
        assert cls.startswith("timm.models.")
    model = timm.create_model(got, pretrained=False, num_classes=0, **spec) if got else None
    if model is not None:  # the registered name's model, with these arguments, has exactly these weights
        assert model.state_dict().keys() == backbone.state_dict().keys()
        assert all(v.shape == backbone.state_dict()[k].shape for k, v in model.state_dict().items())


def test_vit_export_is_exact_at_the_size_it_was_made_for(runs, tmp_path):
    """Made for 24 px (the run trained at 16): timm gives vitssl's features at 24 and, as the
    note says, not at another size (timm resamples with its own interpolation there)."""
    r = export_backbone(runs["dino"], tmp_path, image_size=24)
    assert "exact at 24 px" in r["spec"]["note"]
    ours, _ = load_pretrained(runs["dino"])
    theirs = load_exported(tmp_path).eval()
    with torch.no_grad():
        x = torch.randn(2, 3, 24, 24)
        assert torch.allclose(theirs.forward_features(x)[:, 0], ours(x).cls, atol=1e-5)
        x = torch.randn(2, 3, 32, 32)
        assert not torch.allclose(theirs.forward_features(x)[:, 0], ours(x).cls, atol=1e-4)


def test_swin_export_refuses_a_size_timm_pads_differently(runs, tmp_path):
    """At 96 px the first stage's 24-token grid is not a whole number of 7-token windows: timm's
    features really differ there (so the refusal is not spurious), and at 224 they match."""
    ours, _ = load_pretrained(runs["esvit"])
    assert swin_padded_stages(ours, 96) == [0] and swin_padded_stages(ours, 224) == []
    with pytest.raises(ValueError, match="--image-size 96: timm pads Swin windows differently.*e.g. 224"):
        export_backbone(runs["esvit"], tmp_path / "refused", image_size=96)
    assert not (tmp_path / "refused").exists()
    r = export_backbone(runs["esvit"], tmp_path / "ok", image_size=224)
    assert "224" in r["spec"]["note"]
    theirs = load_exported(tmp_path / "ok").eval()
    with torch.no_grad():
        x = torch.randn(2, 3, 96, 96)
        got = theirs.forward_features(x).reshape(2, -1, ours.embed_dim)
        assert not torch.allclose(got, ours(x).patches, atol=1e-4)


def test_selfpatch_export_states_the_aggregator_is_not_in_it(runs, tmp_path):
    r = export_backbone(runs["selfpatch"], tmp_path)
    assert "aggregation module" in r["spec"]["note"] and "not exported" in r["spec"]["note"]
