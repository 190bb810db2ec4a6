"""`vitssl import --from esvit` for EsViT's CvT and ResNet-50 checkpoints, round trip from
synthetic checkpoints in the original layout (key names from the reference `models/` code and
`utils.ResNetWrapper`), and `vitssl export` of the same backbones."""

import argparse
import re

import pytest
import torch
from commands.test_convert import imported_state, original_head, prefixed, same_outputs, same_state

from helpers import TINY_BACKBONE_BY_NAME, tiny_overrides
from vitssl.commands.convert import import_checkpoint
from vitssl.commands.export import export_backbone, load_exported
from vitssl.config import load_config, to_objects
from vitssl.engine.checkpoint import CheckpointError
from vitssl.eval.pretrained import load_pretrained
from vitssl.methods import build_method, method_configs

TINY = {"cvt_tiny": ["backbone.embed_dim=8", "backbone.depth=1", "backbone.num_heads=1", "backbone.mask_padding=false"],
        "resnet50": [f"backbone.{k}={v}" for k, v in TINY_BACKBONE_BY_NAME["resnet50"].items()]}
CVT_PARTS = {"norm1.": "0.norm.", "attn.qkv_dw.": "0.fn.qkv.dw.", "attn.qkv_bn.": "0.fn.qkv.bn.",
             "attn.qkv.": "0.fn.qkv.pw.", "attn.proj.": "0.fn.proj_out.", "norm2.": "1.norm.",
             "mlp.fc1.": "1.fn.net.0.", "mlp.fc2.": "1.fn.net.2."}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """One intra-op thread for these tiny tensors (the shared `one_thread` fixture)."""


def seeded_esvit(backbone):
    """A tiny EsViT method on `backbone` with every float state moved off its initialisation."""
    overrides = ["method.name=esvit", *[o for o in tiny_overrides(method="esvit") if not o.startswith("backbone.")],
                 f"backbone.name={backbone}", "backbone.drop_path_rate=0.0", *TINY[backbone]]
    objs = to_objects(load_config(None, overrides, method_configs()))
    method = build_method(objs.method, objs.backbone)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for key, value in method.state_dict().items():
            if value.is_floating_point() and not key.endswith("original0"):
                value.add_(0.05 * torch.randn(value.shape, generator=g))
                if key.endswith("running_var"):
                    value.abs_()
    return method.eval()


def cvt_original(backbone):
    """vitssl CvT -> EsViT's cvt_v4_transformer.py names; Linears back to 1x1 convolutions."""
    out = {}
    for k, v in backbone.state_dict().items():
        if m := re.match(r"stages\.(\d+)\.embed\.(.*)", k):
            out[f"stage{m[1]}.0.{m[2]}"] = v.clone()
        elif m := re.match(r"stages\.(\d+)\.blocks\.(\d+)\.(.*)", k):
            part = next(p for p in CVT_PARTS if m[3].startswith(p))
            conv = v.ndim == 2 and part not in ("attn.qkv_dw.",)
            out[f"stage{m[1]}.1.layers.{m[2]}.{CVT_PARTS[part]}{m[3][len(part):]}"] = v[..., None, None].clone() if conv else v.clone()
        else:
            out[k] = v.clone()
    return out


def esvit_original(method, backbone_original):
    def network(net, prefix):
        return {**prefixed(prefix, backbone_original(net.backbone)), **prefixed(prefix + "head.", original_head(net.head)),
                **prefixed(prefix + "head_dense.", original_head(net.region_head))}

    return {"student": network(method.student, "module."), "teacher": network(method.teacher, ""),
            "args": argparse.Namespace(use_dense_prediction=True),
            "dino_loss": {"center": method.loss.center.center.clone(),
                          "center_grid": method.region_loss.center.center.clone()}}


ORIGINALS = {"cvt_tiny": cvt_original,
             "resnet50": lambda b: prefixed("backbone.backbone.", b.state_dict())}  # MultiCropWrapper(ResNetWrapper(...))


@pytest.mark.parametrize("name", sorted(ORIGINALS))
def test_esvit_checkpoint_round_trip(name, tmp_path):
    method = seeded_esvit(name)
    raw = esvit_original(method, ORIGINALS[name])
    torch.save(raw, tmp_path / "esvit.pth")
    result = import_checkpoint("esvit", tmp_path / "esvit.pth", tmp_path / "run")  # sizes from shapes
    assert result.fresh == [] and result.dropped == []
    same_state(imported_state(result.path), method)
    backbone, config = load_pretrained(tmp_path / "run")
    assert config["backbone"]["name"] == name and config["method"]["region_head"]["out_dim"] == 64
    same_outputs(backbone, method.teacher.backbone, 48)


def test_cvt_import_reproduces_the_originals_unmasked_padding(tmp_path):
    method = seeded_esvit("cvt_tiny")
    torch.save(esvit_original(method, cvt_original), tmp_path / "cvt.pth")
    _, config = load_pretrained(import_checkpoint("esvit", tmp_path / "cvt.pth", tmp_path / "run").path)
    assert config["backbone"]["mask_padding"] is False and config["backbone"]["embed_dim"] == 8


def test_a_checkpoint_of_another_shape_names_its_keys(tmp_path):
    method = seeded_esvit("cvt_tiny")
    raw = esvit_original(method, cvt_original)
    raw["teacher"]["stage3.1.layers.0.0.fn.rel_pos_bias_table"] = torch.zeros(169, 12)
    torch.save(raw, tmp_path / "rpe.pth")
    with pytest.raises(CheckpointError, match="relative position bias"):
        import_checkpoint("esvit", tmp_path / "rpe.pth", tmp_path / "a")
    raw = esvit_original(method, cvt_original)
    raw["teacher"]["stage3.1.layers.1.0.norm.weight"] = torch.ones(96)  # a second block in stage 4 only
    torch.save(raw, tmp_path / "deeper.pth")
    with pytest.raises(CheckpointError, match=r"depths \(1, 1, 1, 2\)"):
        import_checkpoint("esvit", tmp_path / "deeper.pth", tmp_path / "b")
    raw = esvit_original(seeded_esvit("resnet50"), ORIGINALS["resnet50"])
    raw["teacher"]["backbone.backbone.layer4.0.extra.weight"] = torch.zeros(1)
    torch.save(raw, tmp_path / "rn.pth")
    with pytest.raises(CheckpointError, match=r"layer4\.0\.extra\.weight"):
        import_checkpoint("esvit", tmp_path / "rn.pth", tmp_path / "c")
    assert not any((tmp_path / d).exists() for d in "abc")


def test_resnet_exports_to_timm_and_cvt_is_refused_in_one_line(tmp_path):
    for name in ORIGINALS:
        torch.save(esvit_original(seeded_esvit(name), ORIGINALS[name]), tmp_path / f"{name}.pth")
        import_checkpoint("esvit", tmp_path / f"{name}.pth", tmp_path / name)
    export_backbone(tmp_path / "resnet50", tmp_path / "exported")
    ours, _ = load_pretrained(tmp_path / "resnet50")
    timm_model = load_exported(tmp_path / "exported").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(timm_model(x), ours.eval()(x).pooled, rtol=0, atol=0)
    with pytest.raises(ValueError, match="cannot export a CvT: timm has no counterpart"):
        export_backbone(tmp_path / "cvt_tiny", tmp_path / "no")
