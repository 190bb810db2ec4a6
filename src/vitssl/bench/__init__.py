"""Speed measurements users run on their own hardware (`vitssl benchmark ...`)."""

from vitssl.bench.throughput import (
    ThroughputResult,
    count_flops,
    count_parameters,
    measure_throughput,
)

__all__ = ["ThroughputResult", "count_flops", "count_parameters", "measure_throughput"]
