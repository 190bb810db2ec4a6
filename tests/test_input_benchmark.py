"""`vitssl benchmark input`: the training input pipeline alone, folders vs shards, per worker
count and decode place; bad arguments fail in one line."""

from __future__ import annotations

import json

import pytest
from shard_helpers import make_folder

from vitssl.cli import main
from vitssl.data.shards.pack import PackOptions, pack


@pytest.fixture(scope="module")
def folder_and_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    folder = make_folder(root / "images", per_class=8, ext="jpg")
    pack(folder, root / "shards", PackOptions(shard_bytes=8192), progress=False)
    return folder, root / "shards"


def test_table_has_a_row_per_setting_and_the_json_the_same(folder_and_shards, tmp_path, capsys):
    folder, shards = folder_and_shards
    out = tmp_path / "input.json"
    assert main(["benchmark", "input", "--data", str(folder), str(shards), "--workers", "0", "1",
                 "--decode", "host", "device", "--batch-size", "4", "--batches", "2", "--device", "cpu",
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    table = printed.split("benchmark input done in ")[0].splitlines()  # then the closing summary
    rows = json.loads(out.read_text())["input"]
    assert len(table) == 1 + 8 == 1 + len(rows)
    assert {(r["kind"], r["workers"], r["decode"]) for r in rows} == {
        (k, w, d) for k in ("folder", "shards") for w in (0, 1) for d in ("host", "device")}
    assert all(r["images"] == 8 and r["images_per_s"] > 0 for r in rows)


@pytest.mark.parametrize("args,message", [
    (["--batch-size", "0"], "--batch-size: 0 is out of range: use an integer >= 1"),
    (["--workers", "-1"], "--workers: -1 is out of range: use an integer >= 0"),
    (["--batch-size", "20"], "fewer than two batches of 20"),
    (["--data", "NOSHARDS"], "matches no file"),
])
def test_bad_arguments_fail_in_one_line(folder_and_shards, capsys, args, message):
    folder, shards = folder_and_shards
    argv = ["benchmark", "input", "--data", str(folder), "--workers", "0", "--batches", "1", *args]
    argv = [f"{shards}/train-{{000000..000099}}.tar" if a == "NOSHARDS" else a for a in argv]
    try:
        code = main(argv)
    except SystemExit as stop:  # refused by the parser itself
        code = stop.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vitssl") and ": error: " in err and message in err and "\n" not in err
