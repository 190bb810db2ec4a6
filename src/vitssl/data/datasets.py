"""Image folders (ImageFolder layout or flat) that survive bad files in long runs."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"})


def _is_image(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def _images_under(folder: Path) -> list[str]:
    """Image files below `folder`, sorted, without following symlinked folders (no loops)."""
    found = []
    for dirpath, _dirnames, filenames in os.walk(folder, followlinks=False):
        found.extend(os.path.join(dirpath, f) for f in filenames if _is_image(f))
    return sorted(found)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB. 16/32-bit grey is rescaled to 8 bits; alpha is dropped onto black."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        arr = np.clip(arr / hi * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


class ImageFolderDataset(Dataset):
    """`root/<class>/**/*.jpg` (labels = sorted class index) or `root/*.jpg` (labels -1).

    Unreadable or truncated images are reported once each and replaced by the next readable
    one, so a bad file never stops a run.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.exists():
            raise FileNotFoundError(f"data path '{self.root}' does not exist: pass an existing image folder")
        if not self.root.is_dir():
            raise NotADirectoryError(f"data path '{self.root}' is a file, not a folder: pass the folder that holds the images")
        class_dirs = sorted(d for d in self.root.iterdir() if d.is_dir() and not d.is_symlink() and _images_under(d))
        if class_dirs:
            self.classes = [d.name for d in class_dirs]
            self.samples = [(p, i) for i, d in enumerate(class_dirs) for p in _images_under(d)]
        else:
            self.classes = []
            self.samples = [(str(p), -1) for p in sorted(self.root.iterdir()) if p.is_file() and _is_image(p.name)]
        if not self.samples:
            raise ValueError(
                f"no images found under '{self.root}' (extensions {', '.join(sorted(IMAGE_EXTENSIONS))}): "
                "point --data at a folder of images or of class sub-folders"
            )
        self.targets = [label for _, label in self.samples]
        self._reported: set[str] = set()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> Image.Image:
        path = self.samples[index][0]
        with Image.open(path) as img:
            img.load()
            return to_rgb(img)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        for offset in range(len(self.samples)):
            i = (index + offset) % len(self.samples)
            try:
                return self.load(i), self.samples[i][1]
            except Exception as e:  # PIL raises many types for bad files
                path = self.samples[i][0]
                if path not in self._reported:
                    self._reported.add(path)
                    warnings.warn(f"skipping unreadable image '{path}': {type(e).__name__}: {e}", stacklevel=2)
        raise RuntimeError(f"no image under '{self.root}' could be read: check the files are valid images")
