"""`vitssl presets`, `recipes`, `config` and `report`: what a preset holds, what a run did.

No torch here (`vitssl --help` stays fast).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vitssl.cli_parsing.arguments import positive_int
from vitssl.cli_parsing.shared_options import add_image_size, add_out
from vitssl.engine.outputs import add_overwrite_flag


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    subparsers.add_parser("presets", help="list the packaged config presets")
    rec = subparsers.add_parser("recipes", help="every preset with its method, backbone, paper, target numbers and compute")
    rec.add_argument("names", nargs="*", help="only these presets (default: all)")
    rep = subparsers.add_parser("report", help="one self-contained HTML page about a run: config, curves, results, pictures")
    rep.add_argument("run_dir", metavar="RUN_DIR", help="run folder written by vitssl pretrain")
    rep.add_argument("--images", default=None, help="images for the attention maps (default: the run's data)")
    rep.add_argument("--limit", type=positive_int, default=4, help="attention maps / correspondences for this many images")
    add_image_size(rep, help="for the pictures (default: the training crop size)")
    rep.add_argument("--no-pictures", action="store_true", help="skip attention maps and correspondences")
    add_out(rep, "HTML file (default: RUN_DIR/report/report.html)")
    add_overwrite_flag(rep)
    show = subparsers.add_parser("config", help="print the resolved config of a preset with overrides")
    show.add_argument("--config", default=None, help="preset name or YAML file (default: the built-in defaults)")
    show.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. method.name=mae")


def cmd_presets(_: argparse.Namespace) -> int:
    from vitssl.config import preset_names

    print("\n".join(preset_names()))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from vitssl.config import load_config
    from vitssl.methods import method_configs

    print(OmegaConf.to_yaml(load_config(args.config, list(args.overrides), method_configs())), end="")
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from vitssl.commands.recipes import format_recipes

    print(format_recipes(args.names or None))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from vitssl.commands.report import build_report
    from vitssl.commands.summary import final_loss, open_command, print_summary

    started = time.perf_counter()
    path = build_report(args.run_dir, images=args.images, limit=args.limit, pictures=not args.no_pictures,
                        out=args.out, image_size=args.image_size, overwrite=args.overwrite)
    figures = Path(args.run_dir) / "report"
    print(f"report written to {path} (figures as PNG in {figures})")
    loss = final_loss(Path(args.run_dir))
    print_summary("report", started, [path, figures],
                  f"final loss {loss:.4f}" if loss is not None else "no training loss logged", open_command(path))
    return 0
