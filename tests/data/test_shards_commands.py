"""Shards through the commands: `vitssl pretrain --data SPEC` (CPU and device decode) and the
evaluation commands' --train/--val, which give what the same images give as a folder."""

from __future__ import annotations

import json

import pytest
from shard_helpers import make_folder

from helpers import tiny_overrides
from vitssl.cli import main
from vitssl.data.shards.pack import PackOptions, pack


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmd")
    folder = make_folder(root / "images", per_class=8, ext="jpg")
    pack(folder, root / "shards", PackOptions(shard_bytes=4096, labels=True), progress=False)
    return root, folder, root / "shards"


@pytest.fixture(scope="module")
def run_on_shards(data):
    root, _, shards = data
    n = len(list(shards.glob("*.tar")))
    spec = f"{shards}/train-{{000000..{n - 1:06d}}}.tar"
    assert main(["pretrain", "--data", spec, "--out", str(root / "run"), *tiny_overrides()[1:],
                 "train.augment_on=device", "train.decode_on=device"]) == 0
    return root / "run"


def test_pretrain_streams_shards_with_device_decode(run_on_shards):
    metrics = [json.loads(line) for line in (run_on_shards / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and all(m["decode_host_fallbacks"] == 0 and m["decode_replaced"] == 0 for m in metrics)


def test_knn_on_shards_equals_knn_on_the_folder(data, run_on_shards, tmp_path, capsys):
    _, folder, shards = data
    results = {}
    for name, source in (("folder", folder), ("shards", shards)):
        out = tmp_path / f"{name}.json"
        assert main(["eval", "knn", "--checkpoint", str(run_on_shards), "--train", str(source), "--val", str(source),
                     "--ks", "1", "5", "--device", "cpu", "--num-workers", "0", "--image-size", "16",
                     "--out", str(out)]) == 0
        results[name] = json.loads(out.read_text())["results"]
    assert results["shards"] == results["folder"]
    assert results["shards"]["1"]["top1"] == 100.0 or results["shards"]["1"]["top1"] == 1.0  # its own train set
