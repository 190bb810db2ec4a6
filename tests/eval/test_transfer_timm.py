"""Public weights in timm's layout as a start: `vitssl eval --checkpoint FILE` and
`init_from=FILE` give the features timm itself computes with those weights."""

import json

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from helpers import tiny_overrides
from vitssl.cli import main
from vitssl.commands.pretrain import initialise_from
from vitssl.config import load_config, to_objects
from vitssl.engine.checkpoint import CheckpointError
from vitssl.eval.pretrained import load_pretrained
from vitssl.methods import build_method, method_configs

TINY_VIT = dict(patch_size=4, img_size=16, embed_dim=32, depth=2, num_heads=2)


def timm_vit(seed=0, **changes):
    torch.manual_seed(seed)
    kwargs = {**TINY_VIT, **changes}
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=7, **kwargs).eval()


def timm_features(model, images):
    """timm's own image embedding: the CLS token after the final norm (pre-logits)."""
    with torch.no_grad():
        return model.forward_head(model.forward_features(images), pre_logits=True)


def save(model, path, heads=None):
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    if heads is not None:  # what `vitssl export` writes next to its files
        path.with_name("timm_model.json").write_text(json.dumps({"kwargs": {"num_heads": heads}}))
    return path


@pytest.mark.parametrize("name", ["model.safetensors", "pytorch_model.pth"])
def test_eval_reads_a_timm_vit_file_and_gives_timms_features(tmp_path, name):
    model = timm_vit()
    backbone, config = load_pretrained(save(model, tmp_path / name, heads=2))
    images = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(backbone(images).pooled, timm_features(model, images))
    assert config["backbone"]["img_size"] == 16


def test_eval_reads_a_timm_swin_file_and_gives_timms_features(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=0, img_size=32,
                              embed_dim=16, depths=(1, 2, 1, 1), num_heads=(1, 2, 4, 8), window_size=2).eval()
    backbone, _ = load_pretrained(save(model, tmp_path / "swin.pth"))
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # the shifted-window block masks in its own (fused) way: equal to rounding
        assert torch.allclose(backbone(images).pooled, model(images), atol=1e-5)


def dino_method(*extra):
    cfg = load_config(None, ["method.name=dino", *tiny_overrides("digits"), *extra], method_configs())
    objs = to_objects(cfg)
    return build_method(objs.method, objs.backbone)


def test_init_from_a_timm_file_puts_timms_weights_in_student_and_teacher(tmp_path):
    model = timm_vit(seed=3)
    method = dino_method()
    initialise_from(method, save(model, tmp_path / "vit.safetensors"))
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = timm_features(model, images)
        assert torch.equal(method.evaluation_backbone().eval()(images).pooled, expected)
        assert torch.equal(method.student_backbone().eval()(images).pooled, expected)


def test_init_from_resamples_the_position_embedding_to_the_configured_grid(tmp_path):
    model = timm_vit(img_size=32)  # an 8x8 grid of patches; the run uses 16 px, a 4x4 grid
    method = dino_method()
    initialise_from(method, save(model, tmp_path / "vit32.pth"))
    pos = model.pos_embed.detach()
    grid = pos[:, 1:].reshape(1, 8, 8, -1).permute(0, 3, 1, 2)
    patch = F.interpolate(grid, size=(4, 4), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(1, 16, -1)
    loaded = method.evaluation_backbone().pos_embed.detach()
    assert torch.allclose(loaded, torch.cat([pos[:, :1], patch], dim=1), atol=1e-6)


def test_a_timm_file_of_another_depth_is_refused_naming_the_key(tmp_path):
    path = save(timm_vit(depth=3), tmp_path / "deep.safetensors")
    with pytest.raises(CheckpointError, match=r"unexpected: blocks\.2\..*set backbone\.\*"):
        initialise_from(dino_method(), path)


def test_cli_refuses_a_timm_file_that_does_not_fit_in_one_line(tmp_path, capsys):
    path = save(timm_vit(embed_dim=48, num_heads=3), tmp_path / "wide.pth")
    code = main(["pretrain", "--out", str(tmp_path / "run"), *tiny_overrides("digits"), f"init_from={path}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "shape mismatch: blocks.0" in err and "wide.pth" in err and "(48,) vs (32,)" in err
    assert not (tmp_path / "run").exists()  # refused before the run folder is made


def test_a_state_dict_of_no_vit_or_swin_is_refused_in_one_line(tmp_path, capsys):
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3)}, tmp_path / "resnet.pth")
    code = main(["eval", "knn", "--checkpoint", str(tmp_path / "resnet.pth"), "--train", "digits", "--val", "digits",
                 "--device", "cpu", "--num-workers", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "neither a timm ViT nor a timm Swin (first key 'conv1.weight')" in err
