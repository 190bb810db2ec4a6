"""Checkpoints: atomic writes, weights-only loads, and clear errors for the wrong file."""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitssl.engine.logging import log

CHECKPOINT_FORMAT = "vitssl/1"  # the "format" entry of a training checkpoint written by the trainer
LATEST = "checkpoint.pt"
GOOD = "checkpoint-good.pt"  # the last known good checkpoint (see engine/good_checkpoint.py)
ROLLING_PATTERN = re.compile(r"checkpoint-step(\d+)\.pt")
EPOCH_PATTERN = re.compile(r"checkpoint_epoch(\d+)\.pt")
# `.checkpoint.pt.<pid>.<random>.tmp`, `.checkpoint-step0000010.pt.<pid>.tmp` (older: no pid)
TEMP_PATTERN = re.compile(r"\.checkpoint[\w-]*\.pt\.(?:(\d+)\.)?\w*\.tmp")
STALE_TEMP_SECONDS = 600


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

    A crash mid-write leaves the previous checkpoint intact. A failed write (disk full, read-only
    folder) raises a one-line `CheckpointError` that says so; torch reports a full disk as an
    `inline_container.cc` RuntimeError, translated here from the `OSError` behind it.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if _is_write_failure(e):
            raise CheckpointError(_write_failure(e, path)) from e
        raise
    fsync_dir(path.parent)
    return path


def _is_write_failure(e: BaseException) -> bool:
    from vitssl.engine.outputs import find_os_error

    if isinstance(e, CheckpointError):
        return False
    return find_os_error(e) is not None or (isinstance(e, RuntimeError) and "inline_container" in str(e))


def _write_failure(e: BaseException, path: Path) -> str:
    """One line for a failed checkpoint write: what happened to `path` and whether the previous one survives."""
    from vitssl.engine.outputs import find_os_error, os_error_line

    kept = path.exists()
    before = "the previous checkpoint is intact" if kept else "no checkpoint was written"
    cause = find_os_error(e)
    if cause is not None and cause.errno in (errno.ENOSPC, errno.EDQUOT):
        then = "then continue with --resume" if kept else "then start again"
        return f"no space left on device writing '{path}'; {before}: free some space, {then}"
    if cause is not None:
        return f"cannot write checkpoint: {os_error_line(cause)}; {before}"
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return f"cannot write checkpoint '{path}' ({first}); {before}: is the disk full or failing?"


def rolling_name(step: int) -> str:
    return f"checkpoint-step{step:07d}.pt"


def link_atomically(source: Path, target: Path) -> None:
    """Give `source` the second name `target`, replacing it atomically (a copy without hard links)."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        if tmp.exists():
            tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:  # no hard links here (some network and FAT file systems)
            shutil.copyfile(source, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    fsync_dir(target.parent)


def keep_rolling_copy(latest: Path, step: int, keep: int) -> Path | None:
    """Give `latest` a second name `checkpoint-stepNNNNNNN.pt`, then delete all but the `keep` newest.

    The second name is a hard link (no second write); where the file system has none it is an
    atomic copy. Epoch snapshots (`checkpoint_epochNNNN.pt`) are never touched. `keep=0` keeps none.
    """
    if keep <= 0:
        return None
    target = latest.parent / rolling_name(step)
    link_atomically(latest, target)
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
        with warnings.catch_warnings():  # torch warns about the pickle protocol of foreign files
            warnings.simplefilter("ignore", UserWarning)
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"checkpoint '{path}' {read_failure(e)}") from e
    if not isinstance(payload, dict):
        raise CheckpointError(f"checkpoint '{path}' holds a {type(payload).__name__}, not a vitssl checkpoint dict")
    return payload


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_BLOCKED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def read_failure(e: BaseException, kind: str = "a vitssl checkpoint") -> str:
    """Why a weights-only `torch.load` failed, in plain words (no ANSI codes, and never the
    advice to load with `weights_only=False`, which would run the file's code)."""
    from vitssl.engine.outputs import os_error_line

    text = _ANSI.sub("", str(e))
    blocked = _BLOCKED_GLOBAL.search(text)
    if blocked:
        name = blocked.group(1) if "." in blocked.group(1) else f"builtins.{blocked.group(1)}"
        return (f"was refused: it asks to import and call {name}, and vitssl loads only tensors and plain values "
                f"(weights_only=True), so no code from a file runs; it is not {kind}: do not use it unless you "
                "know who made it and why")
    if isinstance(e, OSError) and e.errno is not None:
        return f"cannot be read: {os_error_line(e)}"
    if isinstance(e, EOFError):
        reason = "the file is empty or cut short"
    elif "zip archive" in text or "PytorchStreamReader" in text:
        reason = "its zip archive is truncated or damaged"
    elif "weights_only" in text or "Unpickl" in type(e).__name__ or isinstance(e, KeyError):
        reason = "it is not a torch checkpoint file"
    else:
        first = next((line.strip() for line in text.splitlines() if line.strip()), type(e).__name__)
        reason = first[:200]
    return f"cannot be read ({reason}): it is corrupt or not {kind}"


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


def check_tensors(state: Any, what: str = "model") -> None:
    """A state dict is a dict of tensors: anything else (a damaged or hand-made file) is one line."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{what} holds a {type(state).__name__} where a state dict of tensors is expected: "
                              "the file is damaged or not a vitssl checkpoint")
    bad = [f"{k} ({type(v).__name__})" for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{what} holds non-tensor values where tensors are expected ({', '.join(bad[:3])}): "
                              "the file is damaged or not a vitssl checkpoint")


def stale_temp_files(folder: Path) -> list[Path]:
    """Temp files of checkpoint writes that were interrupted (killed, power loss) in `folder`.

    Only names of vitssl's own pattern count (`.checkpoint*.pt.<pid>.*.tmp`); one is stale when
    the process named in it is gone, or (no live writer known) when it was not modified for
    `STALE_TEMP_SECONDS`. One process writes a run, so none of these is being written.
    """
    if not folder.is_dir():
        return []
    stale = []
    for path in folder.iterdir():
        m = TEMP_PATTERN.fullmatch(path.name)
        if m is None or not path.is_file():
            continue
        pid = int(m.group(1)) if m.group(1) else None
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            continue
        if (pid is not None and pid != os.getpid() and not _alive(pid)) or age > STALE_TEMP_SECONDS:
            stale.append(path)
    return sorted(stale)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def load_matching_state(module: nn.Module, state: dict[str, torch.Tensor], what: str = "model") -> None:
    """Strictly load `state`, refusing a checkpoint of another architecture with the keys named."""
    check_tensors(state, f"{what} checkpoint")
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
    check_tensors(state, f"{what} checkpoint")
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
