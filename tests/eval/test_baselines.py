"""The raw-pixel baseline: its features are the eval-transformed images, and they classify."""

from __future__ import annotations

import torch

from vitssl.eval.baselines import RawPixels
from vitssl.eval.features import extract_features
from vitssl.eval.knn import knn_classify


def test_features_are_the_flattened_images():
    images = torch.randn(3, 3, 8, 8)
    tokens = RawPixels(8)(images)
    assert torch.equal(tokens.pooled, images.reshape(3, -1)) and RawPixels(8).embed_dim == 192
    assert len(RawPixels(8).last_blocks(images, 4)) == 4


def test_pixels_separate_two_distinct_image_classes():
    gen = torch.Generator().manual_seed(0)
    pattern = torch.randn(3, 4, 4, generator=gen)  # normalised images: a class is a direction
    noise = 0.3 * torch.randn(40, 3, 4, 4, generator=gen)
    images, labels = torch.cat([pattern.expand(20, -1, -1, -1), -pattern.expand(20, -1, -1, -1)]) + noise, \
        torch.tensor([0] * 20 + [1] * 20)
    feats, ys = extract_features(RawPixels(4), [(images, labels)], "cpu")
    result = knn_classify(feats[::2], ys[::2], feats[1::2], ys[1::2], ks=(5,), temperature=0.07, num_classes=2)
    assert result[5]["top1"] == 1.0
