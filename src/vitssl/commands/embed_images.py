"""The work behind `vitssl embed` (commands/embed.py): read, transform and embed every image of
a folder chunk by chunk, then write the table."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from vitssl.commands.embed import CHUNK_IMAGES
from vitssl.commands.embed_files import Chunks, output_format, write_table
from vitssl.data import BUILTIN_DATASETS, build_dataset
from vitssl.data.datasets import ImageFolderDataset, open_image
from vitssl.engine.cores import available_cores
from vitssl.engine.logging import log
from vitssl.engine.outputs import check_output_file
from vitssl.engine.trainer import resolve_device
from vitssl.eval.features import eval_transform
from vitssl.eval.pretrained import default_normalization, image_size_or_default, load_pretrained


class _Images(Dataset):
    """(tensor, index, readable) per image, in folder order; an unreadable file is not replaced
    by another image (as training does) but marked, so no row carries the wrong path."""

    def __init__(self, source: Any, transform: Any, paths: list[str] | None) -> None:
        self.source, self.transform, self.paths = source, transform, paths

    def __len__(self) -> int:
        return len(self.paths) if self.paths is not None else len(self.source)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, bool]:
        if self.paths is None:
            return self.transform(self.source[i][0]), i, True
        try:
            return self.transform(open_image(self.paths[i], self.source.max_image_pixels)), i, True
        except Exception:  # noqa: BLE001 - PIL raises many types for bad files; reported as skipped
            size = self.transform.crop_size
            return torch.zeros(3, size, size), i, False


def _rows(data: str) -> tuple[Any, list[str], list[int] | None]:
    """(source dataset, row paths, labels or None) of `--data`."""
    if data in BUILTIN_DATASETS:
        source = build_dataset(data, "train")
        labels = [int(y) for y in source.labels]
        return source, [f"{data}/train/{i:06d}" for i in range(len(source))], labels
    source = ImageFolderDataset(data)
    paths = [path for path, _ in source.samples]
    labels = [label for _, label in source.samples] if source.classes else None
    return source, paths, labels


def embed_folder(checkpoint: str | Path, data: str, out: str | Path, patch_features: bool = False,
                 image_size: int | None = None, batch_size: int = 64, num_workers: int | None = None,
                 chunk_size: int = CHUNK_IMAGES, which: str = "teacher", device: str = "auto",
                 overwrite: bool = False) -> dict[str, Any]:
    """Embed every image of `data` into `out`; returns what was written."""
    out = Path(out)
    fmt = output_format(out)
    check_output_file(out, overwrite)  # before any model or image is read
    backbone, config = load_pretrained(checkpoint, which)
    size = image_size_or_default(image_size, config)
    source, paths, labels = _rows(data)
    mean, std = default_normalization(config)
    transform = eval_transform(data, size)
    transform.mean, transform.std = tuple(mean), tuple(std)
    manifest = {"checkpoint": str(Path(checkpoint).resolve()), "checkpoint_bytes": _size_of(checkpoint),
                "data": str(Path(data).resolve()) if data not in BUILTIN_DATASETS else data, "images": len(paths),
                "image_size": size, "patch_features": patch_features, "backbone": which, "chunk_size": chunk_size}
    chunks = Chunks(out, manifest)
    chunks.open(overwrite)
    dev = resolve_device(device)
    workers = min(4, available_cores()) if num_workers is None else num_workers
    images = _Images(source, transform, None if data in BUILTIN_DATASETS else paths)
    count = math.ceil(len(paths) / chunk_size)
    _embed_chunks(backbone.to(dev), images, chunks, count, chunk_size, batch_size, workers, dev, patch_features)
    arrays = chunks.load_all(count)
    keep = arrays.pop("readable")
    features = {name: arrays[name][keep] for name in ("cls", "patch_mean") if name in arrays}
    row_paths = [p for p, k in zip(paths, keep) if k]
    row_labels = None if labels is None else [lab for lab, k in zip(labels, keep) if k]
    write_table(out, fmt, [os.path.relpath(p, data) if data not in BUILTIN_DATASETS else p for p in row_paths],
                row_labels, features)
    chunks.remove()
    skipped = [p for p, k in zip(paths, keep) if not k]
    if skipped:
        log.warning("%d unreadable image(s) got no row, e.g. %s", len(skipped), ", ".join(skipped[:3]))
    return {"out": str(out), "rows": len(row_paths), "skipped": len(skipped), "columns": list(features),
            "width": sum(a.shape[1] for a in features.values()), "image_size": size}


def _size_of(checkpoint: str | Path) -> int:
    path = Path(checkpoint)
    path = path / "checkpoint.pt" if path.is_dir() else path
    return path.stat().st_size if path.exists() else -1


@torch.no_grad()
def _embed_chunks(backbone: torch.nn.Module, images: _Images, chunks: Chunks, count: int, chunk_size: int,
                  batch_size: int, workers: int, device: torch.device, patch_features: bool) -> None:
    """Run the backbone over every chunk not saved yet, saving each as it completes."""
    todo = [i for i in range(count) if not chunks.done(i)]
    total = len(images)
    done_images = total - sum(min(chunk_size, total - i * chunk_size) for i in todo)
    # a `with`: on a stop the bar is closed before the stop line is printed, not after it
    with tqdm(total=total, initial=done_images, desc="embedding", unit="img", dynamic_ncols=True) as bar:
        for i in todo:
            indices = range(i * chunk_size, min(total, (i + 1) * chunk_size))
            loader = DataLoader(Subset(images, indices), batch_size=batch_size,
                                num_workers=workers, shuffle=False)
            parts: dict[str, list[np.ndarray]] = {"cls": [], "readable": []}
            if patch_features:
                parts["patch_mean"] = []
            for batch, _, readable in loader:
                tokens = backbone(batch.to(device))
                parts["cls"].append(tokens.pooled.float().cpu().numpy())
                if patch_features:
                    parts["patch_mean"].append(tokens.patches.float().mean(dim=1).cpu().numpy())
                parts["readable"].append(readable.numpy().astype(bool))
                bar.update(len(batch))
            chunks.save(i, {k: np.concatenate(v) for k, v in parts.items()})
