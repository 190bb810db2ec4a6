import dataclasses
import random

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from vitssl.augment import EvalTransform, MultiCrop, MultiCropConfig, ViewParams, collate_views


def small_cfg(**kw):
    return MultiCropConfig(**{**dict(global_crops_size=32, local_crops_size=16, local_crops_number=3), **kw})


def photo(w=64, h=48, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


OPS_OFF = dict(flip_prob=0.0, color_jitter_prob=0.0, grayscale_prob=0.0, blur_prob=[0.0] * 3,
               solarization_prob=[0.0] * 3)


def test_view_count_order_and_sizes():
    mc = MultiCrop(small_cfg())
    views = mc(photo(), torch.Generator().manual_seed(0))
    assert [tuple(v.shape) for v in views] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 3
    assert all(v.dtype == torch.float32 for v in views)
    assert mc.num_views == 5 and mc.view_sizes == [32, 32, 16, 16, 16]
    assert len(MultiCrop(small_cfg(local_crops_number=0))(photo(), torch.Generator())) == 2


def test_sample_params_then_apply_equals_call():
    mc = MultiCrop(small_cfg())
    params = mc.sample_params(64, 48, torch.Generator().manual_seed(5))
    assert len(params) == 5 and all(isinstance(p, ViewParams) for p in params)
    direct = mc(photo(), torch.Generator().manual_seed(5))
    assert all(torch.equal(a, b) for a, b in zip(mc.apply(photo(), params), direct))


def test_same_seed_same_views_other_seed_other_views_global_rng_untouched():
    mc = MultiCrop(small_cfg())
    torch.manual_seed(123), random.seed(123), np.random.seed(123)
    before = (torch.get_rng_state(), random.getstate(), np.random.get_state())
    a = mc(photo(), torch.Generator().manual_seed(7))
    b = mc(photo(), torch.Generator().manual_seed(7))
    c = mc(photo(), torch.Generator().manual_seed(8))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not any(torch.equal(x, y) for x, y in zip(a, c))
    after = (torch.get_rng_state(), random.getstate(), np.random.get_state())
    assert torch.equal(before[0], after[0]) and before[1] == after[1]
    assert before[2][0] == after[2][0] and np.array_equal(before[2][1], after[2][1])
    assert before[2][2:] == after[2][2:]


def test_views_of_one_image_differ_from_each_other():
    params = MultiCrop(MultiCropConfig()).sample_params(64, 48, torch.Generator().manual_seed(0))
    assert len({p.crop for p in params}) > 1


def test_per_view_probabilities_match_the_spec():
    mc = MultiCrop(MultiCropConfig())  # DINO defaults, 8 local crops
    g = torch.Generator().manual_seed(0)
    n = 2000
    draws = [mc.sample_params(64, 48, g) for _ in range(n)]

    def rate(view: int, attr: str) -> float:
        return float(np.mean([getattr(d[view], attr) for d in draws]))

    def tol(p: float) -> float:  # 4.5 sigma of a binomial proportion, 0 when p is 0 or 1
        return 4.5 * np.sqrt(p * (1 - p) / n)

    for view, blur, sol in ((0, 1.0, 0.0), (1, 0.1, 0.2), (2, 0.5, 0.0), (9, 0.5, 0.0)):
        for attr, p in (("blur", blur), ("solarize", sol), ("flip", 0.5), ("jitter", 0.8), ("grayscale", 0.2)):
            assert abs(rate(view, attr) - p) <= tol(p), (view, attr, rate(view, attr))
    radii = np.array([d[v].blur_radius for d in draws for v in range(10) if d[v].blur])
    assert 0.1 <= radii.min() and radii.max() <= 2.0 and abs(radii.mean() - 1.05) < 0.05
    jittered = [d[3] for d in draws if d[3].jitter]
    assert all(0.6 <= p.brightness <= 1.4 and 0.8 <= p.saturation <= 1.2 and abs(p.hue) <= 0.1 for p in jittered)
    assert all(p.brightness == 1.0 and p.hue == 0.0 for d in draws for p in d if not p.jitter)


def test_global_and_local_crop_areas_follow_their_scales():
    mc = MultiCrop(MultiCropConfig())
    g = torch.Generator().manual_seed(1)
    w, h = 400, 300
    for _ in range(100):
        params = mc.sample_params(w, h, g)
        for i, p in enumerate(params):
            lo, hi = (0.4, 1.0) if i < 2 else (0.05, 0.4)
            frac = p.height * p.width / (w * h)
            assert lo * 0.97 <= frac <= hi * 1.03, (i, frac)


def test_grayscale_view_has_equal_channels():
    cfg = small_cfg(**{**OPS_OFF, "grayscale_prob": 1.0}, mean=[0, 0, 0], std=[1, 1, 1])
    for view in MultiCrop(cfg)(photo(), torch.Generator().manual_seed(0)):
        assert torch.equal(view[0], view[1]) and torch.equal(view[1], view[2])


def test_flip_mirrors_the_view():
    mc = MultiCrop(small_cfg(**OPS_OFF))
    params = mc.sample_params(64, 48, torch.Generator().manual_seed(0))
    flipped = [dataclasses.replace(p, flip=True) for p in params]
    for a, b in zip(mc.apply(photo(), params), mc.apply(photo(), flipped)):
        assert torch.equal(b, a.flip(-1))


def test_constant_image_normalises_to_the_expected_value():
    # Crop, flip and blur leave a constant image unchanged; only normalisation acts.
    cfg = small_cfg(**{**OPS_OFF, "flip_prob": 1.0, "blur_prob": [1.0, 1.0, 1.0]})
    views = MultiCrop(cfg)(Image.new("RGB", (64, 48), (255, 0, 51)), torch.Generator().manual_seed(0))
    expected = (torch.tensor([1.0, 0.0, 0.2]) - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor(
        [0.229, 0.224, 0.225])
    for v in views:
        assert torch.allclose(v, expected[:, None, None].expand_as(v), atol=1e-5)


@pytest.mark.parametrize("kw, message", [
    (dict(global_crops_scale=[0.5, 0.2]), "global_crops_scale"),
    (dict(global_crops_scale=[0.4, 1.2]), "global_crops_scale"),
    (dict(local_crops_scale=[0.0, 0.4]), "local_crops_scale"),
    (dict(local_crops_scale=[0.1]), "local_crops_scale"),
    (dict(local_crops_number=-1), "local_crops_number"),
    (dict(local_crops_size=0), "local_crops_size"),
    (dict(blur_prob=[1.0, 0.1]), "blur_prob needs 3 values"),
    (dict(solarization_prob=[0.0, 0.2, 0.0, 0.0]), "solarization_prob needs 3 values"),
    (dict(blur_prob=[1.0, 0.1, -0.5]), r"blur_prob\[2\] must be a probability"),
    (dict(flip_prob=1.5), "flip_prob must be a probability"),
    (dict(color_jitter_prob=-0.1), "color_jitter_prob must be a probability"),
    (dict(grayscale_prob=2.0), "grayscale_prob must be a probability"),
    (dict(blur_radius=[2.0, 0.1]), "blur_radius"),
    (dict(hue=0.7), "hue"),
    (dict(std=[0.2, 0.2]), "std needs 3 values"),
])
def test_config_validation(kw, message):
    with pytest.raises(ValueError, match=message) as err:
        MultiCrop(small_cfg(**kw))
    assert "\n" not in str(err.value)


def test_config_round_trips_through_omegaconf():
    structured = OmegaConf.structured(MultiCropConfig)
    merged = OmegaConf.merge(structured, {"local_crops_scale": [0.05, 0.25], "local_crops_number": 2})
    cfg = OmegaConf.to_object(merged)
    assert isinstance(cfg, MultiCropConfig) and cfg.local_crops_scale == [0.05, 0.25]
    assert MultiCrop(cfg).num_views == 4


def test_collate_stacks_each_view():
    mc = MultiCrop(small_cfg())
    g = torch.Generator().manual_seed(0)
    samples = [(mc(photo(seed=i), g), i) for i in range(4)]
    views, labels = collate_views(samples)
    assert len(views) == 5 and views[0].shape == (4, 3, 32, 32) and views[4].shape == (4, 3, 16, 16)
    assert torch.equal(views[2][1], samples[1][0][2])
    assert labels.dtype == torch.long and labels.tolist() == [0, 1, 2, 3]


def test_eval_transform_is_deterministic_and_sized():
    t = EvalTransform(28)
    assert t.resize_size == 32 and EvalTransform().resize_size == 256
    x = t(photo())
    assert x.shape == (3, 28, 28) and torch.equal(x, t(photo()))
    assert EvalTransform(16, resize_size=16)(photo(40, 90).convert("L")).shape == (3, 16, 16)
    with pytest.raises(ValueError, match="resize_size"):
        EvalTransform(32, resize_size=16)
