import random

import numpy as np
import pytest
import torch
from PIL import Image

from vitssl.augment import EvalTransform, MultiCrop, MultiCropConfig, collate_views
from vitssl.augment.photometric import sample_resized_crop, solarize, to_normalized_tensor


def small_cfg(**kw):
    return MultiCropConfig(**{**dict(global_crops_size=32, local_crops_size=16, local_crops_number=3), **kw})


def photo(w=64, h=48, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_view_count_order_and_sizes():
    views = MultiCrop(small_cfg())(photo(), torch.Generator().manual_seed(0))
    assert [tuple(v.shape) for v in views] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 3
    assert MultiCrop(small_cfg()).num_views == 5


def test_same_seed_same_views_and_global_rng_untouched():
    mc = MultiCrop(small_cfg())
    states = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    a = mc(photo(), torch.Generator().manual_seed(7))
    b = mc(photo(), torch.Generator().manual_seed(7))
    c = mc(photo(), torch.Generator().manual_seed(8))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    assert torch.equal(states[0], torch.get_rng_state()) and states[1] == random.getstate()
    assert np.array_equal(states[2], np.random.get_state()[1])


def test_per_view_probabilities_match_the_spec():
    mc = MultiCrop(MultiCropConfig())  # DINO defaults
    g = torch.Generator().manual_seed(0)
    n = 2000
    draws = [mc.sample_params(64, 48, g) for _ in range(n)]

    def rate(view, attr):
        return np.mean([bool(getattr(d[view], attr) not in (None, False)) for d in draws])

    tol = 4 * np.sqrt(0.25 / n)  # 4 sigma of a binomial proportion
    for view, blur, sol in ((0, 1.0, 0.0), (1, 0.1, 0.2), (2, 0.5, 0.0), (9, 0.5, 0.0)):
        assert rate(view, "blur_radius") == pytest.approx(blur, abs=tol)
        assert rate(view, "solarize") == pytest.approx(sol, abs=tol)
        assert rate(view, "flip") == pytest.approx(0.5, abs=tol)
        assert rate(view, "color_jitter") == pytest.approx(0.8, abs=tol)
        assert rate(view, "grayscale") == pytest.approx(0.2, abs=tol)
    radii = [d[0].blur_radius for d in draws]
    assert 0.1 <= min(radii) and max(radii) <= 2.0


def test_crop_area_within_scale():
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        top, left, h, w = sample_resized_crop(100, 80, (0.05, 0.4), g)
        assert 0 <= top and top + h <= 80 and 0 <= left and left + w <= 100
        assert 0.05 * 8000 * 0.9 <= h * w <= 0.4 * 8000 * 1.1  # rounding of w and h


def test_hand_checkable_ops():
    img = Image.fromarray(np.array([[[10, 200, 128]]], dtype=np.uint8))
    assert np.array_equal(np.asarray(solarize(img)), [[[10, 55, 127]]])
    x = to_normalized_tensor(Image.new("RGB", (2, 2), (255, 0, 128)), [0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
    assert torch.allclose(x[:, 0, 0], torch.tensor([1.0, -1.0, 128 / 255 * 2 - 1]), atol=1e-6)
    mc = MultiCrop(small_cfg(grayscale_prob=1.0, color_jitter_prob=0.0, blur_prob=[0, 0, 0],
                             solarization_prob=[0, 0, 0], mean=[0, 0, 0], std=[1, 1, 1]))
    view = mc(photo(), torch.Generator().manual_seed(0))[0]
    assert torch.allclose(view[0], view[1]) and torch.allclose(view[1], view[2])


def test_flip_mirrors_the_crop():
    cfg = small_cfg(color_jitter_prob=0.0, grayscale_prob=0.0, blur_prob=[0, 0, 0], solarization_prob=[0, 0, 0])
    mc = MultiCrop(cfg)
    params = mc.sample_params(64, 48, torch.Generator().manual_seed(0))[0]
    params.flip = False
    a = mc.apply_view(photo(), params)
    params.flip = True
    assert torch.equal(mc.apply_view(photo(), params), a.flip(-1))


@pytest.mark.parametrize("kw, message", [
    (dict(global_crops_scale=[0.5, 0.2]), "global_crops_scale"),
    (dict(local_crops_scale=[0.0, 0.4]), "local_crops_scale"),
    (dict(local_crops_number=-1), "local_crops_number"),
    (dict(blur_prob=[1.0, 0.1]), "blur_prob needs 3 values"),
    (dict(flip_prob=1.5), "flip_prob must be a probability"),
])
def test_config_validation(kw, message):
    with pytest.raises(ValueError, match=message):
        MultiCrop(small_cfg(**kw))


def test_collate_stacks_each_view():
    mc = MultiCrop(small_cfg())
    g = torch.Generator().manual_seed(0)
    views, labels = collate_views([(mc(photo(seed=i), g), i) for i in range(4)])
    assert len(views) == 5 and views[0].shape == (4, 3, 32, 32) and views[2].shape == (4, 3, 16, 16)
    assert labels.tolist() == [0, 1, 2, 3]


def test_eval_transform_is_deterministic_and_sized():
    t = EvalTransform(28)
    assert t.resize_size == 32
    x = t(photo())
    assert x.shape == (3, 28, 28) and torch.equal(x, t(photo()))
