"""Batched device multi-crop: ops against torchvision's, statistics against the CPU pipeline.

Everything runs on CPU tensors; the module never branches on the device.
"""

import math
from dataclasses import replace

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from synthetic_images import natural_image

from vitssl.augment.gpu_multicrop import GPUMultiCrop
from vitssl.augment.multicrop import MultiCrop, MultiCropConfig

SMALL = MultiCropConfig(global_crops_size=32, local_crops_size=16, local_crops_number=4)


# -- (b) exact checks against torchvision.transforms.v2.functional --------------------------------

def test_forced_ops_in_the_pipeline_match_torchvision():
    """Probabilities forced to 1 with a degenerate range: each op's effect, through the whole pipeline."""
    img = natural_image(32, 32)
    cfg = replace(SMALL, global_crops_scale=[1.0, 1.0], local_crops_number=0, flip_prob=1.0, color_jitter_prob=1.0,
                  brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, grayscale_prob=1.0,
                  blur_prob=[1.0, 1.0, 1.0], blur_radius=[1.5, 1.5], solarization_prob=[1.0, 1.0, 0.0],
                  mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0])
    views = GPUMultiCrop(cfg)([img], torch.Generator().manual_seed(0))
    x = TF.horizontal_flip(img.float() / 255)
    x = TF.rgb_to_grayscale(x, num_output_channels=3)
    x = TF.gaussian_blur(x, [13, 13], [1.5, 1.5])
    x = TF.solarize(x, 128 / 255)
    for view in views:
        torch.testing.assert_close(view[0], x, atol=1e-4, rtol=0)


# -- (c) shapes, dtypes, determinism --------------------------------------------------------------

def test_views_shapes_dtypes_and_normalisation_mirror_the_cpu_collate():
    cfg = replace(SMALL, local_crops_number=[2, 1], local_crops_size=[16, 24])
    aug = GPUMultiCrop(cfg)
    images = [natural_image(72, 96), natural_image(50, 40, seed=1), natural_image(33, 70, seed=2)]
    views = aug(images, torch.Generator().manual_seed(0))
    assert aug.view_sizes == MultiCrop(cfg).view_sizes == [32, 32, 16, 16, 24]
    assert [tuple(v.shape) for v in views] == [(3, 3, s, s) for s in aug.view_sizes]
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in views)
    low = (0 - torch.tensor(cfg.mean)) / torch.tensor(cfg.std)
    high = (1 - torch.tensor(cfg.mean)) / torch.tensor(cfg.std)
    for v in views:
        assert (v >= low.reshape(3, 1, 1) - 1e-5).all() and (v <= high.reshape(3, 1, 1) + 1e-5).all()


def test_same_seed_same_views_other_seed_other_views():
    aug = GPUMultiCrop(SMALL)
    images = [natural_image(72, 96), natural_image(60, 60, seed=1)]
    a = aug(images, torch.Generator().manual_seed(3))
    b = aug(images, torch.Generator().manual_seed(3))
    c = aug(images, torch.Generator().manual_seed(4))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_bad_input_fails_with_one_line():
    aug = GPUMultiCrop(SMALL)
    with pytest.raises(ValueError, match="uint8"):
        aug([torch.rand(3, 20, 20)], torch.Generator())
    with pytest.raises(ValueError, match="empty"):
        aug([], torch.Generator())


# -- (a) statistics against the CPU pipeline --------------------------------------------------------

def binomial_close(fraction: float, p: float, n: int, sigmas: float = 4.5) -> bool:
    return abs(fraction - p) <= sigmas * math.sqrt(max(p * (1 - p), 1e-4) / n) + 1e-9


@pytest.fixture(scope="module")
def cpu_and_gpu_params():
    """View decisions for one 500 x 375 image: 400 CPU draws and 4000 batched draws (x 10 views)."""
    cfg = MultiCropConfig()
    cpu = MultiCrop(cfg)
    g = torch.Generator().manual_seed(0)
    cpu_views = [cpu.sample_params(500, 375, g) for _ in range(400)]  # [draw][view]
    gpu = GPUMultiCrop(cfg).sample_params([(375, 500)] * 4000, torch.Generator().manual_seed(0))
    return cfg, cpu_views, gpu


def _gpu_by_view(values: torch.Tensor, views: int = 10) -> torch.Tensor:
    return values.reshape(views, -1)


def test_decision_frequencies_match_the_config_and_the_cpu_pipeline(cpu_and_gpu_params):
    cfg, cpu_views, gpu = cpu_and_gpu_params
    kinds = {"global 1": [0], "global 2": [1], "local": list(range(2, 10))}
    prob_index = {"global 1": 0, "global 2": 1, "local": 2}
    decisions = {
        "flip": (lambda p: p.flip, gpu.flip, lambda k: cfg.flip_prob),
        "jitter": (lambda p: p.jitter, (gpu.factors != torch.tensor([1.0, 1.0, 1.0, 0.0])).any(1),
                   lambda k: cfg.color_jitter_prob),
        "grayscale": (lambda p: p.grayscale, gpu.grayscale, lambda k: cfg.grayscale_prob),
        "blur": (lambda p: p.blur, gpu.blur_sigma > 0, lambda k: cfg.blur_prob[prob_index[k]]),
        "solarize": (lambda p: p.solarize, gpu.solarize, lambda k: cfg.solarization_prob[prob_index[k]]),
    }
    for name, (cpu_get, gpu_values, expected) in decisions.items():
        by_view = _gpu_by_view(gpu_values)
        for kind, views in kinds.items():
            cpu_flags = [cpu_get(draw[v]) for draw in cpu_views for v in views]
            gpu_flags = by_view[views].flatten()
            p = expected(kind)
            assert binomial_close(sum(cpu_flags) / len(cpu_flags), p, len(cpu_flags)), (name, kind, "cpu")
            assert binomial_close(float(gpu_flags.float().mean()), p, gpu_flags.numel()), (name, kind, "gpu")


def test_jitter_factor_and_blur_sigma_ranges(cpu_and_gpu_params):
    cfg, _, gpu = cpu_and_gpu_params
    jittered = (gpu.factors != torch.tensor([1.0, 1.0, 1.0, 0.0])).any(1)
    f = gpu.factors[jittered]
    for column, (low, high) in enumerate([(0.6, 1.4), (0.6, 1.4), (0.8, 1.2), (-0.1, 0.1)]):
        assert low <= float(f[:, column].min()) and float(f[:, column].max()) <= high
        assert float(f[:, column].mean()) == pytest.approx((low + high) / 2, abs=0.01)
    orders = {tuple(o) for o in gpu.order[jittered].tolist()}
    assert len(orders) == 24  # every permutation occurs
    sigma = gpu.blur_sigma[gpu.blur_sigma > 0]
    assert 0.1 <= float(sigma.min()) and float(sigma.max()) <= 2.0
    assert float(sigma.mean()) == pytest.approx(1.05, abs=0.03)


@pytest.mark.parametrize("kind", ["global", "local"])
def test_crop_area_distribution_matches_the_cpu_pipeline(cpu_and_gpu_params, kind):
    _, cpu_views, gpu = cpu_and_gpu_params
    views = [0, 1] if kind == "global" else list(range(2, 10))
    cpu_area = torch.tensor([draw[v].height * draw[v].width / (500 * 375) for draw in cpu_views for v in views])
    boxes = gpu.boxes.reshape(10, -1, 4)[views].reshape(-1, 4)
    gpu_area = boxes[:, 2] * boxes[:, 3] / (500 * 375)
    assert float(gpu_area.mean()) == pytest.approx(float(cpu_area.mean()), abs=4 * float(cpu_area.std()) / len(cpu_area) ** 0.5)
    q = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9])
    torch.testing.assert_close(torch.quantile(gpu_area, q), torch.quantile(cpu_area, q), atol=0.035, rtol=0)
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= 375).all()
    assert (boxes[:, 1] >= 0).all() and (boxes[:, 1] + boxes[:, 3] <= 500).all()
    aspect = boxes[:, 3] / boxes[:, 2]  # in [3/4, 4/3] up to the rounding of small boxes
    assert float(aspect.min()) >= 0.7 and float(aspect.max()) <= 1.43
    cpu_aspect = torch.tensor([draw[v].width / draw[v].height for draw in cpu_views for v in views])
    torch.testing.assert_close(torch.quantile(aspect, q), torch.quantile(cpu_aspect, q), atol=0.06, rtol=0)


def test_output_channel_statistics_match_the_cpu_pipeline():
    cfg = SMALL
    img = natural_image(72, 96)
    pil = Image.fromarray(img.permute(1, 2, 0).numpy())
    cpu, gpu = MultiCrop(cfg), GPUMultiCrop(cfg)
    g = torch.Generator().manual_seed(0)
    draws = 150
    cpu_views = [cpu(pil, g) for _ in range(draws)]
    gpu_views = gpu([img] * draws, torch.Generator().manual_seed(0))
    for name, views in {"global": [0, 1], "local": list(range(2, 6))}.items():
        a = torch.stack([d[v] for d in cpu_views for v in views])  # (n, 3, S, S)
        b = torch.cat([gpu_views[v] for v in views])
        mean_a, mean_b = a.mean(dim=(0, 2, 3)), b.mean(dim=(0, 2, 3))
        std_a, std_b = a.std(dim=(0, 2, 3)), b.std(dim=(0, 2, 3))
        # tolerance ~4 standard errors of a per-view mean over these draws
        tol = 4 * a.mean(dim=(2, 3)).std(dim=0) / len(a) ** 0.5
        assert ((mean_a - mean_b).abs() <= tol).all(), (name, mean_a, mean_b, tol)
        torch.testing.assert_close(std_b, std_a, atol=0.08, rtol=0.08)


# -- (c) work a GPU pays for: host copies, syncs, repeated passes -----------------------------------

def test_rendering_a_batch_copies_only_the_image_sizes_and_never_syncs():
    from sync_probe import record

    aug = GPUMultiCrop(SMALL)
    images = [natural_image(72, 96, seed=i) for i in range(3)]
    aug(images, torch.Generator().manual_seed(0))  # the first call copies the per-view tables once
    _, ops = record(aug, images, torch.Generator().manual_seed(1))
    assert ops.syncs == 0, ops.calls
    assert ops.host_data_copies == 1, ops.calls  # the batch's (H, W) sizes

