"""Which samples each rank and data-loader worker reads in an epoch, and in what order.

Every draw is a function of (seed, epoch, position), never of what was read before, so a run
resumed at any batch continues with exactly the samples it would have read:

- Epoch `e` puts the shards in a seeded random order; their samples, back to back, form the
  epoch's sequence of N positions (N from the index).
- Rank `r` takes the contiguous range [r * N//world, +batches * batch_size): every rank gets
  the same number of batches, and no two ranks share a sample.
- The rank's range is cut into one contiguous piece per data-loader worker (batch `j` of the
  rank comes from worker `j % workers`, the DataLoader's round robin), so each worker streams
  its shards front to back and only the shards at a piece's ends are shared (read in part).
- Within a worker's piece, each window of `shuffle_buffer` consecutive samples is emitted in a
  seeded random order (a shuffle buffer whose state never outlives its window, so resuming
  costs re-reading at most one window, not the epoch so far).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from vitssl.data.loaders import sample_seed

_ORDER, _WINDOW = -3, -4  # seed streams distinct from the folder loaders' (-1: batch order, -2: workers)


@dataclass(frozen=True)
class Piece:
    """`count` samples of shard `shard` from its `first`-th on."""

    shard: int
    first: int
    count: int


@dataclass(frozen=True)
class EpochPlan:
    """The layout of one epoch for one rank (see the module docstring)."""

    counts: tuple[int, ...]  # samples per shard, index order
    seed: int
    epoch: int
    rank: int
    world: int
    batches: int  # per rank
    batch_size: int
    workers: int  # data-loader workers (1 without workers)
    shuffle_buffer: int

    def shard_order(self) -> list[int]:
        g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, _ORDER))
        return torch.randperm(len(self.counts), generator=g).tolist()

    def worker_batches(self, worker: int) -> int:
        return self.batches // self.workers + (worker < self.batches % self.workers)

    def worker_start(self, worker: int) -> int:
        """Position in the epoch's sequence where `worker`'s piece starts."""
        before = sum(self.worker_batches(w) for w in range(worker))
        return self.rank * (self.total // self.world) + before * self.batch_size

    @cached_property
    def total(self) -> int:
        return sum(self.counts)

    def pieces(self, start: int, count: int) -> list[Piece]:
        """Shard pieces covering positions [start, start + count) of the epoch's sequence."""
        order = self.shard_order()
        ends = np.cumsum([self.counts[s] for s in order])
        out, pos, stop = [], start, start + count
        k = int(np.searchsorted(ends, pos, side="right"))
        while pos < stop:
            begin = int(ends[k]) - self.counts[order[k]]
            n = min(int(ends[k]), stop) - pos
            out.append(Piece(order[k], pos - begin, n))
            pos += n
            k += 1
        return out

    def window_order(self, window_start: int, size: int) -> list[int]:
        """The emission order of a window of `size` samples starting at epoch position `window_start`."""
        g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, _WINDOW - window_start))
        return torch.randperm(size, generator=g).tolist()

    def locate(self, batch: int, item: int) -> tuple[int, int, int]:
        """(window start, window size, slot in the window before shuffling) of sample `item` of
        rank batch `batch`; the slot's sample is at `window_order(start, size)[slot]`."""
        worker = batch % self.workers
        pos = (batch // self.workers) * self.batch_size + item  # in the worker's piece
        length = self.worker_batches(worker) * self.batch_size
        window = pos - pos % self.shuffle_buffer
        size = min(self.shuffle_buffer, length - window)
        return self.worker_start(worker) + window, size, pos - window


def batches_per_rank(total: int, world: int, batch_size: int, max_batches: int = 0) -> int:
    """Drop-last batches per rank per epoch, as for image folders (`EpochBatchSampler`)."""
    n = (total // world) // batch_size
    return min(n, max_batches) if max_batches > 0 else n
