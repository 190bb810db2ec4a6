"""DINO-style attention pictures: the CLS-to-patch map, the CLS-free fallback, the mass mask,
and one PNG per image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vitssl.analysis.attention_maps import attention_heatmaps, mass_mask, save_attention_maps
from vitssl.backbones.attention_capture import AttentionCapture
from vitssl.backbones.vit import ViT


def tiny_vit(**kw) -> ViT:
    return ViT(embed_dim=32, depth=2, num_heads=2, patch_size=4, img_size=16, **kw).eval()


def random_images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (20 + 3 * i, 24, 3), dtype=np.uint8)) for i in range(n)]


@pytest.mark.parametrize("class_token", [True, False])
def test_heatmaps_are_cls_attention_or_mean_received_attention(class_token: bool) -> None:
    vit = tiny_vit(class_token=class_token)
    image = torch.randn(3, 16, 16)
    maps = attention_heatmaps(vit, image)
    with AttentionCapture(vit, [-1]) as cap:
        vit(image[None])
    probs = cap.probs(-1)[0]
    expected = probs[:, 0, 1:] if class_token else probs.mean(dim=1)
    assert maps.shape == (2, 4, 4)
    torch.testing.assert_close(maps, expected.reshape(2, 4, 4))


def test_mass_mask_keeps_the_fewest_patches_holding_the_share() -> None:
    maps = torch.tensor([[[0.1, 0.5], [0.1, 0.3]]])
    assert mass_mask(maps, 0.6).tolist() == [[[False, True], [False, True]]]
    assert mass_mask(maps, 0.5).tolist() == [[[False, True], [False, False]]]


@pytest.mark.parametrize("class_token", [True, False])
def test_one_png_per_image(tmp_path, class_token: bool) -> None:
    paths = save_attention_maps(tiny_vit(class_token=class_token), random_images(3), tmp_path / "att", 16,
                                threshold=0.6)
    assert [p.name for p in paths] == ["attention_000.png", "attention_001.png", "attention_002.png"]
    assert sorted((tmp_path / "att").glob("*.png")) == paths
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)


def test_bad_arguments_fail_clearly(tmp_path) -> None:
    vit = tiny_vit()
    with pytest.raises(ValueError, match="multiple of the patch size"):
        save_attention_maps(vit, random_images(1), tmp_path, 18)
    with pytest.raises(ValueError, match="no images"):
        save_attention_maps(vit, [], tmp_path, 16)
    with pytest.raises(ValueError, match="share of attention mass"):
        save_attention_maps(vit, random_images(1), tmp_path, 16, threshold=60)
