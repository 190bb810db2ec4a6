"""`vitssl report RUN_DIR`: one self-contained HTML page about a run.

The page shows the resolved config, the curves logged in `metrics.jsonl` (loss, schedules,
other metrics, throughput and memory), the learning curves (online k-NN top-1, the teacher's
mutual information and entropy: `report_learning`), the evaluation results saved as JSON in the
run folder (every `eval_*.json` of `vitssl eval`, `video_segmentation/video_segmentation.json`,
the demo's `results.json`), last-layer attention maps of a few images (ViT backbones) and, for
EsViT, region correspondences. Figures are PNG files in `RUN_DIR/report/` and are also embedded
in the page as base64, so the page needs no other file. Parts that do not apply (no checkpoint, a Swin without image-wide attention,
images that cannot be read) are skipped with a note on the page, never an error.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import shutil
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vitssl.commands.report_learning import LEARNING_KEYS, Series, learning_figures, learning_series
from vitssl.commands.report_page import render_html
from vitssl.engine.logging import read_metrics
from vitssl.engine.outputs import check_output_dir, check_output_file, write_text_atomic

SKIP_KEYS = {"step", "epoch"}
SCHEDULE_KEYS = ("lr", "weight_decay", "teacher_temp", "momentum")
FIGURE_PATTERNS = ("attention_*.png", "correspondence_*.png", "loss.png", "schedules.png", "other.png",
                   "throughput.png", "knn.png", "teacher.png")
RESULT_FILES = ("eval_knn.json", "eval_linear.json", "eval_segmentation.json", "results.json",
                "video_segmentation/video_segmentation.json", "correspondence/correspondence.json")


@dataclass
class Figure:
    """A PNG written to the report folder, with its caption; `data` is its base64 encoding."""

    title: str
    path: Path
    caption: str = ""

    @property
    def data(self) -> str:
        return base64.b64encode(self.path.read_bytes()).decode("ascii")


@dataclass
class Report:
    """Everything the page shows; `notes` explain the parts that were skipped."""

    run_dir: Path
    config_text: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, str] = field(default_factory=dict)
    curves: list[Figure] = field(default_factory=list)
    learning: list[Figure] = field(default_factory=list)  # k-NN and teacher information (report_learning)
    learning_series: list[Series] = field(default_factory=list)
    results: list[tuple[str, list[tuple[str, str]]]] = field(default_factory=list)
    attention: list[Figure] = field(default_factory=list)
    correspondence: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- metric curves

def group_metric_keys(rows: list[dict[str, float]]) -> dict[str, list[str]]:
    """Split the logged keys into loss terms, schedules, throughput/memory and the rest (the
    learning curves, `report_learning`, have their own section)."""
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys and k not in SKIP_KEYS and k not in LEARNING_KEYS)
    groups: dict[str, list[str]] = {"loss": [], "schedules": [], "throughput": [], "other": []}
    for key in keys:
        if key == "loss" or key.endswith("_loss") or key.startswith("loss"):
            groups["loss"].append(key)
        elif any(s in key for s in SCHEDULE_KEYS):
            groups["schedules"].append(key)
        elif key == "images_per_s" or "mem" in key:
            groups["throughput"].append(key)
        else:
            groups["other"].append(key)
    return groups


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_series(rows: list[dict[str, float]], keys: list[str], path: Path, title: str,
                shared_axes: bool = False, reference: tuple[float, str] | None = None) -> Path:
    """Each key against the optimizer step: on one axes (`shared_axes`) or one panel per key;
    `reference` (value, label) draws a dashed horizontal line on the first panel."""
    plt = _pyplot()
    panels = 1 if shared_axes else len(keys)
    cols = min(panels, 3)
    rows_n = -(-panels // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 2.8 * rows_n), dpi=100, squeeze=False)
    for i, key in enumerate(keys):
        ax = axes.flat[0 if shared_axes else i]
        points = [(r["step"], r[key]) for r in rows if key in r]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 30 else None,
                label=key)
        ax.set_xlabel("optimizer step")
        if not shared_axes:
            ax.set_title(key, fontsize=10)
    if reference is not None:
        axes.flat[0].axhline(reference[0], color="grey", linestyle="--", linewidth=1, label=reference[1])
    if (shared_axes and len(keys) > 1) or reference is not None:
        axes.flat[0].legend(fontsize=8)
    for ax in list(axes.flat)[len(keys) if not shared_axes else 1:]:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def metric_figures(rows: list[dict[str, float]], out_dir: Path, config: dict[str, Any] | None = None) -> list[Figure]:
    """One figure per non-empty group of logged metrics. The loss plot marks the method's
    `loss_reference` (DINO: ln K, the loss of a flat teacher)."""
    groups = group_metric_keys(rows)
    specs = [("loss", "Training loss", True, "loss terms per optimizer step"),
             ("schedules", "Schedules", False, "learning rate, weight decay and other scheduled values"),
             ("other", "Other metrics", False, "method diagnostics logged during training"),
             ("throughput", "Throughput and memory", False, "training images per second (wall clock, "
                                                            "per logged step) and memory when logged")]
    method = run_method_or_none(config or {})
    flat = method.cls.loss_reference(method.cfg) if method else None
    figures = []
    for group, title, shared, caption in specs:
        if groups[group]:
            path = plot_series(rows, groups[group], out_dir / f"{group}.png", title, shared,
                               flat if group == "loss" else None)
            figures.append(Figure(title, path, caption))
    return figures


def summarise_metrics(rows: list[dict[str, float]]) -> dict[str, str]:
    """Steps, final loss, median throughput (first step excluded: it includes start-up) and peak memory."""
    if not rows:
        return {}
    out = {"optimizer steps": str(int(max(r["step"] for r in rows)))}
    losses = [r["loss"] for r in rows if "loss" in r]  # the last row may be an epoch-end k-NN row
    if losses:
        out["final loss"] = f"{losses[-1]:.4f}"
    speeds = [r["images_per_s"] for r in rows[1:] or rows if "images_per_s" in r]
    if speeds:
        out["median images/s"] = f"{statistics.median(speeds):.1f}"
    for key in sorted({k for r in rows for k in r if "mem" in k}):
        out[f"peak {key}"] = f"{max(r[key] for r in rows if key in r):.2f}"
    return out


# --------------------------------------------------------------------------- evaluation results

def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def result_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """A results JSON as (name, value) rows: k-NN per k, then every scalar entry."""
    rows = []
    for k, scores in (result.get("results") or {}).items():
        if isinstance(scores, dict):
            rows.append((f"{k}-NN top-1 / top-5", " / ".join(_fmt(scores.get(s, "-")) for s in ("top1", "top5"))))
    for key, value in result.items():
        if isinstance(value, (int, float, str, bool)) and key not in ("checkpoint",):
            rows.append((key, _fmt(value)))
    return rows


def collect_results(run_dir: Path) -> list[tuple[str, list[tuple[str, str]]]]:
    """The evaluation and analysis results saved as JSON in the run folder."""
    found = []
    evals = sorted(p.name for p in run_dir.glob("eval_*.json"))  # every protocol, baselines included
    for name in dict.fromkeys([*RESULT_FILES, *evals]):
        path = run_dir / name
        if not path.is_file():
            continue
        try:
            result = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if isinstance(result, dict):
            found.append((name, result_rows(result)))
    return found


# --------------------------------------------------------------------------- pictures of the model

def _load_model_images(run_dir: Path, images: str | None, limit: int, image_size: int | None,
                       report: Report) -> tuple[Any, Any, int] | None:
    """(backbone, images, image size) for the pictures, or None with a note saying why not."""
    from vitssl.analysis.images import load_images
    from vitssl.eval.pretrained import image_size_or_default, load_run

    checkpoint = run_dir / "checkpoint.pt"
    if not checkpoint.is_file():
        report.notes.append("no checkpoint.pt: attention maps and correspondences skipped")
        return None
    source = images or str(report.config.get("data", {}).get("path", ""))
    try:
        pictures = load_images(source, limit)
    except (FileNotFoundError, ValueError) as e:
        report.notes.append(f"no images for the model pictures ({e}): pass --images PATH")
        return None
    run = load_run(checkpoint)
    return run, pictures, image_size_or_default(image_size, run.config)


def attention_figures(vit: Any, images: list[Any], size: int, out_dir: Path, report: Report) -> list[Figure]:
    """Last-layer attention per head (analysis/attention_maps.py) of the backbone network (SelfPatch:
    its ViT without the aggregation module); skipped for non-ViT backbones."""
    from vitssl.analysis.attention_maps import save_attention_maps
    from vitssl.backbones import ViT

    if not isinstance(vit, ViT):
        report.notes.append(f"attention maps skipped: the backbone is a {type(vit).__name__}, whose window "
                            "attention has no image-wide map")
        return []
    paths = save_attention_maps(vit, images, out_dir, size)
    return [Figure(f"Attention, image {i}", p, "the image, each head's last-layer attention, their mean")
            for i, p in enumerate(paths)]


def correspondence_figures(backbone: Any, images: list[Any], size: int, out_dir: Path,
                           report: Report) -> list[Figure]:
    """EsViT's region matches between each image and its mirrored, recoloured copy."""
    from vitssl.analysis.correspondence import analyze_correspondence

    result = analyze_correspondence(backbone, images, size, out_dir)
    report.results.append(("region correspondence (this report)",
                           [(k, _fmt(v)) for k, v in result.items() if k not in ("pictures", "image_accuracy")]))
    return [Figure(f"Correspondence, image {i}", Path(p), "green: matched at the mirrored position")
            for i, p in enumerate(result["pictures"])]


# --------------------------------------------------------------------------- assembly

def collect_report(run_dir: str | Path, images: str | None = None, limit: int = 4,
                   pictures: bool = True, image_size: int | None = None, figure_dir: str | Path | None = None) -> Report:
    """Gather the run's config, metrics, results and pictures; figures go to `figure_dir`
    (default `RUN_DIR/report/`). A damaged config.yaml or metrics.jsonl is an error raised
    before any figure is drawn."""
    if importlib.util.find_spec("jinja2") is None:  # an extra: checked before any work
        raise ValueError("vitssl report needs jinja2: pip install 'vitssl[report]'")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder '{run_dir}' does not exist: pass a folder written by vitssl pretrain")
    report = Report(run_dir.resolve())
    config_path = run_dir / "config.yaml"
    if config_path.is_file():
        report.config_text = config_path.read_text()
        report.config = read_config(config_path)
    else:
        report.notes.append("no config.yaml in the run folder")
    rows = read_metrics(run_dir)
    out_dir = Path(figure_dir) if figure_dir else run_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    if not rows:
        report.notes.append("no metrics.jsonl: no training curves")
    report.summary = {**_config_summary(report.config), **summarise_metrics(rows)}
    report.curves = metric_figures(rows, out_dir, report.config)
    report.learning_series = learning_series(rows)
    report.learning = learning_figures(rows, report.learning_series, out_dir)
    report.results = collect_results(run_dir)
    from vitssl.eval.transfer.report_section import transfer_results

    report.results += transfer_results(run_dir)  # vitssl eval transfer's suites
    if pictures:
        add_model_pictures(report, run_dir, out_dir, images, limit, image_size)
    return report


def read_config(path: Path) -> dict[str, Any]:
    """A run's config.yaml as a dict; a file that is not YAML is a one-line error naming it."""
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise ValueError(f"'{path}' is not valid YAML{line}: fix the file or move it out of the run folder") from None
    return loaded if isinstance(loaded, dict) else {}


def add_model_pictures(report: Report, run_dir: Path, out_dir: Path, images: str | None, limit: int,
                       image_size: int | None) -> None:
    """Attention maps, and correspondences for a method that matches regions (EsViT); a picture
    that cannot be made becomes a note."""
    loaded = _load_model_images(run_dir, images, limit, image_size, report)
    if loaded is None:
        return
    run, imgs, size = loaded
    try:
        report.attention = attention_figures(run.network, imgs, size, out_dir, report)
    except ValueError as e:
        report.notes.append(f"attention maps skipped: {e}")
    method = run_method_or_none(report.config)
    if not (method and method.cls.matches_regions):
        return
    try:
        report.correspondence = correspondence_figures(run.backbone, imgs, size, out_dir, report)
    except ValueError as e:
        report.notes.append(f"correspondences skipped: {e}")


def run_method_or_none(config: dict[str, Any]) -> Any:
    """`vitssl.eval.pretrained.run_method` of the config, or None where this vitssl cannot read it
    (the report then leaves out what depends on the method rather than fail)."""
    from vitssl.config import ConfigError
    from vitssl.eval.pretrained import run_method

    try:
        return run_method(config)
    except (ConfigError, ValueError, TypeError):
        return None


def _config_summary(config: dict[str, Any]) -> dict[str, str]:
    get = lambda section, key: str(config.get(section, {}).get(key, "?"))
    if not config:
        return {}
    return {"method": get("method", "name"), "backbone": get("backbone", "name"), "data": get("data", "path"),
            "epochs": get("train", "epochs"), "batch per process": get("train", "batch_size")}


def build_report(run_dir: str | Path, images: str | None = None, limit: int = 4, pictures: bool = True,
                 out: str | Path | None = None, image_size: int | None = None, overwrite: bool = True) -> Path:
    """Write `RUN_DIR/report/report.html` (or `out`) and the PNGs in `RUN_DIR/report/`; return the page's path.

    `images` (file, folder or built-in set; default: the run's training data) feed the attention
    maps and correspondences, at `image_size` (default: the training crop size). `overwrite=False`
    (the CLI's default) refuses to replace an earlier report. Nothing in `RUN_DIR/report/` changes
    until the new report is complete: figures are drawn in a temporary folder, then renamed in,
    and only then are the previous report's other figures removed.
    """
    if importlib.util.find_spec("jinja2") is None:  # an extra: checked before any work
        raise ValueError("vitssl report needs jinja2: pip install 'vitssl[report]'")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder '{run_dir}' does not exist: pass a folder written by vitssl pretrain")
    figures = check_output_dir(run_dir / "report", overwrite, FIGURE_PATTERNS, flag="report folder")
    page = check_output_file(Path(out) if out else figures / "report.html", overwrite)
    figures.mkdir(parents=True, exist_ok=True)
    for left in figures.glob(".staging-*"):  # of a report that was killed: never part of a page
        shutil.rmtree(left, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=figures))
    try:
        report = collect_report(run_dir, images, limit, pictures, image_size, figure_dir=staging)
        html = render_html(report)
        _replace_figures(staging, figures)
        write_text_atomic(page, html)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return page


def _replace_figures(staging: Path, figures: Path) -> None:
    """Move the new figures in, then drop the previous report's figures that were not redrawn."""
    new = {p.name for p in staging.glob("*.png")}
    for name in sorted(new):
        os.replace(staging / name, figures / name)
    for pattern in FIGURE_PATTERNS:
        for old in figures.glob(pattern):
            if old.name not in new:
                old.unlink(missing_ok=True)
