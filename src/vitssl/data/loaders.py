"""Training data loaders whose every random draw is a function of (seed, epoch, index).

The batch sampler yields `(epoch, index)` keys: augmentation gets a generator seeded per key
and the batch order comes from a generator seeded per epoch, so a run resumed mid-epoch sees
exactly the batches it would have seen, whatever the number of workers. Because the epoch
travels with the key, one loader with persistent workers serves the whole run.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import weakref
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from vitssl.data import ShardDataset, folder_dataset
from vitssl.distributed import rank, world_size
from vitssl.engine.stop_signals import STOP_SIGNALS

_MIX = 0x9E3779B97F4A7C15


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed for one sample of one epoch (splitmix64 finaliser)."""
    z = (seed * 1_000_003 + epoch * 1_000_033 + index * 7919 + _MIX) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) & 0x7FFFFFFFFFFFFFFF


class AugmentedDataset(Dataset):
    """Item `(epoch, index)`: `transform(image, generator)` with a generator seeded by both."""

    def __init__(self, base: Dataset, transform: Callable[[Any, torch.Generator], Any], seed: int) -> None:
        self.base, self.transform, self.seed = base, transform, seed

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> tuple[Any, int]:
        epoch, index = key
        image, label = self.base[index]
        generator = torch.Generator().manual_seed(sample_seed(self.seed, epoch, index))
        return self.transform(image, generator), label


class EpochBatchSampler(Sampler[list[tuple[int, int]]]):
    """Shuffled, rank-sharded, drop-last batches of `(epoch, index)` keys.

    Call `set_epoch(epoch, start_batch)` before iterating; iteration starts at `start_batch`.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int, epoch: int = 0, start_batch: int = 0,
                 max_batches: int = 0, on_epoch: Callable[[int], None] | None = None) -> None:
        self.num_samples, self.batch_size, self.seed, self.max_batches = num_samples, batch_size, seed, max_batches
        self.on_epoch = on_epoch
        self.set_epoch(epoch, start_batch)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def num_batches(self) -> int:
        """Batches per epoch on this rank (before skipping `start_batch`)."""
        n = (self.num_samples // world_size()) // self.batch_size
        return min(n, self.max_batches) if self.max_batches > 0 else n

    def __len__(self) -> int:
        return max(self.num_batches() - self.start_batch, 0)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        if self.on_epoch is not None:
            self.on_epoch(self.epoch)
        g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, -1))
        order = torch.randperm(self.num_samples, generator=g)[rank() :: world_size()].tolist()
        for b in range(self.start_batch, self.num_batches()):
            yield [(self.epoch, i) for i in order[b * self.batch_size : (b + 1) * self.batch_size]]


class SkipMonitor:
    """Logs, at the start of each epoch (main process), images skipped since the last report."""

    def __init__(self, dataset: Dataset) -> None:
        self.folder = folder_dataset(dataset)
        self.reported = 0

    def __call__(self, epoch: int) -> None:
        if self.folder is None or not self.folder._status.any():
            return
        report = self.folder.skip_report()
        if report.count > self.reported:
            logging.getLogger("vitssl").warning("before epoch %d: %s", epoch + 1, report.message())
            self.reported = report.count


@contextmanager
def stop_signals_held() -> Iterator[None]:
    """Hold stop signals back (delivered on exit) while workers fork, so none reaches a worker
    before it has set them to be ignored; workers inherit the mask and clear it themselves."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class IgnoreStopSignals:
    """A worker's `worker_init_fn`: ignore stop signals (until `closing` is set), then run `then`.

    A signal to the process group would otherwise kill the workers first and the main process
    would fail with "DataLoader worker ... killed" instead of saving. The main process stops the
    workers itself; once it sets `closing`, SIGTERM ends a worker again (so `terminate()`, also
    the one at interpreter exit, still works on a worker stuck in a read).
    """

    def __init__(self, closing: torch.Tensor, then: Callable[[int], None] | None = None) -> None:
        self.closing, self.then = closing, then

    def __call__(self, worker_id: int) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._on_signal)
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # held by `stop_signals_held`
        if self.then is not None:
            self.then(worker_id)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.closing.item() and signum == signal.SIGTERM:
            os._exit(0)  # no clean-up that could wait on the main process: it is ending us


class StopSignalSafeLoader(DataLoader):
    """A DataLoader whose workers survive stop signals sent to the whole process group.

    The main process ends them: `close()`, or automatically at interpreter exit.
    """

    def __init__(self, *args: Any, worker_init_fn: Callable[[int], None] | None = None, **kwargs: Any) -> None:
        self.closing = torch.zeros(1, dtype=torch.uint8).share_memory_()
        super().__init__(*args, worker_init_fn=IgnoreStopSignals(self.closing, worker_init_fn), **kwargs)
        _open_loaders.add(self)

    def __iter__(self):  # type: ignore[override]
        if self.num_workers == 0 or getattr(self, "_iterator", None) is not None:
            return super().__iter__()  # no worker starts (persistent ones are reused)
        with stop_signals_held():
            return super().__iter__()

    def close(self) -> None:
        """End the workers now; one that does not exit at once gets SIGTERM after torch's wait (5 s)."""
        self.closing.fill_(1)
        iterator = getattr(self, "_iterator", None)  # persistent workers live in this iterator
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        self._iterator = None


_open_loaders: weakref.WeakSet[StopSignalSafeLoader] = weakref.WeakSet()


@atexit.register  # registered after multiprocessing's exit hook, so it runs before it
def _allow_workers_to_end() -> None:
    for loader in list(_open_loaders):
        loader.closing.fill_(1)


def build_train_loader(
    dataset: AugmentedDataset,
    collate: Callable[[list], Any],
    batch_size: int,
    num_workers: int,
    seed: int,
    max_batches: int = 0,
    pin_memory: bool = False,
    worker_init_fn: Callable[[int], None] | None = None,
) -> StopSignalSafeLoader:
    """The run's loader; set the epoch with `loader.batch_sampler.set_epoch(...)` before `iter`.

    Its own generator keeps worker seeding off the global RNG; workers persist across epochs
    and ignore stop signals (`StopSignalSafeLoader`); `worker_init_fn` runs in each worker after that.
    Images an image folder skipped (in any worker) are logged once, at the next epoch's start.
    A shard set (`vitssl.data.shards`) is streamed by its own loader with the same interface.
    """
    if isinstance(folder := folder_dataset(dataset), ShardDataset):
        from vitssl.data.shards.stream import build_shard_loader

        return build_shard_loader(folder, dataset.transform, collate, batch_size, num_workers, seed, max_batches,
                                  pin_memory, worker_init_fn, on_epoch=SkipMonitor(dataset))
    sampler = EpochBatchSampler(len(dataset), batch_size, seed, max_batches=max_batches,
                                on_epoch=SkipMonitor(dataset))
    return StopSignalSafeLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=num_workers,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(sample_seed(seed, 0, -2)),
        persistent_workers=num_workers > 0,
        worker_init_fn=worker_init_fn,
    )
