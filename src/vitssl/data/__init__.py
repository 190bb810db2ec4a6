"""Data: image folders, built-in demo sets, and seeded training loaders."""

from __future__ import annotations

import os
from pathlib import Path

from vitssl.data.builtin import BUILTIN_DATASETS, ArrayImageDataset, load_builtin
from vitssl.data.datasets import ImageFolderDataset


def build_dataset(
    source: str | os.PathLike[str], split: str = "train", seed: int = 0
) -> ArrayImageDataset | ImageFolderDataset:
    """A built-in set by name (mnist, digits, shapes) or an image folder, so `--data` takes either.

    For a folder, `source/<split>` is used when it exists (ImageNet-style train/ and val/),
    otherwise `source` itself.
    """
    if isinstance(source, str) and source in BUILTIN_DATASETS:
        return load_builtin(source, split, seed)
    path = Path(source)
    return ImageFolderDataset(path / split if (path / split).is_dir() else path)


__all__ = ["ArrayImageDataset", "BUILTIN_DATASETS", "ImageFolderDataset", "build_dataset", "load_builtin"]
