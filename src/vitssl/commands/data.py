"""`vitssl data pack`: the `data` command group (sub-parser and handler; torch-free until run)."""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="prepare data sets: pack an image folder into tar shards, write the shapes detection set")
    data_sub = data.add_subparsers(dest="data_command", required=True,
                                     help="the data operation (each has its own --help)")
    pack = data_sub.add_parser("pack", help="write an image folder as WebDataset tar shards with index.json "
                                            "(stream them with --data SHARDS)")
    pack.add_argument("--data", required=True, help="image folder (FOLDER/<class>/<image> or flat)")
    pack.add_argument("--out", required=True, help="output folder for the shards and index.json")
    pack.add_argument("--shard-size", default="1GB", help="bytes per shard, e.g. 1GB or 256MB (default 1GB)")
    pack.add_argument("--labels", action="store_true", help="store each image's class index (class sub-folders)")
    pack.add_argument("--reencode", action="store_true", help="re-encode every image as JPEG (default: bytes as stored)")
    pack.add_argument("--quality", type=int, choices=range(1, 101), metavar="1..100", default=95, help="JPEG quality with --reencode")
    pack.add_argument("--prefix", default="train", help="shard names PREFIX-000000.tar, ... (default train)")
    pack.add_argument("--seed", type=int, default=0, help="seed of the sample order written (shards mix classes)")
    pack.add_argument("--max-image-pixels", type=int, default=None,
                      help="skip images with more pixels (default 50M; 0: no limit)")
    pack.add_argument("--workers", type=int, default=0, help="processes that read and check images (0: this one)")
    pack.add_argument("--no-progress", action="store_true", help="no progress bar")
    pack.add_argument("--overwrite", action="store_true",
                      help="replace existing shards (an interrupted pack continues without it)")


def cmd_data(args: argparse.Namespace) -> int:
    from vitssl.commands.summary import print_summary
    from vitssl.data.datasets import DEFAULT_MAX_IMAGE_PIXELS
    from vitssl.data.shards.pack import PackOptions, pack, parse_size

    started = time.perf_counter()
    if not args.prefix or "/" in args.prefix or "{" in args.prefix:
        raise ValueError(f"--prefix '{args.prefix}' must be a plain file name part, e.g. train")
    if args.workers < 0:
        raise ValueError(f"--workers {args.workers}: pass 0 or more")
    pixels = DEFAULT_MAX_IMAGE_PIXELS if args.max_image_pixels is None else args.max_image_pixels
    opts = PackOptions(parse_size(args.shard_size), args.labels, args.reencode, args.quality, args.seed,
                       args.prefix, pixels or None, args.workers)
    index = pack(args.data, args.out, opts, overwrite=args.overwrite, progress=not args.no_progress)
    n = len(index["shards"])
    last = f"{n - 1:06d}"
    print(f"wrote {index['total']} samples in {n} shard(s) to {args.out} ({len(index['skipped'])} skipped); "
          f"train with --data '{args.out}' or '{args.out}/{args.prefix}-{{000000..{last}}}.tar'")
    out = Path(args.out)
    shards = [out / shard["name"] for shard in index["shards"]]
    print_summary("data pack", started, [out / "index.json", *shards], f"{index['total']} images in {n} shard(s)",
                  f"vitssl pretrain --data {shlex.quote(args.out)} --out RUN")
    return 0
