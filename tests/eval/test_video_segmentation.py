"""DINO's DAVIS label propagation: neighbourhood, top-k vote, planted tracking, J and F."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from vitssl.augment.photometric import IMAGENET_MEAN, IMAGENET_STD
from vitssl.backbones.tokens import Tokens
from vitssl.eval import neighbourhood_mask, propagate_labels, run_label_propagation
from vitssl.eval.video_segmentation import boundary_f_measure, feature_size, region_similarity


def test_neighbourhood_is_a_square_window():
    # grid 2 x 3, patches numbered row by row: 0 1 2 / 3 4 5
    mask = neighbourhood_mask((2, 3), radius=1)
    assert mask.shape == (6, 6) and mask.dtype == torch.bool
    assert torch.nonzero(mask[0]).flatten().tolist() == [0, 1, 3, 4]
    assert torch.nonzero(mask[2]).flatten().tolist() == [1, 2, 4, 5]
    assert torch.nonzero(mask[4]).flatten().tolist() == [0, 1, 2, 3, 4, 5]  # diagonals count
    assert torch.equal(mask, mask.T)
    assert neighbourhood_mask((2, 3), radius=0).all()  # 0 switches the restriction off, as in DINO


# One source frame on a 1 x 4 grid; every source patch carries its own label (C = 4), so the
# target's soft label is the vector of weights it gives to each source patch.
SOURCES = torch.tensor([[[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [2.0, 0.0]]])  # cos to [1, 0]: 1, .6, 0, 1
LABELS = torch.eye(4)[None]  # (T=1, C=4, N=4)
TARGET = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])


def weights_of_target_0(topk: int, radius: int) -> list[float]:
    return propagate_labels(TARGET, SOURCES, LABELS, (1, 4), topk=topk, radius=radius, temperature=0.1)[:, 0].tolist()


def test_topk_and_neighbourhood_by_hand():
    # unrestricted, top-2: the two exact matches (patches 0 and 3, after L2 norm) share the vote
    assert weights_of_target_0(2, 0) == pytest.approx([0.5, 0, 0, 0.5])
    # radius 1: patch 3 is out of reach; top-2 of {0, 1} weighted exp(cos / 0.1)
    w0, w1 = math.exp(1 / 0.1), math.exp(0.6 / 0.1)
    assert weights_of_target_0(2, 1) == pytest.approx([w0 / (w0 + w1), w1 / (w0 + w1), 0, 0])
    assert weights_of_target_0(1, 1) == pytest.approx([1, 0, 0, 0])
    # top-k larger than the window: only the 2 reachable patches get weight
    assert weights_of_target_0(4, 1) == pytest.approx([w0 / (w0 + w1), w1 / (w0 + w1), 0, 0])
    # top-k is taken over all context frames together: a second frame whose patch 1 matches
    # exactly joins the two exact matches of the first frame
    second = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]])
    two = propagate_labels(TARGET, torch.cat([SOURCES, second]), LABELS.repeat(2, 1, 1), (1, 4), topk=3, radius=0)
    assert two[:, 0].tolist() == pytest.approx([1 / 3, 1 / 3, 0, 1 / 3])
    assert two.sum(0).tolist() == pytest.approx([1.0] * 4)  # every target's weights sum to 1


def test_region_and_boundary_measures_by_hand():
    a = np.zeros((20, 20), bool)
    a[5:15, 5:15] = True
    b = np.zeros((20, 20), bool)
    b[5:15, 10:20] = True
    assert region_similarity(a, b) == pytest.approx(50 / 150)
    assert region_similarity(a, a) == 1.0 and region_similarity(~a & a, ~a & a) == 1.0  # both empty
    void = np.zeros((20, 20), bool)
    void[:, 15:] = True  # b's part beyond column 15 is not scored
    assert region_similarity(a, b, void) == pytest.approx(50 / 100)
    shifted = np.roll(a, 1, axis=1)
    assert boundary_f_measure(a, a) == 1.0
    assert boundary_f_measure(a, shifted, tolerance=1) == 1.0  # within tolerance
    assert boundary_f_measure(a, np.roll(a, 4, axis=1), tolerance=1) < 0.6
    assert boundary_f_measure(a, np.zeros_like(a)) == 0.0
    assert boundary_f_measure(np.zeros_like(a), np.zeros_like(a)) == 1.0


def test_feature_size_keeps_aspect_and_patch_multiples():
    assert feature_size((480, 854), 480, 16) == (480, 848)
    assert feature_size((48, 64), 24, 4) == (24, 32)
    assert feature_size((30, 41), None, 8) == (24, 40)


# ------------------------------------------------------------------------------ planted video

CELL = 8  # original pixels per patch: frames are halved to short side 32, patch 4
H, W = 64, 96


class ColourPatches(nn.Module):
    """Fake backbone: each patch token is (mean red, mean green, mean darkness) of the patch."""

    patch_size, embed_dim = 4, 3

    def forward(self, x: torch.Tensor) -> Tokens:
        mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
        std = torch.tensor(IMAGENET_STD)[:, None, None]
        rgb = F.avg_pool2d(x * std + mean, self.patch_size)  # (B, 3, h, w) in [0, 1]
        dark = 1 - rgb[:, :2].sum(1, keepdim=True)
        feats = torch.cat([rgb[:, :2], dark], 1).clamp(min=0) + 1e-3
        b, d, h, w = feats.shape
        return Tokens(cls=None, patches=feats.flatten(2).transpose(1, 2), grid=(h, w))


def planted_sequence(root, n_frames: int = 5):
    """64 x 96 frames: a red 3 x 3-patch object (id 1) moving right one patch per frame and a still
    green one (id 2)."""
    frames, gt = root / "frames", root / "gt"
    frames.mkdir()
    gt.mkdir()
    for t in range(n_frames):
        image = np.zeros((H, W, 3), np.uint8)
        ids = np.zeros((H, W), np.uint8)
        red = (slice(CELL, 4 * CELL), slice(CELL * (1 + t), CELL * (4 + t)))
        green = (slice(5 * CELL, 8 * CELL), slice(8 * CELL, 11 * CELL))
        image[red + (0,)] = 255
        image[green + (1,)] = 255
        ids[red], ids[green] = 1, 2
        Image.fromarray(image).save(frames / f"{t:05d}.jpg" if t % 2 else frames / f"{t:05d}.png")
        mask = Image.frombytes("P", (W, H), ids.tobytes())
        mask.putpalette([0, 0, 0, 200, 0, 0, 0, 200, 0] + [0] * 759)
        mask.save(gt / f"{t:05d}.png")
    return frames, gt


def test_tracks_a_moving_object(tmp_path):
    frames, gt = planted_sequence(tmp_path)
    out = tmp_path / "out"
    res = run_label_propagation(ColourPatches(), frames, gt / "00000.png", out, gt_dir=gt, short_side=32)
    assert res["frames"] == 5 and res["objects"] == [1, 2] and res["feature_grid"] == [8, 12]
    assert res["scored_frames"] == 4  # the first frame is given, not scored
    # not exactly 1: bilinear upsampling of patch labels rounds the objects' corners (DINO does too)
    assert res["J_mean"] > 0.95 and res["F_mean"] > 0.95 and res["JF_mean"] > 0.95
    assert all(v["J"] > 0.95 for v in res["per_object"].values())
    written = sorted(p.name for p in out.iterdir())
    assert written == [f"{t:05d}.png" for t in range(5)]
    last = Image.open(out / "00004.png")
    assert last.mode == "P" and last.size == (W, H) and last.getpalette()[3:6] == [200, 0, 0]
    assert np.array_equal(np.asarray(Image.open(out / "00000.png")), np.asarray(Image.open(gt / "00000.png")))


def test_clear_errors(tmp_path):
    frames, gt = planted_sequence(tmp_path, n_frames=2)
    Image.fromarray(np.ones((10, 10), np.uint8)).save(tmp_path / "small.png")
    with pytest.raises(ValueError, match="first mask is 10x10 but the first frame is 96x64"):
        run_label_propagation(ColourPatches(), frames, tmp_path / "small.png", tmp_path / "o", short_side=32)
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="mode RGB"):
        run_label_propagation(ColourPatches(), frames, tmp_path / "rgb.png", tmp_path / "o", short_side=32)
    Image.fromarray(np.zeros((H, W), np.uint8)).save(tmp_path / "blank.png")
    with pytest.raises(ValueError, match="holds no object"):
        run_label_propagation(ColourPatches(), frames, tmp_path / "blank.png", tmp_path / "o")
    with pytest.raises(FileNotFoundError, match="frames folder"):
        run_label_propagation(ColourPatches(), tmp_path / "none", gt / "00000.png", tmp_path / "o")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no ground-truth mask"):
        run_label_propagation(ColourPatches(), frames, gt / "00000.png", tmp_path / "o",
                              gt_dir=tmp_path / "empty", short_side=32)


def twins_sequence(root, n_frames: int = 3):
    """Two identical red 3 x 3-patch objects (ids 1 and 2) six patches apart, both moving right."""
    frames, gt = root / "frames", root / "gt"
    frames.mkdir()
    gt.mkdir()
    for t in range(n_frames):
        image, ids = np.zeros((H, W, 3), np.uint8), np.zeros((H, W), np.uint8)
        for obj, col in ((1, t), (2, t + 6)):
            box = (slice(2 * CELL, 5 * CELL), slice(col * CELL, (col + 3) * CELL))
            image[box + (0,)], ids[box] = 255, obj
        Image.fromarray(image).save(frames / f"{t:05d}.png")
        Image.fromarray(ids).save(gt / f"{t:05d}.png")
    return frames, gt


def test_neighbourhood_keeps_look_alike_objects_apart(tmp_path):
    frames, gt = twins_sequence(tmp_path)
    kw = dict(gt_dir=gt, short_side=32, topk=5)
    near = run_label_propagation(ColourPatches(), frames, gt / "00000.png", tmp_path / "a",
                                 size_mask_neighborhood=2, **kw)
    anywhere = run_label_propagation(ColourPatches(), frames, gt / "00000.png", tmp_path / "b",
                                     size_mask_neighborhood=0, **kw)
    assert near["J_mean"] > 0.95
    assert anywhere["J_mean"] < 0.8  # features alone cannot tell the twins apart
