import pytest
import torch
import torchvision

from vitssl.backbones import create_backbone


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """One intra-op thread for these tiny tensors (the shared `one_thread` fixture)."""


def small(**kw):
    return create_backbone("resnet50", **{**dict(embed_dim=8, depth=1), **kw})


def test_parameter_count_and_names_are_torchvisions_resnet50_without_classifier():
    with torch.device("meta"):
        model = create_backbone("resnet50")
        reference = torchvision.models.resnet50()
    params = sum(p.numel() for p in model.parameters())
    assert params == 23_508_032  # EsViT's README: 23M; torchvision's 25.56M minus the 2.05M classifier
    expected = {k for k in reference.state_dict() if not k.startswith("fc.")}
    assert set(model.state_dict()) == expected
    assert model.embed_dim == 2048 and model.patch_size == 32
    # torchvision's initialisation: the last BatchNorm of a block is not zeroed (timm's default is)
    assert create_backbone("resnet50", depth=1).layer1[0].bn3.weight.eq(1).all()


@pytest.mark.parametrize("size,grid", [(224, 7), (96, 3), (64, 2), (16, 1)])
def test_region_tokens_are_the_layer4_map_and_the_view_feature_its_average(size, grid):
    model = small().eval()
    x = torch.randn(2, 3, size, size)
    tokens = model(x)
    assert tokens.cls is None and tokens.grid == (grid, grid) and tokens.patches.shape == (2, grid * grid, 256)
    layer4 = model.forward_features(x)
    torch.testing.assert_close(tokens.patches, layer4.flatten(2).transpose(1, 2))
    torch.testing.assert_close(tokens.pooled, layer4.mean((2, 3)))


def test_last_blocks_are_the_last_residual_blocks_across_stages():
    model = small(depth=2).eval()
    x = torch.randn(2, 3, 64, 64)
    blocks = model.last_blocks(x, 3)
    assert [t.patches.shape[-1] for t in blocks] == [128, 256, 256] and [t.grid for t in blocks] == [(4, 4), (2, 2), (2, 2)]
    torch.testing.assert_close(blocks[-1].patches, model(x).patches)


@pytest.mark.parametrize("option,match", [
    (dict(num_heads=4), "no attention"), (dict(window_size=7), "no attention"), (dict(patch_size=16), "no patch"),
    (dict(pos_embed="sincos"), "no position embedding")])
def test_options_resnet_does_not_have_are_refused(option, match):
    with pytest.raises(ValueError, match=match):
        create_backbone("resnet50", **option)


def test_unknown_backbone_lists_the_new_names():
    with pytest.raises(ValueError, match="did you mean 'resnet50'.*cvt_tiny"):
        create_backbone("resnet5")
