import dataclasses

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from vitssl.augment.photometric import (
    ViewParams,
    apply_view,
    color_jitter,
    gaussian_blur,
    grayscale,
    horizontal_flip,
    sample_color_jitter,
    sample_resized_crop,
    sample_view_params,
    solarize,
    to_normalized_tensor,
)


def photo(w=64, h=48, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def plain(top=0, left=0, height=48, width=64, **kw):
    """View params that only crop (every other op off), overridable per field."""
    return ViewParams(top, left, height, width, flip=False, jitter=False, **kw)


def test_crop_matches_torchvision_draw_for_draw():
    img = photo(64, 48)
    for seed in range(50):
        for scale in ((0.05, 0.4), (0.4, 1.0)):
            torch.manual_seed(seed)
            expected = T.RandomResizedCrop.get_params(img, list(scale), [3 / 4, 4 / 3])
            ours = sample_resized_crop(64, 48, scale, torch.Generator().manual_seed(seed))
            assert ours == tuple(expected)


def test_crop_area_within_scale_when_first_attempt_fits():
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        top, left, h, w = sample_resized_crop(200, 160, (0.05, 0.4), g)
        assert 0 <= top and top + h <= 160 and 0 <= left and left + w <= 200
        # w and h are each rounded to an integer: allow half a pixel on each side.
        assert 0.05 * 200 * 160 <= (h + 0.5) * (w + 0.5) and (h - 0.5) * (w - 0.5) <= 0.4 * 200 * 160
        assert 3 / 4 <= (w + 0.5) / (h - 0.5) and (w - 0.5) / (h + 0.5) <= 4 / 3


def test_crop_fallback_is_centred_and_ratio_clamped():
    # Thin strips: no attempt fits, so the centred crop with its ratio clamped to [3/4, 4/3] is used.
    assert sample_resized_crop(100, 1, (0.5, 1.0), torch.Generator().manual_seed(0)) == (0, 49, 1, 1)
    assert sample_resized_crop(3, 100, (0.9, 1.0), torch.Generator().manual_seed(0)) == (48, 0, 4, 3)


def test_color_jitter_matches_torchvision_draws():
    for seed in range(20):
        torch.manual_seed(seed)
        order, *factors = T.ColorJitter.get_params([0.6, 1.4], [0.6, 1.4], [0.8, 1.2], [-0.1, 0.1])
        b, c, s, h, ours_order = sample_color_jitter(torch.Generator().manual_seed(seed), 0.4, 0.4, 0.2, 0.1)
        assert list(ours_order) == order.tolist()
        assert (b, c, s, h) == tuple(factors)


def test_color_jitter_ranges_and_zero_strength():
    g = torch.Generator().manual_seed(0)
    draws = [sample_color_jitter(g, 0.4, 0.4, 0.2, 0.1) for _ in range(500)]
    b, c, s, h = (np.array([d[i] for d in draws]) for i in range(4))
    assert 0.6 <= b.min() and b.max() <= 1.4 and 0.6 <= c.min() and c.max() <= 1.4
    assert 0.8 <= s.min() and s.max() <= 1.2 and -0.1 <= h.min() and h.max() <= 0.1
    assert all(sorted(d[4]) == [0, 1, 2, 3] for d in draws)
    assert sample_color_jitter(g, 0.0, 0.0, 0.0, 0.0)[:4] == (1.0, 1.0, 1.0, 0.0)
    assert sample_color_jitter(g, 2.0, 0.0, 0.0, 0.0)[0] >= 0.0  # lower bound clamped at 0


def test_color_jitter_applies_in_the_given_order():
    img = photo(8, 8)
    assert np.array_equal(np.asarray(color_jitter(img)), np.asarray(img))  # identity factors
    assert np.array_equal(np.asarray(color_jitter(img, brightness=1.0)), np.asarray(img))
    a = np.asarray(color_jitter(img, brightness=1.4, contrast=0.6, order=(0, 1, 2, 3)))
    b = np.asarray(color_jitter(img, brightness=1.4, contrast=0.6, order=(1, 0, 2, 3)))
    assert not np.array_equal(a, b)
    dark = np.asarray(color_jitter(img, brightness=0.0))
    assert dark.max() == 0


def test_sample_view_params_probability_extremes_and_ranges():
    g = torch.Generator().manual_seed(0)
    on = [sample_view_params(g, 64, 48, scale=(0.4, 1.0), flip_prob=1.0, color_jitter_prob=1.0,
                             grayscale_prob=1.0, blur_prob=1.0, solarization_prob=1.0) for _ in range(50)]
    off = [sample_view_params(g, 64, 48, scale=(0.4, 1.0), flip_prob=0.0, color_jitter_prob=0.0,
                              grayscale_prob=0.0, blur_prob=0.0, solarization_prob=0.0) for _ in range(50)]
    assert all(p.flip and p.jitter and p.grayscale and p.blur and p.solarize for p in on)
    assert not any(p.flip or p.jitter or p.grayscale or p.blur or p.solarize for p in off)
    assert all(0.1 <= p.blur_radius <= 2.0 for p in on)
    assert all((p.brightness, p.contrast, p.saturation, p.hue, p.blur_radius) == (1.0, 1.0, 1.0, 0.0, 0.0)
               for p in off)


def test_solarize_inverts_only_values_at_or_above_128():
    img = Image.fromarray(np.array([[[10, 200, 128], [127, 255, 0]]], dtype=np.uint8))
    assert np.asarray(solarize(img)).tolist() == [[[10, 55, 127], [127, 0, 0]]]


def test_grayscale_has_equal_channels_and_itu_luma():
    img = photo(16, 12)
    g = np.asarray(grayscale(img)).astype(int)
    assert g.shape == (12, 16, 3)
    assert np.array_equal(g[..., 0], g[..., 1]) and np.array_equal(g[..., 1], g[..., 2])
    r, gg, b = (np.asarray(img)[..., i].astype(float) for i in range(3))
    assert np.abs(g[..., 0] - (0.299 * r + 0.587 * gg + 0.114 * b)).max() <= 1


def test_flip_mirrors():
    img = photo(5, 3)
    assert np.array_equal(np.asarray(horizontal_flip(img)), np.asarray(img)[:, ::-1])


def test_blur_smooths_and_keeps_constant_images():
    const = Image.new("RGB", (16, 16), (30, 140, 250))
    assert np.array_equal(np.asarray(gaussian_blur(const, 2.0)), np.asarray(const))
    img = photo(32, 32)
    assert np.asarray(gaussian_blur(img, 2.0)).astype(float).std() < np.asarray(img).astype(float).std()


def test_normalization_of_a_constant_image():
    x = to_normalized_tensor(Image.new("RGB", (3, 2), (255, 0, 128)))
    expected = (torch.tensor([1.0, 0.0, 128 / 255]) - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor(
        [0.229, 0.224, 0.225])
    assert x.shape == (3, 2, 3) and x.dtype == torch.float32
    assert torch.allclose(x, expected[:, None, None].expand(3, 2, 3), atol=1e-6)
    y = to_normalized_tensor(Image.new("RGB", (1, 1), (255, 0, 51)), [0.5] * 3, [0.5] * 3)
    assert torch.allclose(y.flatten(), torch.tensor([1.0, -1.0, 0.2 * 2 - 1]), atol=1e-6)


def test_apply_view_crop_only_matches_torchvision_resized_crop():
    img = photo()
    p = plain(5, 7, 30, 40)
    ours = apply_view(img, p, 16, mean=[0, 0, 0], std=[1, 1, 1])
    ref = T.functional.resized_crop(img, 5, 7, 30, 40, [16, 16], interpolation=T.InterpolationMode.BICUBIC)
    assert ours.shape == (3, 16, 16)
    assert torch.allclose(ours, T.functional.to_tensor(ref), atol=1e-6)


def test_apply_view_flip_and_solarize_flags():
    img = photo()
    base = apply_view(img, plain(), 32, mean=[0, 0, 0], std=[1, 1, 1])
    flipped = apply_view(img, dataclasses.replace(plain(), flip=True), 32, mean=[0, 0, 0], std=[1, 1, 1])
    assert torch.equal(flipped, base.flip(-1))
    sol = apply_view(img, plain(solarize=True), 32, mean=[0, 0, 0], std=[1, 1, 1])
    hi = base >= 128 / 255 - 1e-6
    assert torch.allclose(sol[hi], 1 - base[hi], atol=1e-6) and torch.equal(sol[~hi], base[~hi])


def test_apply_view_is_deterministic_and_accepts_non_rgb():
    p = sample_view_params(torch.Generator().manual_seed(3), 64, 48, scale=(0.4, 1.0), blur_prob=1.0)
    img = photo()
    assert torch.equal(apply_view(img, p, 24), apply_view(img, p, 24))
    assert apply_view(img.convert("L"), p, 24).shape == (3, 24, 24)


def test_view_params_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        plain().flip = True  # type: ignore[misc]
