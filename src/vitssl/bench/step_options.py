"""Options and configurations of the pre-training step benchmark, without importing torch, so
`vitssl --help` stays fast; the benchmark itself is `vitssl.bench.pretrain_step`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vitssl.cli_parsing.arguments import non_negative_int, positive_int
from vitssl.cli_parsing.shared_options import add_device


def benchmark_setups() -> dict[str, Any]:
    """Every registered method's `benchmark_setups` (`vitssl.engine.protocol.BenchmarkSetup`), by
    name, in registry order. Imports the methods (and torch), so it is called only to run."""
    from vitssl.methods import METHODS

    return {s.name: s for cls in METHODS.values() for s in cls.benchmark_setups}  # type: ignore[attr-defined]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The benchmark's options, shared by `vitssl benchmark step` and benchmarks/pretrain_step.py."""
    p.add_argument("--methods", default=None, help="comma-separated setups, each method's own (e.g. dino,mae-lite; "
                                                   "default: all)")
    p.add_argument("--input", default="synthetic,jpeg", help="comma-separated: synthetic, jpeg")
    p.add_argument("--aug", choices=("cpu", "gpu"), default="gpu",
                   help="JPEG input: decode + augment on the device (gpu) or in DataLoader workers (cpu)")
    p.add_argument("--workers", type=non_negative_int, default=8, help="DataLoader workers for --aug cpu")
    p.add_argument("--batch-size", type=positive_int, default=None, help="override every setup's batch size")
    p.add_argument("--steps", type=positive_int, default=30, help="timed optimizer steps per setup")
    p.add_argument("--warmup", type=non_negative_int, default=10, help="untimed steps first (compilation, caches)")
    add_device(p)
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="auto: bf16 autocast on a GPU, fp32 on a CPU")
    p.add_argument("--compile", action="store_true", help="torch.compile backbones, heads and decoders")
    p.add_argument("--images", type=positive_int, default=512, help="JPEGs in the in-memory pool")
    p.add_argument("--jpeg-size", type=positive_int, nargs=2, default=(375, 500), metavar=("H", "W"),
                   help="height and width of the generated JPEGs (375 x 500: a common ImageNet photo size)")
    p.add_argument("--tiny", action="store_true", help="tiny models and crops: a seconds-long smoke test")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")


def check_arguments(args: argparse.Namespace) -> argparse.Namespace:
    """Validate the method and input lists (ValueError, one line); shrink for --tiny."""
    setups = benchmark_setups()
    args.methods = args.methods or ",".join(setups)
    unknown = set(args.methods.split(",")) - set(setups)
    if unknown:
        raise ValueError(f"unknown method(s) {sorted(unknown)}: choose from {list(setups)}")
    if set(args.input.split(",")) - {"synthetic", "jpeg"}:
        raise ValueError("--input takes synthetic, jpeg or both")
    if args.tiny:
        args.images, args.jpeg_size = min(args.images, 8), (48, 64)
        args.warmup = min(args.warmup, 1)
    return args
