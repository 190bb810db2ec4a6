"""ViTDet details of the MAE-Lite detection preset: windowed attention (exact when a window
covers the map, padding that changes nothing, score tensors linear in the patches) and
large-scale jitter that keeps boxes, masks and image together."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from vitssl.backbones import create_backbone
from vitssl.data.shapes_coco import write_shapes_coco
from vitssl.eval.detection import PRESETS, build_detector, load_coco, train_detector
from vitssl.eval.detection.coco import CocoDetection
from vitssl.eval.detection.jitter import apply_jitter, large_scale_jitter
from vitssl.eval.detection.windows import window_attention


def _vit(depth: int = 4, class_token: bool = True):
    torch.manual_seed(0)
    return create_backbone("vit_tiny", patch_size=4, img_size=32, embed_dim=32, depth=depth, num_heads=2,
                           class_token=class_token).eval()


@pytest.mark.parametrize("class_token", [True, False], ids=["cls", "no-cls"])
@pytest.mark.parametrize("window", [12, 14])  # the 8x12 grid exactly, and a window larger than it
def test_a_window_covering_the_map_gives_global_attentions_output(window, class_token):
    vit = _vit(class_token=class_token)
    windowed = copy.deepcopy(vit)
    window_attention(windowed, window, global_blocks=[3])
    x = torch.randn(2, 3, 32, 48)  # 8 x 12 patches
    with torch.no_grad():
        torch.testing.assert_close(windowed(x).patches, vit(x).patches, rtol=0, atol=1e-6)
    assert [n for n, _ in windowed.named_parameters()] == [n for n, _ in vit.named_parameters()]


def test_padded_windows_equal_attention_over_their_real_tokens_alone():
    vit = _vit()
    attn = vit.blocks[0].attn
    windowed = copy.deepcopy(vit)
    window_attention(windowed, 4, global_blocks=[])
    tokens = torch.randn(1, 1 + 6 * 6, 32)  # CLS + a 6x6 grid: windows of 4x4, 4x2, 2x4 and 2x2 real tokens
    windowed.blocks[0].attn.window_state["grid"] = (6, 6)
    with torch.no_grad():
        out = windowed.blocks[0].attn(tokens)[:, 1:].reshape(1, 6, 6, 32)
        grid = tokens[:, 1:].reshape(1, 6, 6, 32)
        for rows, cols in [(slice(0, 4), slice(4, 6)), (slice(4, 6), slice(0, 4)), (slice(4, 6), slice(4, 6))]:
            part = grid[:, rows, cols].reshape(1, -1, 32)
            alone = attn(torch.cat([tokens[:, :1], part], dim=1))[:, 1:]
            torch.testing.assert_close(out[:, rows, cols].reshape(1, -1, 32), alone, rtol=0, atol=1e-6)


def _score_elements(vit, side: int, monkeypatch) -> list[int]:
    """Elements of each attention call's score matrix (batch x heads x queries x keys)."""
    sizes: list[int] = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def counting(q, k, v, *args, **kwargs):
        sizes.append(q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2])
        return sdpa(q, k, v, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting)
    with torch.no_grad():
        vit(torch.randn(1, 3, side, side))
    monkeypatch.undo()
    return sizes


def test_windowed_blocks_score_tensors_grow_linearly_with_the_patches(monkeypatch):
    vit = _vit()
    window_attention(vit, 4, global_blocks=[3])
    small, large = _score_elements(vit, 32, monkeypatch), _score_elements(vit, 64, monkeypatch)  # 64 -> 256 patches
    assert len(small) == len(large) == 4
    assert [b / a for a, b in zip(small[:3], large[:3])] == [4.0] * 3  # 4x the windows of (1 + 16)^2 scores
    assert large[3] / small[3] == pytest.approx(257**2 / 65**2)  # the global block: quadratic
    assert large[0] * 10 < large[3]


def test_the_vitdet_preset_windows_a_vit_and_refuses_other_backbones():
    preset = PRESETS["vitdet_t_640"]
    assert (preset.window_size, preset.global_blocks, preset.lsj_scale) == (14, (2, 5, 8, 11), (0.1, 2.0))
    model = build_detector(_vit(depth=12), 2, preset)
    windowed = [i for i, b in enumerate(model.backbone.body.blocks) if hasattr(b.attn, "window")]
    assert windowed == [0, 1, 3, 4, 6, 7, 9, 10]
    with pytest.raises(ValueError, match="include \\[5, 8, 11\\], outside this 4-block ViT"):
        build_detector(_vit(depth=4), 2, preset)
    swin = create_backbone("swin_tiny", img_size=32, embed_dim=16, depth=1, num_heads=1)
    with pytest.raises(ValueError, match="for a plain ViT, not a Swin"):
        build_detector(swin, 2, preset)
    for bad in [(0.0, 2.0), (2.0, 0.1)]:
        with pytest.raises(ValueError, match="lsj_scale"):
            replace(preset, lsj_scale=bad)


def _objects(height: int = 40, width: int = 60):
    """An image whose red channel is exactly the union of two masks (a disc and a triangle) and
    boxes drawn tightly around each mask."""
    yy, xx = np.mgrid[:height, :width]
    disc = (yy - 12) ** 2 + (xx - 14) ** 2 <= 8**2
    triangle = (yy >= 18) & (yy < 36) & (xx >= 34) & (xx - 34 <= yy - 18)
    masks = torch.from_numpy(np.stack([disc, triangle]).astype(np.uint8))
    boxes = []
    for m in masks.numpy():
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    image = torch.zeros(3, height, width)
    image[0] = masks.amax(0).float()
    return image, {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor([1, 2]), "masks": masks}


def test_jittered_boxes_still_bound_their_masks_and_masks_follow_the_image():
    image, target = _objects()
    g = torch.Generator().manual_seed(0)
    checked = 0
    for _ in range(40):
        out, t = large_scale_jitter(image, target, 48, (0.1, 2.0), g)
        assert out.shape == (3, 48, 48) and t["masks"].shape[1:] == (48, 48)
        assert len(t["boxes"]) == len(t["labels"]) == len(t["masks"])
        for box, mask in zip(t["boxes"], t["masks"]):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            if len(xs):  # a mask shrunk below a pixel by a 0.1 scale has nothing left to bound
                x1, y1, x2, y2 = box.tolist()
                assert x1 - 1 <= xs.min() and xs.max() + 1 <= x2 + 1 and y1 - 1 <= ys.min() and ys.max() + 1 <= y2 + 1
                checked += 1
        union = t["masks"].amax(0) if len(t["masks"]) else torch.zeros(48, 48, dtype=torch.uint8)
        image_part = out[1] < 0.25  # the padding is grey, the image has no green
        assert not union[~image_part].any()  # no mask in the padding
        red = out[0] > 0.5
        clear = image_part & ((out[0] < 0.25) | (out[0] > 0.75))  # not a blurred edge pixel
        if len(t["masks"]) == 2:  # every object kept: the image's red pixels are the masks' union
            assert (red == union.bool())[clear].float().mean() > 0.97
        assert not union.bool()[image_part & (out[0] < 0.1)].any()  # no mask pixel on clear background
    assert checked > 30


def test_objects_that_leave_the_crop_are_dropped_with_their_label_and_mask():
    image, target = _objects()
    out, t = apply_jitter(image, target, 48, (80, 120), top=0, left=0)  # 2x, the top-left 48x48
    assert t["labels"].tolist() == [1]  # the disc (x 12-46 at 2x) stays, the triangle (x >= 68) left
    assert t["boxes"].tolist() == [[12.0, 8.0, 46.0, 42.0]]
    ys, xs = torch.nonzero(t["masks"][0], as_tuple=True)
    assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (12, 46, 8, 42)
    _, t = apply_jitter(image, target, 48, (80, 120), top=32, left=72)  # the bottom-right window
    assert t["labels"].tolist() == [2]  # the disc left; the triangle (2x: x 68-104, y 36-72) clipped
    assert t["boxes"].tolist() == [[0.0, 4.0, 32.0, 40.0]]
    ys, xs = torch.nonzero(t["masks"][0], as_tuple=True)
    assert xs.min() >= 0 and xs.max() + 1 <= 32 and ys.min() >= 4 and ys.max() + 1 <= 40
    _, t = apply_jitter(image, target, 48, (20, 30), top=0, left=0)  # 0.5x: all inside, padded to 48
    assert t["labels"].tolist() == [1, 2] and t["masks"].shape == (2, 48, 48)


def test_the_detector_trains_an_iteration_with_windows_and_jitter(tmp_path):
    coco = write_shapes_coco(tmp_path / "coco", train_images=4, val_images=2)
    train, val = load_coco(coco["train"]), load_coco(coco["val"])
    preset = replace(PRESETS["tiny"], window_size=4, global_blocks=(1,), lsj_scale=(0.5, 1.5), batch_size=2)
    data = CocoDetection(train, jitter=(64, 0.5, 1.5))
    assert all(data[i][0].shape == (3, 64, 64) for i in range(4))
    torch.manual_seed(0)
    model = build_detector(_vit(depth=2), train.num_classes, preset)
    result = train_detector(model, train, val, preset, max_iters=2)
    assert result.iterations == 2 and np.isfinite(result.history[-1]["loss"])
