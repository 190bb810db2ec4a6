import pickle
import warnings

import numpy as np
import pytest
from PIL import Image, ImageFile

from vitssl.data import ArrayImageDataset, ImageFolderDataset, build_dataset
from vitssl.data.datasets import UnreadableImageWarning

SIZE = (12, 10)  # PIL (width, height)


def save(path, colour=(200, 30, 60)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", SIZE, colour).save(path)


def pixel(img):
    return tuple(int(c) for c in np.asarray(img)[0, 0])


def test_imagefolder_layout_classes_labels_and_counts(tmp_path):
    for c, n in (("dog", 2), ("cat", 3), ("emu", 1)):
        for i in range(n):
            save(tmp_path / c / f"{i}.png")
    save(tmp_path / "dog" / "nested" / "deeper" / "x.JPEG")  # found recursively, any case
    (tmp_path / "dog" / "README.txt").write_text("not an image")
    (tmp_path / "cat" / "labels.csv").write_text("a,b")
    (tmp_path / "notes").mkdir()  # a folder without images is not a class
    (tmp_path / "notes" / "a.md").write_text("#")
    ds = ImageFolderDataset(tmp_path)
    assert ds.classes == ["cat", "dog", "emu"] and ds.num_classes == 3
    assert len(ds) == 7 and sorted(ds.targets) == [0, 0, 0, 1, 1, 1, 2]
    for path, label in ds.samples:  # every label is the index of the folder it sits in
        assert path.split("/")[len(str(tmp_path).split("/"))] == ds.classes[label]
    for i in range(len(ds)):
        img, label = ds[i]
        assert img.mode == "RGB" and img.size == SIZE and label == ds.targets[i]


def test_flat_folder_has_no_labels(tmp_path):
    for i, ext in enumerate(("jpg", "PNG", "bmp", "webp", "tiff", "gif", "ppm")):
        save(tmp_path / f"{i}.{ext}")
    Image.new("L", SIZE).save(tmp_path / "g.pgm")
    (tmp_path / "data.json").write_text("{}")
    (tmp_path / "empty_dir").mkdir()
    ds = ImageFolderDataset(tmp_path)
    assert ds.classes == [] and ds.num_classes == 0 and ds.targets == [-1] * 8
    assert all(img.mode == "RGB" and img.size == SIZE and y == -1 for img, y in ds)


def test_loose_images_beside_class_folders_are_ignored_with_a_warning(tmp_path):
    save(tmp_path / "a" / "0.png")
    save(tmp_path / "loose.png")
    with pytest.warns(UserWarning, match="ignoring 1 image"):
        ds = ImageFolderDataset(tmp_path)
    assert len(ds) == 1 and ds.classes == ["a"]


def test_hidden_folders_are_not_classes(tmp_path):
    save(tmp_path / "a" / "0.png")
    save(tmp_path / ".ipynb_checkpoints" / "0.png")
    save(tmp_path / "a" / ".cache" / "1.png")
    ds = ImageFolderDataset(tmp_path)
    assert ds.classes == ["a"] and len(ds) == 1


def _write_mode(path, mode):
    w, h = SIZE
    if mode == "I;16":
        Image.fromarray(np.full((h, w), 257 * 77, dtype=np.uint16)).save(path)
    elif mode == "I":
        Image.fromarray(np.full((h, w), 257 * 77, dtype=np.int32)).save(path.with_suffix(".tif"))
    elif mode == "F":
        Image.fromarray(np.full((h, w), 0.5, dtype=np.float32)).save(path.with_suffix(".tif"))
    elif mode == "CMYK":
        Image.new("CMYK", SIZE, (0, 255, 255, 0)).save(path.with_suffix(".jpg"), quality=100)
    elif mode == "P_transparent":
        img = Image.new("P", SIZE, 1)
        img.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
        img.save(path, transparency=1)
    elif mode == "RGBA":
        Image.new("RGBA", SIZE, (255, 255, 255, 0)).save(path)
    elif mode == "LA":
        Image.new("LA", SIZE, (200, 255)).save(path)
    elif mode == "P":
        img = Image.new("P", SIZE, 2)
        img.putpalette([0, 0, 0, 0, 0, 0, 10, 20, 30] + [0] * 759)
        img.save(path)
    else:
        Image.new(mode, SIZE, 1 if mode == "1" else 100).save(path)


# expected top-left pixel: grey levels, the palette colour, black for fully transparent pixels
@pytest.mark.parametrize(
    "mode, expected",
    [
        ("L", (100, 100, 100)),
        ("1", (255, 255, 255)),
        ("LA", (200, 200, 200)),
        ("P", (10, 20, 30)),
        ("P_transparent", (0, 0, 0)),
        ("RGBA", (0, 0, 0)),
        ("I;16", (77, 77, 77)),
        ("I", (77, 77, 77)),
        ("F", (128, 128, 128)),
        ("CMYK", (255, 0, 0)),
    ],
)
def test_every_image_mode_comes_back_rgb(tmp_path, mode, expected):
    _write_mode(tmp_path / "x.png", mode)
    img, label = ImageFolderDataset(tmp_path)[0]
    assert img.mode == "RGB" and img.size == SIZE and label == -1
    assert np.allclose(pixel(img), expected, atol=2)


def test_bad_files_are_skipped_with_one_warning_each(tmp_path):
    colours = {"a.png": (255, 0, 0), "c.bmp": (0, 255, 0), "e.png": (0, 0, 255)}
    for name, colour in colours.items():
        save(tmp_path / name, colour)
    big = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    big.save(tmp_path / "full.jpg")
    jpeg = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "full.jpg").unlink()
    (tmp_path / "b_truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (tmp_path / "d_random.png").write_bytes(np.random.default_rng(0).bytes(300))
    ds = ImageFolderDataset(tmp_path)
    assert [p.split("/")[-1] for p, _ in ds.samples] == ["a.png", "b_truncated.jpg", "c.bmp", "d_random.png", "e.png"]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        first = list(ds)  # the old iteration protocol stops at IndexError
        second = [ds[i] for i in range(len(ds))]
    bad = [w for w in record if issubclass(w.category, UnreadableImageWarning)]
    assert sorted(str(w.message).split("'")[1].split("/")[-1] for w in bad) == ["b_truncated.jpg", "d_random.png"]
    assert all("\n" not in str(w.message) for w in bad)
    assert len(first) == len(second) == 5
    assert all(img.mode == "RGB" and img.size == SIZE for img, _ in first + second)
    # good samples are themselves; a bad one is replaced by a readable one drawn with a generator
    # seeded by its index: the same in every pass and in a fresh data set
    good = set(colours.values())
    assert [pixel(img) for img, _ in second][0::2] == [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    assert all(pixel(img) in good for img, _ in second)
    assert [pixel(img) for img, _ in first] == [pixel(img) for img, _ in second]
    fresh = ImageFolderDataset(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreadableImageWarning)
        assert [pixel(fresh[i][0]) for i in (3, 1)] == [pixel(second[i][0]) for i in (3, 1)]
    report = ds.skip_report()
    assert report.count == 2 and report.by_reason() == {"truncated": 1, "not an image": 1}
    assert report.substitutions == 4  # two passes over two bad files
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_bad_last_image_wraps_around(tmp_path):
    save(tmp_path / "a.png", (1, 2, 3))
    (tmp_path / "z.png").write_bytes(b"\x89PNG broken")
    ds = ImageFolderDataset(tmp_path)
    with pytest.warns(UnreadableImageWarning, match="not an image"):
        assert pixel(ds[1][0]) == (1, 2, 3)
    assert pixel(ds[-1][0]) == (1, 2, 3)


def test_index_out_of_range(tmp_path):
    save(tmp_path / "a.png")
    ds = ImageFolderDataset(tmp_path)
    with pytest.raises(IndexError):
        ds[1]
    with pytest.raises(IndexError):
        ds[-2]
    assert ds[np.int64(0)][0].size == SIZE


def test_all_unreadable_raises(tmp_path):
    (tmp_path / "x.png").write_bytes(b"nope")
    (tmp_path / "y.jpg").write_bytes(b"")
    ds = ImageFolderDataset(tmp_path)
    with pytest.warns(UnreadableImageWarning), pytest.raises(RuntimeError, match="could be read") as err:
        ds[0]
    assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)


def test_clear_errors_for_bad_paths(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError, match="does not exist") as err:
        ImageFolderDataset(missing)
    assert str(missing) in str(err.value)
    file = tmp_path / "file.png"
    save(file)
    with pytest.raises(NotADirectoryError, match="is a file") as err:
        ImageFolderDataset(file)
    assert str(file) in str(err.value)
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("x")
    (empty / "sub" / "image.svg").write_text("<svg/>")
    with pytest.raises(ValueError, match="no images found under") as err:
        ImageFolderDataset(empty)
    assert str(empty) in str(err.value) and ".png" in str(err.value) and "\n" not in str(err.value)


def test_symlink_loops_do_not_hang(tmp_path):
    save(tmp_path / "c" / "a.png")
    (tmp_path / "c" / "loop").symlink_to(tmp_path / "c")
    (tmp_path / "c" / "up").symlink_to(tmp_path)
    (tmp_path / "root_link").symlink_to(tmp_path)  # a "class" that is the root itself
    ds = ImageFolderDataset(tmp_path)
    assert len(ds) == 1 and ds.classes == ["c"]


def test_symlinked_class_folder_is_used(tmp_path):
    save(tmp_path / "store" / "b" / "0.png")
    (tmp_path / "data").mkdir()
    save(tmp_path / "data" / "a" / "0.png")
    (tmp_path / "data" / "b").symlink_to(tmp_path / "store" / "b")
    ds = ImageFolderDataset(tmp_path / "data")
    assert ds.classes == ["a", "b"] and ds.targets == [0, 1]


def test_dataset_pickles_for_worker_processes(tmp_path):
    save(tmp_path / "a.png", (5, 6, 7))
    ds = pickle.loads(pickle.dumps(ImageFolderDataset(tmp_path)))
    assert pixel(ds[0][0]) == (5, 6, 7)


def test_build_dataset_dispatch(tmp_path):
    save(tmp_path / "train" / "x" / "0.png")
    save(tmp_path / "train" / "y" / "0.png")
    save(tmp_path / "val" / "x" / "0.png")
    train, val = build_dataset(str(tmp_path), "train"), build_dataset(tmp_path, "val")
    assert isinstance(train, ImageFolderDataset) and len(train) == 2 and train.classes == ["x", "y"]
    assert len(val) == 1
    flat = tmp_path / "flat"
    save(flat / "0.png")
    assert len(build_dataset(str(flat), "val")) == 1  # no val/ sub-folder: the folder itself
    assert isinstance(build_dataset("digits", "val"), ArrayImageDataset)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_dataset(str(tmp_path / "nowhere"))
