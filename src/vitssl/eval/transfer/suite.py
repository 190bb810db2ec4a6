"""Running a transfer suite over the sets found under DATA_ROOT, resumable per set.

Layout of the output folder: `<set>.json` per finished set, `suite.json` (the table so far, the
missing sets, the checkpoint's fingerprint and the options) rewritten after every set, and
`features/<set>.pt`, the cached frozen features. A rerun with the same checkpoint and options
keeps the finished sets and continues with the rest; a folder holding another checkpoint's or
other options' results is refused unless `overwrite`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from vitssl.engine.outputs import OutputError, check_output_dir, save_results
from vitssl.engine.trainer import resolve_device
from vitssl.eval.pretrained import default_normalization
from vitssl.eval.transfer.cache import file_fingerprint
from vitssl.eval.transfer.protocols import TransferOptions, finetune_row, linear_row
from vitssl.eval.transfer.registry import SUITES, TransferSet, suite_sets
from vitssl.eval.transfer.sets import SetSplits, load_set
from vitssl.eval.transfer.table import format_table

log = logging.getLogger("vitssl.transfer")
SUITE_FILE = "suite.json"


def locate_sets(specs: list[TransferSet], root: str | Path | None
                ) -> tuple[list[tuple[TransferSet, SetSplits]], list[TransferSet]]:
    """(present sets with their splits, missing sets); a set folder in a wrong layout raises."""
    present, missing = [], []
    for spec in specs:
        splits = load_set(spec, root)
        if splits is None:
            missing.append(spec)
        else:
            present.append((spec, splits))
    return present, missing


def missing_lines(missing: list[TransferSet], root: str | Path | None) -> list[str]:
    """One block naming every missing set and where its files go."""
    if not missing:
        return []
    lines = [f"{len(missing)} set(s) not found under {root}, skipped (nothing is downloaded; put them here):"]
    return lines + [f"  {s.name}: {s.where(str(root))}" for s in missing]


def _previous(out: Path, fingerprint: str, shaping: dict[str, Any], overwrite: bool) -> bool:
    """Whether finished sets in `out` may be kept; refuses another run's folder."""
    path = out / SUITE_FILE
    if overwrite or not path.is_file():
        return not overwrite
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError:
        saved = {}
    if saved.get("fingerprint") != fingerprint:
        raise OutputError(f"--out '{out}' holds transfer results of another checkpoint: pass --overwrite to replace "
                          "them, or choose another --out")
    if saved.get("options") != json.loads(json.dumps(shaping)):
        raise OutputError(f"--out '{out}' holds transfer results made with other options ({saved.get('options')}): "
                          "rerun with those, pass --overwrite, or choose another --out")
    return True


def _kept(out: Path, spec: TransferSet, fingerprint: str) -> dict[str, Any] | None:
    path = out / f"{spec.name}.json"
    if not path.is_file():
        return None
    try:
        row = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return row if row.get("fingerprint") == fingerprint else None


def run_suite(checkpoint: str | Path, suite: str, out: str | Path, root: str | Path | None = None,
              sets: list[str] | None = None, options: TransferOptions | None = None,
              overwrite: bool = False) -> dict[str, Any]:
    """Run `suite` (or the named `sets`) on a checkpoint; returns the suite summary."""
    from vitssl.eval.pretrained import image_size_or_default

    opts = options or TransferOptions()
    specs = suite_sets(suite, sets)
    protocol = SUITES[suite].protocol
    out = check_output_dir(out, overwrite=True)
    fingerprint = file_fingerprint(checkpoint)
    shaping = opts.shaping(protocol)
    keep = _previous(out, fingerprint, shaping, overwrite)
    present, missing = locate_sets(specs, root)  # a wrong layout is refused before any work
    for line in missing_lines(missing, root):
        print(line)
    if not present:
        raise ValueError(f"none of the {len(specs)} set(s) of suite '{suite}' is under {root}: put them where the "
                         "list above says, or choose --sets")
    device = resolve_device(opts.device)
    backbone, config = opts.backbone(checkpoint)
    size = image_size_or_default(opts.image_size, config)
    summary = {"suite": suite, "protocol": protocol, "checkpoint": str(checkpoint), "fingerprint": fingerprint,
               "options": shaping, "image_size": size, "root": str(root) if root else None, "rows": [],
               "missing": [s.name for s in missing]}
    for spec, splits in present:
        row = _kept(out, spec, fingerprint) if keep else None
        if row is not None:
            log.info("%s: finished earlier, kept (%s)", spec.name, out / f"{spec.name}.json")
        else:
            spec = replace(spec, metric=SUITES[suite].metric_override or spec.metric)
            row = _run_one(spec, splits, protocol, checkpoint, fingerprint, backbone, config, out, device, opts, size)
            save_results(row, out / f"{spec.name}.json")
        summary["rows"].append({k: v for k, v in row.items() if k not in ("history", "val_scores")})
        save_results(summary, out / SUITE_FILE)
    print(format_table(summary))
    return summary


def _run_one(spec: TransferSet, splits: SetSplits, protocol: str, checkpoint: str | Path, fingerprint: str,
             backbone: Any, config: dict[str, Any], out: Path, device: Any, opts: TransferOptions,
             size: int) -> dict[str, Any]:
    log.info("%s (%s): %s", spec.name, splits.source, splits.sizes())
    if protocol == "linear":
        key_parts = {"fingerprint": fingerprint, "which": opts.which, "size": size, "random_init": opts.random_init,
                     "seed": opts.seed if opts.random_init else None}
        result = linear_row(backbone, spec, splits, key_parts, out / "features", device, opts, size,
                            default_normalization(config))
    else:
        fresh, _ = opts.backbone(checkpoint)  # every set starts from the pre-trained (or the same random) weights
        result = finetune_row(fresh, config, spec, splits, device, opts, size)
    return {"set": spec.name, "title": spec.title, "source": splits.source, "classes": splits.num_classes,
            **splits.sizes(), "metric": spec.metric, "protocol": protocol, "fingerprint": fingerprint,
            "C": None, **result}

