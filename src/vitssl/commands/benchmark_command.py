"""`vitssl benchmark throughput|step`: the sub-parsers of the speed measurements and what they print.

No torch here (`vitssl --help` stays fast): the measurements run in `vitssl.bench`.
"""

from __future__ import annotations

import argparse
import time

from vitssl.bench.input_options import add_input_parser
from vitssl.bench.step_options import add_arguments as add_step_arguments
from vitssl.cli_parsing.arguments import positive_int
from vitssl.cli_parsing.shared_options import (
    add_batch_size,
    add_checkpoint,
    add_device,
    add_image_size,
)
from vitssl.engine.outputs import add_overwrite_flag


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser("benchmark", help="measure speed on this machine")
    benchmarks = bench.add_subparsers(dest="benchmark", required=True, help="the measurement (each has its own --help)")
    tp = benchmarks.add_parser("throughput", help="inference images/s, parameters and GFLOPs per backbone")
    tp.add_argument("--backbone", nargs="*", default=[], help="backbone names, e.g. vit_small swin_tiny")
    add_checkpoint(tp, required=False, help="also measure this checkpoint's backbone")
    add_batch_size(tp, 128)
    add_image_size(tp, help="square input size in pixels (default: 224; a --checkpoint's own training size for it)")
    tp.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="bf16", help="fp32 on CPU")
    tp.add_argument("--iters", type=positive_int, default=20, help="timed forward passes (after 5 untimed warm-up passes)")
    add_device(tp)
    tp.add_argument("--json", default=None, help="also write the results to this JSON file")
    add_overwrite_flag(tp)

    step = benchmarks.add_parser("step", help="the whole pre-training step per method: images/s, step time, data "
                                              "stall, peak memory, MFU (synthetic or JPEG input)")
    add_step_arguments(step)
    add_overwrite_flag(step)
    add_input_parser(benchmarks)  # vitssl benchmark input (vitssl.bench.input)


def cmd_benchmark(args: argparse.Namespace) -> int:
    from vitssl.commands.summary import print_summary

    started = time.perf_counter()
    if args.json:
        from vitssl.engine.outputs import check_output_file

        check_output_file(args.json, args.overwrite, flag="--json")
    wrote = [args.json] if args.json else []
    if args.benchmark == "input":
        from vitssl.bench.input import run_input_benchmark

        best = max(run_input_benchmark(args), key=lambda r: r.images_per_s)
        print_summary("benchmark input", started, wrote, f"fastest {best.images_per_s:.0f} images/s ({best.kind}, "
                      f"{best.workers} workers, {best.decode} decoding)",
                      f"vitssl pretrain ... train.num_workers={best.workers}"
                      + (" train.augment_on=device train.decode_on=device" if best.decode == "device" else ""))
        return 0
    if args.benchmark == "step":
        from vitssl.bench.pretrain_step import check_arguments, run

        rows = run(check_arguments(args))["rows"]
        headline = ", ".join(f"{r['method']} {r['images_per_s']:.0f} images/s" for r in rows)
        print_summary("benchmark step", started, wrote, headline, "vitssl benchmark input --data FOLDER")
        return 0
    from vitssl.bench.throughput import format_throughput_table
    from vitssl.commands.analyze import run_throughput

    rows = run_throughput(args.backbone, args.checkpoint, args.batch_size, args.image_size, args.precision,
                          args.device, args.iters)
    print(format_throughput_table(rows))
    if args.json:
        from vitssl.engine.outputs import save_results

        save_results({"throughput": {name: r.as_dict() for name, r in rows}}, args.json)
    print_summary("benchmark throughput", started, wrote,
                  ", ".join(f"{name} {r.images_per_s:.0f} images/s" for name, r in rows),
                  "vitssl benchmark step --tiny")
    return 0
