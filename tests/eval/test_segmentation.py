"""Linear segmentation probe on frozen patch features: metrics, data layout, planted probe."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from vitssl.augment.photometric import IMAGENET_MEAN, IMAGENET_STD
from vitssl.backbones.tokens import Tokens
from vitssl.eval import (
    SegmentationDataset,
    confusion_matrix,
    extract_patch_features,
    run_segmentation_probe,
    segmentation_metrics,
    shapes_segmentation,
    train_segmentation_probe,
)
from vitssl.eval.segmentation import build_segmentation_dataset, probe_confusion

# ---------------------------------------------------------------------------------- metrics

TARGET = torch.tensor([[0, 0, 1], [1, 2, 255]])
PRED = torch.tensor([[0, 1, 1], [2, 2, 0]])


def test_confusion_matrix_by_hand():
    # (target, pred) pairs: (0,0) (0,1) (1,1) (1,2) (2,2); the 255 pixel is not counted
    expected = torch.tensor([[1, 1, 0],
                             [0, 1, 1],
                             [0, 0, 1]])
    conf = confusion_matrix(PRED, TARGET, num_classes=3, ignore_index=255)
    assert conf.dtype == torch.int64 and torch.equal(conf, expected)
    assert int(conf.sum()) == 5


def test_metrics_by_hand():
    m = segmentation_metrics(confusion_matrix(PRED, TARGET, 3))
    # IoU = TP / (GT + Pred - TP): class 0: 1/(2+1-1), class 1: 1/(2+2-1), class 2: 1/(1+2-1)
    assert m["per_class_iou"] == pytest.approx([1 / 2, 1 / 3, 1 / 2])
    assert m["miou"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 2) / 3)
    assert m["pixel_acc"] == pytest.approx(3 / 5)
    assert m["mean_acc"] == pytest.approx((1 / 2 + 1 / 2 + 1) / 3)


def test_ignored_pixels_change_nothing():
    target = TARGET.clone()
    target[0, 0] = 255  # was a correct class-0 pixel: now ignored whatever is predicted there
    conf = confusion_matrix(PRED, target, 3)
    assert int(conf.sum()) == 4 and int(conf[0, 0]) == 0
    with pytest.raises(ValueError, match="must lie in"):  # with nothing ignored, 255 is just a bad label
        confusion_matrix(PRED, TARGET, 3, ignore_index=-1)


def test_absent_classes_are_left_out_predicted_only_classes_count():
    m = segmentation_metrics(confusion_matrix(PRED, TARGET, 4))  # class 3 in neither
    assert m["per_class_iou"][3] is None
    assert m["miou"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 2) / 3)
    pred = PRED.clone()
    pred[0, 0] = 3  # class 3 predicted but never true: IoU 0, and it counts
    m = segmentation_metrics(confusion_matrix(pred, TARGET, 4))
    assert m["per_class_iou"][3] == 0.0
    assert m["miou"] == pytest.approx((0 + 1 / 3 + 1 / 2 + 0) / 4)


def test_metric_errors():
    with pytest.raises(ValueError, match="must lie in"):
        confusion_matrix(PRED, TARGET, 2)  # label 2 with 2 classes
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(PRED[:1], TARGET, 3)
    with pytest.raises(ValueError, match="empty"):
        segmentation_metrics(torch.zeros(3, 3, dtype=torch.int64))


# ------------------------------------------------------------------------------------- data

def save_pair(folder, stem, image: np.ndarray, mask: np.ndarray, palette: bool = True):
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "annotations").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / "images" / f"{stem}.png")
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    m = Image.frombytes("P" if palette else "L", mask.shape[::-1], mask.tobytes())
    if palette:
        m.putpalette([v for i in range(256) for v in (i, 255 - i, 0)])
    m.save(folder / "annotations" / f"{stem}.png")


def test_folder_reads_palette_and_grey_masks(tmp_path):
    mask = np.array([[0, 1, 2, 255]] * 3, dtype=np.uint8)
    save_pair(tmp_path, "a", np.zeros((3, 4, 3), np.uint8), mask, palette=True)
    save_pair(tmp_path, "b", np.zeros((3, 4, 3), np.uint8), mask, palette=False)
    ds = SegmentationDataset(tmp_path)
    assert len(ds) == 2
    for i in range(2):
        image, m = ds[i]
        assert image.mode == "RGB" and image.size == (4, 3)
        assert m.dtype == np.int64 and np.array_equal(m, mask)
    _, reduced = SegmentationDataset(tmp_path, reduce_zero_label=True)[0]  # mmseg: 0 -> ignore, k -> k-1
    assert reduced[0].tolist() == [255, 0, 1, 255]


def test_folder_split_layouts(tmp_path):
    mask = np.zeros((4, 4), np.uint8)
    save_pair(tmp_path / "a" / "val", "x", np.zeros((4, 4, 3), np.uint8), mask)
    assert SegmentationDataset(tmp_path / "a", split="val").image_dir == tmp_path / "a" / "val" / "images"
    ade = tmp_path / "ade"  # ADE20K: images/training, annotations/training
    for sub in ("images/training", "annotations/training"):
        (ade / sub).mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(ade / "images/training/y.jpg")
    Image.fromarray(mask).save(ade / "annotations/training/y.png")
    assert len(SegmentationDataset(ade, split="train")) == 1


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SegmentationDataset(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no images/ and annotations/"):
        SegmentationDataset(tmp_path)
    save_pair(tmp_path, "a", np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8))
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "images" / "lonely.jpg")
    with pytest.raises(FileNotFoundError, match="'lonely.jpg' has no mask"):
        SegmentationDataset(tmp_path)
    (tmp_path / "images" / "lonely.jpg").unlink()
    save_pair(tmp_path, "b", np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5), np.uint8))
    with pytest.raises(ValueError, match="masks must match their image"):
        SegmentationDataset(tmp_path)[1]
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "annotations" / "b.png")
    with pytest.raises(ValueError, match="mode RGB"):
        SegmentationDataset(tmp_path)[1]


def test_shapes_pairs():
    ds = shapes_segmentation("val")
    image, mask = ds[0]
    assert image.size == (32, 32) and mask.shape == (32, 32) and mask.dtype == np.int64
    assert ds.class_names[0] == "background" and len(ds.class_names) == 6
    assert set(np.unique(mask)) <= set(range(6)) and mask.max() > 0
    fg = build_segmentation_dataset("shapes-fg", "val")
    assert fg.class_names == ["background", "shape"]
    assert np.array_equal(fg[0][1], (mask > 0).astype(np.int64))


# ------------------------------------------------------------------------------ planted probe

COLOUR_STEP, COLOUR_OFFSET, NUM_CLASSES, PATCH = 60, 20, 4, 4


class ClassInChannel(nn.Module):
    """Fake backbone: patch token k is one-hot in the class its colour encodes, plus noise."""

    patch_size, embed_dim = PATCH, 8

    def __init__(self, noise: float = 0.1) -> None:
        super().__init__()
        self.noise = noise
        self.generator = torch.Generator().manual_seed(0)

    def forward(self, x: torch.Tensor) -> Tokens:
        red = F.avg_pool2d(x[:, :1] * IMAGENET_STD[0] + IMAGENET_MEAN[0], PATCH)[:, 0] * 255  # (B, h, w)
        cls = ((red - COLOUR_OFFSET) / COLOUR_STEP).round().clamp(0, NUM_CLASSES - 1).long()
        feats = F.one_hot(cls, self.embed_dim).float()
        feats = feats + self.noise * torch.randn(feats.shape, generator=self.generator)
        b, h, w, d = feats.shape
        return Tokens(cls=None, patches=feats.reshape(b, h * w, d), grid=(h, w))


def stripes_sample(rng: np.random.Generator, size: int = 16):
    """Horizontal stripes one patch high, each a random class drawn in its own red level."""
    classes = np.repeat(rng.integers(0, NUM_CLASSES, size // PATCH), PATCH)[:, None].repeat(size, 1)
    image = np.zeros((size, size, 3), np.uint8)
    image[..., 0] = COLOUR_OFFSET + COLOUR_STEP * classes
    return image, classes.astype(np.uint8)


def planted_folder(root, n_train: int = 24, n_val: int = 8):
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            save_pair(root / split, f"{i:03d}", *stripes_sample(rng))
    return root


def test_probe_learns_planted_classes(tmp_path):
    root = planted_folder(tmp_path)
    res = run_segmentation_probe(ClassInChannel(), root, root, image_size=16, epochs=15, lr=0.05, batch_size=8)
    assert res["miou"] > 0.9 and res["pixel_acc"] > 0.9
    assert len(res["per_class_iou"]) == NUM_CLASSES == res["num_classes"]
    s = res["settings"]
    assert s["image_size"] == 16 and s["feature_grid"] == [4, 4] and s["train_images"] == 24
    with pytest.raises(ValueError, match="multiple of the patch size 4"):
        run_segmentation_probe(ClassInChannel(), root, root, image_size=18)


def planted_features(n: int, seed: int):
    rng = np.random.default_rng(seed)
    pairs = [stripes_sample(rng) for _ in range(n)]
    pairs = [(Image.fromarray(im), m.astype(np.int64)) for im, m in pairs]
    return pairs


def test_probe_reproducible_and_ignore_index_not_scored():
    train_pairs, val_pairs = planted_features(16, 0), planted_features(6, 1)
    val_pairs[0][1][:4] = 255  # one stripe of one image unlabelled
    train = extract_patch_features(ClassInChannel(), train_pairs, 16, label_size=16)
    val = extract_patch_features(ClassInChannel(), val_pairs, 16)
    assert train.features.shape == (16, 8, 4, 4) and train.features.dtype == torch.float32
    assert train.masks.shape == (16, 16, 16) and len(val.masks) == 6
    a = train_segmentation_probe(train, val, NUM_CLASSES, epochs=3, lr=0.05, batch_size=4, seed=1)
    b = train_segmentation_probe(train, val, NUM_CLASSES, epochs=3, lr=0.05, batch_size=4, seed=1)
    assert a.metrics == b.metrics and torch.equal(a.state_dict["weight"], b.state_dict["weight"])
    probe = nn.Conv2d(8, NUM_CLASSES, 1)
    probe.load_state_dict(a.state_dict)
    conf = probe_confusion(probe, val, NUM_CLASSES)
    assert int(conf.sum()) == 6 * 16 * 16 - 4 * 16  # the 255 stripe is left out
    sweep = train_segmentation_probe(train, val, NUM_CLASSES, epochs=3, lrs=[1e-6, 0.05], batch_size=4, seed=1)
    assert sweep.lr == 0.05 and sweep.metrics == a.metrics
