"""The training loader for shards: streams each worker's piece of the epoch (`plan.EpochPlan`).

The loader is an ordinary `DataLoader` over keys `(epoch, batch, item)`, like the folder
loaders' `(epoch, index)`: its batch sampler yields the rank's batches from `start_batch`, the
DataLoader's round robin sends batch `j` to one worker, and that worker reads the samples of
`j` from its own open shard stream. The tar is read with webdataset (`gopen`, so local paths and
`pipe:` commands; `tar_file_expander`, `group_by_keys`). Augmentation draws from a generator
seeded by (seed, epoch, the sample's position in the index), as folders seed by index.

A resumed run starts at `start_batch`: each worker reopens its shard stream at the window that
holds its next sample (reading at most one shard's prefix and one window again), so the rest
of the epoch is sample-exact when the number of workers is unchanged. With another number of
workers the interrupted epoch is cut into pieces for the new count (the batch count is kept;
some of its samples may repeat or be missed); later epochs are exact again.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator

import torch
from torch.utils.data import Dataset, Sampler, get_worker_info
from webdataset import gopen
from webdataset.tariterators import group_by_keys, tar_file_expander

from vitssl.data.loaders import StopSignalSafeLoader, sample_seed
from vitssl.data.shards.dataset import ShardDataset
from vitssl.data.shards.plan import EpochPlan, batches_per_rank
from vitssl.data.shards.samples import MissingSample, image_member, label_of
from vitssl.distributed import rank, world_size

log = logging.getLogger("vitssl")
Raw = tuple[int, int, str, Any]  # shard, position, key, (suffix, bytes, label) or MissingSample


def shard_samples(url: str, first: int, count: int) -> Iterator[tuple[str, Any]]:
    """(key, sample dict) of samples [first, first + count) of one shard; fewer when the shard
    ends early or breaks (the caller counts what is missing)."""
    errors: list[Exception] = []

    def stop(exn: Exception) -> bool:
        errors.append(exn)
        return False

    stream = gopen(url, "rb")
    try:
        files = tar_file_expander([{"url": url, "stream": stream}], handler=stop)
        for position, sample in enumerate(group_by_keys(files, handler=stop)):
            if position >= first + count:
                break
            if position >= first:
                yield sample["__key__"], sample
    except Exception as e:  # a tar header that cannot be read (truncated or not a tar)
        errors.append(e)
    finally:
        try:
            stream.close()
        except Exception:  # a pipe: command that failed; its samples are counted as missing
            pass
    if errors:
        log.warning("shard '%s' broke off (%s): its remaining samples are skipped; re-pack or copy it again",
                    url, str(errors[0]).splitlines()[0][:200] if str(errors[0]) else type(errors[0]).__name__)


def read_pieces(data: ShardDataset, plan: EpochPlan, start: int, count: int) -> Iterator[Raw]:
    """Raw samples of epoch positions [start, start + count); missing ones as `MissingSample`."""
    for piece in plan.pieces(start, count):
        url = data.shards[piece.shard].url
        got = 0
        for key, sample in shard_samples(url, piece.first, piece.count):
            member = image_member(sample)
            raw = MissingSample("no image in sample") if member is None else (member[0], member[1], label_of(sample))
            yield piece.shard, piece.first + got, key, raw
            got += 1
        if got < piece.count:
            log.warning("shard '%s' gave %d of the %d samples index.json lists from position %d: the rest are "
                        "skipped; re-pack it or fix index.json", url, got, piece.count, piece.first)
        for position in range(piece.first + got, piece.first + piece.count):
            yield piece.shard, position, "", MissingSample("missing from shard")


class ShardStreamReader(Dataset):
    """Item `(epoch, batch, item)`: the transformed sample at that place of the rank's epoch."""

    def __init__(self, data: ShardDataset, transform: Callable, seed: int, batches: int, batch_size: int) -> None:
        self.data, self.transform, self.seed = data, transform, seed
        self.batches, self.batch_size, self.rank, self.world = batches, batch_size, rank(), world_size()
        self._cursor: tuple[tuple, int, Iterator[Raw]] | None = None  # (stream id, next position, samples)
        self._window: tuple[tuple, list[Raw], list[int]] | None = None  # (window id, samples, order)
        self._plan: EpochPlan | None = None

    def __len__(self) -> int:
        return len(self.data)

    def plan(self, epoch: int) -> EpochPlan:
        info = get_worker_info()
        workers = 1 if info is None else info.num_workers
        if self._plan is None or (self._plan.epoch, self._plan.workers) != (epoch, workers):
            self._plan = self._new_plan(epoch, workers)
        return self._plan

    def _new_plan(self, epoch: int, workers: int) -> EpochPlan:
        return EpochPlan(tuple(s.samples for s in self.data.shards), self.seed, epoch, self.rank, self.world,
                         self.batches, self.batch_size, workers, self.data.shuffle_buffer)

    def _load_window(self, plan: EpochPlan, worker: int, start: int, size: int) -> tuple[list[Raw], list[int]]:
        stream = (plan.epoch, worker)
        if self._cursor is None or self._cursor[0] != stream or self._cursor[1] != start:
            end = plan.worker_start(worker) + plan.worker_batches(worker) * plan.batch_size
            self._cursor = (stream, start, read_pieces(self.data, plan, start, end - start))
        samples = [next(self._cursor[2]) for _ in range(size)]
        self._cursor = (stream, start + size, self._cursor[2])
        return samples, plan.window_order(start, size)

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[Any, int]:
        epoch, batch, item = key
        plan = self.plan(epoch)
        start, size, slot = plan.locate(batch, item)
        window_id = (epoch, start, size)
        if self._window is None or self._window[0] != window_id:
            self._window = (window_id, *self._load_window(plan, batch % plan.workers, start, size))
        _, samples, order = self._window
        return self._sample(epoch, samples, order, slot)

    def _sample(self, epoch: int, samples: list[Raw], order: list[int], slot: int) -> tuple[Any, int]:
        """The window's sample at `slot`, or (when it is bad) the first good one in a seeded order."""
        wanted = order[slot]
        for i in self._candidates(epoch, wanted, len(samples)):
            shard, position, key, raw = samples[i]
            try:
                if isinstance(raw, MissingSample):
                    raise raw
                image = self.data.decode(shard, position, (raw[0], raw[1]), key)
            except Exception as e:  # PIL raises many types for bad samples
                if i == wanted:
                    self.data.skips.record(shard, position, self.data.where(shard, position, key), e,
                                           None if isinstance(raw, MissingSample) else raw[1])
                continue
            if i != wanted:
                self.data.skips.substitution()
            index = self.data.offsets[shard] + position
            generator = torch.Generator().manual_seed(sample_seed(self.seed, epoch, index))
            return self.transform(image, generator), raw[2]
        raise RuntimeError(f"no sample of a shuffle window of '{self.data.root}' could be read (shard "
                           f"'{self.data.shards[samples[0][0]].url}'): re-pack the images with `vitssl data pack`")

    def _candidates(self, epoch: int, wanted: int, size: int) -> Iterator[int]:
        """`wanted`, then (only if it is bad) the window's others in a seeded order."""
        yield wanted
        g = torch.Generator().manual_seed(sample_seed(self.seed, epoch, -5 - wanted))
        yield from (i for i in torch.randperm(size, generator=g).tolist() if i != wanted)


class ShardBatchSampler(Sampler[list[tuple[int, int, int]]]):
    """The rank's batches of `(epoch, batch, item)` keys from `start_batch` (see `set_epoch`)."""

    def __init__(self, batches: int, batch_size: int, on_epoch: Callable[[int], None] | None = None) -> None:
        self.batches, self.batch_size, self.on_epoch = batches, batch_size, on_epoch
        self.set_epoch(0)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def num_batches(self) -> int:
        return self.batches

    def __len__(self) -> int:
        return max(self.batches - self.start_batch, 0)

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        if self.on_epoch is not None:
            self.on_epoch(self.epoch)
        for b in range(self.start_batch, self.batches):
            yield [(self.epoch, b, i) for i in range(self.batch_size)]


def build_shard_loader(data: ShardDataset, transform: Callable, collate: Callable[[list], Any], batch_size: int,
                       num_workers: int, seed: int, max_batches: int = 0, pin_memory: bool = False,
                       worker_init_fn: Callable[[int], None] | None = None,
                       on_epoch: Callable[[int], None] | None = None) -> StopSignalSafeLoader:
    """The shard counterpart of `build_train_loader` (same interface: `batch_sampler.set_epoch`)."""
    batches = batches_per_rank(len(data), world_size(), batch_size, max_batches)
    reader = ShardStreamReader(data, transform, seed, batches, batch_size)
    return StopSignalSafeLoader(
        reader, batch_sampler=ShardBatchSampler(batches, batch_size, on_epoch), collate_fn=collate,
        num_workers=num_workers, pin_memory=pin_memory, persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(sample_seed(seed, 0, -2)), worker_init_fn=worker_init_fn,
    )
