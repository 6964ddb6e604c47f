"""Summaries of repeated measurements: percentiles of one run, median and spread over runs.

Two levels, kept apart on purpose:

* within one timed run, the per-request latencies are summarised by their p50/p90/p99
  (``latency_percentiles``), computed in the contender's own process so that 100k floats never
  travel between processes;
* across repetitions of the same run, every figure (wall time, CPU, RSS, p90...) is reported as its
  median with the spread beside it: min and max, and the interquartile range once there are at
  least four repetitions (``spread``). The median, not the mean: on a shared 2-core machine one
  repetition can be slowed by a neighbour, and a median ignores it where a mean would not.

Percentiles interpolate linearly between order statistics (numpy's default), so the p99 of 20
values is a value between the two largest rather than always the maximum. Standard library only.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

__all__ = ["latency_percentiles", "percentile", "spread"]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``, linear interpolation; NaN if empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    fraction = position - below
    return ordered[below] + (ordered[above] - ordered[below]) * fraction


def latency_percentiles(latencies_s: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99 and max of one run's per-request latencies, in seconds."""
    ordered = sorted(latencies_s)
    return {
        "p50_s": percentile(ordered, 50),
        "p90_s": percentile(ordered, 90),
        "p99_s": percentile(ordered, 99),
        "max_s": ordered[-1] if ordered else math.nan,
    }


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median of repeated measurements with min, max, and the quartiles when n >= 4."""
    finite = [v for v in values if v is not None and not math.isnan(v)]
    if not finite:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    summary = {
        "median": statistics.median(finite),
        "min": min(finite),
        "max": max(finite),
        "n": len(finite),
    }
    if len(finite) >= 4:
        summary["q1"] = percentile(finite, 25)
        summary["q3"] = percentile(finite, 75)
    return summary
