"""Segmentation data: image folders with class-id masks (ADE20K / VOC layouts) and the built-in
shapes set as (image, mask) pairs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from vitssl.data import build_dataset
from vitssl.data.builtin import SHAPE_CLASSES
from vitssl.data.datasets import to_rgb

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MASK_MODES = ("P", "L", "I", "I;16")  # single-channel class-id images
SPLIT_NAMES = {"train": ("train", "training"), "val": ("val", "validation")}  # ADE20K: training/validation

def _split_folders(root: Path, split: str | None) -> tuple[Path, Path]:
    """(images, annotations) folders: ROOT/<split>/{images,annotations}, then
    ROOT/{images,annotations}/<split> (ADE20K's own layout), then ROOT/{images,annotations}."""
    candidates = []
    for name in (SPLIT_NAMES.get(split, (split,)) if split else ()):
        candidates += [(root / name / "images", root / name / "annotations"),
                       (root / "images" / name, root / "annotations" / name)]
    candidates.append((root / "images", root / "annotations"))
    for images, masks in candidates:
        if images.is_dir() and masks.is_dir():
            return images, masks
    raise FileNotFoundError(
        f"segmentation folder '{root}' has no images/ and annotations/ folders: expected "
        f"ROOT/images/*.jpg with ROOT/annotations/*.png (or ROOT/{split or '<split>'}/images ...)")


def read_label_map(path: str | os.PathLike[str]) -> np.ndarray:
    """(H, W) int64 class ids of a palette (P) or greyscale PNG; colour-coded RGB is refused
    because its colours are not class ids."""
    with Image.open(path) as img:
        if img.mode not in MASK_MODES:
            raise ValueError(f"mask '{path}' has mode {img.mode}: masks must be palette (P) or "
                             "greyscale (L) PNGs of class ids, not colour-coded images")
        return np.asarray(img).astype(np.int64)


def reduce_zero(mask: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """mmseg's `reduce_zero_label`: ADE20K's 0 ("other") becomes ignore, every class id k -> k-1."""
    out = mask - 1
    out[(mask == 0) | (mask == ignore_index)] = ignore_index
    return out


class SegmentationDataset(Dataset):
    """Images and per-pixel class-id masks in the ADE20K / VOC layout.

    `ROOT/images/<stem>.{jpg,jpeg,png}` with `ROOT/annotations/<stem>.png`; with a split, also
    `ROOT/<split>/images` or `ROOT/images/<split>` (train also as 'training', val as
    'validation'). Items are (PIL RGB image, (H, W) int64 mask); `ignore_index` pixels are not
    scored. Whether ADE20K's 0 = "other" counts is the caller's choice: `reduce_zero_label`.
    """

    def __init__(self, root: str | os.PathLike[str], split: str | None = None,
                 ignore_index: int = 255, reduce_zero_label: bool = False) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"segmentation folder '{self.root}' does not exist: pass a folder "
                                    "with images/ and annotations/")
        self.image_dir, self.mask_dir = _split_folders(self.root, split)
        self.images = sorted(p for p in self.image_dir.iterdir()
                             if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        if not self.images:
            raise ValueError(f"no .jpg/.png images in '{self.image_dir}': add images or pass another folder")
        for image in self.images:
            if not (self.mask_dir / f"{image.stem}.png").is_file():
                raise FileNotFoundError(f"image '{image.name}' has no mask '{self.mask_dir / image.stem}.png': "
                                        "add the mask or remove the image")
        self.ignore_index = ignore_index
        self.reduce_zero_label = reduce_zero_label
        self.class_names: list[str] | None = None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Image.Image, np.ndarray]:
        path = self.images[index]
        mask_path = self.mask_dir / f"{path.stem}.png"
        with Image.open(path) as img:
            image = to_rgb(img)
            image.load()
        mask = read_label_map(mask_path)
        if mask.shape != (image.height, image.width):
            raise ValueError(f"mask '{mask_path.name}' is {mask.shape[1]}x{mask.shape[0]} but image "
                             f"'{path.name}' is {image.width}x{image.height}: masks must match their image")
        return image, reduce_zero(mask, self.ignore_index) if self.reduce_zero_label else mask


class _ShapesPairs(Dataset):
    def __init__(self, split: str, seed: int, foreground: bool = False) -> None:
        self.base = build_dataset("shapes", split=split, seed=seed)
        self.foreground = foreground
        self.class_names = ["background", "shape"] if foreground else ["background", *SHAPE_CLASSES]

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[Image.Image, np.ndarray]:
        mask = self.base.mask(index).astype(np.int64)
        return self.base[index][0], (mask > 0).astype(np.int64) if self.foreground else mask


def shapes_segmentation(split: str = "train", seed: int = 0, foreground: bool = False) -> Dataset:
    """(image, mask) pairs of the built-in 'shapes' set: 6 classes, 0 = background, k+1 = shape k.

    `foreground=True` ('shapes-fg'): 2 classes, shape vs background. Which shape a 4-px patch
    belongs to is mostly not visible in the patch, so the 6-class probe mostly measures the
    background; figure-ground separation is what local features can show on this set.
    """
    return _ShapesPairs(split, seed, foreground)


def build_segmentation_dataset(source: str | os.PathLike[str] | Dataset, split: str,
                               ignore_index: int = 255, reduce_zero_label: bool = False) -> Dataset:
    """'shapes' / 'shapes-fg', a segmentation folder, or an already built dataset of (image, mask) pairs."""
    if isinstance(source, Dataset):
        return source
    if isinstance(source, str) and source in ("shapes", "shapes-fg"):
        return shapes_segmentation(split, foreground=source == "shapes-fg")
    return SegmentationDataset(source, split, ignore_index, reduce_zero_label)
