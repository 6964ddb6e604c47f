"""One PNG per scenario, each with the ideal drawn beside what was measured.

Conventions shared by every plot, so a reader learns them once:

* a bar or a point is the median over the repetitions; its error bar spans min to max;
* the ideal (or the target) is a dashed line or a hatched bar, labelled in the legend;
* titles say what ran (sizes, latency, bound), axes carry their units.

matplotlib is imported inside ``write_plots`` with the non-interactive Agg backend, so importing
the bench package (or running a contender) never pays for it, and no display is needed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

from paradigm_kit.bench.adaptive import plot_adaptive
from paradigm_kit.bench.capacity import plot_capacity

__all__ = ["PLOT_FILES", "write_plots"]

PLOT_FILES = {
    "seed": "seed.png",
    "scaling": "scaling.png",
    "variable_latency": "variable_latency.png",
    "client_cost": "client_cost.png",
    "memory": "memory.png",
    "rate_limit": "rate_limit.png",
    "threads_vs_asyncio": "threads_vs_asyncio.png",
    "adaptive": "adaptive.png",
    "capacity": "capacity.png",
}
MEASURED = "#1f77b4"
REFERENCE = "#7f7f7f"
HIGHLIGHT = "#d62728"


def _value(summary: dict, key: str) -> float:
    """A figure of a summary, NaN when it could not be measured (``null`` in the JSON)."""
    value = summary.get(key)
    return math.nan if value is None else value


def _errors(summaries: list[dict]) -> list[list[float]]:
    """matplotlib's asymmetric ``yerr``: distances from the median down to min and up to max."""
    return [
        [_value(s, "median") - _value(s, "min") for s in summaries],
        [_value(s, "max") - _value(s, "median") for s in summaries],
    ]


def _medians(summaries: list[dict]) -> list[float]:
    return [_value(s, "median") for s in summaries]


def _label(ax, scenario: dict, ylabel: str, legend_loc: str = "best") -> None:
    """The y label, the scenario's title as the chart's, and the legend."""
    ax.set_ylabel(ylabel)
    ax.set_title(scenario["title"])
    ax.legend(loc=legend_loc)


def _bars(ax, labels: list[str], summaries: list[dict], colors=None, horizontal: bool = False):
    positions = range(len(labels))
    color = colors or MEASURED
    if horizontal:
        ax.barh(positions, _medians(summaries), xerr=_errors(summaries), color=color, capsize=3)
        ax.set_yticks(list(positions), labels)
        ax.invert_yaxis()
    else:
        ax.bar(positions, _medians(summaries), yerr=_errors(summaries), color=color, capsize=3)
        ax.set_xticks(list(positions), labels, rotation=15, ha="right")


def _plot_seed(plt, scenario: dict):
    rows = scenario["rows"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    labels = [r["label"] for r in rows]
    _bars(left, labels, [r["wall_s"] for r in rows])
    ideal = [r["ideal_wall_s"] for r in rows]
    left.scatter(
        range(len(rows)), ideal, marker="_", s=900, color=HIGHLIGHT, zorder=3, label="ideal"
    )
    left.set_ylabel("wall time (s)")
    left.set_title("Wall time, median of the repetitions")
    left.legend()
    async_rows = [r for r in rows if not r["label"].startswith("sync")]
    _bars(right, [r["label"] for r in async_rows], [r["improvement_factor"] for r in async_rows])
    ideal_factor = scenario["ideal_factor"]
    right.axhline(
        ideal_factor, color=HIGHLIGHT, linestyle="--", label=f"ideal ({ideal_factor:.0f})"
    )
    right.axhline(
        0.97 * ideal_factor, color=REFERENCE, linestyle=":", label="97% of ideal (target)"
    )
    right.set_ylabel("improvement factor (sync time / async time)")
    right.set_title("Improvement factor vs the ideal")
    right.legend(loc="lower right")
    fig.suptitle(scenario["title"])
    return fig


def _plot_scaling(plt, scenario: dict):
    fig, ax = plt.subplots(figsize=(9, 5.5))
    params = scenario["params"]
    latency_s, bound = params["latency_s"], params["concurrency"]
    labels = list(dict.fromkeys(r["label"] for r in scenario["rows"]))
    for label in labels:
        rows = [r for r in scenario["rows"] if r["label"] == label]
        sizes = [r["n_requests"] for r in rows]
        walls = [r["wall_s"] for r in rows]
        ax.errorbar(sizes, _medians(walls), yerr=_errors(walls), marker="o", capsize=3, label=label)
    sizes = sorted(set(params["sizes"]))
    # the ideal's steps: flat up to each multiple of C, one latency more right after it
    steps = range(bound, max(sizes) + 1, bound)
    dense = sorted({*sizes, *steps, *(n + 1 for n in steps if n < max(sizes))})
    ax.step(
        dense,
        [-(-n // bound) * latency_s for n in dense],
        where="post",
        color="black",
        linestyle="--",
        label=f"ideal, C={bound}: ceil(N/C) x latency",
    )
    ax.axhline(latency_s, color=REFERENCE, linestyle=":", label="ideal, unbounded: latency")
    sync_sizes = [r["n_requests"] for r in scenario["rows"] if r["label"].startswith("sync")]
    if sync_sizes:
        ax.plot(
            sync_sizes,
            [n * latency_s for n in sync_sizes],
            color=HIGHLIGHT,
            linestyle="-.",
            label="ideal, sequential: N x latency",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of requests N")
    ax.set_ylabel("wall time (s)")
    ax.set_title(scenario["title"])
    ax.legend(fontsize="small")
    ax.grid(True, which="both", alpha=0.3)
    return fig


def _plot_variable(plt, scenario: dict):
    fig, ax = plt.subplots(figsize=(8, 4.5))
    rows = [r for r in scenario["rows"] if not r["label"].startswith("sync")]
    _bars(ax, [r["label"] for r in rows], [r["improvement_factor"] for r in rows])
    ideal = scenario["ideal_factor"]["median"]
    ax.axhline(ideal, color=HIGHLIGHT, linestyle="--", label=f"ideal sum/max = {ideal:.2f}")
    n = scenario["params"]["n_requests"]
    ax.axhline(n, color=REFERENCE, linestyle=":", label=f"N = {n} (the equal-latency ideal)")
    _label(ax, scenario, "improvement factor (sync time / async time)", legend_loc="lower right")
    return fig


def _plot_client_cost(plt, scenario: dict):
    rows = scenario["rows"]
    labels = [r["label"] for r in rows]
    colors = [HIGHLIGHT if r["label"] == "kit runner" else MEASURED for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    _bars(left, labels, [r["requests_per_s"] for r in rows], colors, horizontal=True)
    left.axvline(
        rows[0]["requests_per_s"]["median"],
        color=REFERENCE,
        linestyle="--",
        label="bare aiohttp loop",
    )
    left.set_xlabel("throughput (requests/s, higher is better)")
    left.legend()
    _bars(right, labels, [r["cpu_us_per_request"] for r in rows], colors, horizontal=True)
    bare_cpu = rows[0]["cpu_us_per_request"]["median"]
    right.axvline(bare_cpu, color=REFERENCE, linestyle="--", label="bare aiohttp loop")
    right.axvline(1.1 * bare_cpu, color=HIGHLIGHT, linestyle=":", label="+10% (runner target)")
    right.set_xlabel("client CPU per request (us, lower is better)")
    right.set_yticklabels([])
    right.legend()
    fig.suptitle(scenario["title"] + " (mock on the same machine)")
    fig.tight_layout()
    return fig


def _plot_memory(plt, scenario: dict):
    fig, ax = plt.subplots(figsize=(8, 4.5))
    sizes = sorted({r["n_requests"] for r in scenario["rows"]})
    labels = list(dict.fromkeys(r["label"] for r in scenario["rows"]))
    width = 0.8 / len(labels)
    for k, label in enumerate(labels):
        by_size = {
            r["n_requests"]: r["peak_rss_mb"] for r in scenario["rows"] if r["label"] == label
        }
        summaries = [by_size[n] for n in sizes]
        positions = [i + (k - (len(labels) - 1) / 2) * width for i in range(len(sizes))]
        ax.bar(
            positions, _medians(summaries), width, yerr=_errors(summaries), capsize=3, label=label
        )
    ax.axhline(100, color=HIGHLIGHT, linestyle="--", label="100 MB (runner target)")
    ax.set_xticks(range(len(sizes)), [f"{n:,} requests" for n in sizes])
    _label(ax, scenario, "peak RSS of the process (MB)")
    return fig


def _plot_rate_limit(plt, scenario: dict):
    fig, ax = plt.subplots(figsize=(8, 4.5))
    rows = scenario["rows"]
    _bars(ax, [r["label"] for r in rows], [r["steady_fraction_of_limit"] for r in rows])
    ax.axhline(1.0, color=REFERENCE, linestyle="--", label="the limit R (ideal)")
    ax.axhline(0.97, color=HIGHLIGHT, linestyle=":", label="97% of R (target)")
    for i, row in enumerate(rows):
        ax.annotate(
            f"{row['server_429']['median']:.0f} x 429", (i, 0.5), ha="center", color="white"
        )
    ax.set_ylim(0, 1.15)
    _label(ax, scenario, "steady achieved rate / R", legend_loc="lower right")
    return fig


def _plot_threads(plt, scenario: dict):
    rows = scenario["rows"]
    labels = [r["label"].replace(": ", ":\n") for r in rows]
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.8))
    panels = [
        ("wall_s", "wall time (s)"),
        ("threads_peak", "peak threads"),
        ("peak_rss_mb", "peak RSS (MB)"),
        ("process_cpu_s", "CPU time of the process (s)"),
    ]
    for ax, (key, ylabel) in zip(axes, panels, strict=True):
        _bars(ax, labels, [r[key] for r in rows])
        ax.set_ylabel(ylabel)
        ax.tick_params(axis="x", labelsize="small")
    axes[0].axhline(scenario["ideal_wall_s"], color=HIGHLIGHT, linestyle="--", label="ideal")
    axes[0].legend()
    fig.suptitle(scenario["title"])
    fig.tight_layout()
    return fig


PLOTTERS: dict[str, Callable] = {
    "seed": _plot_seed,
    "scaling": _plot_scaling,
    "variable_latency": _plot_variable,
    "client_cost": _plot_client_cost,
    "memory": _plot_memory,
    "rate_limit": _plot_rate_limit,
    "threads_vs_asyncio": _plot_threads,
    "adaptive": plot_adaptive,  # issue 13, in bench/adaptive.py
    "capacity": plot_capacity,  # issue 12, in bench/capacity.py
}


def write_plots(results: dict, out_dir: str) -> list[str]:
    """One PNG per scenario that ran, in ``out_dir``; returns the file names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for name, scenario in results["scenarios"].items():
        if "error" in scenario:
            continue
        fig = PLOTTERS[name](plt, scenario)
        path = os.path.join(out_dir, PLOT_FILES[name])
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(PLOT_FILES[name])
    return written
