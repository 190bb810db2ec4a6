"""`vitssl embed`: one row per image with the run's own features, resumable, and one-line errors."""

import csv
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import tiny_overrides
from vitssl.cli import main
from vitssl.eval.features import eval_transform
from vitssl.eval.pretrained import load_pretrained


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("embed") / "run"
    assert main(["pretrain", "--data", "digits", "--out", str(folder), *tiny_overrides("digits")[1:]]) == 0
    return folder


def make_images(root, classes=("cat", "dog"), n=3, broken=True):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c if c else root).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray((rng.random((20 + i, 24, 3)) * 255).astype("uint8")).save(root / c / f"{i}.png")
    if broken:
        (root / classes[-1] / "broken.jpg").write_bytes(b"not an image")
    return root


def test_rows_hold_path_label_and_the_runs_features(run, tmp_path, capsys, one_thread):
    data = make_images(tmp_path / "imgs")
    out = tmp_path / "e.npy"
    assert main(["embed", "--checkpoint", str(run), "--data", str(data), "--out", str(out), "--patch-features",
                 "--batch-size", "2", "--chunk-size", "4", "--num-workers", "0", "--device", "cpu"]) == 0
    printed = capsys.readouterr()
    assert "embedded 6 images" in printed.out and "1 unreadable" in printed.out and str(out) in printed.out
    table = np.load(out, allow_pickle=False)
    assert list(table["path"]) == ["cat/0.png", "cat/1.png", "cat/2.png", "dog/0.png", "dog/1.png", "dog/2.png"]
    assert list(table["label"]) == [0, 0, 0, 1, 1, 1]
    backbone, config = load_pretrained(run)  # independently: the run's backbone on the eval transform
    transform = eval_transform(str(data), config["method"]["crops"]["global_crops_size"])
    with torch.no_grad():
        tokens = backbone(transform(Image.open(data / "dog" / "1.png").convert("RGB"))[None])
    assert np.allclose(table["cls"][4], tokens.pooled[0].numpy(), atol=1e-5)
    assert np.allclose(table["patch_mean"][4], tokens.patches[0].mean(0).numpy(), atol=1e-5)
    assert not (tmp_path / "e.npy.parts").exists()


def test_csv_of_a_flat_folder_has_no_label_column(run, tmp_path, one_thread):
    data = make_images(tmp_path / "flat", classes=("",), broken=False)
    out = tmp_path / "e.csv"
    assert main(["embed", "--checkpoint", str(run), "--data", str(data), "--out", str(out), "--num-workers", "0"]) == 0
    rows = list(csv.reader(out.open()))
    assert rows[0][:2] == ["path", "cls_0"] and len(rows) == 4 and rows[1][0] == "0.png"


def test_parquet(run, tmp_path, one_thread):
    pq = pytest.importorskip("pyarrow.parquet")
    data = make_images(tmp_path / "imgs", broken=False)
    out = tmp_path / "e.parquet"
    assert main(["embed", "--checkpoint", str(run), "--data", str(data), "--out", str(out), "--num-workers", "0"]) == 0
    table = pq.read_table(out)
    assert table.column_names == ["path", "label", "cls"] and table.num_rows == 6


def test_parquet_without_pyarrow_names_the_extra(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # what `import pyarrow` meets where it is not installed
    assert main(["embed", "--checkpoint", str(run), "--data", "digits", "--out", str(tmp_path / "e.parquet")]) == 2
    assert "pip install 'vitssl[parquet]'" in capsys.readouterr().err


@pytest.mark.parametrize("name, message", [("e.txt", "no known suffix"), ("taken.npy", "already exists")])
def test_bad_output_is_one_line_and_touches_nothing(run, tmp_path, capsys, name, message):
    (tmp_path / "taken.npy").write_bytes(b"keep")
    assert main(["embed", "--checkpoint", str(run), "--data", "digits", "--out", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vitssl: error:") and message in err[0]
    assert (tmp_path / "taken.npy").read_bytes() == b"keep" and not (tmp_path / "e.txt").exists()


def test_partial_chunks_of_other_settings_are_refused(run, tmp_path, capsys, one_thread):
    parts = tmp_path / "e.npy.parts"
    parts.mkdir()
    (parts / "manifest.json").write_text('{"images": 1}')
    argv = ["embed", "--checkpoint", str(run), "--data", str(make_images(tmp_path / "i", broken=False)),
            "--out", str(tmp_path / "e.npy"), "--num-workers", "0"]
    assert main(argv) == 2 and "other settings" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0 and len(np.load(tmp_path / "e.npy")) == 6


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_a_stopped_run_continues_after_its_saved_chunks(run, tmp_path, sig):
    """SIGINT or SIGTERM to a real process mid-run (a stop line, not an error), then the same
    command: finished chunks are reused, not
    recomputed (a marker written into the first one comes back in the table), and the rest equals
    an uninterrupted run."""
    data = make_images(tmp_path / "imgs", n=40, broken=False)
    argv = [sys.executable, "-m", "vitssl", "embed", "--checkpoint", str(run), "--data", str(data),
            "--batch-size", "2", "--chunk-size", "8", "--num-workers", "0", "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([*argv, "--out", str(tmp_path / "a.npy")], env=env, stderr=subprocess.PIPE, text=True)
    first = tmp_path / "a.npy.parts" / "chunk-000000.npz"
    deadline = time.time() + 120
    while not first.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    last = err.strip().splitlines()[-1]
    assert proc.returncode == 2 and last.startswith(f"vitssl: stopped by {sig.name} after ") and "error" not in last
    assert f"the finished chunks are kept in {tmp_path / 'a.npy'}.parts" in last
    assert first.exists() and not (tmp_path / "a.npy").exists()
    chunk = dict(np.load(first))
    chunk["cls"] = np.full_like(chunk["cls"], 7.0)  # a marker no backbone gives
    with open(first, "wb") as f:
        np.savez(f, **chunk)
    subprocess.run([*argv, "--out", str(tmp_path / "a.npy")], env=env, check=True, capture_output=True)
    subprocess.run([*argv, "--out", str(tmp_path / "b.npy")], env=env, check=True, capture_output=True)
    a, b = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    assert len(a) == 80 and (a["path"] == b["path"]).all()
    assert (a["cls"][:8] == 7.0).all()
    assert np.allclose(a["cls"][8:], b["cls"][8:], atol=1e-6)
