"""`vitssl data pack`: bytes stored as they were, labels and keys, hostile images reported,
an interrupted pack (a real SIGKILL) continues after its last complete shard."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time

import pytest
from PIL import Image
from shard_helpers import CLASSES, make_folder

from vitssl.cli import main
from vitssl.data.shards.pack import PackOptions, pack


def members(shards):
    out = {}
    for tar in sorted(shards.glob("*.tar")):
        with tarfile.open(tar) as t:
            for info in t:
                out[info.name] = t.extractfile(info).read()
    return out


def test_pack_stores_each_image_once_as_it_was_with_key_and_label(tmp_path):
    folder = make_folder(tmp_path / "images", per_class=5, ext="jpg")
    (folder / "ant" / "x.y.jpg").write_bytes((folder / "ant" / "000.jpg").read_bytes())  # a dot in the name
    index = pack(folder, tmp_path / "shards", PackOptions(shard_bytes=4096, labels=True), progress=False)
    stored = members(tmp_path / "shards")
    assert index["total"] == 16 and index["classes"] == list(CLASSES)
    for c, cls in enumerate(CLASSES):
        for image in (folder / cls).iterdir():
            key = f"{cls}/{image.name}".replace(".", "_")
            assert stored[f"{key}.jpg"] == image.read_bytes()  # not re-encoded
            assert stored[f"{key}.cls"] == str(c).encode()
    assert len(stored) == 2 * 16
    assert [s["samples"] for s in index["shards"]] == [
        len({n.split(".")[0] for n in members_of(tmp_path / "shards" / s["name"])}) for s in index["shards"]]


def members_of(tar):
    with tarfile.open(tar) as t:
        return t.getnames()


def test_reencode_writes_jpegs_of_the_same_pictures(tmp_path):
    folder = make_folder(tmp_path / "images", per_class=2, ext="png")
    pack(folder, tmp_path / "shards", PackOptions(reencode=True), progress=False)
    stored = members(tmp_path / "shards")
    assert all(name.endswith(".jpg") for name in stored) and len(stored) == 6


def test_hostile_images_are_skipped_and_listed_in_the_index(tmp_path, caplog):
    folder = make_folder(tmp_path / "images", per_class=3)
    (folder / "ant" / "empty.png").write_bytes(b"")
    (folder / "bee" / "junk.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    Image.new("RGB", (300, 300)).save(folder / "cow" / "huge.png")
    index = pack(folder, tmp_path / "shards", PackOptions(max_image_pixels=50_000), progress=False)
    skipped = {os.path.basename(s["path"]): s["reason"] for s in index["skipped"]}
    assert skipped == {"empty.png": "empty file", "junk.jpg": "not an image", "huge.png": "too large"}
    assert index["total"] == 9
    assert "skipped 3 unreadable image(s)" in caplog.text


@pytest.mark.slow  # a real interpreter start-up, killed mid-pack, then the rest
def test_sigkilled_pack_continues_after_its_last_complete_shard(tmp_path):
    folder = make_folder(tmp_path / "images", per_class=150)  # seconds of packing: the kill lands mid-pack
    out = tmp_path / "shards"
    cmd = [sys.executable, "-m", "vitssl", "data", "pack", "--data", str(folder), "--out", str(out),
           "--shard-size", "4KB", "--labels"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("*.tar"))) < 3 and proc.poll() is None:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL and not (out / "index.json").exists(), "the pack ended before the kill"
    finished = {p.name: p.stat().st_ino for p in out.glob("*.tar")}
    progress = json.loads((out / "pack-progress.json").read_text())
    kept = {s["name"] for s in progress["shards"]}
    assert kept and kept <= set(finished)

    assert main(["data", "pack", "--data", str(folder), "--out", str(out), "--shard-size", "4KB", "--labels",
                 "--no-progress"]) == 0
    for name in kept:  # finished shards were kept, not written again
        assert (out / name).stat().st_ino == finished[name]
    fresh = tmp_path / "fresh"
    pack(folder, fresh, PackOptions(shard_bytes=4096, labels=True), progress=False)
    assert members(out) == members(fresh)  # the same shards as an uninterrupted pack
    assert not list(out.glob("*.partial")) and not (out / "pack-progress.json").exists()


@pytest.mark.parametrize("args,message", [
    (["--shard-size", "lots"], "--shard-size 'lots' is not a size"),
    (["--shard-size", "10"], "below 1KB"),
    (["--labels", "--data", "FLAT"], "has no class sub-folders"),
    (["--data", "MISSING"], "does not exist"),
    (["--prefix", "a/b"], "--prefix 'a/b' must be a plain file name part"),
])
def test_bad_pack_arguments_fail_in_one_line(tmp_path, capsys, args, message):
    folder = make_folder(tmp_path / "images", per_class=1)
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (8, 8)).save(flat / "a.png")
    argv = ["data", "pack", "--data", str(folder), "--out", str(tmp_path / "out"), "--no-progress", *args]
    argv = [str(flat) if a == "FLAT" else str(tmp_path / "nope") if a == "MISSING" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vitssl: error:") and message in err and "\n" not in err


def test_existing_shards_are_kept_without_overwrite(tmp_path, capsys):
    folder = make_folder(tmp_path / "images", per_class=1)
    argv = ["data", "pack", "--data", str(folder), "--out", str(tmp_path / "s"), "--no-progress"]
    assert main(argv) == 0
    before = (tmp_path / "s" / "index.json").read_bytes()
    assert main(argv) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "s" / "index.json").read_bytes() == before
    assert main([*argv, "--overwrite"]) == 0
