"""Summaries of repeated measurements: percentiles of one run, median and spread over runs.

Two levels, kept apart on purpose:

* within one timed run, the per-request latencies are summarised by their p50/p90/p99
  (``latency_percentiles``), computed in the contender's own process so that 100k floats never
  travel between processes;
* across repetitions of the same run, every figure (wall time, CPU, RSS, p90...) is reported as its
  median with the spread beside it: min and max, and the interquartile range once there are at
  least four repetitions (``spread``). The median, not the mean: on a shared 2-core machine one
  repetition can be slowed by a neighbour, and a median ignores it where a mean would not.

Percentiles are ``statistics.quantiles(..., method="inclusive")``: linear interpolation between
order statistics (numpy's default), so the p99 of 20 values is a value between the two largest
rather than always the maximum. Standard library only.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

__all__ = ["latency_percentiles", "spread"]


def _cut_points(values: Sequence[float], n: int) -> list[float]:
    """The ``n - 1`` cut points of ``values`` into ``n`` equal groups (one value: itself)."""
    if len(values) == 1:  # quantiles() needs two points before Python 3.13
        return [values[0]] * (n - 1)
    return statistics.quantiles(values, n=n, method="inclusive")


def latency_percentiles(latencies_s: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99 and max of one run's per-request latencies, in seconds (NaN if none)."""
    if not latencies_s:
        return dict.fromkeys(("p50_s", "p90_s", "p99_s", "max_s"), math.nan)
    cuts = _cut_points(latencies_s, 100)
    return {"p50_s": cuts[49], "p90_s": cuts[89], "p99_s": cuts[98], "max_s": max(latencies_s)}


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
        summary["q1"], _, summary["q3"] = _cut_points(finite, 4)
    return summary
