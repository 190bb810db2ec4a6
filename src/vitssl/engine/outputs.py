"""Where commands write: refuse to replace what exists unless asked, find unwritable paths before
long work starts, and turn an `OSError` into one line that names the path and the fix.

Every command that writes a file or a folder checks it here first (`check_output_file`,
`check_output_dir`), so a read-only disk, a file where a folder is expected (or the reverse) or
an existing result is reported in a second, not after feature extraction or training.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

OVERWRITE_HELP = "replace existing output files (without it, an existing output is an error)"


class OutputError(ValueError):
    """An output path that cannot or may not be written; the message names the path and the fix."""


def add_overwrite_flag(parser: argparse.ArgumentParser) -> None:
    """The one `--overwrite` flag every writing subcommand shares."""
    parser.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)


_ADVICE = {
    errno.EROFS: ("is on a read-only file system", "choose a path on a writable disk"),
    errno.EACCES: ("is not accessible (permission denied)", "fix its permissions or choose another path"),
    errno.EPERM: ("is not accessible (operation not permitted)", "fix its permissions or choose another path"),
    errno.ENOSPC: ("cannot be written: no space left on device", "free some space or choose another disk"),
    errno.EDQUOT: ("cannot be written: disk quota exceeded", "free some space or choose another disk"),
    errno.EISDIR: ("is a folder where a file is expected", "name a file instead"),
    errno.ENOTDIR: ("has a file where a folder is expected on its path", "choose a path whose folders are folders"),
    errno.ENOENT: ("does not exist", "check the path"),
    errno.EEXIST: ("already exists", "choose another path"),
    errno.ENAMETOOLONG: ("has a name that is too long", "choose a shorter path"),
}


def os_error_line(e: OSError, path: str | Path | None = None) -> str:
    """One line for an `OSError`: the path it concerns, what is wrong there, and the fix."""
    where = path if path is not None else (e.filename if e.filename is not None else None)
    if e.errno is None:  # raised by vitssl with its own message
        return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if e.errno == errno.ENOSPC and where is not None:
        return f"no space left on device writing '{where}': free some space or choose another disk"
    what, fix = _ADVICE.get(e.errno, (f"cannot be used ({e.strerror or os.strerror(e.errno)})",
                                      "check the path and its permissions"))
    return f"'{where}' {what}: {fix}" if where is not None else f"{what}: {fix}"


def find_os_error(e: BaseException) -> OSError | None:
    """The `OSError` behind `e` (itself, or in its `__cause__`/`__context__` chain): torch reports
    a failed write as a RuntimeError whose context is the real `OSError`."""
    seen: set[int] = set()
    current: BaseException | None = e
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno is not None:
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(".")


def _check_creatable(path: Path, flag: str) -> None:
    """`path` does not exist: its nearest existing ancestor must be a writable folder."""
    base = _nearest_existing(path.parent if path.parent != path else path)
    if not base.is_dir():
        raise OutputError(f"{flag} '{path}' cannot be created: '{base}' is a file, not a folder; "
                          "choose another path")
    _check_writable_dir(base, flag, path)


def _check_writable_dir(folder: Path, flag: str, target: Path) -> None:
    if not os.access(folder, os.W_OK | os.X_OK):
        reason = "is on a read-only file system" if _read_only(folder) else "is not writable (permission denied)"
        what = f"{flag} '{folder}'" if folder == target else f"folder '{folder}' (for {flag} '{target}')"
        raise OutputError(f"{what} {reason}: choose a writable location")


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def check_output_file(path: str | Path, overwrite: bool = False, flag: str = "--out") -> Path:
    """`path` can be written as a file: not a folder, its folder writable, and not existing
    unless `overwrite`. Creates nothing."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{flag} '{path}' is a folder, but a file is expected here: name a file "
                          f"such as '{path / 'results.json'}'")
    if os.path.lexists(path):
        if not overwrite:
            raise OutputError(f"{flag} '{path}' already exists: pass --overwrite to replace it, or choose another path")
        _check_writable_dir(path.parent, flag, path)
        return path
    _check_creatable(path, flag)
    return path


def check_output_dir(path: str | Path, overwrite: bool = False, patterns: Iterable[str] = (),
                     flag: str = "--out") -> Path:
    """`path` can be written as a folder: not a file, writable, and holding no file matching
    `patterns` (what the command would replace) unless `overwrite`. Creates nothing."""
    path = Path(path)
    if os.path.lexists(path) and not path.is_dir():
        raise OutputError(f"{flag} '{path}' is a file, but a folder is expected here: name a folder")
    if not path.exists():
        _check_creatable(path, flag)
        return path
    _check_writable_dir(path, flag, path)
    if not overwrite:
        taken = sorted({p.name for pattern in patterns for p in path.glob(pattern)})
        if taken:
            more = f" and {len(taken) - 3} more" if len(taken) > 3 else ""
            named = f"{flag} '{path}'" if flag.endswith("folder") else f"{flag} folder '{path}'"
            raise OutputError(f"{named} already holds {', '.join(taken[:3])}{more}: pass --overwrite "
                              "to replace them, or choose another folder")
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to `path` through a temp file and a rename: a failed write (disk full)
    leaves the previous file as it was, never a truncated one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_results(results: dict[str, Any], path: str | Path) -> Path:
    """Write `results` as JSON through a temp file: a failed write leaves any previous file whole."""
    from vitssl.distributed import is_main_process  # torch: only when results are written

    path = Path(path)
    if not is_main_process():  # under torchrun every rank has the results; rank 0 writes them
        return path
    return write_text_atomic(path, json.dumps(results, indent=2))
