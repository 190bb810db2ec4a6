"""The few images an analysis looks at: a file, a folder or a built-in set's validation split."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from vitssl.data import BUILTIN_DATASETS, build_dataset
from vitssl.data.datasets import is_image_file, to_rgb


def load_images(source: str, limit: int = 16) -> list[Image.Image]:
    """Up to `limit` RGB images from an image file, a folder (searched recursively, sorted) or a
    built-in set's validation split; unreadable files are skipped."""
    if source in BUILTIN_DATASETS:
        dataset = build_dataset(source, split="val")
        return [to_rgb(dataset[i][0]) for i in range(min(limit, len(dataset)))]
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"image path '{source}' does not exist: pass an image file or a folder of images")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p.name))
    images = []
    for file in files:
        if len(images) == limit:
            break
        try:
            with Image.open(file) as im:
                im.load()
                images.append(to_rgb(im))
        except (UnidentifiedImageError, OSError):
            continue
    if not images:
        raise ValueError(f"no readable images under '{source}': pass a folder of JPEG/PNG images")
    return images
