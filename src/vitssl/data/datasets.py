"""Image folders (ImageFolder layout or flat) that survive bad files in long runs."""

from __future__ import annotations

import operator
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}
)


class UnreadableImageWarning(UserWarning):
    """An image file that could not be decoded and is skipped (filterable on its own)."""


def is_image_file(name: str) -> bool:
    """True for a non-hidden file name with an accepted image extension (any case)."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _images_under(folder: str) -> list[str]:
    """Image files below `folder`, sorted; symlinked folders are not entered, so no loops."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]  # .ipynb_checkpoints etc.
        found.extend(os.path.join(dirpath, f) for f in filenames if is_image_file(f))
    return sorted(found)


def _to_uint8_grey(arr: np.ndarray, full_scale: float) -> Image.Image:
    grey = np.clip(np.rint(arr.astype(np.float64) * (255.0 / full_scale)), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB, so every sample reaches the transforms in the same form.

    16-bit grey maps 0..65535 to 0..255; 32-bit int is read as 16-bit when it exceeds 255 and
    float as 0..1 when it stays within it; transparent pixels are composited onto black.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16"):
        return _to_uint8_grey(np.asarray(img), 65535.0)
    if mode == "I":
        arr = np.asarray(img)
        return _to_uint8_grey(arr, 65535.0 if arr.size and arr.max() > 255 else 255.0)
    if mode == "F":
        arr = np.nan_to_num(np.asarray(img))
        return _to_uint8_grey(arr, 1.0 if arr.size and arr.max() <= 1.0 else 255.0)
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    elif mode == "La":  # premultiplied grey+alpha has no direct RGBA conversion
        img = img.convert("LA")
    if img.mode in ("RGBA", "RGBa", "LA", "PA"):
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    return img.convert("RGB")


class ImageFolderDataset(Dataset):
    """`root/<class>/**/<image>` (label = index of the sorted class name) or flat `root/<image>`
    (label -1).

    Unreadable or truncated images are reported once each (`UnreadableImageWarning`) and
    replaced by the next readable one, so a bad file never stops a long run.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if not self.root.exists():
            raise FileNotFoundError(
                f"data path '{self.root}' does not exist: pass an existing image folder"
            )
        if not self.root.is_dir():
            raise NotADirectoryError(
                f"data path '{self.root}' is a file, not a folder: pass the folder that holds the images"
            )
        top_files, classes, samples = [], [], []
        for entry in sorted(os.scandir(self.root), key=lambda e: e.name):
            if entry.name.startswith("."):
                continue
            if entry.is_dir():  # follows a symlinked class folder, but never one back up the tree
                if entry.is_symlink() and self._points_above_root(entry.path):
                    continue
                images = _images_under(entry.path)
                if images:
                    samples.extend((p, len(classes)) for p in images)
                    classes.append(entry.name)
            elif entry.is_file() and is_image_file(entry.name):
                top_files.append(entry.path)
        if classes and top_files:
            warnings.warn(
                f"ignoring {len(top_files)} image(s) directly under '{self.root}': it has class "
                "sub-folders, so only images inside them are used",
                stacklevel=2,
            )
        if not classes:
            samples = [(p, -1) for p in top_files]
        if not samples:
            exts = " ".join(sorted(IMAGE_EXTENSIONS))
            raise ValueError(
                f"no images found under '{self.root}' (accepted extensions: {exts}): pass a folder "
                "of images or of class sub-folders of images"
            )
        self.classes: list[str] = classes
        self.samples: list[tuple[str, int]] = samples
        self.targets: list[int] = [label for _, label in samples]
        self._bad: set[int] = set()

    def _points_above_root(self, link: str) -> bool:
        target, root = Path(link).resolve(), self.root.resolve()
        return target == root or target in root.parents

    @property
    def num_classes(self) -> int:
        """Number of classes; 0 for a flat folder."""
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> Image.Image:
        """Decode sample `index` fully (raises on a bad file) and convert it to RGB."""
        with Image.open(self.samples[index][0]) as img:
            img.load()
            return to_rgb(img)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        n = len(self.samples)
        index = operator.index(index)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        for offset in range(n):
            i = (index + offset) % n
            if i in self._bad:
                continue
            try:
                return self.load(i), self.samples[i][1]
            except Exception as e:  # PIL raises many types for bad files
                self._bad.add(i)
                warnings.warn(
                    f"skipping unreadable image '{self.samples[i][0]}': {type(e).__name__}: {e}",
                    UnreadableImageWarning,
                    stacklevel=2,
                )
        raise RuntimeError(
            f"no image under '{self.root}' could be read ({n} files tried): check that they are "
            "valid, complete image files"
        )
