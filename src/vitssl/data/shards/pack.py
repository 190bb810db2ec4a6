"""`vitssl data pack`: an image folder into WebDataset tar shards plus `index.json`.

Each sample is `<key>.<ext>` (the file's bytes as stored, or a re-encoded JPEG with
`reencode`) and, with labels, `<key>.cls` (the class index as text); the key is the file's path
under the folder with dots replaced, so it names the image. Samples are written in a seeded
random order, so each shard mixes the classes. Every image is decoded once while packing:
unreadable, truncated, empty, non-image and over-size files are skipped and reported as the
image folders report them (`skipped` in the index). A shard is written as `*.tar.partial` and
renamed when complete; `pack-progress.json` records the finished ones, so an interrupted pack
continues after its last complete shard.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm.auto import tqdm
from webdataset import TarWriter

from vitssl.data.datasets import (
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageFolderDataset,
    SkipReport,
    _reason_of,
)
from vitssl.data.shards.index import INDEX_FORMAT, INDEX_NAME
from vitssl.data.shards.samples import decode_image
from vitssl.engine.outputs import OutputError, check_output_dir, write_text_atomic

PROGRESS = "pack-progress.json"
log = logging.getLogger("vitssl")


@dataclass(frozen=True)
class PackOptions:
    shard_bytes: int = 1 << 30
    labels: bool = False
    reencode: bool = False
    quality: int = 95
    seed: int = 0
    prefix: str = "train"
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
    workers: int = 0


def parse_size(text: str) -> int:
    """'1GB', '500MB', '64k', '1000000' -> bytes (powers of 1024)."""
    units = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "M": 1 << 20, "MB": 1 << 20, "G": 1 << 30, "GB": 1 << 30,
             "T": 1 << 40, "TB": 1 << 40}
    t = text.strip().upper().replace("IB", "B")
    number = t.rstrip("KMGTB")
    try:
        value = float(number) * units[t[len(number):]]
    except (ValueError, KeyError):
        raise ValueError(f"--shard-size '{text}' is not a size: write e.g. 1GB, 500MB or 64KB") from None
    if value < 1 << 10:
        raise ValueError(f"--shard-size '{text}' is below 1KB: choose e.g. 1GB (hundreds of MB to a few GB)")
    return int(value)


def _prepare(job: tuple[str, str, PackOptions]) -> tuple[str, bytes] | tuple[None, str]:
    """(suffix, bytes) to store for one file, or (None, reason) when it is skipped."""
    path, suffix, opts = job
    try:
        with open(path, "rb") as f:
            data = f.read()
        image = decode_image(data, path, opts.max_image_pixels)
        if opts.reencode:
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=opts.quality)
            return "jpg", buffer.getvalue()
        return suffix, data
    except Exception as e:  # PIL raises many types for bad files
        return None, _reason_of(e, path)


def _suffix(path: str) -> str:
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    return "jpg" if ext == "jpeg" else "tiff" if ext == "tif" else ext


def sample_key(path: str, root: Path) -> str:
    return os.path.relpath(path, root).replace(os.sep, "/").replace(".", "_")


def _fingerprint(folder: ImageFolderDataset, opts: PackOptions) -> str:
    h = hashlib.sha1(json.dumps([opts.shard_bytes, opts.labels, opts.reencode, opts.quality, opts.seed,
                                 opts.prefix, opts.max_image_pixels]).encode())
    for path, label in folder.samples:
        h.update(f"{path}\0{label}\n".encode())
    return h.hexdigest()


def _read_progress(out: Path, fingerprint: str) -> dict:
    """The finished shards of an interrupted pack of the same folder with the same options."""
    path = out / PROGRESS
    fresh = {"fingerprint": fingerprint, "shards": [], "next": 0, "skipped": []}
    if not path.exists():
        return fresh
    progress = json.loads(path.read_text())
    if progress.get("fingerprint") != fingerprint:
        raise OutputError(f"--out '{out}' holds an unfinished pack of other images or options: pass --overwrite "
                          "to start again, or choose another folder")
    for shard in progress["shards"]:  # a finished shard that is gone or altered is packed again
        if not (out / shard["name"]).is_file() or (out / shard["name"]).stat().st_size != shard["bytes"]:
            return fresh
    return progress


def _clear(out: Path) -> None:
    for pattern in ("*.tar", "*.tar.partial", INDEX_NAME, PROGRESS):
        for p in out.glob(pattern):
            p.unlink()


def _jobs(folder: ImageFolderDataset, order: np.ndarray, start: int, opts: PackOptions) -> Iterator:
    return ((folder.samples[i][0], _suffix(folder.samples[i][0]), opts) for i in order[start:])


def pack(data: str | os.PathLike[str], out: str | os.PathLike[str], opts: PackOptions = PackOptions(),
         overwrite: bool = False, progress: bool = True) -> dict:
    """Pack the image folder `data` into shards in `out`; returns the index written."""
    folder = ImageFolderDataset(data, opts.max_image_pixels or 0)
    if opts.labels and not folder.classes:
        raise ValueError(f"--labels: '{data}' has no class sub-folders: pack it without --labels, or arrange "
                         "the images as FOLDER/<class>/<image>")
    out = Path(out)
    check_output_dir(out, overwrite or (out / PROGRESS).exists(), patterns=("*.tar", INDEX_NAME))
    out.mkdir(parents=True, exist_ok=True)
    if overwrite:
        _clear(out)
    state = _read_progress(out, _fingerprint(folder, opts))
    order = np.random.default_rng(opts.seed).permutation(len(folder.samples))  # an array: 8 B per image
    for stale in out.glob("*.tar.partial"):
        stale.unlink()
    _write_shards(folder, order, out, opts, state, progress)
    return _write_index(folder, out, opts, state)


def _write_shards(folder: ImageFolderDataset, order: np.ndarray, out: Path, opts: PackOptions, state: dict,
                  progress: bool) -> None:
    bar = tqdm(total=len(order), initial=state["next"], desc="packing", unit="img", disable=not progress)
    pool = Pool(opts.workers) if opts.workers > 0 else None
    results = (pool.imap(_prepare, _jobs(folder, order, state["next"], opts), chunksize=16) if pool
               else map(_prepare, _jobs(folder, order, state["next"], opts)))
    writer, stream, count, position = None, None, 0, state["next"]
    try:
        for (suffix, payload), i in zip(results, order[state["next"]:]):
            path, label = folder.samples[i]
            position += 1
            bar.update(1)
            if suffix is None:
                state["skipped"].append([path, payload])
                continue
            if writer is None:
                name = f"{opts.prefix}-{len(state['shards']):06d}.tar"
                stream = open(out / f"{name}.partial", "wb")
                # a whole-second mtime: a float one costs a PAX header per member (+1 KB, slower reads)
                writer, count = TarWriter(stream, encoder=False, mtime=0), 0
            sample = {"__key__": sample_key(path, folder.root), suffix: payload}
            if opts.labels:
                sample["cls"] = str(label).encode()
            writer.write(sample)
            count += 1
            if stream.tell() >= opts.shard_bytes or position == len(order):
                _finish_shard(writer, stream, out, state, count, position)
                writer = None
        if writer is not None:
            _finish_shard(writer, stream, out, state, count, position)
        state["next"] = position
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()


def _finish_shard(writer: TarWriter, stream, out: Path, state: dict, count: int, position: int) -> None:
    writer.close()  # also closes `stream`
    partial = Path(stream.name)
    final = partial.with_suffix("")  # drop .partial
    os.replace(partial, final)
    state["shards"].append({"name": final.name, "samples": count, "bytes": final.stat().st_size})
    state["next"] = position
    write_text_atomic(out / PROGRESS, json.dumps(state))


def _write_index(folder: ImageFolderDataset, out: Path, opts: PackOptions, state: dict) -> dict:
    report = SkipReport(str(folder.root), [tuple(s) for s in state["skipped"]], 0)
    index = {"format": INDEX_FORMAT, "source": str(folder.root), "classes": folder.classes if opts.labels else [],
             "total": sum(s["samples"] for s in state["shards"]), "shards": state["shards"],
             "skipped": report.as_dict()["skipped"]}
    if not index["total"]:
        raise ValueError(f"no image of '{folder.root}' could be read ({report.message()}): nothing to pack")
    write_text_atomic(out / INDEX_NAME, json.dumps(index, indent=1))
    (out / PROGRESS).unlink(missing_ok=True)
    if report.count:
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(report.by_reason().items()))
        log.warning("skipped %d unreadable image(s) under '%s' (%s), not packed: %s (list in %s)", report.count,
                    folder.root, reasons, ", ".join(p for p, _ in report.skipped[:3]), out / INDEX_NAME)
    return index
