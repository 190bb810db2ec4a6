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
