"""Device crops: RandomResizedCrop boxes by torchvision's rule, and roi_align resampling against
torchvision's resize, padded canvases or one image at a time."""

import torch
import torchvision.transforms.v2.functional as TF
from synthetic_images import natural_image

from vitssl.augment.gpu_crops import resample_crops, sample_crop_boxes


def test_full_image_box_is_a_plain_resize():
    img = natural_image(40, 48)
    box = torch.tensor([[[0.0, 0.0, 40.0, 48.0]]])
    up = resample_crops([img], box, 96)[0]  # enlarging: bilinear, align_corners=False
    torch.testing.assert_close(up, TF.resize(img.float() / 255, [96, 96], antialias=False), atol=1e-5, rtol=0)
    down = resample_crops([img], box, 16)[0]  # shrinking 2.5-3x: area-averaged, close to antialiased bilinear
    reference = TF.resize(img.float() / 255, [16, 16], antialias=True)
    assert (down - reference).abs().mean() < 0.02 and (down - reference).abs().max() < 0.15


def test_a_crop_box_cuts_the_right_region():
    img = natural_image(40, 48)
    box = torch.tensor([[[8.0, 12.0, 16.0, 20.0]]])  # top, left, h, w; enlarged to 32 x 40? square: 32
    out = resample_crops([img], box, 16)[0]
    expected = TF.resize(img[:, 8:24, 12:32].float() / 255, [16, 16], antialias=False)
    # 16 x 20 -> 16 x 16: rows are 1:1, columns shrink 1.25x (2 samples per bin, averaged)
    assert (out - expected).abs().mean() < 0.02


def test_padded_and_per_image_paths_agree(monkeypatch):
    import vitssl.augment.gpu_crops as module

    images = [natural_image(72, 96), natural_image(30, 40, seed=1)]
    boxes = torch.tensor([[[5.0, 7.0, 20.0, 30.0], [0.0, 0.0, 30.0, 40.0]]])
    monkeypatch.setattr(module, "MAX_PADDING_OVERHEAD", 100.0)
    padded = resample_crops(images, boxes, 16)
    monkeypatch.setattr(module, "MAX_PADDING_OVERHEAD", 0.0)
    per_image = resample_crops(images, boxes, 16)
    torch.testing.assert_close(padded, per_image, atol=1e-5, rtol=0)


def test_crop_boxes_fall_back_like_torchvision_on_extreme_images():
    """A 1000 x 60 strip almost never fits a 3/4-4/3 box of 40-100% area: both fall back to its centre."""
    from vitssl.augment.photometric import sample_resized_crop

    g = torch.Generator().manual_seed(0)
    cpu = torch.tensor([sample_resized_crop(1000, 60, (0.4, 1.0), g) for _ in range(200)], dtype=torch.float32)
    n = 200
    u = torch.rand(n, 22, generator=torch.Generator().manual_seed(1))
    gpu = sample_crop_boxes(torch.full((n,), 60.0), torch.full((n,), 1000.0), torch.full((n,), 0.4),
                            torch.full((n,), 1.0), u[:, :10], u[:, 10:20], u[:, 20], u[:, 21])
    assert torch.equal(gpu[0], torch.tensor([0.0, 460.0, 60.0, 80.0]))  # round(60 * 4/3) = 80, centred
    assert torch.equal(cpu[0], gpu[0]) and (gpu == gpu[0]).all() and (cpu == cpu[0]).all()


def test_mixed_orientations_share_one_canvas_per_orientation():
    from vitssl.augment.gpu_crops import PaddedImages

    images = [natural_image(72, 96), natural_image(96, 72, seed=1), natural_image(70, 90, seed=2),
              natural_image(90, 70, seed=3)]
    padded = PaddedImages.build(images)
    assert padded.members == [[0, 2], [1, 3]]
    boxes = torch.tensor([[[5.0, 7.0, 20.0, 30.0], [0.0, 0.0, 30.0, 40.0], [3.0, 2.0, 40.0, 50.0],
                           [10.0, 0.0, 60.0, 30.0]]])
    together = resample_crops(padded, boxes, 16)
    alone = torch.cat([resample_crops([img], boxes[:, i:i + 1], 16) for i, img in enumerate(images)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
