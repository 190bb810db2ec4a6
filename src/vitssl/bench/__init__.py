"""Speed measurements users run on their own hardware (`vitssl benchmark ...`).

Names load on first use, so the CLI can read the benchmark options without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {name: "vitssl.bench.throughput"
            for name in ("ThroughputResult", "count_flops", "count_parameters", "measure_throughput")}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vitssl.bench' has no attribute '{name}'")
