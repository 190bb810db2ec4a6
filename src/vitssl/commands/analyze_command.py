"""`vitssl analyze ANALYSIS`: the sub-parsers of the analyses and what each one prints.

No torch here (`vitssl --help` stays fast): the analyses run in `vitssl.commands.analyze`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vitssl.cli_parsing.arguments import positive_int
from vitssl.cli_parsing.shared_options import (
    add_batch_size,
    add_checkpoint,
    add_device,
    add_image_size,
    add_model_options,
    add_out,
)
from vitssl.engine.outputs import add_overwrite_flag
from vitssl.engine.wording import counted

IMAGES_HELP = "image file, folder, or a built-in set"
DATA_HELP = "image folder or a built-in set"
CROP_HELP = "default: the training crop size"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    an = subparsers.add_parser("analyze", help="look inside a pre-trained model")
    analyses = an.add_subparsers(dest="analysis", required=True, help="the analysis (each has its own --help)")
    _add_picture_parsers(analyses)
    _add_statistics_parsers(analyses)


def _add_picture_parsers(analyses: argparse._SubParsersAction) -> None:
    corr = analyses.add_parser("correspondence", help="EsViT region matches between an image and its mirrored, "
                                                      "recoloured copy: accuracy and pictures")
    add_checkpoint(corr)
    corr.add_argument("--images", required=True, help=IMAGES_HELP)
    add_out(corr, "output folder (default: RUN_DIR/correspondence)")
    add_image_size(corr, help=CROP_HELP)
    corr.add_argument("--top", type=positive_int, default=10, help="score the N most similar region pairs per image")
    corr.add_argument("--limit", type=positive_int, default=16, help="use at most this many images")
    add_model_options(corr)
    add_overwrite_flag(corr)

    att = analyses.add_parser("attention", help="last-layer attention maps per head as PNG overlays (DINO's picture)")
    add_checkpoint(att)
    att.add_argument("--images", required=True, help=IMAGES_HELP)
    add_out(att, "output folder (default: RUN_DIR/attention)")
    add_image_size(att, help=CROP_HELP)
    att.add_argument("--limit", type=positive_int, default=8, help="use at most this many images")
    add_model_options(att)
    add_overwrite_flag(att)


def _add_statistics_parsers(analyses: argparse._SubParsersAction) -> None:
    lay = analyses.add_parser("layers", help="layer-by-layer linear CKA between two models (heat map and JSON)")
    lay.add_argument("--a", required=True, help="first run folder or checkpoint")
    lay.add_argument("--b", required=True, help="second run folder or checkpoint")
    lay.add_argument("--data", required=True, help=DATA_HELP)
    add_out(lay, "output folder (default: A/layer_similarity)")
    add_image_size(lay, help="crop size (default: model A's training crop size)")
    lay.add_argument("--limit", type=positive_int, default=512, help="use at most this many images")
    add_batch_size(lay, 64)
    add_device(lay)
    add_overwrite_flag(lay)

    ast = analyses.add_parser("attention-stats", help="mean attention distance and entropy per layer and head")
    add_checkpoint(ast)
    ast.add_argument("--data", required=True, help=DATA_HELP)
    add_out(ast, "output folder (default: RUN_DIR/attention_stats)")
    add_image_size(ast)
    ast.add_argument("--limit", type=positive_int, default=256, help="use at most this many images")
    add_batch_size(ast, 32)
    ast.add_argument("--distance-unit", choices=["pixel", "grid", "compat_x14"], default="pixel",
                     help="compat_x14 reproduces the original code's grid x 14 scale")
    add_device(ast)
    add_overwrite_flag(ast)


def cmd_analyze(args: argparse.Namespace) -> int:
    from vitssl.commands.analyze import run_correspondence
    from vitssl.commands.summary import open_command, print_summary

    started = time.perf_counter()
    name = f"analyze {args.analysis}"
    if args.analysis == "attention":
        from vitssl.commands.analyze import run_attention_maps

        paths = run_attention_maps(args.checkpoint, args.images, args.out, args.image_size, args.limit, args.backbone,
                                   args.device, overwrite=args.overwrite)
        print(f"saved {counted(len(paths), 'attention picture')} in {Path(paths[0]).parent}")
        print_summary(name, started, paths, f"{counted(len(paths), 'image')}, every head", open_command(paths[0]))
    if args.analysis == "layers":
        from vitssl.commands.analyze import run_layer_similarity

        r = run_layer_similarity(args.a, args.b, args.data, args.out, args.image_size, args.limit, args.batch_size,
                                 args.device, overwrite=args.overwrite)
        diagonal = [row[i] for i, row in enumerate(r["cka"]) if i < len(row)]
        print("CKA of matching layers: " + " ".join(f"{v:.2f}" for v in diagonal))
        print(f"heat map {r['picture']}")
        print_summary(name, started, [r["picture"], Path(r["picture"]).with_name("cka.json")],
                      f"mean CKA of matching layers {sum(diagonal) / len(diagonal):.2f} over {counted(r['images'], 'image')}",
                      open_command(r["picture"]))
    if args.analysis == "attention-stats":
        from vitssl.commands.analyze import run_attention_stats

        r = run_attention_stats(args.checkpoint, args.data, args.out, args.image_size, args.limit, args.batch_size,
                                args.distance_unit, args.device, overwrite=args.overwrite)
        print(f"attention statistics of {counted(len(r['distance']), 'layer')}; plot {r['picture']}")
        print_summary(name, started, [r["picture"], Path(r["picture"]).with_name("attention_stats.json")],
                      f"last layer's mean attention distance {r['mean_distance'][-1]:.1f} ({args.distance_unit})",
                      open_command(r["picture"]))
    if args.analysis == "correspondence":
        r = run_correspondence(args.checkpoint, args.images, args.out, args.image_size, args.top, args.limit,
                               args.backbone, args.device, overwrite=args.overwrite)
        se = r["accuracy_standard_error"]
        spread = f" ± {se:.3f} (standard error over images)" if se is not None else ""
        print(f"correspondence accuracy {r['accuracy']:.3f}{spread}, chance {r['chance']:.3f}, over "
              f"{counted(r['pairs'], 'top pair')} of {counted(r['images'], 'image')}; "
              f"mean distance error {r['distance_error_px']:.1f} px; pictures in {Path(r['pictures'][0]).parent}")
        print_summary(name, started, [Path(r["pictures"][0]).with_name("correspondence.json"), *r["pictures"]],
                      f"correspondence accuracy {r['accuracy']:.3f}", open_command(r["pictures"][0]))
    return 0
