"""End-to-end fine-tuning (MAE paper App. A.1, Tables 9-10; facebookresearch/mae FINETUNE.md, MAE-Lite paper, fine-tuning recipe; wangsr126/mae-lite projects/eval_tools/finetuning_exp.py): recipes, head, data split, CLI."""

import json

import numpy as np
import pytest
import torch
from timm.layers import DropPath
from torch.utils.data import TensorDataset

from helpers import tiny_overrides
from vitssl.backbones import create_backbone
from vitssl.cli import main
from vitssl.eval.finetune import (
    RECIPES,
    Classifier,
    FinetuneData,
    _criterion,
    labelled_subset,
    resolve_recipe,
    set_drop_path,
    train_classifier,
)


def tiny_vit(depth: int = 2):
    return create_backbone("vit_tiny", patch_size=4, img_size=16, embed_dim=32, depth=depth, num_heads=2,
                           drop_path_rate=0.0)


def test_recipes_match_the_spec():
    impr, mae, transfer = RECIPES["mae_lite_impr"], RECIPES["mae"], RECIPES["transfer"]
    assert (impr.optimizer, impr.blr, impr.layer_decay, impr.weight_decay) == ("adamw", 1e-3, 0.85, 0.05)
    assert (impr.rand_augment, impr.mixup, impr.cutmix, impr.color_jitter) == ("rand-m10-mstd0.5-inc1", 0.2, 0.0, 0.3)
    assert (mae.layer_decay, mae.mixup, mae.cutmix, mae.label_smoothing, mae.reprob) == (0.65, 0.8, 1.0, 0.1, 0.25)
    assert (transfer.optimizer, transfer.nesterov, transfer.weight_decay, transfer.clip_grad) == ("sgd", True, 0.0, 1.0)
    assert (transfer.layer_decay, transfer.rand_augment, transfer.mixup) == (0.75, "", 0.0)


def test_recipe_overrides_and_errors():
    r = resolve_recipe("transfer", ["layer_decay=0.5", "hflip=0", "epochs=3"])
    assert (r.layer_decay, r.hflip, r.epochs, r.optimizer) == (0.5, 0.0, 3, "sgd")
    assert RECIPES["transfer"].layer_decay == 0.75  # the preset itself is untouched
    with pytest.raises(ValueError, match="unknown fine-tuning recipe"):
        resolve_recipe("mea")
    with pytest.raises(ValueError, match="layer_decy"):
        resolve_recipe("mae", ["layer_decy=0.5"])


def test_mixup_targets_are_distributions():
    mixup, loss = _criterion(resolve_recipe("mae"), num_classes=5)  # mixup 0.8 + cutmix 1.0, smoothing 0.1
    images, labels = torch.randn(8, 3, 16, 16), torch.arange(8) % 5
    mixed, targets = mixup(images, labels)
    assert mixed.shape == images.shape and targets.shape == (8, 5)
    assert torch.allclose(targets.sum(dim=1), torch.ones(8)) and targets.min() > 0  # smoothed: no zeros
    assert loss(torch.randn(8, 5), targets).ndim == 0
    assert _criterion(resolve_recipe("transfer"), 5)[0] is None


def test_classifier_global_pool_replaces_the_final_norm():
    backbone = tiny_vit()
    model = Classifier(backbone, num_classes=7)
    assert isinstance(backbone.norm, torch.nn.Identity) and isinstance(model.fc_norm, torch.nn.LayerNorm)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 7)
    assert model.head.weight.abs().max() < 1e-3 and model.head.bias.abs().max() == 0  # MAE: std 2e-5
    cls_model = Classifier(tiny_vit(), num_classes=3, global_pool=False)
    assert isinstance(cls_model.backbone.norm, torch.nn.LayerNorm) and cls_model(torch.randn(1, 3, 16, 16)).shape == (1, 3)


def test_set_drop_path_rises_linearly_over_blocks():
    backbone = tiny_vit(depth=3)
    set_drop_path(backbone, 0.2)
    rates = [b.drop_path1.drop_prob if isinstance(b.drop_path1, DropPath) else 0.0 for b in backbone.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2])


@pytest.mark.parametrize("name,blocks", [("cvt_tiny", "blocks"), ("resnet50", "residual_blocks")])
def test_set_drop_path_reaches_cvt_and_resnet_blocks(name, blocks):
    backbone = create_backbone(name, embed_dim=8, depth=1, drop_path_rate=0.0)
    set_drop_path(backbone, 0.3)
    rates = [b.drop_path.drop_prob if isinstance(b.drop_path, DropPath) else 0.0 for b in getattr(backbone, blocks)]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_labelled_subset_is_balanced_and_seeded():
    labels = np.repeat(np.arange(4), 10)
    five = labelled_subset(labels, per_class=5, seed=0)
    assert len(five) == 20 and np.bincount(labels[five]).tolist() == [5, 5, 5, 5]
    assert np.array_equal(five, labelled_subset(labels, per_class=5, seed=0))
    assert not np.array_equal(five, labelled_subset(labels, per_class=5, seed=1))
    assert np.bincount(labels[labelled_subset(labels, fraction=0.3)]).tolist() == [3, 3, 3, 3]
    assert len(labelled_subset(labels)) == 40
    with pytest.raises(ValueError, match="not both"):
        labelled_subset(labels, fraction=0.5, per_class=2)


def test_train_classifier_learns_a_separable_toy_task():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(64) % 2
    images = torch.randn(64, 3, 16, 16, generator=g) * 0.1 + (labels.float() * 2 - 1)[:, None, None, None]
    data = FinetuneData(TensorDataset(images[:48], labels[:48]), TensorDataset(images[48:], labels[48:]), 2)
    recipe = resolve_recipe("mae_lite_impr", ["epochs=4", "batch_size=16", "warmup_epochs=1", "mixup=0"])
    result = train_classifier(Classifier(tiny_vit(), 2), data, recipe, lr=1e-3)
    assert len(result.history) == 4 and result.top1 == result.history[-1]["top1"] and result.top5 == 1.0
    assert result.top1 > 0.9 and result.history[-1]["lr"] < result.lr


@pytest.fixture(scope="module")
def mae_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("finetune") / "mae"
    assert main(["pretrain", "--method", "mae", "--data", "digits", "--out", str(run_dir),
                 *tiny_overrides("digits", method="mae")[1:]]) == 0
    return run_dir


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_finetune_and_scratch_on_digits(mae_run, capsys):
    common = ["--train", "digits", "--val", "digits", "--epochs", "2", "--samples-per-class", "4",
              "--num-workers", "0", "--device", "cpu"]
    code, out, _ = run(capsys, "eval", "finetune", "--checkpoint", mae_run, *common, "hflip=0")
    assert code == 0 and "val top-1" in out
    r = json.loads((mae_run / "eval_finetune.json").read_text())
    assert r["train_images"] == 40 and r["recipe_values"]["hflip"] == 0.0 and not r["scratch"]
    assert len(r["history"]) == 2 and 0.0 <= r["top1"] <= r["top5"] <= 1.0
    code, out, _ = run(capsys, "eval", "finetune", "--checkpoint", mae_run, "--scratch", "--recipe", "transfer", *common)
    assert code == 0 and "from scratch" in out
    scratch = json.loads((mae_run / "eval_finetune_scratch.json").read_text())
    assert scratch["scratch"] and scratch["recipe"] == "transfer" and scratch["image_size"] == r["image_size"]


def test_cli_finetune_errors_are_one_line(tmp_path, capsys):
    code, _, err = run(capsys, "eval", "finetune", "--checkpoint", tmp_path / "missing", "--train", "digits",
                       "--val", "digits")
    assert code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "eval", "finetune", "--scratch", "--train", "digits", "--val", "digits")
    assert code == 2 and "--out" in err
    code, _, err = run(capsys, "eval", "finetune", "--checkpoint", tmp_path / "missing", "--train", "digits",
                       "--val", "digits", "--recipe", "nope")
    assert code == 2 and "unknown fine-tuning recipe" in err


def test_randaugment_at_full_magnitude_works_with_new_pillow():
    from PIL import Image

    from vitssl.eval.finetune import train_transform

    recipe = resolve_recipe("mae_lite_impr", ["rand_augment=rand-n8-m10-mstd0-inc1"])  # every op at magnitude 10
    transform = train_transform(recipe, 16, (0.5,) * 3, (0.5,) * 3)
    image = Image.fromarray((np.random.default_rng(0).random((20, 20, 3)) * 255).astype(np.uint8))
    for _ in range(20):  # posterize keeps 0 bits at magnitude 10: a black image, not an error
        assert transform(image).shape == (3, 16, 16)


def test_swin_classifier_trains_one_step_with_layer_decay():
    from vitssl.eval.finetune import _optimizer

    swin = create_backbone("swin_tiny", img_size=32, embed_dim=16, depth=1, num_heads=1, window_size=2,
                           drop_path_rate=0.0)
    set_drop_path(swin, 0.1)
    model = Classifier(swin, num_classes=3)
    optimizer = _optimizer(model, resolve_recipe("mae_lite_impr", ["layer_decay=0.5"]))
    assert min(g["lr_scale"] for g in optimizer.param_groups) == pytest.approx(0.5 ** 5)  # 4 blocks + 1
    loss = model(torch.randn(2, 3, 32, 32)).logsumexp(dim=1).mean()
    loss.backward()
    optimizer.step()
