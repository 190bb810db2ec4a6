"""`vitssl` command line: parse arguments, load config, call the library. No logic of its own."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from omegaconf import OmegaConf

from vitssl.cli_args import OneLineParser, fraction, non_negative_int, positive_float, positive_int


def _user_errors() -> tuple[type[BaseException], ...]:
    from vitssl.config import ConfigError
    from vitssl.engine.checkpoint import CheckpointError
    from vitssl.engine.trainer import TrainingDiverged, TrainingInterrupted

    return (ConfigError, CheckpointError, TrainingDiverged, TrainingInterrupted, OSError, ValueError, RuntimeError)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="vitssl", description="Self-supervised pre-training of vision transformers.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="short pre-training of a tiny ViT on built-in data: DINO then k-NN, "
                                        "or MAE then held-out reconstructions")
    demo.add_argument("--method", default="dino", choices=["dino", "mae"],
                      help="dino: 20-NN before/after; mae: masked-patch loss before/after and a reconstruction grid")
    demo.add_argument("--out", default=None, help="run folder (default: ./demo_run or ./demo_mae_run, -N if taken)")
    demo.add_argument("--dataset", default="mnist", choices=["mnist", "digits", "shapes"])
    demo.add_argument("--epochs", type=positive_int, default=None, help="override the demo's epoch count")
    demo.add_argument("--seed", type=non_negative_int, default=0)

    pre = sub.add_parser("pretrain", help="pre-train a backbone on an image folder",
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

    ev = sub.add_parser("eval", help="evaluate a pre-trained checkpoint")
    evsub = ev.add_subparsers(dest="protocol", required=True)
    for name, helptext in (("knn", "weighted k-NN on frozen features (DINO protocol)"),
                           ("linear", "linear probe on frozen features (DINO protocol)")):
        p = evsub.add_parser(name, help=helptext)
        p.add_argument("--checkpoint", required=True, help="run folder or checkpoint .pt")
        p.add_argument("--train", required=True, help="labelled train images (ImageFolder) or a built-in set")
        p.add_argument("--val", required=True, help="labelled validation images or a built-in set")
        p.add_argument("--out", default=None, help="results JSON (default: next to the checkpoint)")
        p.add_argument("--image-size", type=positive_int, default=None, help="crop size (default: the training crop size)")
        p.add_argument("--resize-size", type=positive_int, default=None,
                       help="short side before the centre crop (default: size x 256/224; built-in sets: size)")
        p.add_argument("--batch-size", type=positive_int, default=256)
        p.add_argument("--num-workers", type=non_negative_int, default=4)
        p.add_argument("--device", default="auto")
        p.add_argument("--backbone", choices=["teacher", "student"], default="teacher")
        if name == "knn":
            p.add_argument("--ks", type=positive_int, nargs="+", default=None,
                           help="default: 10 20 100 200, those no larger than the train set")
            p.add_argument("--temperature", type=positive_float, default=0.07)
        else:
            p.add_argument("--n-last-blocks", type=positive_int, default=4, help="concatenate the CLS of the last n blocks")
            p.add_argument("--avgpool", action="store_true", help="append the mean patch token (DINO ViT-B)")
            p.add_argument("--epochs", type=positive_int, default=100)
            p.add_argument("--lr", type=positive_float, default=None, help="default 0.001 x batch/256")
            p.add_argument("--lrs", type=positive_float, nargs="+", default=None, help="sweep these lrs, keep the best")
            p.add_argument("--batchnorm", action="store_true",
                           help="MAE linear probe: BatchNorm1d(affine=False) before the Linear layer "
                                "(MAE probes the CLS token: add --n-last-blocks 1)")

    ft = evsub.add_parser("finetune", help="end-to-end fine-tuning with layer-wise lr decay (MAE / MAE-Lite recipes)",
                          epilog="Recipe fields can be overridden as key=value, e.g. layer_decay=0.75 hflip=0 "
                                 "mixup=0. Recipes: mae_lite_impr, mae, transfer.")
    ft.add_argument("--checkpoint", default=None, help="run folder or checkpoint .pt (with --scratch: only its architecture)")
    ft.add_argument("--train", required=True, help="labelled train images (ImageFolder) or a built-in set")
    ft.add_argument("--val", required=True, help="labelled validation images or a built-in set")
    ft.add_argument("--recipe", default="mae_lite_impr", help="mae_lite_impr | mae | transfer")
    ft.add_argument("--epochs", type=positive_int, default=None, help="default: the recipe's")
    ft.add_argument("--lr", type=positive_float, default=None, help="peak lr (default: recipe blr x batch/256)")
    ft.add_argument("--batch-size", type=positive_int, default=None, help="default: the recipe's, capped at the train size")
    ft.add_argument("--scratch", action="store_true", help="random initialisation instead of pre-trained weights")
    ft.add_argument("--backbone-config", default=None, help="with --scratch: preset, YAML or checkpoint giving the architecture")
    ft.add_argument("--train-fraction", type=fraction, default=None, help="fine-tune on this fraction of each class")
    ft.add_argument("--samples-per-class", type=positive_int, default=None, help="fine-tune on N images per class")
    ft.add_argument("--out", default=None, help="results JSON (default: next to the checkpoint)")
    ft.add_argument("--image-size", type=positive_int, default=None, help="crop size (default: the training crop size)")
    ft.add_argument("--resize-size", type=positive_int, default=None, help="val: short side before the centre crop")
    ft.add_argument("--seed", type=non_negative_int, default=0, help="labelled subset, initialisation and data order")
    ft.add_argument("--num-workers", type=non_negative_int, default=4)
    ft.add_argument("--device", default="auto")
    ft.add_argument("--backbone", choices=["teacher", "student"], default="teacher")
    ft.add_argument("overrides", nargs="*", help="recipe key=value overrides")

    seg = evsub.add_parser("segmentation", help="linear (1x1 conv) probe on frozen patch features: mIoU, pixel accuracy")
    seg.add_argument("--checkpoint", required=True, help="run folder or checkpoint .pt")
    seg.add_argument("--train", required=True, help="folder with images/ and annotations/ (PNG class maps), or shapes | shapes-fg (built-in)")
    seg.add_argument("--val", required=True, help="same layout as --train, or 'shapes'")
    seg.add_argument("--out", default=None, help="results JSON (default: next to the checkpoint)")
    seg.add_argument("--image-size", type=positive_int, default=None, help="default: the training crop size")
    seg.add_argument("--epochs", type=positive_int, default=20)
    seg.add_argument("--lr", type=positive_float, default=None, help="default: the probe's own")
    seg.add_argument("--batch-size", type=positive_int, default=64)
    seg.add_argument("--num-workers", type=non_negative_int, default=0)
    seg.add_argument("--seed", type=non_negative_int, default=0)
    seg.add_argument("--device", default="auto")
    seg.add_argument("--backbone", choices=["teacher", "student"], default="teacher")

    vos = evsub.add_parser("video-segmentation", help="DAVIS-style label propagation from the first frame's mask")
    vos.add_argument("--checkpoint", required=True, help="run folder or checkpoint .pt")
    vos.add_argument("--frames", required=True, help="folder of frames (*.jpg|*.png, sorted by name)")
    vos.add_argument("--first-mask", required=True, help="indexed PNG with the object ids of the first frame")
    vos.add_argument("--gt", default=None, help="folder of ground-truth masks for J&F (optional)")
    vos.add_argument("--out", default=None, help="folder for predicted masks (default: RUN_DIR/video_segmentation)")
    vos.add_argument("--short-side", type=positive_int, default=480, help="frames are resized to this short side")
    vos.add_argument("--n-last-frames", type=positive_int, default=7)
    vos.add_argument("--topk", type=positive_int, default=5)
    vos.add_argument("--neighborhood", type=non_negative_int, default=12, help="spatial radius in patches (size_mask_neighborhood)")
    vos.add_argument("--device", default="auto")
    vos.add_argument("--backbone", choices=["teacher", "student"], default="teacher")

    an = sub.add_parser("analyze", help="look inside a pre-trained model")
    ansub = an.add_subparsers(dest="analysis", required=True)
    corr = ansub.add_parser("correspondence", help="EsViT region matches between an image and its mirrored, "
                                                   "recoloured copy: accuracy and pictures")
    corr.add_argument("--checkpoint", required=True, help="run folder or checkpoint .pt")
    corr.add_argument("--images", required=True, help="image file, folder, or a built-in set")
    corr.add_argument("--out", default=None, help="output folder (default: RUN_DIR/correspondence)")
    corr.add_argument("--image-size", type=positive_int, default=None, help="default: the training crop size")
    corr.add_argument("--top", type=positive_int, default=10, help="score the N most similar region pairs per image")
    corr.add_argument("--limit", type=positive_int, default=16, help="use at most this many images")
    corr.add_argument("--backbone", choices=["teacher", "student"], default="teacher")
    corr.add_argument("--device", default="auto")

    att = ansub.add_parser("attention", help="last-layer attention maps per head as PNG overlays (DINO's picture)")
    att.add_argument("--checkpoint", required=True, help="run folder or checkpoint .pt")
    att.add_argument("--images", required=True, help="image file, folder, or a built-in set")
    att.add_argument("--out", default=None, help="output folder (default: RUN_DIR/attention)")
    att.add_argument("--image-size", type=positive_int, default=None, help="default: the training crop size")
    att.add_argument("--limit", type=positive_int, default=8, help="use at most this many images")
    att.add_argument("--backbone", choices=["teacher", "student"], default="teacher")
    att.add_argument("--device", default="auto")

    lay = ansub.add_parser("layers", help="layer-by-layer linear CKA between two models (heat map and JSON)")
    lay.add_argument("--a", required=True, help="first run folder or checkpoint")
    lay.add_argument("--b", required=True, help="second run folder or checkpoint")
    lay.add_argument("--data", required=True, help="image folder or a built-in set")
    lay.add_argument("--out", default=None, help="output folder (default: A/layer_similarity)")
    lay.add_argument("--image-size", type=positive_int, default=None)
    lay.add_argument("--limit", type=positive_int, default=512, help="use at most this many images")
    lay.add_argument("--batch-size", type=positive_int, default=64)
    lay.add_argument("--device", default="auto")

    ast = ansub.add_parser("attention-stats", help="mean attention distance and entropy per layer and head")
    ast.add_argument("--checkpoint", required=True, help="run folder or checkpoint .pt")
    ast.add_argument("--data", required=True, help="image folder or a built-in set")
    ast.add_argument("--out", default=None, help="output folder (default: RUN_DIR/attention_stats)")
    ast.add_argument("--image-size", type=positive_int, default=None)
    ast.add_argument("--limit", type=positive_int, default=256)
    ast.add_argument("--batch-size", type=positive_int, default=32)
    ast.add_argument("--distance-unit", choices=["pixel", "grid", "compat_x14"], default="pixel",
                     help="compat_x14 reproduces the original code's grid x 14 scale")
    ast.add_argument("--device", default="auto")

    bench = sub.add_parser("benchmark", help="measure speed on this machine")
    benchsub = bench.add_subparsers(dest="benchmark", required=True)
    tp = benchsub.add_parser("throughput", help="inference images/s, parameters and GFLOPs per backbone")
    tp.add_argument("--backbone", nargs="*", default=[], help="backbone names, e.g. vit_small swin_tiny")
    tp.add_argument("--checkpoint", default=None, help="also measure this checkpoint's backbone")
    tp.add_argument("--batch-size", type=positive_int, default=128)
    tp.add_argument("--image-size", type=positive_int, default=None,
                    help="input size (default: 224; a --checkpoint's own training size for it)")
    tp.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="bf16", help="fp32 on CPU")
    tp.add_argument("--iters", type=positive_int, default=20)
    tp.add_argument("--device", default="auto")
    tp.add_argument("--json", default=None, help="also write the results to this JSON file")

    from vitssl.bench.step_options import add_arguments as add_step_arguments

    step = benchsub.add_parser("step", help="the whole pre-training step per method: images/s, step time, data "
                                            "stall, peak memory, MFU (synthetic or JPEG input)")
    add_step_arguments(step)

    ex = sub.add_parser("export", help="write a checkpoint's backbone in timm's key layout (safetensors or .pth)")
    ex.add_argument("--checkpoint", required=True, help="run folder or checkpoint .pt")
    ex.add_argument("--out", required=True, help="output folder")
    ex.add_argument("--format", choices=["safetensors", "timm"], default="safetensors",
                    help="safetensors, or timm: a torch state dict (.pth)")
    ex.add_argument("--backbone", choices=["teacher", "student"], default="teacher")
    ex.add_argument("--image-size", type=positive_int, default=None,
                    help="input size the export reproduces exactly in timm (default: the training crop size)")

    imp = sub.add_parser("import", help="convert an original DINO / EsViT / SelfPatch / MAE-Lite checkpoint",
                         epilog="Sizes are read off the weights; overrides (key=value) fix what is not in them, "
                                "e.g. backbone.num_heads=6. See docs/checkpoints.md.")
    imp.add_argument("--from", dest="source", required=True, choices=["dino", "esvit", "selfpatch", "mae-lite"])
    imp.add_argument("--checkpoint", required=True, help="the original .pth file")
    imp.add_argument("--out", required=True, help="run folder (gets checkpoint.pt + config.yaml) or a .pt file")
    imp.add_argument("overrides", nargs="*", help="key=value config overrides")

    sub.add_parser("presets", help="list the packaged config presets")
    rec = sub.add_parser("recipes", help="every preset with its method, backbone, paper, target numbers and compute")
    rec.add_argument("names", nargs="*", help="only these presets (default: all)")
    rep = sub.add_parser("report", help="one self-contained HTML page about a run: config, curves, results, pictures")
    rep.add_argument("run_dir", metavar="RUN_DIR", help="run folder written by vitssl pretrain")
    rep.add_argument("--images", default=None, help="images for the attention maps (default: the run's data)")
    rep.add_argument("--limit", type=positive_int, default=4, help="attention maps / correspondences for this many images")
    rep.add_argument("--image-size", type=positive_int, default=None, help="for the pictures (default: the training crop size)")
    rep.add_argument("--no-pictures", action="store_true", help="skip attention maps and correspondences")
    rep.add_argument("--out", default=None, help="HTML file (default: RUN_DIR/report/report.html)")
    show = sub.add_parser("config", help="print the resolved config of a preset with overrides")
    show.add_argument("--config", default=None)
    show.add_argument("overrides", nargs="*")
    from vitssl.commands.embed import add_parser as add_embed_parser
    from vitssl.engine.outputs import add_overwrite_flag

    COMMANDS["embed"] = add_embed_parser(sub)  # the parser and its runner live in commands/embed.py
    for writer in (evsub.choices["knn"], evsub.choices["linear"], ft, seg, vos, corr, att, lay, ast, tp, step, ex,
                   imp, rep):  # every subcommand that writes results (vitssl.engine.outputs)
        add_overwrite_flag(writer)
    return parser


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


def cmd_eval(args: argparse.Namespace) -> int:
    from vitssl.commands.evaluate import run_knn, run_linear
    from vitssl.engine.outputs import check_output_file, save_results
    from vitssl.eval import format_knn_table

    if args.protocol in ("segmentation", "video-segmentation"):
        return cmd_dense_eval(args)
    if args.protocol == "finetune":
        return cmd_finetune(args)
    out = check_output_file(args.out or _beside(args.checkpoint) / f"eval_{args.protocol}.json", args.overwrite)
    common = dict(image_size=args.image_size, resize_size=args.resize_size, device=args.device, batch_size=args.batch_size,
                  num_workers=args.num_workers, which=args.backbone)
    if args.protocol == "knn":
        results = run_knn(args.checkpoint, args.train, args.val, ks=args.ks and tuple(args.ks), temperature=args.temperature, **common)
        print(format_knn_table({int(k): v for k, v in results["results"].items()}))
    else:
        results = run_linear(args.checkpoint, args.train, args.val, n_last_blocks=args.n_last_blocks,
                             avgpool_patchtokens=args.avgpool, epochs=args.epochs, lr=args.lr, lrs=args.lrs,
                             batchnorm=args.batchnorm, **common)
        print(f"linear probe top-1 {results['top1']:.4f}  top-5 {results['top5']:.4f}  (lr {results['best_lr']:.2e})")
    print(f"saved {save_results(results, out)}")
    return 0


def _beside(checkpoint: str) -> Path:
    """The run folder of a checkpoint argument (the folder itself, or the .pt file's folder)."""
    path = Path(checkpoint)
    return path if path.is_dir() else path.parent


def cmd_finetune(args: argparse.Namespace) -> int:
    from vitssl.commands.evaluate import run_finetune
    from vitssl.engine.outputs import check_output_file, save_results

    if args.checkpoint is None and args.out is None:
        raise ValueError("without --checkpoint there is no run folder to write into: pass --out RESULTS.json")
    name = "eval_finetune_scratch.json" if args.scratch else "eval_finetune.json"
    out = check_output_file(args.out or _beside(args.checkpoint) / name, args.overwrite)
    r = run_finetune(args.checkpoint, args.train, args.val, recipe=args.recipe, overrides=list(args.overrides),
                     epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, scratch=args.scratch,
                     backbone_config=args.backbone_config, train_fraction=args.train_fraction,
                     samples_per_class=args.samples_per_class, image_size=args.image_size,
                     resize_size=args.resize_size, device=args.device, seed=args.seed,
                     num_workers=args.num_workers, which=args.backbone)
    print(f"fine-tuning ({r['recipe']}{', from scratch' if r['scratch'] else ''}) on {r['train_images']} images: "
          f"val top-1 {r['top1']:.4f}  top-5 {r['top5']:.4f}  (best top-1 {r['best_top1']:.4f}, lr {r['lr']:.2e})")
    print(f"saved {save_results(r, out)}")
    return 0


def cmd_dense_eval(args: argparse.Namespace) -> int:
    from vitssl.commands.evaluate import run_segmentation, run_video_segmentation
    from vitssl.engine.outputs import check_output_file, save_results

    here = _beside(args.checkpoint)
    if args.protocol == "segmentation":
        out_file = check_output_file(args.out or here / "eval_segmentation.json", args.overwrite)
        r = run_segmentation(args.checkpoint, args.train, args.val, image_size=args.image_size, epochs=args.epochs,
                             lr=args.lr, batch_size=args.batch_size, device=args.device, seed=args.seed,
                             num_workers=args.num_workers, which=args.backbone)
        print(f"segmentation probe mIoU {r['miou']:.4f}  pixel accuracy {r['pixel_acc']:.4f}")
        print(f"saved {save_results(r, out_file)}")
        return 0
    out = Path(args.out) if args.out else here / "video_segmentation"
    r = run_video_segmentation(args.checkpoint, args.frames, args.first_mask, out, gt_dir=args.gt,
                               short_side=args.short_side, n_last_frames=args.n_last_frames, topk=args.topk,
                               size_mask_neighborhood=args.neighborhood, device=args.device, which=args.backbone,
                               overwrite=args.overwrite)
    scores = "  ".join(f"{k} {r[k]:.4f}" for k in ("J_mean", "F_mean", "JF_mean") if k in r)
    print(f"propagated masks in {out}" + (f"; {scores}" if scores else ""))
    print(f"saved {save_results(r, out / 'video_segmentation.json')}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    if args.method == "mae":
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


def cmd_analyze(args: argparse.Namespace) -> int:
    from vitssl.commands.analyze import run_correspondence

    if args.analysis == "attention":
        from vitssl.commands.analyze import run_attention_maps

        paths = run_attention_maps(args.checkpoint, args.images, args.out, args.image_size, args.limit, args.backbone,
                                   args.device, overwrite=args.overwrite)
        print(f"saved {len(paths)} attention pictures in {Path(paths[0]).parent}")
    if args.analysis == "layers":
        from vitssl.commands.analyze import run_layer_similarity

        r = run_layer_similarity(args.a, args.b, args.data, args.out, args.image_size, args.limit, args.batch_size,
                                 args.device, overwrite=args.overwrite)
        diagonal = [row[i] for i, row in enumerate(r["cka"]) if i < len(row)]
        print("CKA of matching layers: " + " ".join(f"{v:.2f}" for v in diagonal))
        print(f"heat map {r['picture']}")
    if args.analysis == "attention-stats":
        from vitssl.commands.analyze import run_attention_stats

        r = run_attention_stats(args.checkpoint, args.data, args.out, args.image_size, args.limit, args.batch_size,
                                args.distance_unit, args.device, overwrite=args.overwrite)
        print(f"attention statistics of {len(r['distance'])} layers; plot {r['picture']}")
    if args.analysis == "correspondence":
        r = run_correspondence(args.checkpoint, args.images, args.out, args.image_size, args.top, args.limit,
                               args.backbone, args.device, overwrite=args.overwrite)
        print(f"correspondence accuracy {r['accuracy']:.3f} over {r['pairs']} top pairs of {r['images']} images; "
              f"mean distance error {r['distance_error_px']:.1f} px; pictures in {Path(r['pictures'][0]).parent}")
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    if args.json:
        from vitssl.engine.outputs import check_output_file

        check_output_file(args.json, args.overwrite, flag="--json")
    if args.benchmark == "step":
        from vitssl.bench.pretrain_step import check_arguments, run

        run(check_arguments(args))
        return 0
    from vitssl.bench.throughput import format_throughput_table
    from vitssl.commands.analyze import run_throughput

    rows = run_throughput(args.backbone, args.checkpoint, args.batch_size, args.image_size, args.precision,
                          args.device, args.iters)
    print(format_throughput_table(rows))
    if args.json:
        from vitssl.engine.outputs import save_results

        save_results({"throughput": {name: r.as_dict() for name, r in rows}}, args.json)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from vitssl.commands.export import export_backbone, load_code

    r = export_backbone(args.checkpoint, args.out, args.format, args.backbone, overwrite=args.overwrite,
                        image_size=args.image_size)
    spec = r["spec"]
    print(f"wrote {r['weights']} and timm_model.json; load with timm:")
    print(f"  {load_code(spec, r['weights'])}")
    if spec["note"]:
        print(f"  note: {spec['note']}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from vitssl.commands.convert import import_checkpoint

    r = import_checkpoint(args.source, args.checkpoint, args.out, list(args.overrides), overwrite=args.overwrite)
    print(f"imported {args.source} weights into {r.path} ({r.config.method.name}, {r.config.backbone.name})")
    if r.fresh:
        parts = sorted({".".join(k.split(".")[:2]) for k in r.fresh})
        print(f"  not in the original, freshly initialised: {', '.join(parts)}")
    print(f"  evaluate: vitssl eval knn --checkpoint {r.path} ...; continue: vitssl pretrain ... init_from={r.path}")
    return 0


def cmd_presets(_: argparse.Namespace) -> int:
    from vitssl.config import preset_names

    print("\n".join(preset_names()))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
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

    path = build_report(args.run_dir, images=args.images, limit=args.limit, pictures=not args.no_pictures,
                        out=args.out, image_size=args.image_size, overwrite=args.overwrite)
    print(f"report written to {path} (figures as PNG in {Path(args.run_dir) / 'report'})")
    return 0


COMMANDS = {"pretrain": cmd_pretrain, "eval": cmd_eval, "demo": cmd_demo, "presets": cmd_presets,
            "config": cmd_config, "analyze": cmd_analyze, "benchmark": cmd_benchmark, "export": cmd_export,
            "recipes": cmd_recipes, "report": cmd_report, "import": cmd_import}


def main(argv: list[str] | None = None) -> int:
    from vitssl.engine.logging import setup_console_logging
    from vitssl.engine.outputs import find_os_error, os_error_line

    args = build_parser().parse_args(argv)
    setup_console_logging()
    try:
        return COMMANDS[args.command](args)
    except _user_errors() as e:
        if os.environ.get("VITSSL_DEBUG"):
            raise
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        cause = e if isinstance(e, OSError) else find_os_error(e) if type(e) is RuntimeError else None
        if cause is not None:  # torch reports a failed write as a RuntimeError around the OSError
            message = os_error_line(cause)
        stop = type(e).__name__ == "TrainingInterrupted"  # a stop asked for by signal: saved, resumable
        print(f"vitssl: {'' if stop else 'error: '}{message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
