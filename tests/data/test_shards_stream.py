"""Streaming tar shards (`vitssl.data.shards`): every sample once per epoch over ranks and
workers, seeded shuffles, mid-epoch resume, hostile shards, the three spec forms, device decode."""

from __future__ import annotations

import collections
import json
import tarfile

import pytest
import torch
import torch.multiprocessing as mp
from shard_helpers import epoch_samples, identity, identity_transform, keep, packed, rank_epochs

from distributed_helpers import free_port
from vitssl.data import build_dataset, folder_dataset
from vitssl.data.device_decode import DeviceJPEGDecoder, EncodedJPEG
from vitssl.data.shards import ShardDataset, ShardSpecError
from vitssl.data.shards.stream import build_shard_loader

N = 48  # 3 classes x 16


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return packed(tmp_path_factory.mktemp("shards"))


def loader_for(spec, workers=0, batch=4, seed=0, **kw):
    return build_shard_loader(ShardDataset(spec, **kw), identity_transform, keep, batch, workers, seed=seed)


def test_pack_spreads_samples_over_several_shards(shards):
    index = json.loads((shards / "index.json").read_text())
    assert len(index["shards"]) > 4 and index["total"] == N
    assert sum(s["samples"] for s in index["shards"]) == N


@pytest.mark.slow  # two spawned ranks import torch
def test_two_ranks_two_workers_see_every_sample_once_per_epoch(shards, tmp_path):
    mp.spawn(rank_epochs, args=(2, free_port(), str(shards), str(tmp_path), 2), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for epoch in (0, 1):
        seen = ranks[0][epoch] + ranks[1][epoch]
        assert sorted(seen) == list(range(N)), f"epoch {epoch}: {collections.Counter(seen).most_common(3)}"
        assert set(ranks[0][epoch]).isdisjoint(ranks[1][epoch])
    assert ranks[0][0] != ranks[0][1]  # a new order (and rank split) each epoch


@pytest.mark.parametrize("workers", [0, 2])
def test_one_process_reads_every_sample_once_and_reshuffles_per_epoch(shards, workers):
    loader = loader_for(shards, workers)
    first, second = epoch_samples(loader, 0), epoch_samples(loader, 1)
    loader.close()
    assert sorted(x for x, _ in first) == list(range(N)) == sorted(x for x, _ in second)
    assert [x for x, _ in first] != [x for x, _ in second]
    again = loader_for(shards, workers)
    assert epoch_samples(again, 1) == second  # samples and augmentation draws reproduce by seed
    again.close()
    other = loader_for(shards, workers, seed=1)
    assert epoch_samples(other, 1) != second
    other.close()


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_continues_with_exactly_the_remaining_batches(shards, workers):
    loader = loader_for(shards, workers)
    whole = epoch_samples(loader, 1)
    rest = epoch_samples(loader, 1, start_batch=5)  # after 5 of 12 batches
    loader.close()
    assert rest == whole[5 * 4:]


def test_resume_with_another_worker_count_keeps_the_batch_count_and_later_epochs_exact(shards):
    two = loader_for(shards, 2)
    rest_two, next_two = epoch_samples(two, 0, start_batch=5), epoch_samples(two, 1)
    two.close()
    one = loader_for(shards, 0)
    rest_one, next_one = epoch_samples(one, 0, start_batch=5), epoch_samples(one, 1)
    one.close()
    assert len(rest_one) == len(rest_two) == (12 - 5) * 4  # documented: the count is kept, not the samples
    assert sorted(x for x, _ in next_one) == list(range(N)) == sorted(x for x, _ in next_two)


def test_augmentation_is_seeded_by_the_sample_not_its_place(shards):
    """The same sample gets the same draw in an epoch whatever worker or position serves it."""
    by_sample = {}
    for workers in (0, 2):
        loader = loader_for(shards, workers)
        for x, draw in epoch_samples(loader, 4):
            assert by_sample.setdefault(x, draw) == draw
        loader.close()


def test_brace_list_and_folder_specs_name_the_same_samples(shards, tmp_path):
    names = sorted(p.name for p in shards.glob("*.tar"))
    brace = f"{shards}/train-{{000000..{len(names) - 1:06d}}}.tar"
    listing = shards / "train.txt"
    listing.write_text("# shards\n" + "\n".join(names) + "\n")
    lengths = {len(build_dataset(spec)) for spec in (str(shards), brace, str(listing))}
    assert lengths == {N}
    part = build_dataset(f"{shards}/train-{{000000..000001}}.tar")  # a subset of the shards
    assert len(part) == sum(s["samples"] for s in json.loads((shards / "index.json").read_text())["shards"][:2])
    assert [identity(build_dataset(brace)[i][0]) for i in range(N)] == [identity(build_dataset(str(shards))[i][0])
                                                                       for i in range(N)]


def test_pipe_commands_stream_like_local_files(shards, tmp_path):
    names = sorted(p.name for p in shards.glob("*.tar"))
    listing = tmp_path / "remote.txt"
    listing.write_text("\n".join(f"pipe:cat {shards / n}" for n in names))
    (tmp_path / "index.json").write_text((shards / "index.json").read_text())
    local, remote = loader_for(shards), loader_for(str(listing))
    assert epoch_samples(local, 2) == epoch_samples(remote, 2)


def test_labels_and_reading_by_position_match_the_folder(shards):
    data = build_dataset(str(shards))
    assert data.classes == ["ant", "bee", "cow"]
    for i in range(N):
        image, label = data[i]
        assert label == identity(image) // 16  # images 0..15 are ants, ...


def hostile_shard(tmp_path):
    """A shard whose 2nd sample is garbage, 3rd has no image, and index.json claims one sample more."""
    from webdataset import TarWriter

    good = packed(tmp_path / "src", per_class=2, shard_size=1 << 20)
    samples: dict[str, dict] = {}
    with tarfile.open(good / "train-000000.tar") as src:
        for info in src:
            key, suffix = info.name.split(".", 1)
            samples.setdefault(key, {"__key__": key})[suffix] = src.extractfile(info).read()
    samples = list(samples.values())
    samples[1]["png"] = b"\xff\xd8 not an image"
    del samples[2]["png"]
    out = tmp_path / "hostile"
    out.mkdir()
    with TarWriter(str(out / "bad-000000.tar"), encoder=False) as writer:
        for sample in samples:
            writer.write(sample)
    size = (out / "bad-000000.tar").stat().st_size
    index = {"format": "vitssl-shards/1", "classes": ["ant", "bee", "cow"], "total": 7,
             "shards": [{"name": "bad-000000.tar", "samples": 7, "bytes": size}]}
    (out / "index.json").write_text(json.dumps(index))
    return out


def test_hostile_samples_in_a_shard_are_skipped_counted_and_replaced(tmp_path, recwarn):
    spec = hostile_shard(tmp_path)
    loader = build_shard_loader(ShardDataset(spec), identity_transform, keep, 7, 0, seed=0)
    seen = epoch_samples(loader, 0)
    assert len(seen) == 7  # a full batch: bad samples are replaced by good ones of their window
    report = folder_dataset(loader.dataset.data).skip_report()
    assert report.count == 3 and report.by_reason() == {"not an image": 1, "no image in sample": 1,
                                                        "missing from shard": 1}
    assert "skipped 3" in report.message()


def test_device_decode_takes_jpeg_bytes_from_the_shard(tmp_path):
    from shard_helpers import make_folder

    from vitssl.data.shards.pack import PackOptions, pack

    pack(make_folder(tmp_path / "jpg", 2, ext="jpg"), tmp_path / "s", PackOptions(labels=True), progress=False)
    data = ShardDataset(tmp_path / "s")
    data.keep_jpeg_encoded = True
    loader = build_shard_loader(data, lambda image, g: image, keep, 6, 0, seed=0)
    batch = epoch_samples(loader, 0)
    assert all(isinstance(x, EncodedJPEG) for x in batch)
    decoded = DeviceJPEGDecoder(torch.device("cpu"))(list(batch))
    data.keep_jpeg_encoded = False
    host = {identity(data[i][0].convert("RGB")) for i in range(6)}
    assert {identity(x.permute(1, 2, 0)) for x in decoded} == host


@pytest.mark.parametrize("damage,message", [
    ("truncate", "is truncated"), ("not_tar", "is not a tar file"), ("missing", "matches no file"),
    ("unindexed", "is not in"), ("no_index", "no index.json"),
])
def test_bad_shards_are_refused_in_one_line_naming_the_shard(shards, tmp_path, damage, message):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(shards, copy)
    spec = f"{copy}/train-{{000000..000003}}.tar"
    if damage == "truncate":
        (copy / "train-000001.tar").write_bytes((copy / "train-000001.tar").read_bytes()[:1500])
    elif damage == "not_tar":
        (copy / "train-000001.tar").write_bytes(b"<html>404</html>" * 200)
    elif damage == "missing":
        spec = f"{copy}/train-{{000000..000999}}.tar"
    elif damage == "unindexed":
        shutil.copy(copy / "train-000000.tar", copy / "extra-000000.tar")
        spec = f"{copy}/extra-000000.tar"
    else:
        (copy / "index.json").unlink()
    with pytest.raises(ShardSpecError, match=message) as e:
        build_dataset(spec)
    assert "\n" not in str(e.value) and ("train-000001" in str(e.value) or damage not in ("truncate", "not_tar"))


def test_a_shard_that_breaks_mid_stream_never_hangs(shards, tmp_path):
    """A shard cut after the size check (a pipe: source) gives what it has; the rest is counted."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(shards, copy)
    names = sorted(p.name for p in copy.glob("*.tar"))
    cut = copy / names[0]
    cut.write_bytes(cut.read_bytes()[:1200])
    (copy / "list.txt").write_text("\n".join(f"pipe:cat {copy / n}" for n in names))
    loader = loader_for(str(copy / "list.txt"))
    seen = epoch_samples(loader, 0)
    assert len(seen) == N
    assert loader.dataset.data.skip_report().by_reason().get("missing from shard", 0) >= 1
