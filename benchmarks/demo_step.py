"""Time a CPU demo preset's training steps, with and without overrides, and print a table.

The demo's recipe is chosen within a wall-time budget on two cores, so a variant is worth as
much as its step costs: this times the demo's own code path (`start_demo_run`, the preset's
data pipeline and method) for each variant, in rounds that alternate the variants so the
machine's drift within the hour falls on all of them alike.

    python benchmarks/demo_step.py --threads 2 --steps 40 --rounds 2 \\
        --variant "" --variant "train.num_workers=1" \\
        --variant "backbone.img_size=28 method.crops.global_crops_size=28 method.crops.local_crops_size=16"
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from vitssl.commands.demo import start_demo_run


def time_steps(preset: str, dataset: str, overrides: list[str], steps: int, skip: int) -> float:
    """Median seconds between consecutive step ends, the first `skip` steps left out."""
    ends: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        _, _, trainer = start_demo_run(preset, Path(tmp) / "run", dataset, 1, 0, [
            f"train.max_steps_per_epoch={steps + skip + 1}", "train.log_every=1000000", *overrides])
        trainer.step_end_callbacks.append(lambda *a, **k: ends.append(time.perf_counter()))
        trainer.fit()
    gaps = [b - a for a, b in zip(ends, ends[1:])][skip:]
    return statistics.median(gaps)


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    """Print the table; returns each variant's seconds per step, one per round."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo_mnist")
    parser.add_argument("--dataset", default="mnist", help="built-in data set the preset trains on")
    parser.add_argument("--variant", action="append", default=None,
                        help="space-separated dotted overrides; repeat for more ('' = the preset as it is)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (the demo uses the cores it may)")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per variant and round")
    parser.add_argument("--skip", type=int, default=5, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=2, help="times each variant is timed, alternating")
    args = parser.parse_args(argv)
    variants = args.variant or [""]
    times: dict[str, list[float]] = {v: [] for v in variants}
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        for _ in range(args.rounds):
            for v in variants:
                times[v].append(time_steps(args.preset, args.dataset, v.split(), args.steps, args.skip))
    finally:  # a caller in the same process (a test) keeps its own thread count
        torch.set_num_threads(threads)
    base = statistics.median(times[variants[0]])
    print(f"{args.preset} on {args.dataset}, {args.threads} threads, median of {args.steps} steps per round")
    print(f"{'ms/step per round':<20} {'x first':>7}  variant")
    for v in variants:
        rounds = " / ".join(f"{t * 1000:.0f}" for t in times[v])
        print(f"{rounds:<20} {statistics.median(times[v]) / base:>7.2f}  {v or '(the preset)'}")
    return times


if __name__ == "__main__":
    main()
