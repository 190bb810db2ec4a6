"""One shard sample's bytes to an image, and the record of samples that could not be used.

Decoding follows the image folders' rules (`vitssl.data.datasets.open_image`): the size is
checked against the pixel limit from the header, before any pixel is decoded; any PIL mode
becomes 8-bit RGB; with `keep_jpeg` an RGB or grey JPEG stays encoded for the device decoder.
Bad samples are counted per reason in a table shared with data-loader workers, the first few
named, so the main process reports them once, as for folders.
"""

from __future__ import annotations

import io
import warnings

import torch
from PIL import Image, UnidentifiedImageError

from vitssl.data.datasets import (
    WARN_FIRST,
    ImageTooLargeError,
    SkipReport,
    UnreadableImageWarning,
    _one_line,
    _pil_pixel_check_off,
    _reason_of,
    to_rgb,
)
from vitssl.data.device_decode import EncodedJPEG, read_jpeg_or_none

IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif", "ppm", "pgm")
REASONS = ("", "not an image", "truncated", "corrupt", "too large", "empty file", "no image in sample",
           "missing from shard")
_SLOTS, _NAMED = 64, 16  # processes with their own counters; bad samples named per process


def image_member(sample: dict) -> tuple[str, bytes] | None:
    """(suffix, bytes) of the sample's image member, or None when it has none."""
    for suffix in IMAGE_SUFFIXES:
        if suffix in sample:
            return suffix, sample[suffix]
    return None


def label_of(sample: dict) -> int:
    raw = sample.get("cls")
    try:
        return int(raw.decode() if isinstance(raw, bytes) else raw) if raw is not None else -1
    except ValueError:
        return -1


def decode_image(data: bytes, where: str, max_pixels: int | None, keep_jpeg: bool = False) -> Image.Image | EncodedJPEG:
    """Decode `data` fully to RGB (raises on anything unreadable); `where` names it in errors."""
    if not data:
        raise UnidentifiedImageError(f"'{where}' is empty")
    with _pil_pixel_check_off(), Image.open(io.BytesIO(data)) as img:
        w, h = img.size
        if max_pixels is not None and w * h > max_pixels:
            raise ImageTooLargeError(f"{w}x{h} = {w * h} pixels exceeds the limit of {max_pixels}")
        if keep_jpeg and (encoded := read_jpeg_or_none(where, img)) is not None:
            return encoded
        img.load()
        return to_rgb(img)


def reason_of(err: BaseException, data: bytes | None) -> str:
    if isinstance(err, MissingSample):
        return err.reason
    if data is not None and not data:
        return "empty file"
    reason = _reason_of(err)
    return reason if reason in REASONS else "corrupt"


class MissingSample(Exception):
    """A sample position the shard could not give (no image member, or the shard ended early)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ShardSkips:
    """Bad samples seen by this process and its workers: counts per reason, the first named."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.counts = torch.zeros(_SLOTS, len(REASONS), dtype=torch.int64).share_memory_()
        self.substituted = torch.zeros(_SLOTS, dtype=torch.int64).share_memory_()
        self.named = torch.zeros(_SLOTS, _NAMED, 3, dtype=torch.int64).share_memory_()  # shard, position, reason
        self.warned = torch.zeros(1, dtype=torch.int64).share_memory_()

    @staticmethod
    def _slot() -> int:
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        return 0 if info is None else 1 + info.id % (_SLOTS - 1)

    def record(self, shard: int, position: int, where: str, err: BaseException, data: bytes | None) -> None:
        reason = reason_of(err, data)
        slot, code = self._slot(), REASONS.index(reason)
        n = int(self.counts[slot].sum())
        if n < _NAMED:
            self.named[slot, n] = torch.tensor([shard, position, code])
        self.counts[slot, code] += 1
        if int(self.warned) < WARN_FIRST:
            self.warned += 1
            later = "; further bad samples are counted, not warned about" if int(self.warned) == WARN_FIRST else ""
            warnings.warn(f"skipping sample '{where}' ({reason}): {_one_line(err)}{later}", UnreadableImageWarning,
                          stacklevel=3)

    def substitution(self) -> None:
        self.substituted[self._slot()] += 1

    def report(self, names: list[str]) -> ShardSkipReport:
        skipped = []
        for slot in range(_SLOTS):
            for shard, pos, code in self.named[slot, : min(int(self.counts[slot].sum()), _NAMED)].tolist():
                skipped.append((f"{names[shard]}#{pos}", REASONS[code]))
        by_reason = {REASONS[c]: int(n) for c, n in enumerate(self.counts.sum(0).tolist()) if n}
        return ShardSkipReport(self.root, sorted(skipped), int(self.substituted.sum()), total=sum(by_reason.values()),
                               reasons=by_reason)


class ShardSkipReport(SkipReport):
    """A `SkipReport` whose counts cover every bad sample, while only the first few are named."""

    def __init__(self, root: str, skipped: list[tuple[str, str]], substitutions: int, total: int,
                 reasons: dict[str, int]) -> None:
        super().__init__(root, skipped, substitutions)
        self.total, self.reasons = total, reasons

    @property
    def count(self) -> int:
        return self.total

    def by_reason(self) -> dict[str, int]:
        return dict(self.reasons)
