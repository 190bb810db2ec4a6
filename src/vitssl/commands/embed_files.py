"""The files `vitssl embed` writes: resumable chunks while it runs, then one table.

Chunks (`OUT.parts/chunk-NNNNNN.npz`, each written through a temp file and a rename) hold the
features of a fixed range of images; a `manifest.json` there records what produced them, so a
rerun of the same command continues after the last complete chunk, and a rerun with other
settings is refused instead of mixing features. The final table is written the same way and
the chunks are then removed.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from vitssl.engine.outputs import OutputError, write_text_atomic

FORMATS = {".npy": "npy", ".csv": "csv", ".parquet": "parquet"}


def output_format(out: Path) -> str:
    """The format named by `out`'s suffix; any other suffix is a one-line error."""
    fmt = FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise ValueError(f"--out '{out}' has no known suffix: name a .npy, .parquet or .csv file")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ValueError("--out .parquet needs pyarrow: pip install 'vitssl[parquet]' (or write .npy or .csv)") from None
    return fmt


class Chunks:
    """The chunk folder of one `--out` file."""

    def __init__(self, out: Path, manifest: dict[str, Any]) -> None:
        self.folder = out.with_name(out.name + ".parts")
        self.manifest = manifest

    def open(self, overwrite: bool) -> None:
        """Start, or continue when the folder holds chunks of the same settings; other settings
        are refused unless `overwrite` (which starts over)."""
        saved = self.folder / "manifest.json"
        if saved.exists():
            try:
                same = json.loads(saved.read_text()) == self.manifest
            except (OSError, ValueError):
                same = False
            if same:
                return
            if not overwrite:
                raise OutputError(f"'{self.folder}' holds partial embeddings made with other settings (checkpoint, "
                                  "data or options): rerun the same command to finish them, or pass --overwrite "
                                  "to start over")
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(saved, json.dumps(self.manifest, indent=2))

    def path(self, i: int) -> Path:
        return self.folder / f"chunk-{i:06d}.npz"

    def done(self, i: int) -> bool:
        return self.path(i).is_file()

    def save(self, i: int, arrays: dict[str, np.ndarray]) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".chunk-", suffix=".npz.tmp", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, self.path(i))
        finally:
            Path(tmp).unlink(missing_ok=True)

    def load_all(self, count: int) -> dict[str, np.ndarray]:
        parts = [np.load(self.path(i), allow_pickle=False) for i in range(count)]
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0].files}

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def write_table(out: Path, fmt: str, paths: list[str], labels: list[int] | None,
                features: dict[str, np.ndarray]) -> None:
    """One row per image: path, label (when the folder has classes), then each feature."""
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        if fmt == "npy":
            _write_npy(tmp, paths, labels, features)
        elif fmt == "csv":
            _write_csv(tmp, paths, labels, features)
        else:
            _write_parquet(tmp, paths, labels, features)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _write_npy(path: Path, paths: list[str], labels: list[int] | None, features: dict[str, np.ndarray]) -> None:
    """A structured array: `np.load(out)["cls"]` is the (N, D) matrix, `["path"]` the file names."""
    width = max([len(p) for p in paths] + [1])
    fields: list[tuple[Any, ...]] = [("path", f"<U{width}")]
    if labels is not None:
        fields.append(("label", "<i8"))
    fields += [(name, "<f4", (array.shape[1],)) for name, array in features.items()]
    table = np.zeros(len(paths), dtype=fields)
    table["path"] = paths
    if labels is not None:
        table["label"] = labels
    for name, array in features.items():
        table[name] = array
    with open(path, "wb") as f:
        np.save(f, table, allow_pickle=False)


def _write_csv(path: Path, paths: list[str], labels: list[int] | None, features: dict[str, np.ndarray]) -> None:
    header = ["path"] + (["label"] if labels is not None else [])
    header += [f"{name}_{j}" for name, array in features.items() for j in range(array.shape[1])]
    matrix = np.concatenate(list(features.values()), axis=1)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for i, p in enumerate(paths):
            row: list[Any] = [p] + ([labels[i]] if labels is not None else [])
            writer.writerow(row + [f"{v:.7g}" for v in matrix[i]])


def _write_parquet(path: Path, paths: list[str], labels: list[int] | None, features: dict[str, np.ndarray]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns: dict[str, Any] = {"path": pa.array(paths, pa.string())}
    if labels is not None:
        columns["label"] = pa.array(labels, pa.int64())
    for name, array in features.items():
        flat = pa.array(array.astype(np.float32).reshape(-1), pa.float32())
        columns[name] = pa.FixedSizeListArray.from_arrays(flat, array.shape[1])
    pq.write_table(pa.table(columns), str(path))
