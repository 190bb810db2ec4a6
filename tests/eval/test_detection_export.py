"""`vitssl export --format detectron2|mmdet`: keys against the frameworks' layouts (fixtures from
their module names), mmdet's unfold-order patch merging reproduced, one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from detection_helpers import SWIN_TINY, tiny_run
from torch import nn

from vitssl.backbones import create_backbone
from vitssl.cli import main
from vitssl.commands.export_frameworks import detectron2_vit_state, mmdet_swin_state

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _keys(name: str) -> set[str]:
    return set(json.loads((FIXTURES / name).read_text())["keys"])


def test_vit_tiny_loads_key_for_key_into_vitdet_but_for_its_relative_positions():
    with torch.device("meta"):
        vit = create_backbone("vit_tiny")
    exported, expected = set(detectron2_vit_state(vit)), _keys("detectron2_vitdet_vit_tiny_keys.json")
    assert exported <= expected
    assert {k.rsplit(".", 1)[-1] for k in expected - exported} == {"rel_pos_h", "rel_pos_w"}  # new in ViTDet


def test_swin_tiny_loads_key_for_key_into_mmdet_but_for_its_new_output_norms():
    with torch.device("meta"):
        swin = create_backbone("swin_tiny")
    exported, expected = set(mmdet_swin_state(swin)), _keys("mmdet_swin_tiny_keys.json")
    assert exported <= expected
    missing = expected - exported
    assert {k for k in missing if "relative_position_index" not in k} == {f"norm{i}.{p}" for i in range(3)
                                                                         for p in ("weight", "bias")}


def test_mmdet_patch_merging_with_unfold_gives_timms_output():
    swin = create_backbone("swin_tiny", img_size=32, embed_dim=8, depth=1, num_heads=1)
    state = mmdet_swin_state(swin)
    x = torch.randn(2, 4, 6, 8)  # (B, H, W, C) as timm's stages see it
    expected = swin.layers[1].downsample(x)
    unfolded = nn.Unfold(2, stride=2)(x.permute(0, 3, 1, 2)).transpose(1, 2)  # mmdet's PatchMerging
    normed = F.layer_norm(unfolded, (32,), state["stages.0.downsample.norm.weight"],
                          state["stages.0.downsample.norm.bias"], eps=swin.layers[1].downsample.norm.eps)
    out = normed @ state["stages.0.downsample.reduction.weight"].T
    torch.testing.assert_close(out.reshape(2, 2, 3, 16), expected)


def test_cli_writes_the_layouts_and_the_config_lines(tmp_path, capsys):
    vit, swin = tiny_run(tmp_path / "vit"), tiny_run(tmp_path / "swin", SWIN_TINY, method="esvit")
    assert main(["export", "--checkpoint", str(vit), "--out", str(tmp_path / "d2"), "--format", "detectron2"]) == 0
    saved = torch.load(tmp_path / "d2" / "detectron2_backbone.pth", weights_only=True)["model"]
    assert saved["backbone.net.pos_embed"].shape == (1, 1 + 4 * 4, 32)  # CLS slot + 16 px / patch 4
    assert "train.init_checkpoint" in (tmp_path / "d2" / "load_config.txt").read_text()
    assert main(["export", "--checkpoint", str(swin), "--out", str(tmp_path / "mm"), "--format", "mmdet"]) == 0
    saved = torch.load(tmp_path / "mm" / "mmdet_backbone.pth", weights_only=True)["state_dict"]
    assert "stages.0.blocks.0.attn.w_msa.qkv.weight" in saved
    assert "convert_weights=False" in capsys.readouterr().out


@pytest.mark.parametrize("fmt,run,expected", [("detectron2", "swin", "exports a plain ViT (ViTDet)"),
                                              ("mmdet", "vit", "exports a Swin backbone")])
def test_a_backbone_the_framework_has_no_layout_for_is_refused_in_one_line(tmp_path, capsys, fmt, run, expected):
    folder = tiny_run(tmp_path / run, SWIN_TINY if run == "swin" else [], method="esvit" if run == "swin" else "dino")
    assert main(["export", "--checkpoint", str(folder), "--out", str(tmp_path / "out"), "--format", fmt]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and "\n" not in err and not (tmp_path / "out").exists()
