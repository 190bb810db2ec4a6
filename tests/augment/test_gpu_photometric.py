"""Batched colour ops on device views: each against torchvision's own, per view, and the costly
hue round trip run once per call."""

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from vitssl.augment.gpu_photometric import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    color_jitter,
    gaussian_blur,
    rgb_to_grayscale,
    solarize,
)
from vitssl.augment.photometric import BRIGHTNESS, CONTRAST, HUE, SATURATION


def float_views(n: int = 5, size: int = 20, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g)


@pytest.mark.parametrize(("ours", "theirs", "factors", "tol"), [
    (adjust_brightness, TF.adjust_brightness, [0.6, 1.0, 1.4, 0.0, 1.2], 1e-6),
    (adjust_contrast, TF.adjust_contrast, [0.6, 1.0, 1.4, 0.0, 1.2], 1e-5),
    (adjust_saturation, TF.adjust_saturation, [0.8, 1.0, 1.2, 0.0, 1.1], 1e-5),
    (adjust_hue, TF.adjust_hue, [-0.1, 0.0, 0.1, 0.5, -0.05], 1e-4),
])
def test_colour_ops_match_torchvision_per_view(ours, theirs, factors, tol):
    x = float_views()
    x[0, :, :4] = 0.5  # grey pixels: zero saturation, hue undefined
    out = ours(x, torch.tensor(factors))
    for n, f in enumerate(factors):
        torch.testing.assert_close(out[n], theirs(x[n], f), atol=tol, rtol=0)


def test_grayscale_solarize_and_blur_match_torchvision():
    x = float_views(size=24)
    torch.testing.assert_close(rgb_to_grayscale(x), TF.rgb_to_grayscale(x), atol=1e-6, rtol=0)
    torch.testing.assert_close(solarize(x), TF.solarize(x, 128 / 255), atol=0, rtol=0)
    sigmas = [0.1, 0.5, 1.0, 1.7, 2.0]
    out = gaussian_blur(x, torch.tensor(sigmas), radius=6)
    for n, s in enumerate(sigmas):
        torch.testing.assert_close(out[n], TF.gaussian_blur(x[n], [13, 13], [s, s]), atol=1e-5, rtol=0)


def test_colour_jitter_follows_each_views_own_order():
    x = float_views(n=3)
    factors = torch.tensor([[1.3, 0.7, 1.2, 0.08], [0.8, 1.3, 0.9, -0.06], [1.1, 1.2, 0.0, 0.1]])
    order = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0], [2, 3, 0, 1]])
    ops = {BRIGHTNESS: TF.adjust_brightness, CONTRAST: TF.adjust_contrast,
           SATURATION: TF.adjust_saturation, HUE: TF.adjust_hue}
    out = color_jitter(x, factors, order)
    for n in range(3):
        expected = x[n]
        for op in order[n].tolist():
            expected = ops[op](expected, float(factors[n, op]))
        torch.testing.assert_close(out[n], expected, atol=1e-4, rtol=0)


def test_identity_parameters_leave_views_unchanged():
    x = float_views()
    torch.testing.assert_close(color_jitter(x, torch.tensor([[1.0, 1.0, 1.0, 0.0]]).repeat(5, 1),
                                            torch.arange(4).repeat(5, 1)), x, atol=0, rtol=0)


def test_hue_round_trip_runs_once_per_call(monkeypatch):
    import vitssl.augment.gpu_photometric as module

    calls = []
    original = module.adjust_hue
    monkeypatch.setattr(module, "adjust_hue", lambda x, f: calls.append(len(x)) or original(x, f))
    views = float_views(n=6)
    factors = torch.tensor([[1.2, 0.8, 1.1, 0.05]] * 6)
    order = torch.stack([torch.randperm(4, generator=torch.Generator().manual_seed(i)) for i in range(6)])
    module.color_jitter(views, factors, order)
    assert calls == [6]
