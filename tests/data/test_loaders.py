import contextlib
import functools
import os
import signal
import subprocess
import sys

import pytest
import torch

from vitssl.data.loaders import AugmentedDataset, EpochBatchSampler, build_train_loader, sample_seed


class Indexes(torch.utils.data.Dataset):
    def __len__(self):
        return 23

    def __getitem__(self, i):
        return i, i


def noisy(index, generator):
    return (index, torch.rand((), generator=generator).item())


def indices(batches):
    return [[i for _, i in b] for b in batches]


def test_sample_seeds_differ_and_are_stable():
    seeds = {sample_seed(0, e, i) for e in range(3) for i in range(100)}
    assert len(seeds) == 300 and sample_seed(0, 1, 5) == sample_seed(0, 1, 5)


def test_sampler_drops_last_shuffles_per_epoch_and_skips():
    s0 = list(EpochBatchSampler(23, 5, seed=0, epoch=0))
    assert len(s0) == 4 and all(len(b) == 5 for b in s0) and len({i for b in indices(s0) for i in b}) == 20
    assert all(e == 0 for b in s0 for e, _ in b)
    assert indices(s0) != indices(EpochBatchSampler(23, 5, seed=0, epoch=1))
    assert list(EpochBatchSampler(23, 5, seed=0, epoch=0, start_batch=2)) == s0[2:]
    assert list(EpochBatchSampler(23, 5, seed=0, epoch=0, max_batches=2)) == s0[:2]


def test_augmentation_is_a_function_of_epoch_and_index_not_of_workers():
    def run_items(workers, start=0):
        loader = build_train_loader(AugmentedDataset(Indexes(), noisy, seed=3), lambda b: b, 4, workers, seed=3)
        items = {}
        for epoch in (0, 1):
            loader.batch_sampler.set_epoch(epoch, start)
            items[epoch] = [item for batch in loader for item in batch]
        return items

    single = run_items(0)
    assert single[0] != single[1]
    assert run_items(2) == single
    skipped = run_items(0, start=2)
    assert skipped[0] == single[0][8:] and skipped[1] == single[1][8:]


# A training script in miniature: its own SIGTERM flag, a loader whose workers may hang in a
# read (a dead network file system), and, with "exit", the loader still referenced at exit.
SCRIPT = r"""
import os, signal, sys, time, torch
from vitssl.data.loaders import AugmentedDataset, build_train_loader

hang, mode = sys.argv[1], sys.argv[2]

class Items(torch.utils.data.Dataset):
    served = 0  # per worker process

    def __len__(self):
        return 64

    def __getitem__(self, i):
        Items.served += 1
        if Items.served > 10:  # the 6th batch on (prefetched, never asked for): a read that hangs
            open(hang, "w").close()
            time.sleep(600)
        return i, i

stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
loader = build_train_loader(AugmentedDataset(Items(), lambda x, g: x, 0), lambda b: b, 2, 1, seed=0)
batches = iter(loader)
next(batches)
print("ready", flush=True)
while not stop:
    time.sleep(0.01)
got = [next(batches) for _ in range(4)]  # the workers outlived the signal to the group
deadline = time.time() + 20
while not os.path.exists(hang) and time.time() < deadline:
    time.sleep(0.01)
time.sleep(0.2)  # the worker is now inside the hanging read
print("served", len(got), "hanging" if os.path.exists(hang) else "not hanging", flush=True)
if mode == "close":
    loader.close()
    print("closed", flush=True)
"""


@pytest.mark.parametrize("mode", ["exit", "close"])
def test_workers_outlive_a_group_sigterm_and_never_hold_the_exit(tmp_path, mode):
    """SIGTERM to the process group leaves the workers serving; afterwards the main process
    ends them, also one hanging in a read, whether it closes the loader or just exits."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path / "hang"), mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    assert proc.stdout.readline().strip() == "ready", proc.communicate()[1][-2000:]
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=30)  # torch waits 5 s for a worker before its SIGTERM
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err[-2000:]
    assert "served 4 hanging" in out and ("closed" in out) == (mode == "close") and "DataLoader worker" not in err


def test_workers_run_the_callers_worker_init_fn(tmp_path):
    loader = build_train_loader(AugmentedDataset(Indexes(), noisy, seed=3), lambda b: b, 4, 2, seed=3,
                                worker_init_fn=functools.partial(mark_worker, tmp_path))
    list(loader)
    loader.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0", "1"]


def mark_worker(folder, worker_id):
    (folder / str(worker_id)).write_text(signal.getsignal(signal.SIGTERM).__name__)
