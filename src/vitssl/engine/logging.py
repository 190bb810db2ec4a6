"""Metric sinks: JSON lines (always), TensorBoard (when installed), console through tqdm."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("vitssl")


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to `sys.stderr` as it is at each record, not as it was at set-up, so a caller that
    redirects stderr later (a notebook, pytest's capture, contextlib.redirect_stderr) still gets
    the messages instead of a write to a closed stream."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass

    def emit(self, record: logging.LogRecord) -> None:
        """Through tqdm, which clears and redraws an active progress bar around the line, so a
        message logged mid-epoch gets a line of its own instead of trailing the bar. The line and
        its newline go out in one write: `tqdm.write` writes them separately, and a signal between
        the two left the next line (the stop report) glued to this one."""
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record) + "\n", file=sys.stderr, end="")
        except Exception:  # noqa: BLE001 - logging's own convention
            self.handleError(record)


def setup_console_logging(level: int = logging.INFO) -> None:
    if not log.handlers:
        handler = _CurrentStderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False


def to_float(value: torch.Tensor | float | int) -> float:
    return float(value.detach().float().item()) if isinstance(value, torch.Tensor) else float(value)


class MetricWriter:
    """Appends `{"step": s, ...}` lines to `metrics.jsonl` and mirrors scalars to TensorBoard and,
    with `wandb_project`, to Weights & Biases (its own library; offline mode via WANDB_MODE)."""

    def __init__(self, run_dir: Path, tensorboard: bool = True, enabled: bool = True,
                 wandb_project: str | None = None, config: dict[str, Any] | None = None) -> None:
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self._tb: Any = None
        self._wandb: Any = None
        if enabled and wandb_project:
            try:
                import wandb
            except ImportError as e:
                raise RuntimeError("train.wandb=true needs the wandb package: pip install wandb "
                                   "(or set train.wandb=false)") from e
            self._wandb = wandb.init(project=wandb_project, dir=str(run_dir), name=Path(run_dir).name,
                                     config=config or {}, resume="allow")
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
            except ImportError:  # tensorboard is optional at run time
                log.info("tensorboard is not installed: scalars go to metrics.jsonl only "
                         "(pip install 'vitssl[tensorboard]' for TensorBoard)")

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        if self._tb is not None:
            for key, value in metrics.items():
                self._tb.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log(dict(metrics), step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    """The rows of `metrics.jsonl`; a damaged line is a one-line ValueError naming its number."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"'{path}' line {n} is not JSON ({e.msg}): the file is damaged; fix or delete that line") from None
        if not isinstance(row, dict) or not isinstance(row.get("step"), (int, float)):
            raise ValueError(f"'{path}' line {n} is not a metrics row (a JSON object with a step): fix or delete that line")
        rows.append(row)
    return rows
