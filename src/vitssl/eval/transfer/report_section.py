"""The transfer suites' part of `vitssl report`: one results table per `transfer_*/suite.json`
in the run folder (the default place `vitssl eval transfer` writes to)."""

from __future__ import annotations

import json
from pathlib import Path

from vitssl.eval.transfer.metrics import METRIC_NAMES


def transfer_results(run_dir: str | Path) -> list[tuple[str, list[tuple[str, str]]]]:
    """(title, [(set, score line), ...]) per suite folder; unreadable files are left out."""
    found = []
    for path in sorted(Path(run_dir).glob("transfer_*/suite.json")):
        try:
            summary = json.loads(path.read_text())
            rows = [(r["set"], _line(r)) for r in summary["rows"]]
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
        if rows:
            mean = sum(r["score"] for r in summary["rows"]) / len(rows)
            rows.append(("mean", f"{100 * mean:.2f} over {len(rows)} set(s)"))
        if summary.get("missing"):
            rows.append(("not found", ", ".join(summary["missing"])))
        found.append((f"{path.parent.name}/suite.json ({summary.get('protocol', '?')})", rows))
    return found


def _line(row: dict) -> str:
    metric = METRIC_NAMES.get(row.get("metric"), row.get("metric"))
    c = f", C {row['C']:.3g}" if row.get("C") is not None else ""
    return f"{100 * row['score']:.2f} {metric} ({row['classes']} classes, {row['test']} test images{c})"
