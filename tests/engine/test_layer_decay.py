"""Layer-wise lr decay parameter groups (BEiT / MAE / MAE-Lite fine-tuning, MAE paper App. A.1, Tables 9-10; facebookresearch/mae FINETUNE.md; MAE-Lite paper, fine-tuning recipe; wangsr126/mae-lite projects/eval_tools/finetuning_exp.py)."""

import pytest
from torch import nn

from vitssl.backbones import create_backbone
from vitssl.engine.layer_decay import layer_decay_groups, layer_id, stage_depths
from vitssl.eval.finetune import Classifier


def tiny_vit(depth: int = 2):
    return create_backbone("vit_tiny", patch_size=4, img_size=16, embed_dim=32, depth=depth, num_heads=2,
                           drop_path_rate=0.0)


def scales_by_name(model: nn.Module, decay: float, weight_decay: float = 0.05) -> dict[str, tuple[float, float]]:
    groups = layer_decay_groups(model.named_parameters(), stage_depths(model.backbone), decay, weight_decay)
    return {n: (g["lr_scale"], g["weight_decay"]) for g in groups for n in g["param_names"]}


def test_vit_scales_by_hand_depth2_decay_half():
    # L = 2 blocks: scale = 0.5 ** (3 - layer_id); embeddings 0.125, block0 0.25, block1 0.5, head 1.0
    scales = scales_by_name(Classifier(tiny_vit(), num_classes=3), 0.5)
    expected = {"backbone.cls_token": 0.125, "backbone.pos_embed": 0.125, "backbone.patch_embed.proj.weight": 0.125,
                "backbone.blocks.0.attn.qkv.weight": 0.25, "backbone.blocks.0.norm1.weight": 0.25,
                "backbone.blocks.1.mlp.fc2.bias": 0.5, "fc_norm.weight": 1.0, "head.weight": 1.0, "head.bias": 1.0}
    for name, scale in expected.items():
        assert scales[name][0] == pytest.approx(scale), name
    assert "backbone.norm.weight" not in scales  # global pool: MAE drops the final norm for fc_norm


def test_no_weight_decay_on_biases_norms_positions_and_cls():
    scales = scales_by_name(Classifier(tiny_vit(), num_classes=3), 0.75, weight_decay=0.05)
    exempt = ["backbone.cls_token", "backbone.pos_embed", "backbone.patch_embed.proj.bias",
              "backbone.blocks.0.norm1.weight", "backbone.blocks.1.attn.qkv.bias", "fc_norm.weight", "fc_norm.bias",
              "head.bias"]
    decayed = ["backbone.patch_embed.proj.weight", "backbone.blocks.0.attn.qkv.weight",
               "backbone.blocks.1.mlp.fc1.weight", "head.weight"]
    assert all(scales[n][1] == 0.0 for n in exempt)
    assert all(scales[n][1] == 0.05 for n in decayed)


def test_every_trainable_parameter_in_exactly_one_group():
    model = Classifier(tiny_vit(depth=3), num_classes=4)
    groups = layer_decay_groups(model.named_parameters(), stage_depths(model.backbone), 0.65, 0.05)
    grouped = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(grouped) == sorted(trainable) and len(set(grouped)) == len(grouped)
    assert {g["layer_id"] for g in groups} == {0, 1, 2, 3, 4}


def test_swin_layer_ids_follow_stage_and_block_order():
    swin = create_backbone("swin_tiny", img_size=32, embed_dim=16, depth=1, num_heads=1, window_size=2,
                           drop_path_rate=0.0)
    depths = stage_depths(swin)
    assert depths == [1, 1, 1, 1]
    names = dict(swin.named_parameters())
    assert layer_id("patch_embed.proj.weight", depths) == 0
    assert layer_id("layers.0.blocks.0.attn.qkv.weight", depths) == 1
    assert layer_id("layers.2.blocks.0.mlp.fc1.weight", depths) == 3
    assert layer_id("layers.3.blocks.0.norm1.weight", depths) == 4
    merge = next(n for n in names if n.startswith("layers.1.downsample"))
    assert layer_id(merge, depths) == 2  # patch merging goes with its stage's first block
    assert layer_id("norm.weight", depths) == 5
    assert layer_id("head.weight", [2, 2, 6, 2], prefix="backbone.") == 13
    assert layer_id("backbone.layers.2.blocks.5.attn.proj.weight", [2, 2, 6, 2], prefix="backbone.") == 10
    groups = layer_decay_groups(swin.named_parameters(), depths, 0.5, 0.05, prefix="")
    table = next(g for g in groups for n in g["param_names"] if n.endswith("relative_position_bias_table"))
    assert table["weight_decay"] == 0.0


def test_frozen_parameters_are_left_out_and_bad_decay_fails():
    model = Classifier(tiny_vit(), num_classes=3)
    model.backbone.pos_embed.requires_grad_(False)  # MAE's fixed sin-cos embedding
    names = [n for g in layer_decay_groups(model.named_parameters(), [2], 0.5, 0.05) for n in g["param_names"]]
    assert "backbone.pos_embed" not in names
    with pytest.raises(ValueError, match="layer_decay"):
        layer_decay_groups(model.named_parameters(), [2], 0.0, 0.05)


@pytest.mark.parametrize("name,kw", [("cvt_tiny", dict(num_heads=1)), ("resnet50", {})])
def test_cvt_and_resnet_layer_ids_follow_stage_and_block_order(name, kw):
    model = create_backbone(name, embed_dim=8, depth=2, drop_path_rate=0.0, **kw)
    depths = stage_depths(model)
    assert depths == [2, 2, 2, 2]
    ids = {n: layer_id(n, depths) for n, _ in model.named_parameters()}
    if name == "cvt_tiny":
        assert ids["stages.0.embed.proj.weight"] == 1  # a stage's token embedding goes with its first block
        assert ids["stages.0.blocks.1.attn.qkv.weight"] == 2 and ids["stages.2.embed.norm.weight"] == 5
        assert ids["stages.3.blocks.1.mlp.fc2.bias"] == 8 and ids["norm.weight"] == 9
    else:
        assert ids["conv1.weight"] == ids["bn1.weight"] == 0  # the stem is the embedding
        assert ids["layer1.0.conv1.weight"] == 1 and ids["layer3.1.bn3.weight"] == 6
        assert ids["layer4.1.conv3.weight"] == 8
    # every block id 1..L is used, nothing lands on the head's id by mistake
    assert set(range(1, 9)) <= set(ids.values()) and max(ids.values()) <= 9
