"""How many CPU cores this process may use: the data-loader default follows it."""

from __future__ import annotations

import os

MAX_DEFAULT_WORKERS = 8


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and `taskset` narrow),
    else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_num_workers() -> int:
    """`train.num_workers` when not set: 8, capped at the available cores (more workers than
    cores only add contention, and torch warns about it)."""
    return min(MAX_DEFAULT_WORKERS, available_cores())
