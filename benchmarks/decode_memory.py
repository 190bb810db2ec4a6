"""Peak memory one data-loader worker needs for one large image: decode plus DINO's multi-crop.

    python benchmarks/decode_memory.py --pixels 50000000

For each mode (RGB, L, RGBA, LA, 16-bit grey, float) writes a constant square image of about
`--pixels` pixels (PNG, float as TIFF: a few hundred KB on disk, like a decompression bomb), then
in a fresh process per image decodes it the way the image folder does (`open_image`, without a
pixel limit) and applies DINO's default multi-crop. Prints the rise of the process's peak
resident memory (Linux: `VmHWM`, reset through `/proc/self/clear_refs` after warm-up) in MiB and
per pixel, and whether the default `max_image_pixels` would accept the image at all.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

from vitssl.data.datasets import DEFAULT_MAX_IMAGE_PIXELS

MODES = {"RGB": (10, 20, 30), "L": 77, "RGBA": (10, 20, 30, 128), "LA": (200, 128), "I;16": 20000, "F": 0.5}

CHILD = r"""
import sys, torch
from PIL import Image
from vitssl.augment.multicrop import MultiCrop, MultiCropConfig
from vitssl.data.datasets import open_image

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))

crop = MultiCrop(MultiCropConfig())
crop(Image.new("RGB", (256, 256)), torch.Generator().manual_seed(0))  # warm-up: allocator, kernels
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # peak RSS := current RSS
base = status("VmRSS:")
crop(open_image(sys.argv[1], None), torch.Generator().manual_seed(0))
print(status("VmHWM:") - base)
"""


def write_image(mode: str, side: int, folder: Path) -> Path:
    path = folder / f"{mode.replace(';', '')}.{'tif' if mode == 'F' else 'png'}"
    extra = {"compression": "tiff_adobe_deflate"} if mode == "F" else {}
    Image.new(mode, (side, side), MODES[mode]).save(path, **extra)
    return path


def peak_bytes(path: Path) -> int:
    out = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pixels", type=int, default=DEFAULT_MAX_IMAGE_PIXELS,
                        help=f"pixels per image (default: the default limit, {DEFAULT_MAX_IMAGE_PIXELS})")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES),
                        help="PIL image modes to decode (default: all)")
    args = parser.parse_args(argv)
    if not Path("/proc/self/clear_refs").exists():
        parser.error("needs Linux (/proc/self/clear_refs, VmHWM)")
    side = math.isqrt(args.pixels)
    accepted = "accepted" if side * side <= DEFAULT_MAX_IMAGE_PIXELS else "skipped as too large"
    print(f"{side}x{side} = {side * side} pixels ({accepted} by the default limit)")
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes:
            path = write_image(mode, side, Path(tmp))
            peak = peak_bytes(path)
            print(f"{mode:5s} file {path.stat().st_size / 1024:7.0f} KiB   peak +{peak / 2**20:6.0f} MiB "
                  f"= {peak / (side * side):5.1f} B/pixel")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
