"""Latency statistics: percentiles by linear interpolation between closest ranks (numpy's
default), so p99 of 100 samples is not simply the maximum."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) of already sorted values; None when there are none."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    n = len(sorted_values)
    if n == 0:
        return None
    if n == 1:
        return float(sorted_values[0])
    rank = (n - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, n - 1)
    fraction = rank - low
    return float(sorted_values[low] + (sorted_values[high] - sorted_values[low]) * fraction)


def summarize(latencies_ms: Sequence[float]) -> dict[str, float | int | None]:
    """p50/p90/p99/p999, mean, max and the sample count of latencies in milliseconds."""
    values = sorted(latencies_ms)

    def rounded(x: float | None) -> float | None:
        return None if x is None else round(x, 3)

    return {
        "p50_ms": rounded(percentile(values, 50)),
        "p90_ms": rounded(percentile(values, 90)),
        "p99_ms": rounded(percentile(values, 99)),
        "p999_ms": rounded(percentile(values, 99.9)),
        "mean_ms": rounded(sum(values) / len(values)) if values else None,
        "max_ms": rounded(values[-1]) if values else None,
        "samples": len(values),
    }
