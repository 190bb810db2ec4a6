"""The last known good checkpoint: the one a diverged run goes back to.

A finite but exploded update (weights ~1e28 after a huge learning rate) cannot be told from a
good one by finiteness, so the state in memory when a run stops for divergence is not trusted.
Instead `checkpoint-good.pt` keeps the newest checkpoint from which at least one step ran with a
finite loss and finite gradients: it precedes the first bad step and the update just before it.
It is a second name (hard link) of a checkpoint already written, so it costs no extra write.
On divergence `checkpoint.pt` becomes that checkpoint again and every newer checkpoint is set
aside as `NAME.diverged` (kept, never resumed or pruned), so `--resume` continues from it.
"""

from __future__ import annotations

import os
from pathlib import Path

from vitssl.engine.checkpoint import (
    EPOCH_PATTERN,
    GOOD,
    LATEST,
    ROLLING_PATTERN,
    fsync_dir,
    link_atomically,
)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def promote(checkpoint: Path, run_dir: Path) -> Path:
    """Keep `checkpoint` as the run's good checkpoint (a no-op if it already is)."""
    good = run_dir / GOOD
    if not _same_file(checkpoint, good):
        link_atomically(checkpoint, good)
    return good


def set_aside(path: Path, suffix: str) -> Path:
    """Rename `path` to `<name><suffix>` (`<name><suffix>-2`, ... if taken) and return the new path."""
    target, n = path.with_name(path.name + suffix), 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}{suffix}-{n}")
    os.replace(path, target)
    return target


def _newer_than(run_dir: Path, step: int, steps_per_epoch: int) -> list[Path]:
    """Step-named and epoch checkpoints of `run_dir` written after `step` (their names tell)."""
    newer = []
    for path in run_dir.iterdir():
        if (m := ROLLING_PATTERN.fullmatch(path.name)) and int(m.group(1)) > step:
            newer.append(path)
        elif (m := EPOCH_PATTERN.fullmatch(path.name)) and int(m.group(1)) * steps_per_epoch > step:
            newer.append(path)
    return sorted(newer)


def reset_to_good(run_dir: Path, good_step: int, steps_per_epoch: int) -> list[str]:
    """Make the good checkpoint (at `good_step`) the run's latest again; return what was set aside.

    Checkpoints newer than it, `checkpoint.pt` included, are renamed `NAME.diverged` first, so a
    crash part-way leaves the good checkpoint as the newest candidate for `--resume`.
    """
    good, latest = run_dir / GOOD, run_dir / LATEST
    moved = [set_aside(p, ".diverged") for p in _newer_than(run_dir, good_step, steps_per_epoch)]
    if latest.exists() and not any(_same_file(latest, p) for p in [good, *moved]):  # else kept by another name
        moved.append(set_aside(latest, ".diverged"))
    fsync_dir(run_dir)
    link_atomically(good, latest)
    return [p.name for p in moved]
