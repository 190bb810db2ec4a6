"""Shard test fixtures importable by spawned ranks: image folders whose every image says which
one it is (a solid PNG colour), and the loader pieces that read that identity back."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image

from vitssl.data.shards import ShardDataset
from vitssl.data.shards.pack import PackOptions, pack

CLASSES = ("ant", "bee", "cow")


def make_folder(root: Path, per_class: int = 16, ext: str = "png") -> Path:
    """`root/<class>/NNN.ext`, image i (over all classes) a solid colour encoding i."""
    i = 0
    for c in CLASSES:
        (root / c).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            Image.new("RGB", (12 + k % 5, 10), identity_colour(i)).save(root / c / f"{k:03d}.{ext}")
            i += 1
    return root


def identity_colour(i: int) -> tuple[int, int, int]:
    return (i % 256, i // 256, 200)


def identity(image) -> int:
    r, g, _ = np.asarray(image)[0, 0]
    return int(r) + 256 * int(g)


def identity_transform(image, generator: torch.Generator) -> tuple[int, int]:
    """(which image, one augmentation draw): what a sample was and how it was seeded."""
    return identity(image), int(torch.randint(0, 2**30, (1,), generator=generator))


def keep(batch):
    return batch


def packed(tmp: Path, per_class: int = 16, shard_size: int = 4096, **kw) -> Path:
    folder = make_folder(tmp / "images", per_class)
    pack(folder, tmp / "shards", PackOptions(shard_bytes=shard_size, labels=True, **kw), progress=False)
    return tmp / "shards"


def epoch_samples(loader, epoch: int, start_batch: int = 0) -> list[tuple[int, int]]:
    loader.batch_sampler.set_epoch(epoch, start_batch)
    return [sample for batch in loader for sample, _label in batch]


def rank_epochs(local_rank: int, world: int, port: int, shards: str, out: str, workers: int) -> None:
    """One gloo rank: read two epochs of `shards` with `workers` workers, save what it saw."""
    from vitssl.data.shards.stream import build_shard_loader

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=local_rank, world_size=world)
    try:
        loader = build_shard_loader(ShardDataset(shards), identity_transform, keep, 4, workers, seed=3)
        seen = {e: [x for x, _ in epoch_samples(loader, e)] for e in (0, 1)}
        loader.close()
        torch.save(seen, Path(out) / f"rank{local_rank}.pt")
    finally:
        dist.destroy_process_group()
