"""`vitssl eval transfer`: a checkpoint's transfer suite (EsViT's ELEVATER linear probe, MAE-Lite's
fine-tuning on six small sets, or vitssl's built-in sets), one table and JSON per set."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vitssl.cli_parsing.arguments import positive_float, positive_int, subcommands_of
from vitssl.cli_parsing.shared_options import add_model_options, add_num_workers, add_seed
from vitssl.commands.stops import stop_keeps

# The names of eval/transfer/registry.py's SUITES, here so that building the parser imports no torch
# (tests/eval/test_transfer.py checks the two agree).
SUITE_NAMES = ("elevater", "mae-lite-finetune", "builtin")


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `eval transfer` under the `eval` sub-commands (after `eval` exists)."""
    from vitssl.engine.outputs import add_overwrite_flag

    evsub = subcommands_of(subparsers.choices["eval"])
    p = evsub.add_parser("transfer", help="a downstream suite: ELEVATER linear probe (EsViT) or MAE-Lite transfer "
                                          "fine-tuning, one table and JSON per set",
                         epilog=f"Suites: {', '.join(SUITE_NAMES)}; the sets of each: docs/evaluation.md. Sets are read from "
                                "DATA_ROOT/<set> (torchvision's files, or ImageFolder train/ val/ test/); nothing is "
                                "downloaded. A rerun into the same --out continues where it stopped.")
    p.add_argument("--checkpoint", required=True, help="run folder, checkpoint .pt, or timm weights (.safetensors/.pth)")
    p.add_argument("--suite", required=True, choices=SUITE_NAMES, help="which suite of sets to run")
    p.add_argument("--root", default=None, help="DATA_ROOT holding one folder per set (not needed for built-in sets)")
    p.add_argument("--sets", type=_names, default=None, help="comma-separated subset, e.g. cifar10,dtd")
    p.add_argument("--out", default=None, help="results folder (default: beside the checkpoint, transfer_SUITE)")
    p.add_argument("--image-size", type=positive_int, default=None, help="crop size (default: the training crop size)")
    p.add_argument("--resize-size", type=positive_int, default=None, help="short side before the centre crop")
    p.add_argument("--batch-size", type=positive_int, default=None, help="linear: extraction batch (256); "
                                                                          "finetune: the recipe's")
    add_num_workers(p, 4)
    add_model_options(p)
    p.add_argument("--n-last-blocks", type=positive_int, default=1, help="linear: CLS of the last n blocks")
    p.add_argument("--cs", type=positive_float, nargs="+", default=None,
                   help="linear: sweep exactly these C values (default: 1e-6..1e6 by decades, then refined)")
    p.add_argument("--solver", choices=["auto", "sklearn", "torch"], default="auto",
                   help="linear: scikit-learn L-BFGS (CPU) or torch L-BFGS (auto: torch on a GPU)")
    p.add_argument("--recipe", default="transfer", help="finetune: recipe (default: MAE-Lite's transfer)")
    p.add_argument("--epochs", type=positive_int, default=None, help="finetune: default the recipe's")
    p.add_argument("--lr", type=positive_float, default=None, help="finetune: peak lr (default: recipe blr x batch/256)")
    p.add_argument("--samples-per-class", type=positive_int, default=None, help="finetune: N images per class")
    add_seed(p, help="fine-tuning order, subsets; --random-init weights")
    p.add_argument("--random-init", action="store_true",
                   help="the baseline: the checkpoint's architecture with random weights (seeded by --seed)")
    p.add_argument("overrides", nargs="*", help="finetune: recipe key=value overrides")
    add_overwrite_flag(p)
    p.set_defaults(handler=cmd_transfer)
    return p


def default_out(checkpoint: str, suite: str) -> Path:
    """RUN_DIR/transfer_SUITE for a run folder or its .pt; beside a weights file, with its name."""
    path = Path(checkpoint)
    if path.is_dir():
        return path / f"transfer_{suite}"
    return path.parent / (f"transfer_{suite}" if path.suffix == ".pt" else f"transfer_{suite}_{path.stem}")


def cmd_transfer(args: argparse.Namespace) -> int:
    from vitssl.commands.summary import print_summary, report_command
    from vitssl.eval.transfer.protocols import TransferOptions
    from vitssl.eval.transfer.suite import run_suite

    started = time.perf_counter()
    opts = TransferOptions(image_size=args.image_size, resize_size=args.resize_size, batch_size=args.batch_size,
                           num_workers=args.num_workers, device=args.device, which=args.backbone,
                           n_last_blocks=args.n_last_blocks, cs=args.cs, solver=args.solver, recipe=args.recipe,
                           overrides=list(args.overrides), epochs=args.epochs, lr=args.lr,
                           samples_per_class=args.samples_per_class, seed=args.seed,
                           random_init=args.random_init)
    out = Path(args.out) if args.out else default_out(args.checkpoint, args.suite + ("_random" if args.random_init else ""))
    with stop_keeps(f"the finished sets are kept in {out}; rerun the same command to continue with the rest"):
        summary = run_suite(args.checkpoint, args.suite, out, root=args.root, sets=args.sets, options=opts,
                            overwrite=args.overwrite)
    print(f"saved {out / 'suite.json'} and one JSON per set")
    scores = [row["score"] for row in summary["rows"] if isinstance(row.get("score"), (int, float))]
    headline = f"mean score {sum(scores) / len(scores):.4f} over {len(scores)} set(s)" if scores else "no set ran"
    print_summary("eval transfer", started, [out / "suite.json"], headline, report_command(args.checkpoint))
    return 0 if summary["rows"] else 2
