"""`vitssl pretrain`: its sub-parser and the checks on --out/--resume before a run starts.

No torch here (`vitssl --help` stays fast): the run itself is `vitssl.commands.pretrain`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vitssl.cli_parsing.arguments import positive_int


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    pre = subparsers.add_parser("pretrain", help="pre-train a backbone on an image folder",
                                epilog="Overrides are dotted key=value pairs, e.g. optim.lr=1e-3 train.epochs=10 "
                                       "method.head.out_dim=4096. `vitssl presets` lists the presets.")
    pre.add_argument("--config", default=None, help="preset name or YAML file (default: the method's defaults)")
    pre.add_argument("--method", default=None, help="method name (sets method.name)")
    pre.add_argument("--backbone", default=None, help="backbone name, e.g. vit_small (sets backbone.name)")
    pre.add_argument("--data", default=None, help="image folder, or a built-in set: mnist, digits, shapes")
    pre.add_argument("--teacher", default=None, metavar="CHECKPOINT",
                     help="mae-distill: the frozen MAE teacher, a run folder or .pt (sets method.teacher)")
    pre.add_argument("--out", default=None, help="run folder for config, checkpoints and logs")
    pre.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue the run in RUN_DIR")
    pre.add_argument("--image-size", type=positive_int, default=None, metavar="N",
                     help="training resolution: sets backbone.img_size and the crop sizes together (data.image_size)")
    pre.add_argument("overrides", nargs="*", help="key=value config overrides")


def _pretrain_overrides(args: argparse.Namespace) -> list[str]:
    extra = []
    if args.method:
        extra.append(f"method.name={args.method}")
    if args.backbone:
        extra.append(f"backbone.name={args.backbone}")
    if args.data:
        extra.append(f"data.path={args.data}")
    if getattr(args, "teacher", None):
        extra.append(f"method.teacher={args.teacher}")
    if getattr(args, "image_size", None):
        extra.append(f"data.image_size={args.image_size}")
    return extra + list(args.overrides)


def cmd_pretrain(args: argparse.Namespace) -> int:
    from vitssl.commands.pretrain import pretrain, resolve_pretrain_config
    from vitssl.config import ConfigError

    resume = Path(args.resume) if args.resume else None
    if resume is None and not args.out:
        raise ConfigError("no run folder: pass --out RUN_DIR (or --resume RUN_DIR to continue a run)")
    if resume is not None and args.out and Path(args.out) != resume:
        raise ConfigError("--out and --resume name different folders: a resumed run stays in its folder")
    cfg = resolve_pretrain_config(args.config, _pretrain_overrides(args), resume)
    pretrain(cfg, resume or Path(args.out), resume=resume is not None)
    return 0
