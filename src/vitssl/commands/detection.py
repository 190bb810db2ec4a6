"""`vitssl eval detection`, `vitssl data shapes-coco` and the fine-tuned heads of
`vitssl eval segmentation` (--head fpn|upernet, --finetune): parsers and what they run.

The parsers are added by `add_parser(subparsers)` from cli.py; each sets `handler`, which
`vitssl.cli.main` calls instead of its own table.
"""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path
from typing import Any

from vitssl.cli_parsing.arguments import positive_float, positive_int, subcommands_of
from vitssl.cli_parsing.shared_options import (
    add_batch_size,
    add_checkpoint,
    add_model_options,
    add_num_workers,
    add_out,
    add_seed,
)
from vitssl.commands.run_folder import run_folder_of
from vitssl.engine.outputs import add_overwrite_flag

# The names of eval/detection/presets.py's PRESETS, here so that building the parser imports no
# torch (tests/eval/test_detection.py checks the two agree).
PRESET_NAMES = ("vitdet_t_640", "selfpatch_1x", "esvit_1x", "tiny")


def add_parser(subparsers: Any) -> None:
    """Add `data shapes-coco`, `eval detection` and the segmentation head options (after the `data` and
    `eval` commands exist)."""
    coco = subcommands_of(subparsers.choices["data"]).add_parser(
        "shapes-coco", help="shapes with instance boxes and masks as COCO JSON + images (for `vitssl eval detection`)")
    coco.add_argument("--out", required=True, help="folder for train.json, val.json, train/ and val/")
    coco.add_argument("--train-images", type=positive_int, default=200, help="training images to draw")
    coco.add_argument("--val-images", type=positive_int, default=50, help="validation images to draw")
    coco.add_argument("--image-size", type=positive_int, default=64, help="side of the square images in pixels")
    coco.add_argument("--max-shapes", type=positive_int, default=3, help="at most this many shapes per image")
    add_seed(coco)
    add_overwrite_flag(coco)
    coco.set_defaults(handler=cmd_shapes_coco)

    evsub = subcommands_of(subparsers.choices["eval"])
    det = evsub.add_parser("detection", help="fine-tune a Mask R-CNN on the backbone: COCO box and mask AP",
                           epilog=f"Presets: {', '.join(PRESET_NAMES)} (see docs/evaluation.md).")
    add_checkpoint(det)
    det.add_argument("--train", required=True, metavar="COCO_JSON:IMAGES", help="annotation file and image folder")
    det.add_argument("--val", required=True, metavar="COCO_JSON:IMAGES", help="annotation file and image folder")
    det.add_argument("--preset", default="tiny", choices=PRESET_NAMES, help="the fine-tuning recipe (default tiny)")
    det.add_argument("--epochs", type=positive_int, default=None, help="default: the preset's")
    det.add_argument("--iters", type=positive_int, default=None, help="stop after this many iterations")
    add_batch_size(det, None, help="default: the preset's (lr scales with it)")
    det.add_argument("--lr", type=positive_float, default=None, help="peak lr (default: the preset's)")
    add_out(det, "results JSON (default: RUN_DIR/eval_detection.json)")
    add_seed(det)
    add_num_workers(det, 0)
    add_model_options(det)
    add_overwrite_flag(det)
    det.set_defaults(handler=cmd_detection)

    seg = evsub.choices["segmentation"]
    seg.add_argument("--head", choices=["linear", "fpn", "upernet"], default="linear",
                     help="linear: 1x1 conv on the last patch features; fpn: Semantic FPN on a feature pyramid; "
                          "upernet: UperNet (pyramid pooling + FPN fusion of all levels)")
    seg.add_argument("--pool-scales", default=None, metavar="S,S,...",
                     help="UperNet's pyramid pooling output sizes (default 1,2,3,6)")
    seg.add_argument("--finetune", action="store_true", help="train the backbone with the head (layer decay)")
    seg.add_argument("--window", type=positive_int, default=None,
                     help="sliding-window inference with this crop (default: the training image size)")
    seg.add_argument("--reduce-zero-label", action="store_true",
                     help="ADE20K: label 0 ('other') is ignored and every class id k becomes k-1")
    seg.set_defaults(handler=cmd_segmentation)


def cmd_shapes_coco(args: argparse.Namespace) -> int:
    from vitssl.commands.summary import print_summary
    from vitssl.data.shapes_coco import write_shapes_coco

    started = time.perf_counter()
    r = write_shapes_coco(args.out, args.train_images, args.val_images, args.image_size, args.max_shapes,
                          args.seed, overwrite=args.overwrite)
    print(f"wrote the shapes detection set to {args.out}; use --train {r['train']} --val {r['val']}")
    print_summary("data shapes-coco", started, [r["train"].split(":")[0], r["val"].split(":")[0]],
                  f"{args.train_images} train and {args.val_images} val images",
                  f"vitssl eval detection --checkpoint RUN --train {shlex.quote(r['train'])} --val {shlex.quote(r['val'])}")
    return 0


def run_detection(checkpoint: str | Path, train: str, val: str, preset: str = "tiny", epochs: int | None = None,
                  iters: int | None = None, batch_size: int | None = None, lr: float | None = None,
                  device: str = "auto", seed: int = 0, num_workers: int = 0, which: str = "teacher") -> dict[str, Any]:
    """Fine-tune a Mask R-CNN on a checkpoint's backbone; COCO box and mask AP on `val`."""
    import torch

    from vitssl.engine.device import resolve_device
    from vitssl.engine.launch import init_distributed
    from vitssl.eval.detection import build_detector, load_coco, resolve_preset, train_detector
    from vitssl.eval.detection.coco import require_pycocotools
    from vitssl.eval.finetune import set_drop_path
    from vitssl.eval.pretrained import load_run, normalization

    require_pycocotools()
    chosen = resolve_preset(preset, epochs, batch_size, lr)
    train_set, val_set = load_coco(train), load_coco(val)
    if val_set.category_ids != train_set.category_ids:
        raise ValueError(f"'{val}' has categories {val_set.category_ids} but '{train}' has "
                         f"{train_set.category_ids}: train and val need the same categories")
    run = load_run(checkpoint, which)
    backbone = run.network  # SelfPatch: its ViT, without the aggregator
    if chosen.drop_path > 0 and hasattr(backbone, "blocks"):
        set_drop_path(backbone, chosen.drop_path)
    mean, std = normalization(run.eval_input)
    torch.manual_seed(seed)
    model = build_detector(backbone, train_set.num_classes, chosen, mean, std)
    dev = resolve_device(init_distributed(device)[0])
    result = train_detector(model, train_set, val_set, chosen, dev, seed, num_workers, max_iters=iters)
    return {"protocol": "detection", "checkpoint": str(checkpoint), "backbone": which, "train": train, "val": val,
            "preset": preset, "preset_values": chosen.as_dict(), "seed": seed, "iterations": result.iterations,
            "batch_size": result.batch_size, "seconds_per_iter": result.seconds_per_iter,
            "categories": train_set.category_names, **result.metrics,
            "final_loss": result.history[-1]["loss"] if result.history else None}


def cmd_detection(args: argparse.Namespace) -> int:
    from vitssl.commands.summary import print_summary, report_command
    from vitssl.engine.outputs import check_output_file, save_results
    from vitssl.eval.detection.train import summary

    started = time.perf_counter()
    out = check_output_file(args.out or run_folder_of(args.checkpoint) / "eval_detection.json", args.overwrite)
    r = run_detection(args.checkpoint, args.train, args.val, args.preset, args.epochs, args.iters, args.batch_size,
                      args.lr, args.device, args.seed, args.num_workers, args.backbone)
    if "bbox" in r:  # rank 0 only under torchrun
        print(f"Mask R-CNN ({args.preset}, {r['iterations']} iterations): {summary(r)}")
        saved = save_results(r, out)
        print(f"saved {saved}")
        print_summary("eval detection", started, [saved], f"box AP {r['bbox']['AP']:.4f}"
                      + (f", mask AP {r['segm']['AP']:.4f}" if r.get("segm") else ""), report_command(args.checkpoint))
    return 0


def _pool_scales(text: str | None) -> tuple[int, ...] | None:
    """'1,2,3,6' -> (1, 2, 3, 6); the values are checked by the head (whole, >= 1, distinct)."""
    if text is None:
        return None
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--pool-scales '{text}' is not a comma-separated list of whole numbers, e.g. 1,2,3,6") from None


def cmd_segmentation(args: argparse.Namespace) -> int:
    """The linear probe as before; `--head fpn|upernet` or `--finetune`: the fine-tuned dense head."""
    if args.pool_scales is not None and args.head != "upernet":
        raise ValueError("--pool-scales is for --head upernet (UperNet's pyramid pooling)")
    if args.head == "linear" and not args.finetune:
        if args.window is not None or args.reduce_zero_label:
            flag = "--window" if args.window is not None else "--reduce-zero-label"
            raise ValueError(f"{flag} is for the fine-tuned heads (--head fpn|upernet or --finetune)")
        from vitssl.commands.eval_command import cmd_dense_eval

        return cmd_dense_eval(args)
    from vitssl.commands.summary import print_summary, report_command
    from vitssl.engine.outputs import check_output_file, save_results
    from vitssl.eval.segmentation.finetune import run_dense_segmentation

    started = time.perf_counter()
    out = check_output_file(args.out or run_folder_of(args.checkpoint) / "eval_segmentation_head.json", args.overwrite)
    r = run_dense_segmentation(args.checkpoint, args.train, args.val, head=args.head, finetune=args.finetune,
                               image_size=args.image_size, epochs=args.epochs, lr=args.lr,
                               batch_size=args.batch_size, window=args.window, device=args.device, seed=args.seed,
                               num_workers=args.num_workers, which=args.backbone,
                               reduce_zero_label=args.reduce_zero_label,
                               pool_scales=_pool_scales(args.pool_scales))
    print(f"{args.head} head{' + backbone' if args.finetune else ''}: mIoU {r['miou']:.4f}  "
          f"pixel accuracy {r['pixel_acc']:.4f}")
    saved = save_results(r, out)
    print(f"saved {saved}")
    print_summary("eval segmentation", started, [saved], f"mIoU {r['miou']:.4f}", report_command(args.checkpoint))
    return 0
