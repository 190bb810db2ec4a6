"""The shard index (`index.json`, written by `vitssl data pack`) and shard specs.

A spec names the shards of a data set in one of three ways: a folder holding `index.json` and
its shards; a brace pattern (`shards/train-{000000..001023}.tar`); or a text file listing one
shard per line (paths or `pipe:` commands, e.g. `pipe:aws s3 cp s3://bucket/train-000000.tar -`).
The index is read from the folder, from beside a list file, or from the folder of the first
local shard. It holds each shard's sample count and size, so an epoch's length is known
without reading a shard, and a truncated, replaced or missing local shard is refused at once.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from webdataset.shardlists import expand_urls

INDEX_NAME = "index.json"
INDEX_FORMAT = "vitssl-shards/1"
TAR_MAGIC_OFFSET, TAR_MAGIC = 257, b"ustar"


class ShardSpecError(ValueError):
    """A shard spec, shard or index that cannot be used; the message names it and the fix."""


@dataclass(frozen=True)
class Shard:
    url: str  # a local path or a `pipe:` command
    name: str  # its file name, the key into index.json
    samples: int
    size: int  # bytes, as packed (0: unknown)


@dataclass
class ShardIndex:
    """The shards of a data set, in spec order, with their sample counts and class names."""

    spec: str
    shards: list[Shard]
    classes: list[str]

    @property
    def total(self) -> int:
        return sum(s.samples for s in self.shards)


def is_shard_spec(source: object) -> bool:
    """True when `source` names shards (not an image folder or a built-in set)."""
    if not isinstance(source, (str, os.PathLike)):
        return False
    text = str(source)
    if text.startswith("pipe:") or text.endswith(".tar") or re.search(r"\{[^}]*\.\.[^}]*\}", text):
        return True
    path = Path(text)
    return (path.is_dir() and (path / INDEX_NAME).is_file()) or (path.is_file() and path.suffix in (".txt", ".list"))


def shard_name(url: str) -> str:
    """The file name a shard has in index.json: the last token ending in `.tar` for `pipe:`."""
    if url.startswith("pipe:"):
        tars = [t for t in re.split(r"[\s'\"]+", url) if t.endswith(".tar")]
        if not tars:
            raise ShardSpecError(f"shard command '{url}' names no .tar file: name the shard (…/train-000000.tar) "
                                 "in the command so it can be matched with index.json")
        return tars[-1].rsplit("/", 1)[-1]
    return os.path.basename(url)


def _urls_and_index(spec: str) -> tuple[list[str], Path | None]:
    path = Path(spec)
    if not spec.startswith("pipe:") and path.is_dir():
        index = path / INDEX_NAME
        if not index.is_file():
            raise ShardSpecError(f"'{spec}' holds no {INDEX_NAME}: pack the images with `vitssl data pack --data "
                                 f"IMAGE_FOLDER --out {spec}`, or pass an image folder")
        names = [s["name"] for s in read_index_file(index)["shards"]]
        return [str(path / n) for n in names], index
    if not spec.startswith("pipe:") and path.is_file() and not spec.endswith(".tar"):
        lines = [ln.strip() for ln in path.read_text().splitlines()]
        urls = [ln if ln.startswith("pipe:") or os.path.isabs(ln) else str(path.parent / ln)
                for ln in lines if ln and not ln.startswith("#")]
        return urls, path.parent / INDEX_NAME
    urls = expand_urls(spec)
    local = [u for u in urls if not u.startswith("pipe:")]
    return urls, (Path(local[0]).parent / INDEX_NAME) if local else None


def read_index_file(path: Path) -> dict:
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ShardSpecError(f"'{path}' cannot be read as a shard index ({type(e).__name__}): re-run "
                             "`vitssl data pack` to write it") from None
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT or not isinstance(index.get("shards"), list):
        raise ShardSpecError(f"'{path}' is not a vitssl shard index (format {INDEX_FORMAT}): re-run "
                             "`vitssl data pack` to write it")
    return index


def check_local_shard(shard: Shard) -> None:
    """A local shard exists, has the packed size and starts with a tar header (cheap: one stat
    and 512 bytes), so a truncated, re-written or non-tar file is refused before training."""
    if shard.url.startswith("pipe:"):
        return
    fix = "re-pack it with `vitssl data pack ... --overwrite` or copy it again"
    try:
        size = os.path.getsize(shard.url)
        with open(shard.url, "rb") as f:
            head = f.read(512)
    except OSError as e:
        raise ShardSpecError(f"shard '{shard.url}' cannot be read ({e.strerror or type(e).__name__}): {fix}") from None
    if head[TAR_MAGIC_OFFSET:TAR_MAGIC_OFFSET + len(TAR_MAGIC)] != TAR_MAGIC:
        raise ShardSpecError(f"shard '{shard.url}' is not a tar file: {fix}")
    if shard.size and size != shard.size:
        what = "truncated" if size < shard.size else "larger than packed"
        raise ShardSpecError(f"shard '{shard.url}' is {what} ({size} bytes, index.json says {shard.size}): {fix}")


def open_index(spec: str | os.PathLike[str], check: bool = True) -> ShardIndex:
    """Resolve `spec` to its shards and their index entries; with `check`, verify local shards."""
    spec = str(spec)
    urls, index_path = _urls_and_index(spec)
    if not urls:
        raise ShardSpecError(f"shard spec '{spec}' names no shards: check the pattern or list file")
    missing = [u for u in urls if not u.startswith("pipe:") and not os.path.exists(u)]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise ShardSpecError(f"shard spec '{spec}' matches no file '{missing[0]}'{more}: check the path and the "
                             "brace range (e.g. train-{000000..000009}.tar)")
    if index_path is None or not index_path.is_file():
        where = index_path or "beside a list file of the pipe: commands"
        raise ShardSpecError(f"no {INDEX_NAME} for shard spec '{spec}' (looked in {where}): copy the "
                             f"{INDEX_NAME} that `vitssl data pack` wrote next to the shards")
    index = read_index_file(index_path)
    entries = {s["name"]: s for s in index["shards"]}
    shards = []
    for url in urls:
        entry = entries.get(shard_name(url))
        if entry is None:
            raise ShardSpecError(f"shard '{url}' is not in '{index_path}': list only shards that "
                                 "`vitssl data pack` wrote, or re-pack")
        shards.append(Shard(url, entry["name"], int(entry["samples"]), int(entry.get("bytes", 0))))
    if check:
        for shard in shards:
            check_local_shard(shard)
    result = ShardIndex(spec, shards, list(index.get("classes", [])))
    if result.total == 0:
        raise ShardSpecError(f"the shards of '{spec}' hold no samples: pack a folder of images")
    return result
