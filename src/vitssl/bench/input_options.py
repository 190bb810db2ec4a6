"""Options of `vitssl benchmark input` (torch-free, so `vitssl --help` stays fast)."""

from __future__ import annotations

import argparse


def add_input_parser(benchmarks: argparse._SubParsersAction) -> None:
    p = benchmarks.add_parser("input", help="images/s of the training input pipeline alone (folders vs shards, "
                                            "host vs device decode, per worker count)")
    p.add_argument("--data", nargs="+", required=True, help="image folders and/or shard specs to compare")
    p.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2], help="DataLoader worker counts (default 0 1 2)")
    p.add_argument("--decode", nargs="+", choices=("host", "device", "none"), default=["host"],
                   help="host: workers decode every image; device: workers read JPEG bytes, the batch is "
                        "decoded on --device (nvJPEG on CUDA), as train.decode_on=device; none: workers read "
                        "JPEG bytes and nothing decodes them (the host's whole share under decode_on=device)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--batches", type=int, default=20, help="timed batches per row (after one warm-up batch)")
    p.add_argument("--device", default="auto", help="where --decode device decodes (auto: cuda if available)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
