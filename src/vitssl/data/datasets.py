"""Image folders (ImageFolder layout or flat) that survive bad files in long runs.

Policy for hostile folders (docs/checkpoints.md, "Hostile data"):

- Scanning is cheap and lazy: it lists names only (no open, no stat per file), skipping hidden
  files and folders, non-image extensions and symlinked folders below the class level (so
  symlink loops cannot hang it). Validating 1.28M ImageNet files up front means opening each
  one, minutes on a local disk and far longer on network storage, every time a run starts.
- Each file is checked when it is first loaded: unreadable, empty, truncated, non-image and
  over-size files (decompression bombs) are skipped, and the sample is replaced by another,
  drawn deterministically from a generator seeded by the index, so runs stay reproducible. A
  file that breaks mid-run is handled the same way.
- What was skipped is recorded in a table shared with DataLoader workers, so the main process
  can report the count, the first paths and the reasons once (`skip_report`,
  `write_skip_report`) and no worker floods the console: only the first few skips are warned
  about one by one.
"""

from __future__ import annotations

import errno
import json
import logging
import operator
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, get_worker_info

from vitssl.data.device_decode import EncodedJPEG, read_jpeg_or_none
from vitssl.engine.wording import counted

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}
)
# Reason codes stored per sample in the shared table; 0 = readable or not tried yet.
SKIP_REASONS = (
    "",
    "permission denied",
    "missing (deleted or a broken link)",
    "symlink loop",
    "empty file",
    "not an image",
    "truncated",
    "corrupt",
    "too large",
    "not a file",
)
# Default pixel limit: bounds what one image costs one worker (docs/checkpoints.md, "Decompression
# bombs"; benchmarks/decode_memory.py). Peak per pixel, decode plus DINO's multi-crop: 6.8 B for
# RGB (328 MiB at the limit), up to 13 B for grey+alpha or float images (620 MiB). It keeps
# 48 MP (8000x6000) photos.
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
WARN_FIRST = 5  # skips warned about one by one (over all workers); later ones are only counted
SUBSTITUTE_DRAWS = 32  # seeded random replacements tried before a linear scan
_SLOTS = 64  # substitution counters: one per process (main + workers), summed for the report

log = logging.getLogger("vitssl")


class UnreadableImageWarning(UserWarning):
    """An image file that could not be decoded and is skipped (filterable on its own)."""


class ImageTooLargeError(ValueError):
    """An image with more pixels than the data set's `max_image_pixels` (decompression bomb guard)."""


def is_image_file(name: str) -> bool:
    """True for a non-hidden file name with an accepted image extension (any case)."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _images_under(folder: str, problems: list[tuple[str, str]]) -> list[str]:
    """Image files below `folder`, sorted; symlinked folders are not entered, so no loops.
    Folders that cannot be listed are appended to `problems` instead of being dropped silently."""
    def unlistable(err: OSError) -> None:
        problems.append((str(err.filename or folder), f"folder cannot be listed: {_reason_of(err)}"))

    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False, onerror=unlistable):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]  # .ipynb_checkpoints etc.
        found.extend(os.path.join(dirpath, f) for f in filenames if is_image_file(f))
    return sorted(found)


def _to_uint8_grey(grey: np.ndarray, full_scale: float) -> Image.Image:
    """`grey`, a float32 copy the caller owns, scaled to 0..255 in place: one 4-byte copy per
    pixel instead of several float64 temporaries (see DEFAULT_MAX_IMAGE_PIXELS). Exact for 16-bit
    input: no v * 255 / 65535 lies within float32 rounding of a .5 tie."""
    grey *= np.float32(255.0 / full_scale)
    np.rint(grey, out=grey)
    np.clip(grey, 0, 255, out=grey)
    return Image.fromarray(grey.astype(np.uint8)).convert("RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB, so every sample reaches the transforms in the same form.

    16-bit grey (I;16*) maps 0..65535 linearly to 0..255 (never clipped to white); 32-bit int
    (I) is read as 16-bit when it exceeds 255; float (F) as 0..1 when it stays within it, else
    0..255, NaN as 0. Alpha (RGBA, LA, PA, P with transparency) is composited onto black, so
    fully transparent pixels are black whatever colour they store; 1-bit is 0/255; CMYK and
    the rest use PIL's conversion.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16"):
        return _to_uint8_grey(np.array(img, dtype=np.float32), 65535.0)
    if mode == "I":
        arr = np.array(img, dtype=np.float32)
        return _to_uint8_grey(arr, 65535.0 if arr.size and arr.max() > 255 else 255.0)
    if mode == "F":
        arr = np.nan_to_num(np.array(img, dtype=np.float32), copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        return _to_uint8_grey(arr, 1.0 if arr.size and arr.max() <= 1.0 else 255.0)
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    elif mode == "La":  # premultiplied grey+alpha has no direct RGBA conversion
        img = img.convert("LA")
    if img.mode in ("RGBA", "RGBa", "LA", "PA"):
        rgba = img if img.mode == "RGBA" else img.convert("RGBA")
        rgb = Image.new("RGB", rgba.size, (0, 0, 0))
        rgb.paste(rgba, mask=rgba.getchannel("A"))  # = alpha_composite onto black, in 8 B/pixel, not 19
        return rgb
    return img.convert("RGB")


@contextmanager
def _pil_pixel_check_off() -> Iterator[None]:
    """PIL's own bomb check off, so ours (with the data set's limit) decides. PIL's limit is a
    module global: this is not thread-safe, but DataLoader workers are processes."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def open_image(path: str, max_pixels: int | None, keep_jpeg: bool = False) -> Image.Image | EncodedJPEG:
    """Decode `path` fully and convert it to RGB; raise on anything unreadable.

    The size is read from the header and checked against `max_pixels` (None: no limit)
    before any pixel is decoded, so a decompression bomb costs a header read. `keep_jpeg`: an
    RGB or grey JPEG is returned undecoded (`EncodedJPEG`) for the device decoder.
    """
    with _pil_pixel_check_off(), Image.open(path) as img:
        w, h = img.size
        if max_pixels is not None and w * h > max_pixels:
            raise ImageTooLargeError(
                f"{w}x{h} = {w * h} pixels exceeds the limit of {max_pixels} (raise max_image_pixels to use it)"
            )
        if keep_jpeg and (encoded := read_jpeg_or_none(path, img)) is not None:
            return encoded
        img.load()
        return to_rgb(img)


def _reason_of(err: BaseException, path: str | None = None) -> str:
    """Short reason for a skip, one of `SKIP_REASONS` (no traceback, no file content)."""
    if isinstance(err, ImageTooLargeError):
        return "too large"
    if isinstance(err, PermissionError):
        return "permission denied"
    if isinstance(err, FileNotFoundError):
        return "missing (deleted or a broken link)"
    if isinstance(err, IsADirectoryError):
        return "not a file"
    if isinstance(err, OSError) and err.errno == errno.ELOOP:
        return "symlink loop"
    if isinstance(err, UnidentifiedImageError):
        try:
            if path is not None and os.path.getsize(path) == 0:
                return "empty file"
        except OSError:
            pass
        return "not an image"
    if isinstance(err, (OSError, EOFError)) and "truncated" in str(err).lower():
        return "truncated"
    return "corrupt"


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200]}" if text else type(err).__name__


@dataclass
class SkipReport:
    """What a data set skipped so far: unreadable files, substituted samples, unlistable folders."""

    root: str
    skipped: list[tuple[str, str]]  # (path, reason) in index order
    substitutions: int
    folders: list[tuple[str, str]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.skipped)

    def by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, reason in self.skipped:
            counts[reason] = counts.get(reason, 0) + 1
        return counts

    def message(self, first: int = 3) -> str:
        """One line: count, reasons, the first few paths."""
        if not self.skipped and not self.folders:
            return f"no unreadable images under '{self.root}'"
        parts = []
        if self.skipped:
            reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.by_reason().items()))
            examples = ", ".join(f"{p} ({r})" for p, r in self.skipped[:first])
            more = f", ... {self.count - first} more" if self.count > first else ""
            parts.append(f"skipped {self.count} unreadable image(s) under '{self.root}' ({reasons}), "
                         f"{self.substitutions} sample(s) substituted: {examples}{more}")
        if self.folders:
            parts.append(f"{len(self.folders)} folder(s) could not be listed: "
                         + ", ".join(p for p, _ in self.folders[:first]))
        return "; ".join(parts)

    def as_dict(self) -> dict:
        return {"root": self.root, "count": self.count, "substitutions": self.substitutions,
                "by_reason": self.by_reason(),
                "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
                "unlisted_folders": [{"path": p, "reason": r} for p, r in self.folders]}


class ImageFolderDataset(Dataset):
    """`root/<class>/**/<image>` (label = index of the sorted class name) or flat `root/<image>`
    (label -1).

    Unreadable, truncated, empty, non-image and too-large files are skipped on first load and
    replaced by another sample drawn with a generator seeded by the index (the same one every
    time); the first few are warned about (`UnreadableImageWarning`), all are recorded for
    `skip_report()` across DataLoader workers. `max_image_pixels`: None takes
    `DEFAULT_MAX_IMAGE_PIXELS` (50M), 0 removes the limit.
    """

    def __init__(self, root: str | os.PathLike[str], max_image_pixels: int | None = None) -> None:
        self.root = Path(root)
        if not self.root.exists():
            raise FileNotFoundError(
                f"data path '{self.root}' does not exist: pass an existing image folder"
            )
        if not self.root.is_dir():
            raise NotADirectoryError(
                f"data path '{self.root}' is a file, not a folder: pass the folder that holds the images"
            )
        if max_image_pixels is None:
            max_image_pixels = DEFAULT_MAX_IMAGE_PIXELS
        self.max_image_pixels: int | None = max_image_pixels if max_image_pixels else None
        self.unlisted: list[tuple[str, str]] = []
        self.keep_jpeg_encoded = False
        self.classes, self.samples = self._scan()
        self.targets: list[int] = [label for _, label in self.samples]
        # Shared with DataLoader workers (inherited on fork, passed as shared memory on spawn),
        # so the main process sees every worker's skips.
        self._status = torch.zeros(len(self.samples), dtype=torch.uint8).share_memory_()
        self._counts = torch.zeros(_SLOTS + 1, dtype=torch.int64).share_memory_()  # [0]: warnings issued

    def _scan(self) -> tuple[list[str], list[tuple[str, int]]]:
        top_files, classes, samples = [], [], []
        for entry in sorted(os.scandir(self.root), key=lambda e: e.name):
            if entry.name.startswith("."):
                continue
            if entry.is_dir():  # follows a symlinked class folder, but never one back up the tree
                if entry.is_symlink() and self._points_above_root(entry.path):
                    continue
                images = _images_under(entry.path, self.unlisted)
                if images:
                    samples.extend((p, len(classes)) for p in images)
                    classes.append(entry.name)
            elif is_image_file(entry.name) and (entry.is_file() or entry.is_symlink()):
                top_files.append(entry.path)  # a broken or looping link is skipped when loaded
        if classes and top_files:
            warnings.warn(
                f"ignoring {len(top_files)} image(s) directly under '{self.root}': it has class "
                "sub-folders, so only images inside them are used",
                stacklevel=3,
            )
        if not classes:
            samples = [(p, -1) for p in top_files]
        if not samples:
            exts = " ".join(sorted(IMAGE_EXTENSIONS))
            raise ValueError(
                f"no images found under '{self.root}' (accepted extensions: {exts}): pass a folder "
                "of images or of class sub-folders of images"
            )
        return classes, samples

    def _points_above_root(self, link: str) -> bool:
        target, root = Path(link).resolve(), self.root.resolve()
        return target == root or target in root.parents

    @property
    def num_classes(self) -> int:
        """Number of classes; 0 for a flat folder."""
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> Image.Image | EncodedJPEG:
        """Decode sample `index` fully (raises on a bad file) and convert it to RGB; with
        `keep_jpeg_encoded` (set by `train.decode_on=device`) JPEGs stay undecoded."""
        return open_image(self.samples[index][0], self.max_image_pixels, self.keep_jpeg_encoded)

    def _candidates(self, index: int) -> Iterator[int]:
        """`index`, then seeded random others, then every index after it (so all are tried)."""
        n = len(self.samples)
        yield index
        rng = np.random.default_rng([0x5EED, index])
        for _ in range(min(SUBSTITUTE_DRAWS, n - 1)):
            draw = int(rng.integers(n - 1))
            yield draw + (draw >= index)  # any index but `index` itself
        for offset in range(1, n):
            yield (index + offset) % n

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        n = len(self.samples)
        index = operator.index(index)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {counted(n, 'image')}")
        index %= n
        for i in self._candidates(index):
            if self._status[i]:
                continue
            try:
                image = self.load(i)
            except Exception as e:  # PIL raises many types for bad files
                self._record_skip(i, e)
                continue
            if i != index:
                self._counts[1 + self._slot()] += 1
            return image, self.samples[i][1]
        raise RuntimeError(
            f"no image under '{self.root}' could be read ({counted(n, 'file')} tried): check that they are "
            "valid, complete image files"
        )

    @staticmethod
    def _slot() -> int:
        info = get_worker_info()
        return 0 if info is None else 1 + info.id % (_SLOTS - 1)

    def _record_skip(self, i: int, err: Exception) -> None:
        path = self.samples[i][0]
        reason = _reason_of(err, path)
        self._status[i] = SKIP_REASONS.index(reason)
        warned = int(self._counts[0])
        if warned < WARN_FIRST:
            self._counts[0] += 1
            later = "; further unreadable images are counted, not warned about" if warned == WARN_FIRST - 1 else ""
            warnings.warn(f"skipping unreadable image '{path}' ({reason}): {_one_line(err)}{later}",
                          UnreadableImageWarning, stacklevel=3)

    def skip_report(self) -> SkipReport:
        """Everything skipped so far, by this process and its DataLoader workers."""
        bad = torch.nonzero(self._status).flatten().tolist()
        skipped = [(self.samples[i][0], SKIP_REASONS[int(self._status[i])]) for i in bad]
        return SkipReport(str(self.root), skipped, int(self._counts[1:].sum()), list(self.unlisted))

    def write_skip_report(self, run_dir: str | os.PathLike[str]) -> Path | None:
        """Write `skipped.json` into `run_dir` when anything was skipped; return its path."""
        report = self.skip_report()
        if not report.skipped and not report.folders:
            return None
        path = Path(run_dir) / "skipped.json"
        path.write_text(json.dumps(report.as_dict(), indent=1))
        return path
