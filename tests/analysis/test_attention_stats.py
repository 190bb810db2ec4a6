"""Mean attention distance and entropy: hand-made attentions with known answers, the reference's
slice-then-softmax equivalence, and the per-layer-per-head report."""

from __future__ import annotations

import json
import math

import pytest
import torch

from vitssl.analysis.attention_stats import (
    attention_distance,
    attention_entropy,
    attention_statistics,
    grid_distances,
    patch_attention,
    plot_attention_stats,
)
from vitssl.backbones.attention_capture import AttentionCapture
from vitssl.backbones.vit import ViT


def tiny_vit(**kw) -> ViT:
    return ViT(embed_dim=32, depth=2, num_heads=2, patch_size=4, img_size=16, **kw).eval()


@pytest.mark.parametrize("unit, expected", [("grid", 5.0), ("pixel", 20.0), ("compat_x14", 70.0)])
def test_one_hot_attention_to_a_known_offset(unit: str, expected: float) -> None:
    grid = (4, 5)
    attn = torch.zeros(1, 1, 20, 20)
    attn[0, 0, 0, 3 * 5 + 4] = 1.0  # query (0, 0) looks only at (3, 4): 3-4-5 triangle
    distance = attention_distance(attn, grid_distances(grid, (4, 4), unit))
    assert distance[0, 0, 0].item() == pytest.approx(expected)


def test_pixel_distance_uses_each_patch_side() -> None:
    d = grid_distances((2, 2), patch_size=(2, 3), unit="pixel")
    assert d[0, 3].item() == pytest.approx(math.hypot(2, 3))


def test_entropy_of_uniform_attention_is_log_n_and_of_one_hot_is_zero() -> None:
    n = 12
    assert attention_entropy(torch.full((1, n, n), 1 / n))[0, 0].item() == pytest.approx(math.log(n))
    assert attention_entropy(torch.eye(n)[None]).abs().max().item() == 0.0


def test_patch_attention_cuts_prefix_and_optionally_renormalises() -> None:
    probs = torch.randn(2, 3, 5, 5).softmax(-1)
    cut = patch_attention(probs, 1, renormalise=False)
    assert cut.shape == (2, 3, 4, 4) and (cut.sum(-1) < 1).all()
    torch.testing.assert_close(patch_attention(probs, 1).sum(-1), torch.ones(2, 3, 4))


def test_default_equals_softmax_over_patch_logits_as_the_reference_does() -> None:
    vit = tiny_vit()
    images = torch.randn(3, 3, 16, 16)
    stats = attention_statistics(vit, [images], distance_unit="grid")
    with AttentionCapture(vit, [1]) as cap:
        vit(images)
    a = cap.logits[1][:, :, 1:, 1:].softmax(-1)
    expected = attention_distance(a, grid_distances((4, 4), unit="grid")).mean(dim=(0, 2))
    torch.testing.assert_close(torch.tensor(stats["distance"][1]), expected.float(), atol=1e-5, rtol=1e-5)
    entropy = attention_entropy(a).mean(dim=(0, 2))
    torch.testing.assert_close(torch.tensor(stats["entropy"][1]), entropy.float(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("class_token", [True, False])
def test_statistics_report_is_per_layer_per_head_and_json_able(tmp_path, class_token: bool) -> None:
    vit = tiny_vit(class_token=class_token)
    batches = [(torch.randn(2, 3, 16, 16), torch.zeros(2)) for _ in range(3)]
    stats = attention_statistics(vit, batches, max_images=5)
    json.dumps(stats)
    assert stats["images"] == 5 and stats["num_prefix_tokens"] == int(class_token)
    assert len(stats["distance"]) == 2 and all(len(layer) == 2 for layer in stats["distance"])
    assert all(0 <= e <= math.log(16) + 1e-6 for layer in stats["entropy"] for e in layer)
    grid = attention_statistics(vit, batches, distance_unit="grid", max_images=5)
    torch.testing.assert_close(torch.tensor(stats["distance"]), 4 * torch.tensor(grid["distance"]))
    for name, data in {"one.png": stats, "two.png": {"a": stats, "b": grid | {"distance_unit": "pixel"}}}.items():
        path = plot_attention_stats(data, tmp_path / name)
        assert path.read_bytes()[:4] == b"\x89PNG"


def test_statistics_errors() -> None:
    vit = tiny_vit()
    with pytest.raises(ValueError, match="no images"):
        attention_statistics(vit, [])
    with pytest.raises(ValueError, match="different image sizes"):
        attention_statistics(vit, [torch.randn(1, 3, 16, 16), torch.randn(1, 3, 8, 8)])
    with pytest.raises(ValueError, match="unknown distance unit"):
        grid_distances((2, 2), unit="meters")


@pytest.mark.parametrize("images, warned", [(4, True), (40, False)])
def test_fewer_images_than_the_feature_width_warn(images, warned, caplog, monkeypatch) -> None:
    from vitssl.engine.logging import log

    monkeypatch.setattr(log, "propagate", True)
    vit = tiny_vit()
    attention_statistics(vit, [torch.randn(images, 3, 16, 16)])
    messages = [r.getMessage() for r in caplog.records if "attention statistics from" in r.getMessage()]
    assert bool(messages) == warned
    if warned:
        assert f"fewer than the feature width {vit.embed_dim}" in messages[0]
