"""Small measuring helpers shared by the scenarios: percentiles and timed calls."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile: p99 of 100 samples is the largest but one, never an interpolation."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def summary_ms(latencies: Sequence[float]) -> dict[str, Any]:
    """p50/p99/max in milliseconds of latencies measured in seconds."""
    return {
        "n": len(latencies),
        "p50_ms": round(percentile(latencies, 50) * 1000, 3),
        "p99_ms": round(percentile(latencies, 99) * 1000, 3),
        "max_ms": round(max(latencies) * 1000, 3) if latencies else math.nan,
    }


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call, on the monotonic high-resolution clock."""
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def rate(count: float, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else math.nan
