"""The closing lines of a long command: what it produced, where, the headline number, the time
it took and the command to run next, so that a finished run explains itself."""

from __future__ import annotations

import shlex
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vitssl.data import BUILTIN_DATASETS
from vitssl.engine.logging import read_metrics


def duration(seconds: float) -> str:
    """12 s, 3 min 05 s, 1 h 02 min."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def final_loss(run_dir: Path) -> float | None:
    """The last logged training loss of a run (metrics.jsonl), None if none was logged."""
    try:
        rows = read_metrics(run_dir)
    except ValueError:
        return None
    losses = [row["loss"] for row in rows if isinstance(row.get("loss"), (int, float))]
    return float(losses[-1]) if losses else None


def eval_data_args(data: str) -> str:
    """`--train ... --val ...` for the next command: a built-in set is its own labelled split."""
    if data in BUILTIN_DATASETS:
        return f"--train {data} --val {data}"
    return "--train LABELLED_TRAIN_FOLDER --val LABELLED_VAL_FOLDER"


def pretrain_summary(run_dir: Path, steps: int, seconds: float, data: str, extra: dict[str, Any] | None = None) -> str:
    """The lines `vitssl pretrain` ends with."""
    run = shlex.quote(str(run_dir))
    loss = final_loss(run_dir)
    lines = [
        f"pre-training done: {steps} steps in {duration(seconds)}"
        + (f", final loss {loss:.4f}" if loss is not None else ""),
        f"  checkpoint: {run_dir / 'checkpoint.pt'}   (config, metrics.jsonl, loss_curve.png beside it)",
    ]
    for key, value in (extra or {}).items():
        lines.append(f"  {key}: {value}")
    lines.append(f"  next: vitssl eval knn --checkpoint {run} {eval_data_args(data)}")
    lines.append(f"        vitssl embed --checkpoint {run} --data FOLDER --out embeddings.npy;  vitssl report {run}")
    return "\n".join(lines)


MAX_PATHS = 5  # a command that writes more names the first ones and the folder of the rest


def command_summary(what: str, seconds: float, wrote: Iterable[str | Path] = (), headline: str | None = None,
                    next_command: str | None = None) -> str:
    """The closing lines of every other long command (eval, analyze, report, embed, export,
    import, benchmark, data): `WHAT done in T: HEADLINE`, one `  wrote: PATH` per output, and
    `  next: COMMAND`."""
    lines = [f"{what} done in {duration(seconds)}" + (f": {headline}" if headline else "")]
    paths = [Path(p) for p in wrote]
    shown = paths if len(paths) <= MAX_PATHS else paths[:MAX_PATHS - 1]
    lines += [f"  wrote: {path}" for path in shown]
    if len(shown) < len(paths):
        lines.append(f"  and {len(paths) - len(shown)} more files in {paths[len(shown)].parent}")
    if next_command:
        lines.append(f"  next: {next_command}")
    return "\n".join(lines)


def print_summary(what: str, started: float, wrote: Iterable[str | Path] = (), headline: str | None = None,
                  next_command: str | None = None) -> None:
    """Print `command_summary` for a command that began at `started` (time.perf_counter())."""
    print(command_summary(what, time.perf_counter() - started, wrote, headline, next_command))


def report_command(checkpoint: str | Path) -> str:
    """`vitssl report RUN` for the run folder a checkpoint argument names (its results show there)."""
    from vitssl.commands.run_folder import run_folder_of

    return f"vitssl report {shlex.quote(str(run_folder_of(checkpoint)))}"


def open_command(path: str | Path) -> str:
    """A command that opens a file in the default browser or viewer, on any platform."""
    return f"python -m webbrowser {shlex.quote(Path(path).resolve().as_uri())}"
