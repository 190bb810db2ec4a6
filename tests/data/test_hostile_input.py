"""Hostile image folders: every mode, tiny and huge images, broken files, loops, hidden folders.

Pre-training and evaluation must finish, skip and report what cannot be read, and write
nothing outside the run folder. The fuzz test throws random and mutated image bytes at the
loader: only clean skips, never a crash or a hang.
"""

import io
import json
import math
import os
import signal
import struct
import time
import warnings
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import tiny_overrides
from vitssl.config import load_config
from vitssl.data import ImageFolderDataset, build_dataset, report_skips
from vitssl.data.datasets import (
    DEFAULT_MAX_IMAGE_PIXELS,
    SKIP_REASONS,
    UnreadableImageWarning,
    open_image,
)
from vitssl.data.loaders import AugmentedDataset, build_train_loader
from vitssl.methods import method_configs

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def with_png_size(data: bytes, width: int, height: int) -> bytes:
    """The PNG `data` with its IHDR claiming another size (valid CRC), pixel data unchanged."""
    ihdr = bytearray(data[12:29])  # chunk type + 13 bytes of header
    ihdr[4:12] = struct.pack(">II", width, height)
    return data[:8] + data[8:12] + bytes(ihdr) + struct.pack(">I", zlib.crc32(bytes(ihdr))) + data[33:]


def write_modes(folder: Path) -> None:
    """One small image per PIL mode the loader must convert."""
    folder.mkdir(parents=True, exist_ok=True)
    size = (12, 10)
    Image.new("L", size, 100).save(folder / "l.png")
    Image.new("LA", size, (200, 255)).save(folder / "la.png")
    p = Image.new("P", size, 2)
    p.putpalette([0, 0, 0, 0, 0, 0, 10, 20, 30] + [0] * 759)
    p.save(folder / "p.png")
    Image.new("RGBA", size, (255, 255, 255, 0)).save(folder / "rgba.png")
    Image.fromarray(np.full((10, 12), 257 * 77, dtype=np.uint16)).save(folder / "i16.png")
    Image.fromarray(np.full((10, 12), 257 * 77, dtype=np.int32)).save(folder / "i32.tif")
    Image.fromarray(np.full((10, 12), 0.5, dtype=np.float32)).save(folder / "f.tif")
    Image.new("CMYK", size, (0, 255, 255, 0)).save(folder / "cmyk.jpg", quality=100)
    Image.new("1", size, 1).save(folder / "one.png")
    Image.new("RGB", (1, 1), (9, 99, 199)).save(folder / "tiny.png")


def hostile_folder(root: Path) -> tuple[Path, dict[str, str]]:
    """Two classes of readable images in every mode plus every kind of bad file; returns the
    folder and the bad files' names with the reason the loader should give."""
    data = root / "data"
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        write_modes(data / c)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(data / c / f"rgb{i}.jpg")
    bad = data / "a"
    jpeg = (bad / "rgb0.jpg").read_bytes()
    (bad / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (bad / "notes.png").write_text("this is not an image")
    (bad / "zero.jpg").write_bytes(b"")
    (bad / "loop1.jpg").symlink_to(bad / "loop2.jpg")
    (bad / "loop2.jpg").symlink_to(bad / "loop1.jpg")
    (bad / "dangling.png").symlink_to(bad / "nowhere.png")
    (bad / "huge.png").write_bytes(with_png_size(png_bytes(Image.new("L", (4, 4))), 10000, 10000))
    locked = bad / "locked.png"
    locked.write_bytes(png_bytes(Image.new("RGB", (8, 8), (1, 2, 3))))
    locked.chmod(0)
    (bad / "dir_loop").symlink_to(bad)  # folder loop: never entered
    hidden = data / "b" / ".thumbs" / ".deeper"
    hidden.mkdir(parents=True)
    (hidden / "x.png").write_text("hidden: never scanned")
    (data / "b" / ".hidden.png").write_text("hidden file: never scanned")
    (data / "b" / "README.txt").write_text("not an image extension: never scanned")
    expected = {"truncated.jpg": "truncated", "notes.png": "not an image", "zero.jpg": "empty file",
                "loop1.jpg": "symlink loop", "loop2.jpg": "symlink loop",
                "dangling.png": "missing (deleted or a broken link)", "huge.png": "too large"}
    if not IS_ROOT:  # root reads a chmod-000 file anyway
        expected["locked.png"] = "permission denied"
    return data, expected


def files_outside(root: Path, run_dir: Path) -> set[str]:
    found = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        if Path(dirpath) == run_dir:
            dirnames[:] = []
            continue
        found.update(os.path.join(dirpath, f) for f in filenames + dirnames)
    return found - {str(run_dir)}


@pytest.fixture
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreadableImageWarning)
        warnings.filterwarnings("ignore", module="PIL")  # PIL's own notes on corrupt EXIF etc.
        yield


def test_iteration_converts_every_mode_and_reports_every_bad_file(tmp_path, quiet):
    data, expected = hostile_folder(tmp_path)
    ds = ImageFolderDataset(data)
    names = {Path(p).name for p, _ in ds.samples}
    assert not {"x.png", ".hidden.png", "README.txt"} & names and ds.classes == ["a", "b"]
    items = [ds[i] for i in range(len(ds))]
    assert all(img.mode == "RGB" and label in (0, 1) for img, label in items)
    report = ds.skip_report()
    got = {Path(p).name: r for p, r in report.skipped}
    assert got == expected
    assert report.substitutions == len(expected)
    line = report.message()
    assert "\n" not in line and f"skipped {len(expected)} unreadable" in line and "too large" in line
    # I;16 is scaled to 8 bits, not clipped to white
    i16 = next(i for i, (p, _) in enumerate(ds.samples) if p.endswith("a/i16.png"))
    assert tuple(np.asarray(ds[i16][0])[0, 0]) == (77, 77, 77)


def test_pixel_limit_is_a_setting(tmp_path, quiet):
    Image.new("RGB", (64, 64), (5, 6, 7)).save(tmp_path / "big.png")
    Image.new("RGB", (8, 8), (1, 1, 1)).save(tmp_path / "small.png")
    strict = ImageFolderDataset(tmp_path, max_image_pixels=1000)
    assert strict[0][0].size == (8, 8)  # big.png replaced by small.png
    assert [r for _, r in strict.skip_report().skipped] == ["too large"]
    assert ImageFolderDataset(tmp_path, max_image_pixels=5000)[0][0].size == (64, 64)
    # a header claiming 10000x10000: skipped at PIL's limit, decoded (and found corrupt) without one
    (tmp_path / "claims.png").write_bytes(with_png_size(png_bytes(Image.new("L", (4, 4))), 10000, 10000))
    default = build_dataset(tmp_path)
    unlimited = build_dataset(tmp_path, max_image_pixels=0)
    i = [Path(p).name for p, _ in default.samples].index("claims.png")
    default[i], unlimited[i]
    assert default.skip_report().skipped[0][1] == "too large"
    assert unlimited.skip_report().skipped[0][1] in ("truncated", "corrupt")
    assert Image.MAX_IMAGE_PIXELS and Image.MAX_IMAGE_PIXELS > 10**7  # PIL's own limit left as it was


def test_default_pixel_limit_skips_images_above_50m_pixels_before_decoding(tmp_path, quiet):
    """The default bounds what one image costs a worker (about 0.65 GB at worst at 50M pixels,
    benchmarks/decode_memory.py): a header one column over it is skipped as too large and
    reported; one at it is decoded (and, holding 16 pixels of data, found broken)."""
    side = math.isqrt(DEFAULT_MAX_IMAGE_PIXELS)
    small = png_bytes(Image.new("L", (4, 4)))
    (tmp_path / "over.png").write_bytes(with_png_size(small, side + 1, side))
    (tmp_path / "at.png").write_bytes(with_png_size(small, side, side))
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "fine.png")
    ds = build_dataset(tmp_path)
    assert ds.max_image_pixels == DEFAULT_MAX_IMAGE_PIXELS == 50_000_000
    assert all(ds[i][0].size == (8, 8) for i in range(len(ds)))  # both replaced by fine.png
    reasons = {Path(p).name: r for p, r in ds.skip_report().skipped}
    assert reasons["over.png"] == "too large" and reasons["at.png"] in ("truncated", "corrupt")
    assert "1 too large" in ds.skip_report().message()
    assert load_config(None, [], method_configs()).data.max_image_pixels is None  # the config's default is this one


def test_permission_denied_is_a_clean_skip(tmp_path, monkeypatch, quiet):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "locked.png")
    real_open = Image.open

    def guarded(path, *args, **kwargs):  # what a chmod-000 file does for a non-root user
        if str(path).endswith("locked.png"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(Image, "open", guarded)
    ds = ImageFolderDataset(tmp_path)
    ds[1]
    assert ds.skip_report().skipped == [(str(tmp_path / "locked.png"), "permission denied")]


def test_a_file_that_breaks_mid_run_is_substituted_deterministically(tmp_path, quiet):
    rng = np.random.default_rng(1)
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    ds, twin = ImageFolderDataset(tmp_path), ImageFolderDataset(tmp_path)  # same listing
    before = [np.asarray(ds[i][0]) for i in range(10)]
    (tmp_path / "3.png").unlink()
    (tmp_path / "7.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)  # overwritten with garbage
    after = [np.asarray(ds[i][0]) for i in range(10)]
    again = [np.asarray(twin[i][0]) for i in (7, 3)][::-1]  # other order, other known-bad set
    for i in (3, 7):
        assert not np.array_equal(after[i], before[i]) and any(np.array_equal(after[i], b) for b in before)
    assert all(np.array_equal(a, b) for a, b in zip(again, (after[3], after[7])))
    report = ds.skip_report()
    assert {Path(p).name for p, _ in report.skipped} == {"3.png", "7.png"} and report.substitutions == 2


def test_worker_skips_reach_the_main_process(tmp_path, quiet, caplog):
    data, expected = hostile_folder(tmp_path)
    ds = ImageFolderDataset(data)
    loader = build_train_loader(AugmentedDataset(ds, lambda im, g: np.asarray(im.resize((4, 4))), seed=0),
                                lambda batch: batch, batch_size=4, num_workers=2, seed=0)
    for epoch in (0, 1):
        loader.batch_sampler.set_epoch(epoch)
        for _ in loader:
            pass
    assert {Path(p).name for p, _ in ds.skip_report().skipped} == set(expected)
    assert any("before epoch 2: skipped" in r.getMessage() for r in caplog.records)  # logged once per epoch


def test_pretrain_and_knn_finish_on_a_hostile_folder(tmp_path, monkeypatch):
    from vitssl.commands.evaluate import run_knn
    from vitssl.commands.pretrain import pretrain

    data, expected = hostile_folder(tmp_path)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    run_dir = tmp_path / "run"
    before = files_outside(tmp_path, run_dir)
    cfg = load_config(None, tiny_overrides(data=str(data)), method_configs())
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        trainer = pretrain(cfg, run_dir)
        written = json.loads((run_dir / "skipped.json").read_text())  # pretrain reports when it ends
        result = run_knn(run_dir, str(data), str(data), ks=(1,), device="cpu", batch_size=8, num_workers=0)
    assert (run_dir / "checkpoint.pt").exists() and trainer.step == 2
    assert set(result["results"]) == {"1"}
    skipped = [w for w in record if issubclass(w.category, UnreadableImageWarning)]
    assert skipped and all("\n" not in str(w.message) for w in skipped)
    assert written
    report = report_skips(trainer.data.dataset, run_dir)
    assert report is not None and 0 < report.count <= len(expected)
    assert set(report.by_reason()) <= set(SKIP_REASONS)
    assert files_outside(tmp_path, run_dir) == before  # nothing written outside the run folder


# -- fuzzing the image loader ---------------------------------------------------------------

def _valid_encodings() -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(2)
    img = Image.fromarray(rng.integers(0, 256, (9, 11, 3), dtype=np.uint8))
    out = []
    for fmt, ext, kw in (("PNG", "png", {}), ("JPEG", "jpg", {"quality": 90}), ("GIF", "gif", {}),
                         ("BMP", "bmp", {}), ("TIFF", "tif", {}), ("WEBP", "webp", {}), ("PPM", "ppm", {})):
        buf = io.BytesIO()
        img.save(buf, format=fmt, **kw)
        out.append((ext, buf.getvalue()))
    grey16 = io.BytesIO()
    Image.fromarray(rng.integers(0, 65536, (7, 5), dtype=np.uint16)).save(grey16, format="PNG")
    out.append(("png", grey16.getvalue()))
    return out


def _mutants(n: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """Seeded random bytes and mutated valid files: truncation, byte flips, inserted junk,
    huge sizes in the header, a valid header followed by noise."""
    rng = np.random.default_rng(seed)
    valid = _valid_encodings()
    cases = []
    for k in range(n):
        ext, data = valid[k % len(valid)]
        kind = k % 6
        b = bytearray(data)
        if kind == 0:
            b = bytearray(rng.bytes(int(rng.integers(0, 400))))
        elif kind == 1:
            b = b[: int(rng.integers(0, len(b)))]
        elif kind == 2:
            for pos in rng.integers(0, len(b), int(rng.integers(1, 12))):
                b[pos] = int(rng.integers(0, 256))
        elif kind == 3:
            pos = int(rng.integers(0, len(b)))
            b[pos:pos] = rng.bytes(int(rng.integers(1, 64)))
        elif kind == 4:  # header bytes near the start set to 0xFF: absurd sizes and counts
            for pos in rng.integers(0, min(len(b), 40), 4):
                b[pos] = 0xFF
        else:
            b = b[: min(len(b), 24)] + bytearray(rng.bytes(200))
        cases.append((ext, bytes(b)))
    return cases


@contextmanager
def deadline(seconds: int):
    """Fail instead of hanging (SIGALRM; the tests run on Linux)."""
    def fail(*_):
        raise TimeoutError(f"image loader took more than {seconds} s")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_fuzzed_image_bytes_are_clean_skips(tmp_path, quiet):
    folder = tmp_path / "fuzz"
    folder.mkdir()
    cases = _mutants(300)
    for i, (ext, data) in enumerate(cases):
        (folder / f"{i:03d}.{ext}").write_bytes(data)
    Image.new("RGB", (5, 5), (3, 4, 5)).save(folder / "zzz_good.png")
    start = time.perf_counter()
    with deadline(30):
        for i in range(len(cases)):  # the loader itself: an RGB image or an ordinary exception
            try:
                img = open_image(str(folder / f"{i:03d}.{cases[i][0]}"), Image.MAX_IMAGE_PIXELS)
                assert img.mode == "RGB"
            except Exception:
                pass
        ds = ImageFolderDataset(folder)
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            items = [ds[i] for i in range(len(ds))]
    assert time.perf_counter() - start < 20
    assert all(img.mode == "RGB" for img, _ in items)
    report = ds.skip_report()
    assert report.count > 100 and set(report.by_reason()) <= set(SKIP_REASONS[1:])
    assert all("\n" not in str(w.message) for w in record)
    assert len([w for w in record if issubclass(w.category, UnreadableImageWarning)]) <= 5
