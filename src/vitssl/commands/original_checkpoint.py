"""Reading a checkpoint of the original DINO / EsViT / SelfPatch / MAE-Lite code safely, and taking
its state dicts apart (networks, prefixes, the saved argparse arguments) for `vitssl import`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from vitssl.engine.checkpoint import CheckpointError, read_failure

State = dict[str, torch.Tensor]


class _Inert:
    """Stands in for any non-tensor object in an original checkpoint's metadata (numpy scalars,
    paths, config nodes): accepts whatever the pickle passes and runs nothing."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Inert:
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


def load_original(path: str | Path) -> dict[str, Any]:
    """Read an original checkpoint with `weights_only=True`, never running pickled code.

    DINO, EsViT and SelfPatch store their argparse `Namespace` under `args`. A Namespace only
    holds attributes, so it is allow-listed with `torch.serialization.safe_globals` (scoped to
    this call, not process-wide). Any other object the weights-only unpickler refuses is
    replaced by the inert `_Inert` stand-in under its own name: tensors load unchanged and
    the metadata we don't read is dropped, without importing or calling anything from the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"original checkpoint '{path}' does not exist: pass the .pth file you downloaded")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            try:
                payload = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as first:  # retried below with stand-ins for the refused globals
                try:
                    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
                except Exception:  # not a zip checkpoint at all: report the load's own failure
                    unsafe = []
                if not unsafe:
                    raise first
                with torch.serialization.safe_globals([(_Inert, name) for name in unsafe]):
                    payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file, ...
        raise CheckpointError(f"original checkpoint '{path}' {read_failure(e, 'a checkpoint of the original code')}") from e
    if not isinstance(payload, dict):
        raise CheckpointError(f"original checkpoint '{path}' holds a {type(payload).__name__}, not a dict")
    return payload


def tensors_of(d: Any) -> State:
    """The tensor entries of `d` ({} when `d` is not a dict)."""
    return {k: v for k, v in d.items() if isinstance(v, torch.Tensor)} if isinstance(d, dict) else {}


def strip_prefixes(state: State, *prefixes: str) -> State:
    """Remove any of `prefixes` from the front of every key, repeatedly (`module.model.x` -> `x`)."""
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if key.startswith(p):
                    key, changed = key[len(p):], True
        out[key] = value
    return out


def sub_state(state: State, prefix: str) -> State:
    """Entries under `prefix`, with it removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def networks(raw: dict[str, Any]) -> tuple[State, State | None]:
    """(teacher, student) state dicts without `module.`; a bare state dict is the teacher only."""
    if "teacher" in raw:
        teacher = strip_prefixes(tensors_of(raw["teacher"]), "module.")
        student = strip_prefixes(tensors_of(raw.get("student")), "module.") or None
        return teacher, student
    return strip_prefixes(tensors_of(raw.get("state_dict", raw)), "module."), None


def saved_arg(raw: dict[str, Any], name: str) -> Any:
    """An argument of the original run (`args.<name>`), or None where it was not saved."""
    args = raw.get("args")
    return getattr(args, name, None) if isinstance(args, argparse.Namespace) else None
