"""Frozen features of one set, extracted once per checkpoint and reused by later runs.

The cache key hashes the checkpoint file's bytes (so a retrained or replaced checkpoint, even
one with the same name, size and time stamp, is never mistaken for the old one), which
backbone is read, the evaluation transform and the feature layout, and the set's source and
split sizes. A file whose key differs is stale: it is recomputed and replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from vitssl.engine.checkpoint import CheckpointError

CHUNK = 1 << 22


def checkpoint_file(checkpoint: str | Path) -> Path:
    """The file behind a checkpoint argument (a run folder means its checkpoint.pt)."""
    path = Path(checkpoint)
    return path / "checkpoint.pt" if path.is_dir() else path


def file_fingerprint(path: str | Path) -> str:
    """SHA-256 of the file's bytes (first 16 hex digits), read in chunks."""
    path = checkpoint_file(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist: pass a run folder, a .pt file or a weights file")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def cache_key(parts: dict[str, Any]) -> str:
    """A short stable hash of everything that determines the features."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


Splits = dict[str, tuple[torch.Tensor, torch.Tensor]]


def load_cached(path: Path, key: str) -> Splits | None:
    """The cached splits if `path` holds features under `key`; None if absent, stale or unreadable."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a torn or foreign file is recomputed, never trusted
        return None
    if not isinstance(payload, dict) or payload.get("key") != key:
        return None
    return {name: (f, y) for name, (f, y) in payload["splits"].items()}


def save_cached(path: Path, key: str, splits: Splits) -> None:
    """Write through a temp file and a rename, so a stopped run never leaves a torn cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save({"key": key, "splits": {k: [f, y] for k, (f, y) in splits.items()}}, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
