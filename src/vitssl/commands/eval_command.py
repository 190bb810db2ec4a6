"""`vitssl eval PROTOCOL`: the sub-parsers of the evaluation protocols and what each one prints.

No torch here (`vitssl --help` stays fast): the protocols run in `vitssl.commands.evaluate`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vitssl.cli_parsing.arguments import fraction, non_negative_int, positive_float, positive_int
from vitssl.cli_parsing.shared_options import (
    add_batch_size,
    add_checkpoint,
    add_image_size,
    add_model_options,
    add_num_workers,
    add_out,
    add_seed,
)
from vitssl.commands.run_folder import run_folder_of
from vitssl.engine.outputs import add_overwrite_flag
from vitssl.engine.wording import counted

RESULTS_HELP = "results JSON (default: next to the checkpoint)"
TRAIN_HELP = "labelled train images (ImageFolder) or a built-in set"
VAL_HELP = "labelled validation images or a built-in set"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    ev = subparsers.add_parser("eval", help="evaluate a pre-trained checkpoint")
    protocols = ev.add_subparsers(dest="protocol", required=True, help="the protocol (each has its own --help)")
    _add_frozen_feature_parsers(protocols)
    _add_finetune_parser(protocols)
    _add_segmentation_parser(protocols)
    _add_video_segmentation_parser(protocols)


def _add_frozen_feature_parsers(protocols: argparse._SubParsersAction) -> None:
    for name, helptext in (("knn", "weighted k-NN on frozen features (DINO protocol)"),
                           ("linear", "linear probe on frozen features (DINO protocol)")):
        p = protocols.add_parser(name, help=helptext)
        add_checkpoint(p)
        p.add_argument("--train", required=True, help=TRAIN_HELP)
        p.add_argument("--val", required=True, help=VAL_HELP)
        add_out(p, RESULTS_HELP)
        add_image_size(p)
        p.add_argument("--resize-size", type=positive_int, default=None,
                       help="short side before the centre crop (default: size x 256/224; built-in sets: size)")
        add_batch_size(p, 256, help="images per forward pass when extracting features")
        add_num_workers(p, 4)
        add_model_options(p)
        p.add_argument("--scratch", action="store_true",
                       help="evaluate the same network at its seeded initialisation (the random-init baseline)")
        p.add_argument("--seed", type=non_negative_int, default=None,
                       help="seed of the --scratch initialisation (default: the run's train.seed, i.e. the network "
                            "the run started from)")
        p.add_argument("--no-pixels", dest="pixels", action="store_false",
                       help="skip the raw-pixel baseline row (the same images, normalised and flattened)")
        if name == "knn":
            p.add_argument("--ks", type=positive_int, nargs="+", default=None,
                           help="numbers of neighbours to vote (default: 10 20 100 200, those no larger than "
                                "the train set)")
            p.add_argument("--temperature", type=positive_float, default=0.07,
                           help="votes are weighted exp(cosine similarity / temperature) (DINO: 0.07)")
        else:
            _add_linear_options(p)
        add_overwrite_flag(p)


def _add_linear_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-last-blocks", type=positive_int, default=4, help="concatenate the CLS of the last n blocks")
    p.add_argument("--avgpool", action="store_true", help="append the mean patch token (DINO ViT-B)")
    p.add_argument("--epochs", type=positive_int, default=100, help="training epochs of the linear layer")
    p.add_argument("--lr", type=positive_float, default=None, help="default 0.001 x batch/256")
    p.add_argument("--lrs", type=positive_float, nargs="+", default=None, help="sweep these lrs, keep the best")
    p.add_argument("--batchnorm", action="store_true",
                   help="MAE linear probe: BatchNorm1d(affine=False) before the Linear layer "
                        "(MAE probes the CLS token: add --n-last-blocks 1)")


def _add_finetune_parser(protocols: argparse._SubParsersAction) -> None:
    ft = protocols.add_parser("finetune", help="end-to-end fine-tuning with layer-wise lr decay (MAE / MAE-Lite recipes)",
                              epilog="Recipe fields can be overridden as key=value, e.g. layer_decay=0.75 hflip=0 "
                                     "mixup=0. Recipes: mae_lite_impr, mae, transfer.")
    add_checkpoint(ft, required=False, help="run folder or checkpoint .pt (with --scratch: only its architecture)")
    ft.add_argument("--train", required=True, help=TRAIN_HELP)
    ft.add_argument("--val", required=True, help=VAL_HELP)
    ft.add_argument("--recipe", default="mae_lite_impr", help="mae_lite_impr | mae | transfer")
    ft.add_argument("--epochs", type=positive_int, default=None, help="default: the recipe's")
    ft.add_argument("--lr", type=positive_float, default=None, help="peak lr (default: recipe blr x batch/256)")
    add_batch_size(ft, None, help="default: the recipe's, capped at the train size")
    ft.add_argument("--scratch", action="store_true", help="random initialisation instead of pre-trained weights")
    ft.add_argument("--backbone-config", default=None, help="with --scratch: preset, YAML or checkpoint giving the architecture")
    ft.add_argument("--train-fraction", type=fraction, default=None, help="fine-tune on this fraction of each class")
    ft.add_argument("--samples-per-class", type=positive_int, default=None, help="fine-tune on N images per class")
    add_out(ft, RESULTS_HELP)
    add_image_size(ft)
    ft.add_argument("--resize-size", type=positive_int, default=None, help="val: short side before the centre crop")
    add_seed(ft, help="labelled subset, initialisation and data order")
    add_num_workers(ft, 4)
    add_model_options(ft)
    ft.add_argument("overrides", nargs="*", help="recipe key=value overrides")
    add_overwrite_flag(ft)


def _add_segmentation_parser(protocols: argparse._SubParsersAction) -> None:
    seg = protocols.add_parser("segmentation", help="linear (1x1 conv) probe on frozen patch features: mIoU, pixel accuracy")
    add_checkpoint(seg)
    seg.add_argument("--train", required=True, help="folder with images/ and annotations/ (PNG class maps), or shapes | shapes-fg (built-in)")
    seg.add_argument("--val", required=True, help="same layout as --train, or 'shapes'")
    add_out(seg, RESULTS_HELP)
    add_image_size(seg, help="default: the training crop size")
    seg.add_argument("--epochs", type=positive_int, default=20, help="training epochs of the probe")
    seg.add_argument("--lr", type=positive_float, default=None, help="default: the probe's own")
    add_batch_size(seg, 64, help="images per step of the probe")
    add_num_workers(seg, 0)
    add_seed(seg, help="probe initialisation and data order")
    add_model_options(seg)
    add_overwrite_flag(seg)


def _add_video_segmentation_parser(protocols: argparse._SubParsersAction) -> None:
    vos = protocols.add_parser("video-segmentation", help="DAVIS-style label propagation from the first frame's mask")
    add_checkpoint(vos)
    vos.add_argument("--frames", required=True, help="folder of frames (*.jpg|*.png, sorted by name)")
    vos.add_argument("--first-mask", required=True, help="indexed PNG with the object ids of the first frame")
    vos.add_argument("--gt", default=None, help="folder of ground-truth masks for J&F (optional)")
    add_out(vos, "folder for predicted masks (default: RUN_DIR/video_segmentation)")
    vos.add_argument("--short-side", type=positive_int, default=480, help="frames are resized to this short side")
    vos.add_argument("--n-last-frames", type=positive_int, default=7,
                     help="besides the first frame, label from this many previous frames")
    vos.add_argument("--topk", type=positive_int, default=5, help="each patch takes the labels of its k most similar patches")
    vos.add_argument("--neighborhood", type=non_negative_int, default=12, help="spatial radius in patches (size_mask_neighborhood)")
    add_model_options(vos)
    add_overwrite_flag(vos)


def cmd_eval(args: argparse.Namespace) -> int:
    from vitssl.commands.evaluate import run_knn, run_linear
    from vitssl.commands.summary import print_summary, report_command
    from vitssl.engine.outputs import check_output_file, save_results
    from vitssl.eval import format_knn_table

    started = time.perf_counter()
    if args.protocol in ("segmentation", "video-segmentation"):
        return cmd_dense_eval(args)
    if args.protocol == "finetune":
        return cmd_finetune(args)
    name = f"eval_{args.protocol}{'_scratch' if args.scratch else ''}.json"
    out = check_output_file(args.out or run_folder_of(args.checkpoint) / name, args.overwrite)
    common = dict(image_size=args.image_size, resize_size=args.resize_size, device=args.device, batch_size=args.batch_size,
                  num_workers=args.num_workers, which=args.backbone, scratch=args.scratch, seed=args.seed,
                  pixels=args.pixels)
    what = "random init" if args.scratch else "pre-trained"
    if args.protocol == "knn":
        results = run_knn(args.checkpoint, args.train, args.val, ks=args.ks and tuple(args.ks), temperature=args.temperature, **common)
        print(f"{what}:")
        print(format_knn_table({int(k): v for k, v in results["results"].items()}))
        if "raw_pixels" in results:
            print("raw pixels (the same images, normalised and flattened):")
            print(format_knn_table({int(k): v for k, v in results["raw_pixels"].items()}))
    else:
        results = run_linear(args.checkpoint, args.train, args.val, n_last_blocks=args.n_last_blocks,
                             avgpool_patchtokens=args.avgpool, epochs=args.epochs, lr=args.lr, lrs=args.lrs,
                             batchnorm=args.batchnorm, **common)
        print(f"linear probe ({what}) top-1 {results['top1']:.4f}  top-5 {results['top5']:.4f}  (lr {results['best_lr']:.2e})")
        if "raw_pixels" in results:
            raw = results["raw_pixels"]
            print(f"linear probe (raw pixels) top-1 {raw['top1']:.4f}  top-5 {raw['top5']:.4f}  (lr {raw['best_lr']:.2e})")
    saved = save_results(results, out)
    print(f"saved {saved}")
    print_summary(f"eval {args.protocol}", started, [saved], frozen_headline(results, what),
                  report_command(args.checkpoint))
    return 0


def frozen_headline(results: dict, what: str) -> str:
    """`20-NN top-1 0.8120 (pre-trained; raw pixels 0.9050)`: k = 20 where measured (DINO's),
    else the smallest k; the linear probe's top-1."""
    if results["protocol"] == "knn":
        k = "20" if "20" in results["results"] else min(results["results"], key=int)
        name, ours = f"{k}-NN top-1", results["results"][k]["top1"]
        raw = results.get("raw_pixels", {}).get(k, {}).get("top1")
    else:
        name, ours, raw = "linear top-1", results["top1"], results.get("raw_pixels", {}).get("top1")
    return f"{name} {ours:.4f} ({what}" + (f"; raw pixels {raw:.4f})" if raw is not None else ")")


def cmd_finetune(args: argparse.Namespace) -> int:
    from vitssl.commands.evaluate import run_finetune
    from vitssl.commands.summary import print_summary, report_command
    from vitssl.engine.outputs import check_output_file, save_results

    started = time.perf_counter()
    if args.checkpoint is None and args.out is None:
        raise ValueError("without --checkpoint there is no run folder to write into: pass --out RESULTS.json")
    name = "eval_finetune_scratch.json" if args.scratch else "eval_finetune.json"
    out = check_output_file(args.out or run_folder_of(args.checkpoint) / name, args.overwrite)
    r = run_finetune(args.checkpoint, args.train, args.val, recipe=args.recipe, overrides=list(args.overrides),
                     epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, scratch=args.scratch,
                     backbone_config=args.backbone_config, train_fraction=args.train_fraction,
                     samples_per_class=args.samples_per_class, image_size=args.image_size,
                     resize_size=args.resize_size, device=args.device, seed=args.seed,
                     num_workers=args.num_workers, which=args.backbone)
    print(f"fine-tuning ({r['recipe']}{', from scratch' if r['scratch'] else ''}) on {counted(r['train_images'], 'image')}: "
          f"val top-1 {r['top1']:.4f}  top-5 {r['top5']:.4f}  (best top-1 {r['best_top1']:.4f}, lr {r['lr']:.2e})")
    saved = save_results(r, out)
    print(f"saved {saved}")
    again = "vitssl eval finetune --checkpoint RUN ... (the same flags, without --scratch)"
    print_summary("eval finetune", started, [saved], f"val top-1 {r['top1']:.4f}",
                  report_command(args.checkpoint) if args.checkpoint else again)
    return 0


def cmd_dense_eval(args: argparse.Namespace) -> int:
    from vitssl.commands.evaluate import run_segmentation, run_video_segmentation
    from vitssl.commands.summary import print_summary, report_command
    from vitssl.engine.outputs import check_output_file, save_results

    started = time.perf_counter()
    here = run_folder_of(args.checkpoint)
    if args.protocol == "segmentation":
        out_file = check_output_file(args.out or here / "eval_segmentation.json", args.overwrite)
        r = run_segmentation(args.checkpoint, args.train, args.val, image_size=args.image_size, epochs=args.epochs,
                             lr=args.lr, batch_size=args.batch_size, device=args.device, seed=args.seed,
                             num_workers=args.num_workers, which=args.backbone)
        print(f"segmentation probe mIoU {r['miou']:.4f}  pixel accuracy {r['pixel_acc']:.4f}")
        saved = save_results(r, out_file)
        print(f"saved {saved}")
        print_summary("eval segmentation", started, [saved], f"mIoU {r['miou']:.4f}", report_command(args.checkpoint))
        return 0
    out = Path(args.out) if args.out else here / "video_segmentation"
    r = run_video_segmentation(args.checkpoint, args.frames, args.first_mask, out, gt_dir=args.gt,
                               short_side=args.short_side, n_last_frames=args.n_last_frames, topk=args.topk,
                               size_mask_neighborhood=args.neighborhood, device=args.device, which=args.backbone,
                               overwrite=args.overwrite)
    scores = "  ".join(f"{k} {r[k]:.4f}" for k in ("J_mean", "F_mean", "JF_mean") if k in r)
    print(f"propagated masks in {out}" + (f"; {scores}" if scores else ""))
    saved = save_results(r, out / 'video_segmentation.json')
    print(f"saved {saved}")
    headline = f"J&F mean {r['JF_mean']:.4f}" if "JF_mean" in r else "no ground truth (--gt): masks only"
    print_summary("eval video-segmentation", started, [out, saved], headline, report_command(args.checkpoint))
    return 0
