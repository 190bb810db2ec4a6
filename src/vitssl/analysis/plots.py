"""Figures written into run folders."""

from __future__ import annotations

from pathlib import Path

from vitssl.engine.logging import log, read_metrics


def plot_loss_curve(run_dir: str | Path, filename: str = "loss_curve.png") -> Path | None:
    """Loss (and teacher entropy when logged) against optimizer step, from metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    try:
        rows = [r for r in read_metrics(run_dir) if "loss" in r]
    except ValueError as e:  # a damaged log costs the picture, not the finished run
        log.warning("no loss curve: %s", e)
        return None
    if not rows:
        return None
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot(steps, [r["loss"] for r in rows], label="training loss", color="tab:blue")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    if "teacher_entropy" in rows[0]:
        twin = ax.twinx()
        twin.plot(steps, [r["teacher_entropy"] for r in rows], label="teacher entropy", color="tab:orange", alpha=0.7)
        twin.set_ylabel("teacher entropy (nats)")
        fig.legend(loc="upper right", fontsize=8)
    ax.set_title(run_dir.name)
    fig.tight_layout()
    out = run_dir / filename
    fig.savefig(out)
    plt.close(fig)
    return out
