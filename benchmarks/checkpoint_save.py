"""How long a checkpoint save takes per GiB of state: what a pre-emption grace period must cover.

    python benchmarks/checkpoint_save.py --gib 1 --dir RUN_PARENT_DIR

Writes a state of `--gib` GiB (float32 tensors of 64 MiB, like model and optimizer states)
with the trainer's own `save_checkpoint` (temporary file, `torch.save`, `fsync`, rename, `fsync`
of the folder) into a temporary folder under `--dir` (default: the current folder; use the file
system the runs write to), `--repeats` times, and prints the seconds per GiB of each save and
their median. The temporary folder is removed afterwards. On a GPU the trainer also copies the
state to the host first (`state_dict()`), which this does not time.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from vitssl.engine.checkpoint import save_checkpoint

CHUNK = 64 * 2**20 // 4  # float32 values per 64 MiB tensor


def make_state(gib: float) -> dict[str, torch.Tensor]:
    """`gib` GiB of float32 tensors filled with noise (so no file system can compress them away)."""
    values = int(gib * 2**30 // 4)
    sizes = [CHUNK] * (values // CHUNK) + ([values % CHUNK] if values % CHUNK else [])
    return {f"t{i}": torch.rand(n) for i, n in enumerate(sizes)}


def time_saves(state: dict[str, torch.Tensor], folder: Path, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        save_checkpoint({"method": state}, folder / "checkpoint.pt")
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0, help="GiB of state to write (default 1)")
    parser.add_argument("--dir", default=".", help="parent of the temporary folder (the runs' file system)")
    parser.add_argument("--repeats", type=int, default=3, help="timed saves (default 3)")
    args = parser.parse_args(argv)
    if not args.gib > 0 or args.repeats < 1:
        parser.error("--gib must be > 0 and --repeats >= 1")
    state = make_state(args.gib)
    gib = sum(t.numel() * t.element_size() for t in state.values()) / 2**30
    folder = Path(tempfile.mkdtemp(prefix=".checkpoint-save-bench-", dir=args.dir))
    try:
        times = time_saves(state, folder, args.repeats)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    for i, seconds in enumerate(times):
        print(f"save {i + 1}: {gib:.2f} GiB in {seconds:.2f} s = {seconds / gib:.2f} s/GiB")
    print(f"median: {statistics.median(times) / gib:.2f} s/GiB ({folder.parent.resolve()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
