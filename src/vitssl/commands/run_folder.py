"""What a vitssl run folder is, and which folders `pretrain` may start or resume a run in.

A folder is a **vitssl run** when its `config.yaml` is the config vitssl saved there: a YAML
mapping holding the sections `method`, `backbone`, `data`, `optim` and `train` (and no key that
is not a section of vitssl's config), with `method.name` naming a vitssl method. Checkpoint
files alone (`checkpoint.pt`, `checkpoint-stepN.pt`, `checkpoint_epochN.pt`) also mark a folder
as taken by a run.

- A new run starts only in a missing or empty folder, or in a vitssl run that stopped before its
  first checkpoint (a requeued job starting again; its metrics.jsonl keeps the earlier lines, the
  later ones count): vitssl never writes its `config.yaml`, `metrics.jsonl` or `loss_curve.png`
  over files of the same name that it did not write.
- `--resume` takes only a vitssl run whose newest checkpoint holds training state (optimizer,
  step). An imported run (`vitssl import`) holds weights only: it starts a new run with
  `init_from=RUN` instead.

Both checks read a few bytes (the YAML, a checkpoint's pickle without its tensors) and run
before the data set is scanned.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import yaml

from vitssl.engine.outputs import OutputError, check_output_dir

REQUIRED_SECTIONS = ("method", "backbone", "data", "optim", "train")
TRAINING_KEYS = ("optimizer", "step", "steps_per_epoch", "rng")


def config_problem(config_path: Path) -> str | None:
    """Why `config_path` is not a config vitssl saved, or None when it is one."""
    from vitssl.config import RunConfig
    from vitssl.methods import method_configs

    try:
        loaded = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as e:
        return f"its config.yaml cannot be read as YAML ({type(e).__name__})"
    if not isinstance(loaded, dict):
        return "its config.yaml is not a YAML mapping"
    allowed = {f.name for f in dataclasses.fields(RunConfig)}
    foreign = sorted(str(k) for k in loaded if k not in allowed)
    missing = [s for s in REQUIRED_SECTIONS if s not in loaded]
    if foreign or missing:
        detail = f"it has keys vitssl does not use: {', '.join(foreign[:3])}" if foreign else \
            f"it lacks {', '.join(missing)}"
        return f"its config.yaml was not written by vitssl ({detail})"
    method = loaded.get("method")
    name = method.get("name") if isinstance(method, dict) else None
    if name not in method_configs():
        return f"its config.yaml names no vitssl method (method.name: {name!r})"
    return None


def is_vitssl_run(run_dir: str | Path) -> bool:
    """Whether `run_dir` holds a config.yaml that vitssl saved (see the module docstring)."""
    path = Path(run_dir) / "config.yaml"
    return path.is_file() and config_problem(path) is None


def check_new_run_dir(run_dir: str | Path) -> None:
    """A new run may start in `run_dir`: missing, empty or a vitssl run without a checkpoint, and
    writable. Writes nothing."""
    from vitssl.engine.checkpoint import resume_candidates

    run_dir = Path(run_dir)
    check_output_dir(run_dir, overwrite=True, flag="run folder")
    if not run_dir.is_dir():
        return
    entries = sorted(p.name for p in run_dir.iterdir())
    if not entries:
        return
    if resume_candidates(run_dir):
        raise OutputError(f"run folder '{run_dir}' already holds a run: continue it with --resume {run_dir} "
                          "or choose another --out")
    if is_vitssl_run(run_dir):  # stopped before its first checkpoint (a requeued job starts it again)
        return
    shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
    raise OutputError(f"run folder '{run_dir}' is not empty and is not a vitssl run (it holds {shown}): a new run "
                      "starts only in a new or empty folder, so nothing of yours is overwritten; choose another --out")


def check_resumable(run_dir: str | Path) -> None:
    """`run_dir` is a vitssl run with a checkpoint that holds training state, and writable."""
    from vitssl.engine.checkpoint import CheckpointError, resume_candidates

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        kind = "is a file" if run_dir.exists() else "does not exist"
        raise CheckpointError(f"--resume '{run_dir}' {kind}: pass the run folder written by vitssl pretrain "
                              "(it holds config.yaml and checkpoint.pt)")
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise CheckpointError(f"'{run_dir}' holds no config.yaml: --resume takes a run folder written by vitssl pretrain")
    problem = config_problem(config)
    if problem:
        raise CheckpointError(f"'{run_dir}' is not a vitssl run: {problem}; --resume takes a run folder "
                              "written by vitssl pretrain")
    candidates = resume_candidates(run_dir)
    if not candidates:
        raise CheckpointError(f"'{run_dir}' has no checkpoint.pt to resume from: start the run without --resume")
    payload = _peek(candidates[0])
    if payload is not None and "imported_from" in payload:
        raise CheckpointError(f"'{run_dir}' is an imported checkpoint (vitssl import): it holds weights but no "
                              f"training state to continue; start a new run from it with vitssl pretrain --out NEW_DIR "
                              f"... init_from={run_dir}")
    missing = [k for k in TRAINING_KEYS if payload is not None and k not in payload]
    if missing:
        raise CheckpointError(f"'{candidates[0]}' holds no training state ({', '.join(missing)} missing), so the run "
                              f"cannot continue: start a new run from its weights with init_from={candidates[0]}")
    check_output_dir(run_dir, overwrite=True, flag="run folder")


def _peek(path: Path) -> dict[str, Any] | None:
    """A checkpoint's top-level entries without reading its tensors (memory-mapped, weights
    only); None when it cannot be read: the resume's own fallback then reports or skips it."""
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - an unreadable file is the resume fallback's business
        return None
    return payload if isinstance(payload, dict) else None


def remove_stale_temp_files(run_dir: str | Path) -> list[str]:
    """Delete vitssl's own temp files left by interrupted checkpoint writes (see
    `engine.checkpoint.stale_temp_files`); returns their names."""
    from vitssl.engine.checkpoint import stale_temp_files

    removed = []
    for path in stale_temp_files(Path(run_dir)):
        try:
            os.unlink(path)
            removed.append(path.name)
        except FileNotFoundError:
            continue
    return removed


def prepare_run_dir(run_dir: Path, resume: bool) -> None:
    """Refuse a folder that is neither new, empty nor this run; refuse to resume nothing; remove
    the temp files of interrupted checkpoint writes. Used by `pretrain` and the demos."""
    from vitssl.distributed import is_main_process
    from vitssl.engine.checkpoint import CheckpointError, resume_candidates
    from vitssl.engine.logging import log

    if resume:
        if not resume_candidates(run_dir):
            raise CheckpointError(f"'{run_dir}' has no checkpoint.pt to resume from: start the run without --resume")
        if is_main_process():
            removed = remove_stale_temp_files(run_dir)
            if removed:
                log.info("removed %d temp file(s) of interrupted checkpoint writes: %s", len(removed), ", ".join(removed))
        return
    if is_main_process():  # other ranks may already see rank 0's files
        check_new_run_dir(run_dir)
        if (run_dir / "config.yaml").exists():
            log.info("'%s' holds a run that stopped before its first checkpoint: starting it again", run_dir)
            remove_stale_temp_files(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def run_folder_of(checkpoint: str | Path) -> Path:
    """The run folder a checkpoint argument names: the folder itself, or the .pt file's folder
    (where commands write their results by default)."""
    path = Path(checkpoint)
    return path if path.is_dir() else path.parent
