"""`vitssl export` and `vitssl import`: checkpoints out to timm and in from the original code.

No torch here (`vitssl --help` stays fast): the work is in `vitssl.commands.export` and `convert`.
"""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path

from vitssl.cli_parsing.shared_options import (
    add_checkpoint,
    add_image_size,
    add_out,
    add_weights_choice,
)
from vitssl.engine.outputs import add_overwrite_flag

ORIGINAL_CODES = ["dino", "esvit", "selfpatch", "mae-lite"]


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    ex = subparsers.add_parser("export", help="write a checkpoint's backbone in timm's key layout (safetensors or .pth)")
    add_checkpoint(ex)
    add_out(ex, "output folder", required=True)
    ex.add_argument("--format", choices=["safetensors", "timm", "detectron2", "mmdet"], default="safetensors",
                    help="safetensors, or timm: a torch state dict (.pth); detectron2 (ViT, ViTDet) or mmdet (Swin)")
    add_weights_choice(ex)
    add_image_size(ex, help="input size the export reproduces exactly in timm (default: the training crop size)")
    add_overwrite_flag(ex)

    imp = subparsers.add_parser("import", help="convert an original DINO / EsViT / SelfPatch / MAE-Lite checkpoint",
                                epilog="Sizes are read off the weights; overrides (key=value) fix what is not in them, "
                                       "e.g. backbone.num_heads=6. See docs/checkpoints.md.")
    imp.add_argument("--from", dest="source", required=True, choices=ORIGINAL_CODES,
                     help="the code that wrote the checkpoint (its key layout)")
    add_checkpoint(imp, help="the original .pth file")
    add_out(imp, "run folder (gets checkpoint.pt + config.yaml) or a .pt file", required=True)
    imp.add_argument("overrides", nargs="*", help="key=value config overrides")
    add_overwrite_flag(imp)


def cmd_export(args: argparse.Namespace) -> int:
    from vitssl.commands.export import export_backbone, load_code
    from vitssl.commands.summary import print_summary

    started = time.perf_counter()
    r = export_backbone(args.checkpoint, args.out, args.format, args.backbone, overwrite=args.overwrite,
                        image_size=args.image_size)
    spec, weights = r["spec"], Path(r["weights"])
    size = f"{weights.stat().st_size / 1e6:.1f} MB"
    if "config" in spec:  # detectron2 / mmdet
        print(f"wrote {r['weights']} and load_config.txt; load it with these config lines:")
        print("\n".join(f"  {line}" for line in spec["config"]))
        config = weights.with_name("load_config.txt")
        print_summary("export", started, [weights, config], f"{args.format} weights, {size}",
                      f"cat {shlex.quote(str(config))}")
        return 0
    code = load_code(spec, r["weights"])
    print(f"wrote {r['weights']} and timm_model.json; load with timm:")
    print(f"  {code}")
    if spec["note"]:
        print(f"  note: {spec['note']}")
    check = f"import functools, timm, torch, safetensors.torch; print({code})"
    print_summary("export", started, [weights, weights.with_name("timm_model.json")],
                  f"{spec['model_name'] or spec['model_class']}, {size}", f"python -c {shlex.quote(check)}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from vitssl.commands.convert import import_checkpoint
    from vitssl.commands.summary import eval_data_args, print_summary

    started = time.perf_counter()
    r = import_checkpoint(args.source, args.checkpoint, args.out, list(args.overrides), overwrite=args.overwrite)
    print(f"imported {args.source} weights into {r.path} ({r.config.method.name}, {r.config.backbone.name})")
    if r.fresh:
        parts = sorted({".".join(k.split(".")[:2]) for k in r.fresh})
        print(f"  not in the original, freshly initialised: {', '.join(parts)}")
    print(f"  evaluate: vitssl eval knn --checkpoint {r.path} ...; continue: vitssl pretrain ... init_from={r.path}")
    path = Path(r.path)
    wrote = [path] if Path(args.out).suffix in (".pt", ".pth") else [path, path.with_name("config.yaml")]  # a run folder
    origin = f"{len(r.fresh)} tensors freshly initialised" if r.fresh else "every tensor from the original"
    print_summary("import", started, wrote, f"{args.source} {r.config.backbone.name}, {origin}",
                  f"vitssl eval knn --checkpoint {shlex.quote(str(path))} {eval_data_args('')}")
    return 0
