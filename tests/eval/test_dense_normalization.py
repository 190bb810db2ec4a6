"""Dense and transfer evaluations feed the backbone images normalised with the run's own mean/std (its
`eval_input`), as k-NN and the linear probe do, not ImageNet's whatever the run used."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from detection_helpers import tiny_run
from PIL import Image
from torch.utils.data import Subset

import vitssl.eval.detection as detection_package
import vitssl.eval.segmentation.finetune as finetune_module
import vitssl.eval.segmentation.probe as probe_module
import vitssl.eval.video_segmentation as video_module
from vitssl.commands.detection import run_detection
from vitssl.commands.evaluate import run_segmentation, run_video_segmentation
from vitssl.data.shapes_coco import write_shapes_coco
from vitssl.eval.segmentation import shapes_segmentation
from vitssl.eval.segmentation.finetune import DenseRecipe, run_dense_segmentation

MEAN, STD = [0.2, 0.3, 0.4], [0.1, 0.2, 0.3]  # far from ImageNet's


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    stats = [f"method.crops.mean=[{','.join(map(str, MEAN))}]", f"method.crops.std=[{','.join(map(str, STD))}]"]
    return tiny_run(tmp_path_factory.mktemp("own_stats") / "run", stats)


def own_normalised(image: Image.Image, size: tuple[int, int], resample=Image.Resampling.BICUBIC) -> torch.Tensor:
    """(3, H, W) of `image` resized and normalised with MEAN/STD, by numpy (no vitssl code)."""
    pixels = np.asarray(image.convert("RGB").resize(size, resample), dtype=np.float64) / 255.0
    return torch.from_numpy(((pixels - MEAN) / STD).transpose(2, 0, 1)).float()


def _pairs(split: str, n: int):
    pairs = Subset(shapes_segmentation(split, foreground=True), range(n))
    pairs.class_names = ["background", "shape"]
    return pairs


def _closest(x: torch.Tensor, candidates: list[torch.Tensor]) -> float:
    return min(float((x - c).abs().max()) for c in candidates)


def test_fine_tuned_segmentation_sees_the_runs_statistics(run, monkeypatch):
    seen: list[torch.Tensor] = []

    class Recording(finetune_module.Segmenter):
        def forward(self, x):
            seen.append(x.detach().clone())
            return super().forward(x)

    monkeypatch.setattr(finetune_module, "Segmenter", Recording)
    train, val = _pairs("train", 4), _pairs("val", 1)
    r = run_dense_segmentation(run, train, val, head="linear", finetune=True, image_size=16, epochs=1, batch_size=4,
                               device="cpu", recipe=DenseRecipe(lr=1e-4))
    assert r["settings"]["mean"] == MEAN and r["settings"]["std"] == STD
    expected = [own_normalised(image, (16, 16)) for image, _ in train]
    expected += [e.flip(-1) for e in expected]
    batch = seen[0]
    assert len(batch) == 4 and all(_closest(x, expected) < 1e-5 for x in batch)
    val_image = own_normalised(val[0][0], (16, 16))
    assert float((seen[-1][0] - val_image).abs().max()) < 1e-5  # the sliding window's one crop


def test_segmentation_probe_sees_the_runs_statistics(run, monkeypatch):
    seen: list[torch.Tensor] = []
    original = probe_module.patch_feature_maps
    monkeypatch.setattr(probe_module, "patch_feature_maps", lambda b, x: seen.append(x.clone()) or original(b, x))
    train = _pairs("train", 3)
    run_segmentation(run, train, _pairs("val", 2), image_size=16, epochs=1, batch_size=8, device="cpu")
    expected = torch.stack([own_normalised(image, (16, 16)) for image, _ in train])
    torch.testing.assert_close(seen[0], expected, atol=1e-5, rtol=0)


def test_video_label_propagation_sees_the_runs_statistics(run, tmp_path, monkeypatch):
    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8)).save(frames / f"{i:05d}.png")
    mask = np.zeros((16, 16), np.uint8)
    mask[4:10, 4:10] = 1
    Image.fromarray(mask, mode="L").save(tmp_path / "first.png")
    seen: list[torch.Tensor] = []
    original = video_module.patch_feature_maps
    monkeypatch.setattr(video_module, "patch_feature_maps", lambda b, x: seen.append(x.clone()) or original(b, x))
    run_video_segmentation(run, str(frames), str(tmp_path / "first.png"), tmp_path / "out", short_side=16,
                           device="cpu")
    with Image.open(frames / "00000.png") as first:
        expected = own_normalised(first, (16, 16), Image.Resampling.BILINEAR)
    torch.testing.assert_close(seen[0][0], expected, atol=1e-5, rtol=0)


def test_detection_normalises_with_the_runs_statistics(run, tmp_path, monkeypatch):
    coco = write_shapes_coco(tmp_path / "coco", train_images=2, val_images=1)
    seen: list[torch.Tensor] = []
    build = detection_package.build_detector

    def recording_build(*args, **kwargs):
        model = build(*args, **kwargs)
        model.backbone.register_forward_pre_hook(lambda m, inputs: seen.append(inputs[0].detach().clone()))
        return model

    monkeypatch.setattr(detection_package, "build_detector", recording_build)
    run_detection(run, coco["val"], coco["val"], iters=1, batch_size=1, device="cpu")
    with Image.open(next((tmp_path / "coco" / "val").iterdir())) as image:
        expected = own_normalised(image, image.size)
    torch.testing.assert_close(seen[-1][0, :, :64, :64], expected, atol=1e-5, rtol=0)  # the val image, unpadded


def test_transfer_linear_features_use_the_runs_statistics(run, tmp_path, monkeypatch):
    from vitssl.eval.transfer import protocols
    from vitssl.eval.transfer.protocols import TransferOptions
    from vitssl.eval.transfer.suite import run_suite

    transforms = []
    real = protocols._features
    monkeypatch.setattr(protocols, "_features", lambda b, d, transform, *a: transforms.append(transform) or
                        real(b, d, transform, *a))
    options = TransferOptions(image_size=16, batch_size=512, num_workers=0, device="cpu", cs=[1.0])
    run_suite(run, "builtin", tmp_path / "out", sets=["builtin-digits"], options=options)
    assert transforms and all((list(t.mean), list(t.std)) == (MEAN, STD) for t in transforms)
