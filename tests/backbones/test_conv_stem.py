"""The convolutional stem: same token grid as the patch projection, refused where it cannot fit."""

from __future__ import annotations

import pytest
import torch

from vitssl.backbones import BackboneConfig, create_backbone
from vitssl.backbones.vit import conv_stem
from vitssl.commands.export import timm_model_spec
from vitssl.engine.validation import ConfigError


def tiny(stem: str, patch: int = 4) -> torch.nn.Module:
    return create_backbone(BackboneConfig(name="vit_tiny", patch_size=patch, img_size=32, embed_dim=32, depth=1,
                                          num_heads=2, drop_path_rate=0.0, stem=stem))


@pytest.mark.parametrize("patch", [2, 4, 8, 16])
def test_widths_double_to_the_embedding_and_stride_is_the_patch(patch):
    stem = conv_stem(64, patch)
    convs = [m for m in stem if isinstance(m, torch.nn.Conv2d)]
    assert [c.stride[0] for c in convs] == [2] * (len(convs) - 1) + [1]
    assert 2 ** (len(convs) - 1) == patch
    assert convs[-2].out_channels == 64 and convs[-1].out_channels == 64
    assert stem(torch.zeros(2, 3, 48, 48)).shape == (2, 64, 48 // patch, 48 // patch)


@pytest.mark.parametrize("patch, reach", [(2, 1), (4, 3), (8, 7)])
def test_a_token_sees_its_patch_and_reach_pixels_above_and_left(patch, reach):
    """The receptive field docs/methods/dino.md states for masked patches: log2(p) 3x3 stride-2
    convolutions (padding 1) reach p - 1 px up and left of the patch and none down or right."""
    stem = conv_stem(16, patch).eval()
    image = torch.randn(1, 3, 8 * patch, 8 * patch, requires_grad=True)
    stem(image)[0, :, 3, 3].sum().backward()
    rows, cols = (image.grad[0].abs().sum(0) > 0).nonzero().unbind(1)
    assert (rows.min().item(), rows.max().item()) == (3 * patch - reach, 4 * patch - 1)
    assert (cols.min().item(), cols.max().item()) == (3 * patch - reach, 4 * patch - 1)


def test_same_tokens_shape_as_the_patch_stem_at_any_size():
    conv, patch = tiny("conv").eval(), tiny("patch").eval()
    for side in (32, 16, 24):
        x = torch.randn(2, 3, side, side)
        a, b = conv(x), patch(x)
        assert a.patches.shape == b.patches.shape and a.grid == b.grid and a.cls.shape == b.cls.shape
        assert torch.isfinite(a.patches).all()


def test_gradient_reaches_the_stem_and_the_stem_is_in_the_state_dict():
    model = tiny("conv")
    cls = model(torch.randn(4, 3, 32, 32)).cls
    (cls * torch.randn_like(cls)).sum().backward()  # not cls.sum(): a LayerNorm output sums to a constant
    assert model.patch_embed.proj[0].weight.grad.abs().sum() > 0
    assert "patch_embed.proj.0.weight" in model.state_dict()


def test_masked_encoding_works_with_the_conv_stem():
    model = tiny("conv").eval()
    ids = torch.arange(8).expand(2, 8)
    assert model.forward_masked(torch.randn(2, 3, 32, 32), ids).patches.shape == (2, 8, 32)


@pytest.mark.parametrize("fields, message", [
    (dict(name="vit_tiny", patch_size=6, img_size=36), "backbone.patch_size=6 is not a power of two"),
    (dict(name="swin_tiny"), "backbone.stem='conv' is a ViT option"),
    (dict(name="vit_tiny", stem="conv3"), "backbone.stem='conv3'"),
])
def test_misfits_are_refused_in_one_line(fields, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        BackboneConfig(**{"stem": "conv", **fields})


def test_timm_export_refuses_a_conv_stem():
    with pytest.raises(ValueError, match="convolutional stem"):
        timm_model_spec(tiny("conv"))
