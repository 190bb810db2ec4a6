"""Checkpoints: atomic writes, weights-only loads, and clear errors for the wrong file."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitssl.engine.logging import log

LATEST = "checkpoint.pt"
GOOD = "checkpoint-good.pt"  # the last known good checkpoint (see engine/good_checkpoint.py)
ROLLING_PATTERN = re.compile(r"checkpoint-step(\d+)\.pt")
EPOCH_PATTERN = re.compile(r"checkpoint_epoch(\d+)\.pt")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and the fix."""


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> Path:
    """Write `payload` to `path` atomically: temp file in the same folder, fsync, rename, fsync folder.

    A crash mid-write leaves the previous checkpoint intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return path


def rolling_name(step: int) -> str:
    return f"checkpoint-step{step:07d}.pt"


def keep_rolling_copy(latest: Path, step: int, keep: int) -> Path | None:
    """Give `latest` a second name `checkpoint-stepNNNNNNN.pt`, then delete all but the `keep` newest.

    The second name is a hard link (no second write); where the file system has none it is an
    atomic copy. Epoch snapshots (`checkpoint_epochNNNN.pt`) are never touched. `keep=0` keeps none.
    """
    if keep <= 0:
        return None
    target = latest.parent / rolling_name(step)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        if tmp.exists():
            tmp.unlink()
        try:
            os.link(latest, tmp)
        except OSError:  # no hard links here (some network and FAT file systems)
            shutil.copyfile(latest, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    for old in rolling_checkpoints(latest.parent)[keep:]:
        old.unlink()
    fsync_dir(latest.parent)
    return target


def _numbered(folder: Path, pattern: re.Pattern[str]) -> list[Path]:
    """Files of `folder` whose whole name matches `pattern`, highest number first."""
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := pattern.fullmatch(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def rolling_checkpoints(folder: Path) -> list[Path]:
    """`checkpoint-stepNNNNNNN.pt` files of a run folder, newest first."""
    return _numbered(folder, ROLLING_PATTERN)


def resume_candidates(run_dir: str | Path) -> list[Path]:
    """Checkpoints of a run folder to resume from, newest first.

    `checkpoint.pt`, then the rolling step checkpoints, then the last known good one, then the
    epoch snapshots: each save writes `checkpoint.pt` before its rolling name, the good one is a
    former `checkpoint.pt`, and every epoch end writes a rolling checkpoint at least as new as its
    snapshot, so this order is newest first.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    latest = [run_dir / LATEST] if (run_dir / LATEST).exists() else []
    good = [run_dir / GOOD] if (run_dir / GOOD).exists() else []
    return latest + rolling_checkpoints(run_dir) + good + _numbered(run_dir, EPOCH_PATTERN)


def set_aside_corrupt(path: Path) -> Path:
    """Rename an unreadable checkpoint to `<name>.corrupt` (or `.corrupt-2`, ...): kept, never resumed."""
    target, n = path.with_name(path.name + ".corrupt"), 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{n}")
    os.replace(path, target)
    fsync_dir(path.parent)
    return target


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with `weights_only=True`; missing or corrupt files raise one-line `CheckpointError`s."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.exists():
        raise CheckpointError(f"checkpoint '{path}' does not exist: pass a run folder or a .pt file written by vitssl")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign files
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint '{path}' cannot be read ({first_line}): it is corrupt or not a torch file") from e
    if not isinstance(payload, dict):
        raise CheckpointError(f"checkpoint '{path}' holds a {type(payload).__name__}, not a vitssl checkpoint dict")
    return payload


def load_newest_readable(run_dir: str | Path, map_location: str | torch.device = "cpu",
                         set_aside: bool = True) -> tuple[Path, dict[str, Any]]:
    """Load the newest readable checkpoint of a run folder, falling back past unreadable ones.

    Each unreadable file (truncated, corrupt, not a dict) is named with its reason in one
    warning and, with `set_aside`, renamed to `<name>.corrupt` so it is kept for inspection but
    never picked again (nor pruned as a rolling checkpoint). Nothing is renamed when no file
    is readable: then a one-line `CheckpointError` lists what was tried.
    """
    run_dir = Path(run_dir)
    candidates = resume_candidates(run_dir)
    if not candidates:
        raise CheckpointError(f"'{run_dir}' holds no checkpoint to resume from: start the run without --resume")
    bad: list[tuple[Path, CheckpointError]] = []
    for path in candidates:
        try:
            payload = load_checkpoint(path, map_location)
        except CheckpointError as e:
            bad.append((path, e))
            continue
        if bad:
            kept = [set_aside_corrupt(p).name if set_aside else p.name for p, _ in bad]
            log.warning("skipping unreadable checkpoint%s: %s; kept as %s; resuming from the older '%s' instead",
                        "s" if len(bad) > 1 else "", "; ".join(str(e) for _, e in bad), ", ".join(kept), path)
        return path, payload
    tried = ", ".join(p.name for p, _ in bad)
    raise CheckpointError(f"no readable checkpoint in '{run_dir}' (tried {tried}; first error: {bad[0][1]}): "
                          "the files are left as they are; start the run again without --resume")


def load_matching_state(module: nn.Module, state: dict[str, torch.Tensor], what: str = "model") -> None:
    """Strictly load `state`, refusing a checkpoint of another architecture with the keys named."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shape:
        parts = []
        if shape:
            parts.append(f"shape mismatch: {', '.join(shape[:3])}")
        if missing:
            parts.append(f"missing: {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"unexpected: {', '.join(unexpected[:3])}")
        raise CheckpointError(
            f"{what} checkpoint is of another architecture ({'; '.join(parts)}): "
            "build the model with the config the checkpoint was trained with"
        )
    module.load_state_dict(state)


def load_partial_state(module: nn.Module, state: dict[str, torch.Tensor], what: str = "model") -> list[str]:
    """Load the entries of `state` the module has; return the module's keys left as they were.

    For starting a run from another run's weights (a view-only model continued with an extra
    head): keys the module lacks, or of another shape, mean another architecture and are
    refused, named; keys only the module has are allowed and returned.
    """
    own = module.state_dict()
    unexpected = [k for k in state if k not in own]
    shape = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in state if k in own and state[k].shape != own[k].shape]
    if unexpected or shape:
        parts = ([f"shape mismatch: {', '.join(shape[:3])}"] if shape else []) + \
                ([f"unexpected: {', '.join(unexpected[:3])}"] if unexpected else [])
        raise CheckpointError(f"{what} checkpoint does not fit this model ({'; '.join(parts)}): "
                              "initialise from a checkpoint of the same backbone and heads")
    module.load_state_dict(state, strict=False)
    return [k for k in own if k not in state]
