"""The report's learning curves: online k-NN top-1 and the teacher's mutual information and
entropy against the optimizer step, each as a figure and a table of its values.

These are the two signals that say whether pre-training is learning (the k-NN of the features) and
whether the teacher still carries information (DINO paper Sec. 5.3: entropy near ln K and mutual
information near 0 mean a flat, collapsed teacher). A series the run did not log is named with
how to log it, so an absent curve is never mistaken for a flat one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KNN_KEY = "knn_top1"
TEACHER_KEYS = ("teacher_mutual_info", "teacher_entropy")
LEARNING_KEYS = (KNN_KEY, *TEACHER_KEYS)
KNN_MISSING = "not logged (enable with train.knn_every_epochs=N train.knn_data=SET)"
TEACHER_MISSING = ("not logged (logged by methods with a teacher distribution: DINO, EsViT, SelfPatch, "
                   "every train.log_every steps)")
MAX_TABLE_ROWS = 12  # a long run's series is shown at evenly spaced steps, always with its last value


@dataclass
class Series:
    """One logged series: its (step, value) points, or why there are none."""

    key: str
    title: str
    points: list[tuple[int, float]] = field(default_factory=list)
    missing: str = ""

    def table(self) -> list[tuple[str, str]]:
        """(step, value) rows, thinned to `MAX_TABLE_ROWS` evenly spaced points plus the last."""
        stride = max(1, -(-len(self.points) // MAX_TABLE_ROWS))
        shown = self.points[::stride]
        if self.points and shown[-1] != self.points[-1]:
            shown.append(self.points[-1])
        return [(str(step), f"{value:.4f}") for step, value in shown]


def series_of(rows: list[dict[str, Any]], key: str) -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r[key])) for r in rows if isinstance(r.get(key), (int, float))]


def learning_series(rows: list[dict[str, Any]]) -> list[Series]:
    """The k-NN series, then the teacher's, each with its points or its `missing` note."""
    knn = Series(KNN_KEY, "Online k-NN top-1", series_of(rows, KNN_KEY))
    if not knn.points:
        knn.missing = KNN_MISSING
    teacher = [Series(k, f"Teacher {k.removeprefix('teacher_').replace('_', ' ')} (nats)", series_of(rows, k))
               for k in TEACHER_KEYS]
    for s in teacher:
        if not s.points:
            s.missing = TEACHER_MISSING
    return [knn, *teacher]


def learning_figures(rows: list[dict[str, Any]], series: list[Series], out_dir: Path) -> list[Any]:
    """A k-NN figure and a teacher figure (one panel per statistic), for the series that were logged."""
    from vitssl.commands.report import Figure, plot_series

    figures = []
    knn = [s.key for s in series if s.key == KNN_KEY and s.points]
    teacher = [s.key for s in series if s.key in TEACHER_KEYS and s.points]
    if knn:
        path = plot_series(rows, knn, out_dir / "knn.png", "Online k-NN top-1")
        figures.append(Figure("Online k-NN top-1", path, "weighted k-NN top-1 of the evaluation backbone's "
                                                         "features on train.knn_data, per optimizer step"))
    if teacher:
        path = plot_series(rows, teacher, out_dir / "teacher.png", "Teacher information")
        figures.append(Figure("Teacher information", path, "mutual information between image and teacher "
                                                           "output, and mean teacher entropy (ln K: flat)"))
    return figures
