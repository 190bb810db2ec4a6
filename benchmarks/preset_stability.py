"""Stability check of a small-data preset's defaults: does the teacher learn, go flat, or collapse?

    python benchmarks/preset_stability.py --preset dino_small_data_cifar --data mnist --knn-data mnist \\
        --epochs 8 --out /tmp/stability                     # every variant below, one seed
    python benchmarks/preset_stability.py --preset dino_small_data_cifar --data CIFAR10_DIR \\
        --knn-data CIFAR10_DIR --epochs 200 --variants preset imagenet_head --seeds 0 1 2   # on a GPU

Each variant changes one of the defaults that decide DINO's stability (teacher momentum, teacher
temperature, number of prototypes K, BatchNorm in the head) back to DINO's ImageNet value, so the
table shows what each default buys. Runs the real trainer (`vitssl.commands.pretrain.pretrain`), then reads
the run's `metrics.jsonl` and reports, at the last log step: the loss against ln K (a loss stuck
at ln K means a flat teacher), the teacher's entropy, KL(batch mean || uniform) and mutual
information (the collapse monitor's statistics, see `vitssl.engine.health`), and the online k-NN
top-1 on the held-out split at the first and last epoch. `--shrink` scales the backbone down (width
96, depth 4) for CPU runs; head, teacher, crops and schedule stay the preset's.

Verdict per run: `collapsed` (the collapse monitor warned: one prototype or uniform teacher),
`flat` (mutual information between image and teacher prototype below 0.1 nats at the end: the
teacher's output barely depends on the image, so the student has nothing to learn; the loss then
sits at ln K), `learning` otherwise. The loss alone does not tell: DINO's loss is the
cross-entropy from a teacher whose entropy stays near ln K for a long time even when it learns.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from vitssl.commands.pretrain import pretrain
from vitssl.config import load_config
from vitssl.engine.health import CollapseMonitor
from vitssl.engine.logging import read_metrics
from vitssl.methods import method_configs

VARIANTS: dict[str, tuple[str, ...]] = {
    "preset": (),
    "momentum_0.996": ("method.momentum_teacher=0.996",),
    "teacher_temp_0.07": ("method.teacher_temp=0.07",),
    "K_65536": ("method.head.out_dim=65536",),
    "no_head_bn": ("method.head.use_bn=false",),
    "K_16384": ("method.head.out_dim=16384",),  # the ImageNet-100 preset's K
    "imagenet_head": ("method.head.out_dim=65536", "method.head.use_bn=false", "method.momentum_teacher=0.996"),
}
FLAT_INFO = 0.1  # nats of mutual information below which the teacher counts as flat
SHRINK = ("backbone.embed_dim=96", "backbone.depth=4", "backbone.num_heads=3")


def split_metrics(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """(training log rows, online k-NN rows) of a finished run."""
    rows = read_metrics(run_dir)
    return [r for r in rows if "loss" in r], [r for r in rows if "knn_top1" in r]


def summarise(train_rows: list[dict], knn_rows: list[dict], out_dim: int, min_entropy: float, max_kl: float,
              patience: int) -> dict:
    monitor = CollapseMonitor(min_entropy, max_kl, patience)
    for row in train_rows:
        if "teacher_entropy" in row:
            monitor.check(row["step"], row)
    last, log_k = train_rows[-1], math.log(out_dim)
    if monitor.warned:
        verdict = "collapsed (" + ", ".join(sorted(monitor.warned)) + ")"
    elif last.get("teacher_mutual_info", FLAT_INFO) < FLAT_INFO:
        verdict = "flat"
    else:
        verdict = "learning"
    return {
        "steps": last["step"], "ln_k": log_k, "loss_first": train_rows[0]["loss"], "loss": last["loss"],
        "entropy": last.get("teacher_entropy"), "kl_uniform": last.get("teacher_kl_uniform"),
        "mutual_info": last.get("teacher_mutual_info"),
        "knn_first": knn_rows[0]["knn_top1"] if knn_rows else None,
        "knn_last": knn_rows[-1]["knn_top1"] if knn_rows else None, "verdict": verdict,
    }


def run_variant(args: argparse.Namespace, name: str, seed: int) -> dict:
    overrides = [
        f"data.path={args.data}", f"train.epochs={args.epochs}", f"train.batch_size={args.batch_size}",
        f"train.seed={seed}", f"train.knn_every_epochs={args.knn_every}", f"train.knn_data={args.knn_data}",
        "train.progress=false", "train.tensorboard=false", f"train.log_every={args.log_every}",
        f"train.num_workers={args.workers}", f"optim.warmup_epochs={args.warmup_epochs}",
        *(SHRINK if args.shrink else ()), *VARIANTS[name], *args.overrides,
    ]
    cfg = load_config(args.preset, overrides, method_configs())
    run_dir = Path(args.out) / f"{name}-s{seed}"
    start = time.perf_counter()
    if not args.summarise_only:
        pretrain(cfg, run_dir)
    train_rows, knn_rows = split_metrics(run_dir)
    t = cfg.train
    result = summarise(train_rows, knn_rows, int(cfg.method.head.out_dim), t.collapse_min_entropy,
                       t.collapse_max_kl, t.collapse_patience)
    seconds = None if args.summarise_only else round(time.perf_counter() - start, 1)
    return {"variant": name, "seed": seed, "seconds": seconds,
            "overrides": list(VARIANTS[name]), **result}


def fmt(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def print_table(results: list[dict]) -> None:
    print("| variant | seed | steps | loss first -> last (ln K) | teacher entropy | KL to uniform | "
          "mutual info | k-NN first -> last | verdict |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['variant']} | {r['seed']} | {r['steps']} | {fmt(r['loss_first'], 2)} -> {fmt(r['loss'], 2)} "
              f"({fmt(r['ln_k'], 2)}) | {fmt(r['entropy'], 2)} | {fmt(r['kl_uniform'], 2)} | "
              f"{fmt(r['mutual_info'], 2)} | {fmt(r['knn_first'])} -> {fmt(r['knn_last'])} | {r['verdict']} |")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="dino_small_data_cifar", help="the preset every variant starts from")
    parser.add_argument("--data", required=True, help="training images (a folder or a built-in set)")
    parser.add_argument("--knn-data", required=True, help="labelled set with train/ and val/ for online k-NN")
    parser.add_argument("--out", required=True, help="parent folder of the runs")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                        help="which variants of the preset to run (default: all)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="one run per variant and seed")
    parser.add_argument("--epochs", type=int, default=8, help="train.epochs of every run")
    parser.add_argument("--batch-size", type=int, default=64, help="train.batch_size of every run")
    parser.add_argument("--warmup-epochs", type=int, default=1, help="optim.warmup_epochs of every run")
    parser.add_argument("--knn-every", type=int, default=1, help="online k-NN every N epochs")
    parser.add_argument("--log-every", type=int, default=10, help="train.log_every: metrics every N steps")
    parser.add_argument("--workers", type=int, default=0, help="train.num_workers: DataLoader workers")
    parser.add_argument("--shrink", action="store_true", help="backbone width 96, depth 4 (CPU runs)")
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument("--summarise-only", action="store_true",
                        help="do not train: summarise the finished runs already under --out")
    parser.add_argument("overrides", nargs="*", help="more config overrides for every run (key=value)")
    args = parser.parse_args(argv)
    results = []
    for seed in args.seeds:
        for name in args.variants:
            results.append(run_variant(args, name, seed))
            print(json.dumps(results[-1]), flush=True)
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps({"preset": args.preset, "args": vars(args), "results": results}, indent=2))
    return results


if __name__ == "__main__":
    main()
