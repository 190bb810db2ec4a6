"""UperNet head: logits at the input size for ViT and Swin at a non-square size, gradients to
the head (and the backbone when fine-tuned), mIoU that rises with training on shapes-fg, and
checked pool scales."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from detection_helpers import segmentation_folder, tiny_run
from torch.utils.data import Subset

from vitssl.backbones import create_backbone
from vitssl.cli import main
from vitssl.eval.segmentation import segmentation_metrics, shapes_segmentation
from vitssl.eval.segmentation.finetune import (
    DenseRecipe,
    _optimizer,
    dense_confusion,
    train_segmenter,
)
from vitssl.eval.segmentation.heads import Segmenter
from vitssl.eval.segmentation.upernet import PyramidPooling, StageMaps, check_pool_scales


def _vit():
    return create_backbone("vit_tiny", patch_size=4, img_size=32, embed_dim=32, depth=4, num_heads=2)


def _swin():
    return create_backbone("swin_tiny", img_size=32, embed_dim=16, depth=1, num_heads=1)


@pytest.mark.parametrize("make", [_vit, _swin], ids=["vit", "swin"])
def test_upernet_logits_are_at_the_input_size_and_the_head_at_the_finest_level(make):
    model = Segmenter(make(), 5, "upernet", fpn_channels=16, head_channels=8)
    x = torch.randn(2, 3, 64, 96)
    levels = model.pyramid(x)
    assert [tuple(levels[str(i)].shape[-2:]) for i in range(4)][0] != tuple(levels["3"].shape[-2:])
    assert model.head(levels).shape == (2, 5, *levels["0"].shape[-2:])
    assert model(x).shape == (2, 5, 64, 96)
    if isinstance(model.pyramid, StageMaps):  # Swin: its raw stage outputs, strides 4..32
        assert [levels[str(i)].shape[-1] for i in range(4)] == [24, 12, 6, 3]


@pytest.mark.parametrize("finetune", [True, False], ids=["finetune", "frozen"])
@pytest.mark.parametrize("make", [_vit, _swin], ids=["vit", "swin"])
def test_gradients_reach_every_head_part_and_the_backbone_only_when_fine_tuned(make, finetune):
    torch.manual_seed(0)
    model = Segmenter(make(), 3, "upernet", fpn_channels=16, head_channels=8)
    _optimizer(model, DenseRecipe(), finetune)  # sets requires_grad as training does
    model.train()
    loss = torch.nn.functional.cross_entropy(model(torch.randn(2, 3, 32, 48)), torch.randint(0, 3, (2, 32, 48)))
    loss.backward()
    for name, p in model.head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    body = [p for p in model.body.parameters()]
    if finetune:
        assert sum(p.grad is not None and p.grad.abs().sum() > 0 for p in body) > len(body) // 2
    else:
        assert all(p.grad is None for p in body)


def _shapes_fg(split: str, n: int):
    pairs = Subset(shapes_segmentation(split, foreground=True), range(n))
    pairs.class_names = ["background", "shape"]
    return pairs


def test_a_few_steps_on_shapes_fg_raise_miou_over_the_first_step(tmp_path):
    from vitssl.eval.pretrained import load_run

    backbone = load_run(tiny_run(tmp_path / "run")).network
    train, val = _shapes_fg("train", 32), _shapes_fg("val", 16)
    recipe = DenseRecipe(lr=1e-3, fpn_channels=16, head_channels=16)
    cpu = torch.device("cpu")

    def miou_after(epochs: int, batch: int) -> float:
        torch.manual_seed(0)
        model = Segmenter(copy.deepcopy(backbone), 2, "upernet", recipe.fpn_channels, recipe.head_channels)
        train_segmenter(model, train, 32, 2, recipe, epochs, batch, True, cpu)
        return segmentation_metrics(dense_confusion(model, val, 32, 32, 2, cpu))["miou"]

    first, later = miou_after(1, 32), miou_after(4, 8)  # 1 step vs 16 steps
    assert later > first + 0.05, (first, later)


def test_pool_scales_are_checked_and_pool_to_their_sizes():
    for bad, words in [((), "whole numbers"), ((0, 1), "whole numbers"), ((1, 2.5), "whole numbers"),
                       ((1, 2, 2), "repeat")]:
        with pytest.raises(ValueError, match=words):
            check_pool_scales(bad)
        with pytest.raises(ValueError, match=words):
            DenseRecipe(pool_scales=bad)
    ppm = PyramidPooling(4, 3, (1, 3))
    x = torch.randn(1, 4, 9, 12)
    assert [tuple(branch(x).shape[-2:]) for branch in ppm.branches] == [(1, 1), (3, 3)]
    assert ppm(x).shape == (1, 3, 9, 12)


def test_cli_trains_upernet_and_refuses_bad_pool_scales_in_one_line(tmp_path, capsys):
    run = tiny_run(tmp_path / "run")
    segmentation_folder(tmp_path / "seg")
    base = ["eval", "segmentation", "--checkpoint", str(run), "--train", str(tmp_path / "seg"), "--val",
            str(tmp_path / "seg"), "--image-size", "16", "--epochs", "1", "--batch-size", "4", "--device", "cpu"]
    assert main([*base, "--head", "upernet", "--finetune", "--pool-scales", "1,2"]) == 0
    r = json.loads((run / "eval_segmentation_head.json").read_text())
    assert r["head"] == "upernet" and r["settings"]["pool_scales"] == [1, 2] and r["num_classes"] == 3
    for argv, words in [(["--head", "upernet", "--pool-scales", "1,1"], "repeat a scale"),
                        (["--head", "upernet", "--pool-scales", "1,x"], "not a comma-separated list"),
                        (["--head", "fpn", "--pool-scales", "1,2"], "--pool-scales is for --head upernet")]:
        assert main([*base, *argv, "--overwrite"]) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and "\n" not in err, err


def test_forward_cost_counts_a_linear_layers_flops_exactly():
    from vitssl.eval.detection.cost import forward_cost

    layer = torch.nn.Linear(64, 32)
    cost = forward_cost(lambda: layer(torch.randn(8, 64)).sum())
    assert cost["gflops_forward"] * 1e9 == 2 * 8 * 64 * 32  # a multiply and an add per weight and row
    assert cost["activation_mib"] * 2**20 == 8 * 64 * 4  # the input, kept for the weight's gradient


def test_the_docs_tiny_segmentation_costs():
    from vitssl.eval.segmentation.cost import segmentation_cost

    def tiny():
        return create_backbone("vit_tiny", patch_size=4, img_size=32, embed_dim=32, depth=2, num_heads=2,
                               drop_path_rate=0.0)

    fpn, upernet = segmentation_cost(tiny(), "fpn", 32, 2), segmentation_cost(tiny(), "upernet", 32, 2)
    assert (round(fpn["gflops_forward"], 1), round(upernet["gflops_forward"])) == (2.6, 28)  # docs/evaluation.md
