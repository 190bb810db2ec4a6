"""The multi-crop's optional affine warp: torchvision's draws, the geometry, off by default."""

import dataclasses

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from vitssl.augment import MultiCrop, MultiCropConfig
from vitssl.augment.affine import AffineParams, apply_affine, sample_affine
from vitssl.augment.gpu_multicrop import GPUMultiCrop
from vitssl.augment.photometric import sample_view_params


def dot(size=15, row=7, col=7):
    """A black square image with one white pixel."""
    a = np.zeros((size, size, 3), dtype=np.uint8)
    a[row, col] = 255
    return Image.fromarray(a)


def brightest(img):
    a = np.asarray(img)[..., 0]
    return np.unravel_index(int(a.argmax()), a.shape)


@pytest.mark.parametrize("degrees, translate, shear", [(15.0, 0.1, 10.0), (30.0, 0.0, 0.0), (0.0, 0.2, 0.0),
                                                       (0.0, 0.0, 20.0)])
def test_draws_match_torchvision_random_affine(degrees, translate, shear):
    for seed in range(30):
        torch.manual_seed(seed)
        angle, (tx, ty), _, (sx, sy) = T.RandomAffine.get_params(
            [-degrees, degrees], [translate, translate] if translate else None, None,
            [-shear, shear] if shear else None, [40, 28])
        ours = sample_affine(torch.Generator().manual_seed(seed), 40, 28, degrees, translate, shear)
        assert ours == AffineParams(angle, tx, ty, sx) and sy == 0.0


def test_draws_stay_within_their_strengths():
    g = torch.Generator().manual_seed(0)
    draws = [sample_affine(g, 28, 28, 15.0, 0.1, 10.0) for _ in range(300)]
    assert max(abs(d.angle) for d in draws) <= 15.0 and max(abs(d.shear) for d in draws) <= 10.0
    assert max(max(abs(d.translate_x), abs(d.translate_y)) for d in draws) <= round(0.1 * 28)
    assert len({d.angle for d in draws}) == 300  # drawn, not fixed


def test_translation_moves_a_pixel_right_and_down():
    moved = apply_affine(dot(), AffineParams(0.0, 3, 2, 0.0))
    assert brightest(moved) == (7 + 2, 7 + 3)


def test_rotation_turns_clockwise_about_the_centre():
    # torchvision's affine angle is clockwise on screen: a pixel 4 to the right of the centre
    # of a 15-px image, turned 90 degrees, lands 4 below the centre; the centre itself stays.
    assert brightest(apply_affine(dot(col=11), AffineParams(90.0, 0, 0, 0.0))) == (11, 7)
    assert brightest(apply_affine(dot(), AffineParams(90.0, 0, 0, 0.0))) == (7, 7)


def test_off_by_default_and_other_draws_unchanged_when_on():
    assert MultiCropConfig().affine_degrees == MultiCropConfig().affine_translate == 0.0
    plain = sample_view_params(torch.Generator().manual_seed(3), 28, 28, scale=(0.4, 1.0))
    warped = sample_view_params(torch.Generator().manual_seed(3), 28, 28, scale=(0.4, 1.0), affine=(15.0, 0.1, 5.0))
    assert plain.affine is None and warped.affine is not None
    assert dataclasses.replace(warped, affine=None) == plain


def test_multicrop_warps_every_view_when_enabled():
    cfg = MultiCropConfig(global_crops_size=28, local_crops_size=16, local_crops_number=2, affine_degrees=15.0,
                          affine_translate=0.1, affine_shear=10.0)
    params = MultiCrop(cfg).sample_params(28, 28, torch.Generator().manual_seed(0))
    assert all(p.affine is not None for p in params)
    views = MultiCrop(cfg)(dot(28, 14, 14), torch.Generator().manual_seed(0))
    assert [tuple(v.shape) for v in views] == [(3, 28, 28)] * 2 + [(3, 16, 16)] * 2


@pytest.mark.parametrize("kw, message", [
    (dict(affine_degrees=-5.0), "affine_degrees"),
    (dict(affine_translate=1.0), "affine_translate"),
    (dict(affine_shear=float("nan")), "affine_shear"),
    (dict(affine_degrees="ten"), "affine_degrees"),
])
def test_bad_strengths_are_refused_in_one_line(kw, message):
    with pytest.raises(ValueError, match=message) as err:
        MultiCrop(MultiCropConfig(**kw))
    assert "\n" not in str(err.value)


def test_device_augmentation_refuses_the_warp_it_does_not_implement():
    with pytest.raises(ValueError, match="augment_on=cpu"):
        GPUMultiCrop(MultiCropConfig(affine_degrees=10.0))
    GPUMultiCrop(MultiCropConfig())  # off: accepted
