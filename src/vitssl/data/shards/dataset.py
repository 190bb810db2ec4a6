"""`ShardDataset`: a packed data set, streamed for training, read by position for evaluation.

Training streams the shards (`vitssl.data.shards.stream`, chosen by `build_train_loader`);
`dataset[i]` reads sample `i` (shard order, then position in the shard) by seeking in a local
shard, which the evaluation commands' loaders need (features in order, fine-tuning shuffled).
A bad sample is skipped, counted and replaced by another drawn with a generator seeded by its
position, as in image folders.
"""

from __future__ import annotations

import bisect
import itertools
import json
import operator
import os
import tarfile
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset
from webdataset.tariterators import base_plus_ext

from vitssl.data.datasets import DEFAULT_MAX_IMAGE_PIXELS, SUBSTITUTE_DRAWS
from vitssl.data.shards.index import ShardIndex, ShardSpecError, open_index
from vitssl.data.shards.samples import (
    IMAGE_SUFFIXES,
    MissingSample,
    ShardSkipReport,
    ShardSkips,
    decode_image,
    label_of,
)

DEFAULT_SHUFFLE_BUFFER = 1000  # samples per worker held for shuffling (about 110 MB of ImageNet JPEGs)


class ShardDataset(Dataset):
    """The shards named by a spec (see `vitssl.data.shards.index`); len = the index's total."""

    def __init__(self, spec: str | os.PathLike[str], max_image_pixels: int | None = None,
                 shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER, index: ShardIndex | None = None) -> None:
        self.index = index or open_index(spec)
        self.root = self.index.spec
        self.shards = self.index.shards
        self.classes = self.index.classes
        self.offsets = np.concatenate([[0], np.cumsum([s.samples for s in self.shards])]).tolist()
        if max_image_pixels is None:
            max_image_pixels = DEFAULT_MAX_IMAGE_PIXELS
        self.max_image_pixels: int | None = max_image_pixels or None
        self.shuffle_buffer = shuffle_buffer
        self.keep_jpeg_encoded = False  # set by train.decode_on=device
        self.skips = ShardSkips(self.root)
        self._members: dict[int, list[tuple[str, int, int, int]]] = {}  # shard -> (suffix, offset, size, label)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return self.index.total

    @property
    def _status(self):  # what `SkipMonitor` polls: non-zero once anything was skipped
        return self.skips.counts

    def locate(self, index: int) -> tuple[int, int]:
        """(shard, position in it) of sample `index`."""
        shard = bisect.bisect_right(self.offsets, index) - 1
        return shard, index - self.offsets[shard]

    def where(self, shard: int, position: int, key: str = "") -> str:
        return f"{self.shards[shard].url}#{key or position}"

    def decode(self, shard: int, position: int, member: tuple[str, bytes] | None, key: str = ""):
        """Image of a sample's image member (raises `MissingSample` when it has none)."""
        if member is None:
            raise MissingSample("no image in sample")
        return decode_image(member[1], self.where(shard, position, key), self.max_image_pixels,
                            self.keep_jpeg_encoded and member[0] in ("jpg", "jpeg"))

    # -- reading by position (evaluation) ------------------------------------------------
    def _shard_members(self, shard: int) -> list[tuple[str, int, int, int]]:
        """Per sample: (image suffix, data offset, size, label), from the tar headers (local shards)."""
        if shard not in self._members:
            url = self.shards[shard].url
            if url.startswith("pipe:"):
                raise ShardSpecError(f"'{url}': reading samples by position needs local shards (evaluation "
                                     "does): copy the shards to a local disk")
            samples: dict[str, dict] = {}
            with tarfile.open(url, "r:") as tar:  # headers only: tarfile seeks past the data
                for info in tar:
                    key, suffix = base_plus_ext(info.name) if info.isreg() else (None, None)
                    if key is not None:  # split as webdataset splits: at the file name's first dot
                        samples.setdefault(key, {})[suffix.lower()] = info
                members = [self._member(tar, files) for files in samples.values()]
            self._members[shard] = members
        return self._members[shard]

    @staticmethod
    def _member(tar: tarfile.TarFile, files: dict) -> tuple[str, int, int, int]:
        label = label_of({"cls": tar.extractfile(files["cls"]).read()}) if "cls" in files else -1
        image = next((files[s] for s in IMAGE_SUFFIXES if s in files), None)
        if image is None:
            return "", 0, 0, label
        return base_plus_ext(image.name)[1].lower(), image.offset_data, image.size, label

    def load(self, index: int):
        shard, position = self.locate(index)
        members = self._shard_members(shard)
        if position >= len(members):
            raise MissingSample("missing from shard")
        suffix, offset, size, label = members[position]
        if not suffix:
            raise MissingSample("no image in sample")
        with open(self.shards[shard].url, "rb") as f:
            f.seek(offset)
            data = f.read(size)
        return self.decode(shard, position, (suffix, data)), label

    def __getitem__(self, index: int):
        n = len(self)
        index = operator.index(index)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        index %= n
        rng = np.random.default_rng([0x5EED, index])
        draws = (int(rng.integers(n)) for _ in range(min(SUBSTITUTE_DRAWS, n - 1)))
        for i in itertools.chain([index], draws, ((index + k) % n for k in range(1, n))):
            try:
                item = self.load(i)
            except Exception as e:  # PIL raises many types for bad samples
                if isinstance(e, ShardSpecError):
                    raise
                self.skips.record(*self.locate(i), self.where(*self.locate(i)), e, None)
                continue
            if i != index:
                self.skips.substitution()
            return item
        raise RuntimeError(f"no sample of '{self.root}' could be read: re-pack the images with `vitssl data pack`")

    # -- skip reporting (as `ImageFolderDataset`) ------------------------------------------
    def skip_report(self) -> ShardSkipReport:
        return self.skips.report([s.url for s in self.shards])

    def write_skip_report(self, run_dir: str | os.PathLike[str]) -> Path | None:
        report = self.skip_report()
        if not report.count:
            return None
        path = Path(run_dir) / "skipped.json"
        path.write_text(json.dumps(report.as_dict(), indent=1))
        return path
