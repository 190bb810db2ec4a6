"""The one table a transfer suite prints: a row per set, then the mean score."""

from __future__ import annotations

from typing import Any

from vitssl.eval.transfer.metrics import METRIC_NAMES

COLUMNS = ("set", "classes", "train", "val", "test", "C", "metric", "score")


def _cell(key: str, row: dict[str, Any]) -> str:
    value = row.get(key)
    if key == "train" and "train_images" in row:  # fine-tuning: the images it trained on (train + val, or fewer)
        value = row["train_images"]
    if key == "C":
        return "-" if value is None else f"{value:.3g}"
    if key == "metric":
        return METRIC_NAMES.get(str(value), str(value))
    if key == "score":
        return f"{100 * value:.2f}"
    return str(value)


def format_table(summary: dict[str, Any]) -> str:
    """Plain-text table of `summary["rows"]` with the suite's mean score (in %)."""
    rows = [[_cell(k, r) for k in COLUMNS] for r in summary["rows"]]
    widths = [max(len(c) for c in col) for col in zip(COLUMNS, *rows)]
    line = lambda cells: "  ".join(c.ljust(w) if i in (0, 6) else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    out = [f"transfer suite '{summary['suite']}' ({summary['protocol']}), image size {summary['image_size']}",
           line(COLUMNS), line(["-" * w for w in widths]), *map(line, rows)]
    if rows:
        mean = sum(r["score"] for r in summary["rows"]) / len(rows)
        out.append(f"mean over {len(rows)} set(s): {100 * mean:.2f}")
    if summary.get("missing"):
        out.append(f"missing: {', '.join(summary['missing'])}")
    return "\n".join(out)
