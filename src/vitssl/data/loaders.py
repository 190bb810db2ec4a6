"""Training data loaders whose every random draw is a function of (seed, epoch, index).

Augmentation gets a generator seeded per sample, and the batch order comes from a generator
seeded per epoch, so a run resumed mid-epoch sees exactly the batches it would have seen,
whatever the number of workers.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from vitssl.distributed import rank, world_size

_MIX = 0x9E3779B97F4A7C15


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed for one sample of one epoch (splitmix64 finaliser)."""
    z = (seed * 1_000_003 + epoch * 1_000_033 + index * 7919 + _MIX) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) & 0x7FFFFFFFFFFFFFFF


class AugmentedDataset(Dataset):
    """Applies `transform(image, generator)` with a generator seeded by (seed, epoch, index)."""

    def __init__(self, base: Dataset, transform: Callable[[Any, torch.Generator], Any], seed: int) -> None:
        self.base, self.transform, self.seed, self.epoch = base, transform, seed, 0

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = self.base[index]
        generator = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, index))
        return self.transform(image, generator), label


class EpochBatchSampler(Sampler[list[int]]):
    """Shuffled, rank-sharded, drop-last batches for one epoch, starting at batch `start_batch`."""

    def __init__(self, num_samples: int, batch_size: int, seed: int, epoch: int, start_batch: int = 0,
                 max_batches: int = 0) -> None:
        self.num_samples, self.batch_size = num_samples, batch_size
        self.seed, self.epoch, self.start_batch, self.max_batches = seed, epoch, start_batch, max_batches

    def num_batches(self) -> int:
        """Batches per epoch on this rank (before skipping `start_batch`)."""
        n = (self.num_samples // world_size()) // self.batch_size
        return min(n, self.max_batches) if self.max_batches > 0 else n

    def __len__(self) -> int:
        return max(self.num_batches() - self.start_batch, 0)

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, -1))
        order = torch.randperm(self.num_samples, generator=g)[rank() :: world_size()].tolist()
        for b in range(self.start_batch, self.num_batches()):
            yield order[b * self.batch_size : (b + 1) * self.batch_size]


def build_train_loader(
    dataset: AugmentedDataset,
    collate: Callable[[list], Any],
    batch_size: int,
    num_workers: int,
    seed: int,
    epoch: int,
    start_batch: int = 0,
    max_batches: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """One epoch's loader. Its own generator keeps worker seeding off the global RNG."""
    dataset.epoch = epoch
    sampler = EpochBatchSampler(len(dataset), batch_size, seed, epoch, start_batch, max_batches)
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=num_workers,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(sample_seed(seed, epoch, -2)),
        persistent_workers=False,
    )
