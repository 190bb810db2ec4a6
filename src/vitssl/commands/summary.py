"""The closing lines of a long command: what it produced, where, the headline number, the time
it took and the command to run next, so that a finished run explains itself."""

from __future__ import annotations

import shlex
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
