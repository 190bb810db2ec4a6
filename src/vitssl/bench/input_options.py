"""Options of `vitssl benchmark input` (torch-free, so `vitssl --help` stays fast)."""

from __future__ import annotations

import argparse

from vitssl.cli_parsing.arguments import non_negative_int, positive_int
from vitssl.cli_parsing.shared_options import add_batch_size, add_device
from vitssl.engine.outputs import add_overwrite_flag


def add_input_parser(benchmarks: argparse._SubParsersAction) -> None:
    p = benchmarks.add_parser("input", help="images/s of the training input pipeline alone (folders vs shards, "
                                            "host vs device decode, per worker count)")
    p.add_argument("--data", nargs="+", required=True, help="image folders and/or shard specs to compare")
    p.add_argument("--workers", nargs="+", type=non_negative_int, default=[0, 1, 2], help="DataLoader worker counts (default 0 1 2)")
    p.add_argument("--decode", nargs="+", choices=("host", "device", "none"), default=["host"],
                   help="host: workers decode every image; device: workers read JPEG bytes, the batch is "
                        "decoded on --device (nvJPEG on CUDA), as train.decode_on=device; none: workers read "
                        "JPEG bytes and nothing decodes them (the host's whole share under decode_on=device)")
    add_batch_size(p, 64, help="images per batch handed to the step")
    p.add_argument("--batches", type=positive_int, default=20, help="timed batches per row (after one warm-up batch)")
    add_device(p)  # where --decode device decodes
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    add_overwrite_flag(p)
