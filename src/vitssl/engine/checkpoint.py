"""Checkpoints: atomic writes, weights-only loads, and clear errors for the wrong file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and the fix."""


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> Path:
    """Write `payload` to `path` atomically: temp file in the same folder, fsync, rename.

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
    return path


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
