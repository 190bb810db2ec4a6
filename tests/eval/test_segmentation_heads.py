"""Fine-tuned segmentation heads: Semantic FPN shapes, sliding-window inference, mIoU that rises
with training, and the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from detection_helpers import segmentation_folder, tiny_run
from PIL import Image
from torch import nn
from torch.utils.data import Subset

from vitssl.backbones import create_backbone
from vitssl.cli import main
from vitssl.eval.segmentation import shapes_segmentation
from vitssl.eval.segmentation.finetune import DenseRecipe, run_dense_segmentation, slide_logits
from vitssl.eval.segmentation.heads import Segmenter


@pytest.mark.parametrize("make", [
    lambda: create_backbone("vit_tiny", patch_size=4, img_size=32, embed_dim=32, depth=4, num_heads=2),
    lambda: create_backbone("swin_tiny", img_size=32, embed_dim=16, depth=1, num_heads=1),
], ids=["vit", "swin"])
@pytest.mark.parametrize("head", ["fpn", "linear"])
def test_heads_give_logits_at_the_input_size(make, head):
    model = Segmenter(make(), 3, head, fpn_channels=16, head_channels=8)
    out = model(torch.randn(2, 3, 64, 96))
    assert out.shape == (2, 3, 64, 96)
    out.sum().backward()
    assert all(p.grad is not None for p in model.head.parameters() if p.requires_grad)


def test_sliding_windows_reproduce_a_per_pixel_model_on_the_whole_image():
    conv = nn.Conv2d(3, 4, 1)  # every pixel's logits depend on that pixel only
    image = torch.randn(1, 3, 40, 28)
    with torch.no_grad():
        torch.testing.assert_close(slide_logits(conv, image, 16, 4), conv(image))
        torch.testing.assert_close(slide_logits(conv, image[..., :10, :10], 16, 4), conv(image[..., :10, :10]))


def _shapes_fg(split: str, n: int):
    pairs = Subset(shapes_segmentation(split, foreground=True), range(n))
    pairs.class_names = ["background", "shape"]
    return pairs


def test_fine_tuned_fpn_beats_predicting_background_everywhere(tmp_path):
    run = tiny_run(tmp_path / "run")
    val = _shapes_fg("val", 32)
    background = np.mean([(np.asarray(m) == 0).mean() for _, m in val])  # its mIoU: (bg IoU + 0) / 2
    r = run_dense_segmentation(run, _shapes_fg("train", 64), val, head="fpn", finetune=True, image_size=32,
                               epochs=3, batch_size=16, device="cpu",
                               recipe=DenseRecipe(lr=1e-3, fpn_channels=32, head_channels=16))
    assert r["final_loss"] < r["first_loss"]
    assert r["miou"] > background / 2 + 0.1, (r["miou"], background)


def test_cli_trains_the_fpn_head_and_refuses_a_window_for_the_probe(tmp_path, capsys):
    run = tiny_run(tmp_path / "run")
    segmentation_folder(tmp_path / "seg")
    base = ["eval", "segmentation", "--checkpoint", str(run), "--train", str(tmp_path / "seg"), "--val",
            str(tmp_path / "seg"), "--image-size", "16", "--epochs", "1", "--batch-size", "4", "--device", "cpu"]
    assert main([*base, "--head", "fpn", "--finetune", "--window", "12"]) == 0
    r = json.loads((run / "eval_segmentation_head.json").read_text())
    assert r["head"] == "fpn" and r["finetune"] and r["num_classes"] == 3 and r["settings"]["window"] == 12
    assert main([*base, "--window", "12"]) == 2
    assert "--window is for the fine-tuned heads" in capsys.readouterr().err
    assert main([*base, "--head", "linear", "--finetune", "--reduce-zero-label", "--overwrite"]) == 0
    r = json.loads((run / "eval_segmentation_head.json").read_text())
    assert r["num_classes"] == 2 and len(r["per_class_iou"]) == 2  # 0 ignored, 1 and 2 became 0 and 1


def test_a_mask_that_does_not_match_its_image_is_named(tmp_path, capsys):
    run = tiny_run(tmp_path / "run")
    segmentation_folder(tmp_path / "seg")
    Image.fromarray(np.zeros((5, 5), np.uint8), mode="L").save(tmp_path / "seg" / "annotations" / "3.png")
    argv = ["eval", "segmentation", "--checkpoint", str(run), "--train", str(tmp_path / "seg"), "--val",
            str(tmp_path / "seg"), "--image-size", "16", "--epochs", "1", "--head", "fpn", "--device", "cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "mask '3.png' is 5x5 but image '3.png' is 24x20" in err and "\n" not in err
