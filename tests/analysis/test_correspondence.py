"""EsViT correspondence analysis: mirrored positions, scores, pictures."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from vitssl.analysis.correspondence import (
    analyze_correspondence,
    correspondence_scores,
    match_regions_top,
)
from vitssl.backbones.tokens import Tokens


class PositionBackbone(nn.Module):
    """Tokens encode (row, column) of what the patch shows: on an input marked as the flipped
    copy, column c shows the original's column w-1-c, so a perfect model matches there."""

    patch_size = 4
    embed_dim = 3

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        b, _, hh, ww = x.shape
        h, w = hh // 4, ww // 4
        rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        feats = torch.stack([torch.ones(h, w), rows.float() * 10, cols.float()], -1).reshape(1, h * w, 3)
        flipped = x[..., 0, 0, 0].reshape(b, 1, 1) > 100  # marker set by the test below
        feats = feats.expand(b, -1, -1).clone()
        feats[..., 2] = torch.where(flipped[..., 0], (w - 1) - feats[..., 2], feats[..., 2])
        return Tokens(cls=None, patches=feats, grid=(h, w))


def test_matches_on_a_mirror_aware_model_are_all_correct():
    model = PositionBackbone()
    original = torch.zeros(3, 16, 16)
    copy = torch.zeros(3, 16, 16)
    copy[0, 0, 0] = 1000.0
    m = match_regions_top(model, original, copy, top=10)
    assert m.grid == (4, 4) and len(m.correct) == 10
    assert m.correct.all()
    assert correspondence_scores([m], 16) == {"accuracy": 1.0, "distance_error_px": 0.0, "pairs": 10, "images": 1,
                                              "chance": 1 / 16, "accuracy_standard_error": None,
                                              "image_accuracy": [1.0]}


def test_the_standard_error_is_taken_over_images_not_pairs():
    """An image's pairs share its content: two images, one all right and one all wrong, give the
    mean 0.5 with a standard error of 0.5 (sample sd 0.7071 / sqrt 2) whatever their pair counts."""
    aware, original, copy = PositionBackbone(), torch.zeros(3, 16, 16), torch.zeros(3, 16, 16)
    copy[0, 0, 0] = 1000.0
    right = match_regions_top(aware, original, copy, top=10)
    wrong = match_regions_top(aware, original, original, top=10)  # unflipped copy: even grid, none mirrored
    assert right.correct.all() and not wrong.correct.any()
    scores = correspondence_scores([right, wrong], 16)
    assert scores["accuracy"] == 0.5 and scores["image_accuracy"] == [1.0, 0.0]
    assert scores["accuracy_standard_error"] == pytest.approx(0.5)
    scores = correspondence_scores([right, right, wrong, wrong], 16)
    assert scores["accuracy_standard_error"] == pytest.approx(0.57735 / 2, rel=1e-4)  # sd sqrt(1/3), n = 4


def test_a_model_that_ignores_the_flip_scores_by_distance():
    class Unaware(PositionBackbone):
        def forward(self, x):
            out = super().forward(torch.zeros_like(x))
            return out
    m = match_regions_top(Unaware(), torch.zeros(3, 16, 16), torch.zeros(3, 16, 16), top=16)
    # it matches every region to the same column: right only for none (w = 4 is even)
    assert not m.correct.any()
    scores = correspondence_scores([m], 16)
    # column c matched to c instead of 3 - c: |3 - 2c| patches of 4 px, mean over columns 0..3 = 2 -> 8 px
    assert scores["distance_error_px"] == pytest.approx(8.0)


def test_pictures_and_errors(tmp_path):
    from vitssl.backbones import create_backbone

    vit = create_backbone("vit_tiny", patch_size=4, img_size=16, embed_dim=32, depth=1, num_heads=2)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)) for _ in range(3)]
    result = analyze_correspondence(vit, images, image_size=16, out_dir=tmp_path, top=5, max_pictures=2)
    assert result["pairs"] == 15 and 0.0 <= result["accuracy"] <= 1.0 and result["chance"] == 1 / 16
    assert len(result["pictures"]) == 2 and all((tmp_path / f"correspondence_00{i}.png").exists() for i in range(2))
    with pytest.raises(ValueError, match="multiple of the backbone stride 4: pass --image-size 16"):
        analyze_correspondence(vit, images, image_size=18, out_dir=tmp_path)
    # one region a side is its own mirror: every match would be "right", so the size is refused
    with pytest.raises(ValueError, match="one region a side at stride 4.*pass --image-size 12"):
        analyze_correspondence(vit, images, image_size=4, out_dir=tmp_path)
    with pytest.raises(ValueError, match="multiple of the backbone stride 4: pass --image-size 8"):
        analyze_correspondence(vit, images, image_size=6, out_dir=tmp_path)
    assert not any(tmp_path.glob("correspondence_00[2-9].png"))  # refusals draw nothing
    with pytest.raises(ValueError, match="no images"):
        analyze_correspondence(vit, [], image_size=16, out_dir=tmp_path)
