"""Data: image folders, built-in demo sets, seeded training loaders and the input pipeline
that turns a data set into the trainer's batches (`vitssl.data.pipeline.InputPipeline`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from vitssl.data.builtin import BUILTIN_DATASETS, ArrayImageDataset, load_builtin
from vitssl.data.datasets import ImageFolderDataset, SkipReport
from vitssl.data.shards import ShardDataset, is_shard_spec


def build_dataset(
    source: str | os.PathLike[str], split: str = "train", seed: int = 0, max_image_pixels: int | None = None
) -> ArrayImageDataset | ImageFolderDataset | ShardDataset:
    """A built-in set by name (mnist, digits, shapes), an image folder or a shard spec (a folder
    of shards, a brace pattern or a list file; see `vitssl.data.shards`), so `--data` takes any.

    For a folder, `source/<split>` is used when it exists (ImageNet-style train/ and val/),
    otherwise `source` itself. `max_image_pixels` bounds a folder's images (None: 50M pixels,
    `DEFAULT_MAX_IMAGE_PIXELS`; 0: none); larger ones are skipped and reported.
    """
    if isinstance(source, str) and source in BUILTIN_DATASETS:
        return load_builtin(source, split, seed)
    if is_shard_spec(source):  # tar shards from `vitssl data pack` (vitssl.data.shards)
        return ShardDataset(source, max_image_pixels)
    path = Path(source)
    return ImageFolderDataset(path / split if (path / split).is_dir() else path, max_image_pixels)


def folder_dataset(dataset: Any) -> ImageFolderDataset | ShardDataset | None:
    """The image folder (or shard set) under wrappers that keep it as `.base` (augmentation, eval transforms)."""
    for _ in range(8):
        if isinstance(dataset, (ImageFolderDataset, ShardDataset)):
            return dataset
        dataset = getattr(dataset, "base", None)
    return None


def report_skips(dataset: Any, run_dir: str | os.PathLike[str] | None = None) -> SkipReport | None:
    """Log one line about what `dataset` skipped (count, reasons, first paths) and, with
    `run_dir`, write the full list to `run_dir/skipped.json`. Call it once, after the run or
    the evaluation; built-in sets never skip (returns None)."""
    folder = folder_dataset(dataset)
    if folder is None:
        return None
    report = folder.skip_report()
    if report.skipped or report.folders:
        where = folder.write_skip_report(run_dir) if run_dir is not None else None
        logging.getLogger("vitssl").warning("%s%s", report.message(), f" (list in {where})" if where else "")
    return report


open_dataset = build_dataset  # the one factory: built-in set, image folder or shards

__all__ = ["ArrayImageDataset", "BUILTIN_DATASETS", "ImageFolderDataset", "ShardDataset", "SkipReport", "build_dataset",
           "folder_dataset", "load_builtin", "open_dataset", "report_skips"]
