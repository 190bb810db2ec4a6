"""`vitssl demo`: its sub-parser, the choice of demo and a free run folder.

No torch here (`vitssl --help` stays fast): the demos run in `vitssl.commands.demo` and `demo_mae`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vitssl.cli_parsing.arguments import positive_int
from vitssl.cli_parsing.shared_options import add_out, add_seed


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser("demo", help="short pre-training of a tiny ViT on built-in data: DINO then k-NN, "
                                               "or MAE then held-out reconstructions")
    demo.add_argument("--method", default="dino", choices=["dino", "mae"],
                      help="dino: 20-NN before/after; mae: masked-patch loss before/after and a reconstruction grid")
    add_out(demo, "run folder (default: ./demo_run or ./demo_mae_run, -N if taken)")
    demo.add_argument("--dataset", default="mnist", choices=["mnist", "digits", "shapes"],
                      help="built-in data set to pre-train and evaluate on (the MAE demo: mnist)")
    demo.add_argument("--epochs", type=positive_int, default=None, help="override the demo's epoch count")
    add_seed(demo, help="initialisation, augmentation and data order")


def cmd_demo(args: argparse.Namespace) -> int:
    from vitssl.engine.protocol import ReconstructsPixels
    from vitssl.methods import method_class

    if issubclass(method_class(args.method), ReconstructsPixels):  # masked-image models show reconstructions
        from vitssl.commands.demo_mae import run_mae_demo

        out = Path(args.out) if args.out else _free_folder(Path("demo_mae_run"))
        run_mae_demo(out=out, dataset=args.dataset, epochs=args.epochs, seed=args.seed)
        return 0
    from vitssl.commands.demo import run_demo

    out = Path(args.out) if args.out else _free_folder(Path("demo_run"))
    run_demo(out=out, dataset=args.dataset, epochs=args.epochs, seed=args.seed)
    return 0


def _free_folder(base: Path) -> Path:
    """`base`, or `base-2`, `base-3`, ... : the first that is missing or empty."""
    candidate, n = base, 1
    while candidate.exists() and (not candidate.is_dir() or any(candidate.iterdir())):
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate
