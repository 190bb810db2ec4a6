import numpy as np
import pytest

from vitssl.data import build_dataset, load_builtin
from vitssl.data.builtin import SHAPE_CLASSES


def test_mnist_split_sizes_disjoint_and_stratified():
    train, val = load_builtin("mnist", "train"), load_builtin("mnist", "val")
    assert (len(train), len(val), len(load_builtin("mnist", "all"))) == (4000, 1000, 5000)
    assert set(val.targets) == set(range(10))
    train_rows = {im.tobytes() for im in train.images}
    assert not any(im.tobytes() in train_rows for im in val.images[:200])
    img, label = train[0]
    assert img.size == (28, 28) and img.mode == "RGB" and 0 <= label < 10
    assert np.array_equal(load_builtin("mnist", "val").images, val.images)


def test_digits_are_upscaled():
    ds = load_builtin("digits", "train")
    assert ds[0][0].size == (32, 32) and ds.num_classes == 10


def test_shapes_masks_match_labels_and_are_seeded():
    ds = load_builtin("shapes", "train", seed=0)
    assert ds.num_classes == len(SHAPE_CLASSES) and len(ds) == 2000
    counts = np.bincount(ds.labels, minlength=len(SHAPE_CLASSES))
    assert counts.min() == counts.max()
    for i in range(50):
        mask = ds.mask(i)
        assert mask.any() and set(np.unique(mask)) == {0, ds.labels[i] + 1}
        assert 0.05 < (mask > 0).mean() < 0.8
    again = load_builtin("shapes", "train", seed=0)
    other = load_builtin("shapes", "train", seed=1)
    assert np.array_equal(again.images, ds.images) and not np.array_equal(other.images, ds.images)


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown built-in data set 'cifar'"):
        load_builtin("cifar")
    with pytest.raises(ValueError, match="unknown split 'test'"):
        load_builtin("mnist", "test")
    with pytest.raises(ValueError, match="no masks|no pixel masks"):
        build_dataset("mnist").mask(0)
