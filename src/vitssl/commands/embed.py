"""`vitssl embed`: the features of every image of a folder, one row per image, in one file.

Each image goes through the run's evaluation transform (resize, centre crop at the training
size, the run's normalisation) and the frozen evaluation backbone; a row holds the image's path,
its label when the folder has class sub-folders, the CLS feature (`Tokens.pooled`, what k-NN
uses) and, with `--patch-features`, the mean of the last layer's patch tokens. Images are
processed in chunks saved as they finish, so a stopped run continues where it was
(`vitssl.commands.embed_files`). Unreadable files get no row and are reported.
"""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path
from typing import Any, Callable

from vitssl.cli_parsing.arguments import positive_int
from vitssl.cli_parsing.shared_options import (
    add_batch_size,
    add_checkpoint,
    add_image_size,
    add_model_options,
    add_num_workers,
)
from vitssl.commands.stops import stop_keeps
from vitssl.engine.cores import available_cores
from vitssl.engine.outputs import add_overwrite_flag

CHUNK_IMAGES = 2048


def add_parser(subparsers: Any) -> Callable[[argparse.Namespace], int]:
    """Register `vitssl embed`; returns the function that runs it."""
    p = subparsers.add_parser("embed", help="write the features of every image of a folder to .npy, .parquet or .csv")
    add_checkpoint(p)
    p.add_argument("--data", required=True, help="image folder (class sub-folders give a label column) or a built-in set")
    p.add_argument("--out", required=True, help="output file: embeddings.npy, embeddings.parquet or embeddings.csv")
    p.add_argument("--patch-features", action="store_true", help="also write the mean last-layer patch token")
    add_image_size(p)
    add_batch_size(p, 64)
    add_num_workers(p, min(4, available_cores()))  # up to 4, at most the cores this process may use
    p.add_argument("--chunk-size", type=positive_int, default=CHUNK_IMAGES,
                   help="images per saved chunk: a stopped run continues after the last complete chunk")
    add_model_options(p)
    add_overwrite_flag(p)
    return cmd_embed


def cmd_embed(args: argparse.Namespace) -> int:
    from vitssl.commands.embed_images import embed_folder
    from vitssl.commands.summary import print_summary

    started = time.perf_counter()
    with stop_keeps(f"the finished chunks are kept in {args.out}.parts: run the same command to continue"):
        r = embed_folder(args.checkpoint, args.data, args.out, patch_features=args.patch_features,
                         image_size=args.image_size, batch_size=args.batch_size, num_workers=args.num_workers,
                         chunk_size=args.chunk_size, which=args.backbone, device=args.device,
                         overwrite=args.overwrite)
    print_summary("embed", started, [r["out"]], f"embedded {r['rows']} images ({r['width']} features each: "
                  f"{', '.join(r['columns'])})" + (f"; {r['skipped']} unreadable, no row" if r["skipped"] else ""),
                  _how_to_load(r["out"]))
    return 0


def _how_to_load(out: str) -> str:
    """A command that loads the table and shows its shape (numpy, pyarrow) or first lines (CSV)."""
    suffix = Path(out).suffix.lower()
    if suffix == ".csv":
        return f"head -3 {shlex.quote(out)}"
    code = {".npy": f"import numpy; t = numpy.load({out!r}); print(t['cls'].shape, t['path'][:3])",
            ".parquet": f"import pyarrow.parquet as pq; print(pq.read_table({out!r}).schema)"}[suffix]
    return f"python -c {shlex.quote(code)}"
