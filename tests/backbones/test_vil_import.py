"""`vitssl import --from esvit` of EsViT ViL checkpoints: round trip from a synthetic checkpoint in
the original layout (key names of the reference `models/vision_longformer.py`, with its shared
`*_global` projections and `relative_position_index` buffers), sizes read from the shapes, and
clear refusals of other ViL variants."""

import re

import pytest
import torch
from commands.test_convert import imported_state, same_outputs, same_state
from commands.test_convert_esvit_backbones import esvit_original

from helpers import tiny_overrides
from vitssl.commands.convert import import_checkpoint
from vitssl.commands.export import export_backbone
from vitssl.config import load_config, to_objects
from vitssl.engine.checkpoint import CheckpointError
from vitssl.eval.pretrained import load_pretrained
from vitssl.methods import build_method, method_configs

# Not the defaults, so every size must be read from the shapes: width 8, 2 heads in stage 1,
# 3x3 chunks, position tables for 64-px images (stage 3 grid 4x4, stage 4 2x2), one block a stage.
SIZES = ["backbone.embed_dim=8", "backbone.num_heads=2", "backbone.window_size=3", "backbone.img_size=64",
         "backbone.depth=1"]
ATTN = {"relative_position_bias_table": "local_relative_position_bias_table",
        "global_bias": "g2l_relative_position_bias", "global_global_bias": "g2g_relative_position_bias"}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """One intra-op thread for these tiny tensors (the shared `one_thread` fixture)."""


def seeded_vil_esvit():
    overrides = ["method.name=esvit", *[o for o in tiny_overrides(method="esvit") if not o.startswith("backbone.")],
                 "backbone.name=vil_tiny", "backbone.drop_path_rate=0.0", *SIZES,
                 "method.crops.global_crops_size=64", "method.crops.local_crops_size=32"]
    objs = to_objects(load_config(None, overrides, method_configs()))
    method = build_method(objs.method, objs.backbone)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for value in method.state_dict().values():
            if value.is_floating_point():
                value.add_(0.05 * torch.randn(value.shape, generator=g))
    return method.eval()


def vil_original(backbone):
    """vitssl ViL -> the original MsViT's state dict: `layer{s}.0` patch embedding, attention and
    MLP as separate modules `layer{s}.{2j+1}` / `{2j+2}`, global projections repeated, index buffers."""
    out = {}
    for k, v in backbone.state_dict().items():
        if m := re.match(r"stages\.(\d)\.embed\.(.*)", k):
            out[f"layer{int(m[1]) + 1}.0.{m[2].replace('norm.', 'norm_embed.')}"] = v.clone()
        elif m := re.match(r"stages\.(\d)\.blocks\.(\d+)\.(norm1|attn|norm2|mlp)\.(.*)", k):
            layer, j, part, rest = int(m[1]) + 1, int(m[2]), m[3], m[4]
            index = 2 * j + (1 if part in ("norm1", "attn") else 2)
            name = "norm" if part.startswith("norm") else part
            out[f"layer{layer}.{index}.{name}.{ATTN.get(rest, rest)}"] = v.clone()
            if part == "attn" and re.match(r"(query|kv|proj)\.", rest):
                out[f"layer{layer}.{index}.attn.{rest.replace('.', '_global.', 1)}"] = v.clone()
            if part == "attn" and rest == "relative_position_bias_table":
                out[f"layer{layer}.{index}.attn.relative_position_index"] = torch.zeros(3, dtype=torch.long)
        else:
            out[k] = v.clone()
    return out


def test_vil_checkpoint_round_trip(tmp_path):
    method = seeded_vil_esvit()
    raw = esvit_original(method, vil_original)
    assert sum(".attn.query_global." in k for k in raw["teacher"]) == 4  # stages 1-2, weight + bias
    torch.save(raw, tmp_path / "esvit.pth")
    result = import_checkpoint("esvit", tmp_path / "esvit.pth", tmp_path / "run")
    assert result.fresh == [] and sorted(result.dropped) == sorted(k for k in raw["teacher"] if "position_index" in k)
    same_state(imported_state(result.path), method)
    backbone, config = load_pretrained(tmp_path / "run")
    assert {k: config["backbone"][k] for k in ("name", "embed_dim", "num_heads", "window_size", "img_size", "depth")} == \
        dict(name="vil_tiny", embed_dim=8, num_heads=2, window_size=3, img_size=64, depth=1)
    same_outputs(backbone, method.teacher.backbone, 64)
    with pytest.raises(ValueError, match="cannot export a ViL: timm has no counterpart"):
        export_backbone(tmp_path / "run", tmp_path / "exported")


@pytest.mark.parametrize("edit,match", [
    (lambda t: t.update({"layer3.3.norm.weight": torch.ones(32)}), r"depths \(1, 1, 2, 1\)"),
    (lambda t: t.update({"layer1.1.attn.query_global.weight": t["layer1.1.attn.query_global.weight"] + 1}),
     "separate global projections"),
    (lambda t: t.update({"layer4.0.cls_token": torch.zeros(1, 1, 64)}), "global tokens"),
    (lambda t: t.update({"layer2.0.proj.weight": torch.zeros(24, 8, 2, 2)}), r"widths \[8, 24, 32, 64\]"),
])
def test_other_vil_layouts_are_refused_naming_the_mismatch(edit, match, tmp_path):
    raw = esvit_original(seeded_vil_esvit(), vil_original)
    edit(raw["teacher"])
    torch.save(raw, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=match):
        import_checkpoint("esvit", tmp_path / "other.pth", tmp_path / "run")
    assert not (tmp_path / "run").exists()
