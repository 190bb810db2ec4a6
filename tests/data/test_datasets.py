import numpy as np
import pytest
from PIL import Image

from vitssl.data import ImageFolderDataset, build_dataset


def save(path, mode="RGB", size=(12, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        Image.fromarray(np.full(size[::-1], 40000, dtype=np.uint16)).save(path)
    elif mode == "CMYK":
        Image.new("CMYK", size, (10, 20, 30, 0)).save(path.with_suffix(".jpg"))
        return
    else:
        Image.new(mode, size).save(path)


def test_imagefolder_layout(tmp_path):
    for c in ("cat", "dog"):
        for i in range(3):
            save(tmp_path / c / f"{i}.png")
    save(tmp_path / "dog" / "nested" / "deep.png")
    (tmp_path / "dog" / "README.txt").write_text("not an image")
    ds = ImageFolderDataset(tmp_path)
    assert ds.classes == ["cat", "dog"] and ds.num_classes == 2
    assert sorted(ds.targets) == [0, 0, 0, 1, 1, 1, 1]
    img, label = ds[0]
    assert img.mode == "RGB" and img.size == (12, 10) and label == 0


def test_flat_folder_has_no_labels(tmp_path):
    for i in range(4):
        save(tmp_path / f"{i}.jpg")
    ds = ImageFolderDataset(tmp_path)
    assert ds.classes == [] and ds.targets == [-1] * 4


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "I;16", "CMYK", "1"])
def test_every_image_mode_comes_back_rgb(tmp_path, mode):
    save(tmp_path / "x.png", mode)
    img, _ = ImageFolderDataset(tmp_path)[0]
    assert img.mode == "RGB" and img.size == (12, 10)
    if mode == "I;16":
        assert np.asarray(img)[0, 0, 0] == int(40000 / 65535 * 255)


def test_bad_files_are_skipped_with_one_warning_each(tmp_path):
    save(tmp_path / "a.png")
    save(tmp_path / "b.png")
    good = (tmp_path / "a.png").read_bytes()
    (tmp_path / "a2_truncated.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "a3_random.png").write_bytes(np.random.default_rng(0).bytes(300))
    ds = ImageFolderDataset(tmp_path)
    assert len(ds) == 4
    with pytest.warns(UserWarning) as record:
        images = [ds[i][0] for i in range(len(ds))] + [ds[i][0] for i in range(len(ds))]
    assert all(im.mode == "RGB" for im in images)
    assert sorted(str(w.message).split("'")[1].split("/")[-1] for w in record) == ["a2_truncated.png", "a3_random.png"]


def test_all_unreadable_raises(tmp_path):
    (tmp_path / "x.png").write_bytes(b"nope")
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="no image under"):
        ImageFolderDataset(tmp_path)[0]


def test_clear_errors_for_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolderDataset(tmp_path / "missing")
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="is a file"):
        ImageFolderDataset(tmp_path / "file.png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="no images found under"):
        ImageFolderDataset(tmp_path / "empty")


def test_symlink_loop_does_not_hang(tmp_path):
    save(tmp_path / "c" / "a.png")
    (tmp_path / "c" / "loop").symlink_to(tmp_path / "c")
    assert len(ImageFolderDataset(tmp_path)) == 1


def test_build_dataset_uses_split_subfolders(tmp_path):
    save(tmp_path / "train" / "x" / "0.png")
    save(tmp_path / "train" / "y" / "0.png")
    save(tmp_path / "val" / "x" / "0.png")
    assert len(build_dataset(str(tmp_path), "train")) == 2
    assert len(build_dataset(str(tmp_path), "val")) == 1
