"""Scenario "server capacity": the seed's batch against a server that serves only K at a time.

Issue 12 item 4. The seed's comparison (``scripts/speed_test.py``: N greetings at a fixed latency,
one by one with ``requests`` against all at once with ``aiohttp`` + ``gather``) assumes a server
that answers every request in parallel, so its factor tends to N. A real LLM server has a capacity;
this scenario runs the same two contenders, through the bench's harness (a fresh process each,
``scenarios._measure_rounds``), against the mock's two capacity models for each K in ``KS``:

* ``sharing`` (``--capacity K``): processor sharing, n requests in service each run at
  ``min(1, K/n)`` of full speed (continuous batching). N at once take ``N * latency / K`` when
  ``K < N``: the ideal factor is ``min(K, N)``;
* ``fifo`` (``--max-running K``): K in service, the others wait in order. N at once take
  ``ceil(N / K) * latency``: the ideal factor is ``N / ceil(N / K)``;
* ``unlimited``: today's mock (one row, shared by both models): the ideal factor is N.

The sequential contender never has two requests in flight, so its time does not depend on K; it
is measured against every mock anyway, in the same rounds, so each factor is a ratio of two runs
made side by side. Nothing here asserts anything.
"""

from __future__ import annotations

import math
from typing import Any

from paradigm_kit.bench.stats import spread

__all__ = ["COLUMNS", "capacity_scenario", "plot_capacity"]

KS = (1, 2, 5, 10, 20, None)  # None: unlimited
MODELS = {"sharing": "capacity", "fifo": "max_running"}  # model -> the mock's flag

# mode -> (capacities, repetitions); the batch is the seed's (plan.seed_requests, seed_latency_s)
SIZES = {
    "full": (KS, 3),
    "quick": (KS, 1),
    "tiny": ((2, None), 1),  # a few seconds: checks that the scenario works, figures mean nothing
}

SYNC = "sync (requests.Session)"
ASYNC = "async (aiohttp + gather)"


def ideal_factor(model: str, capacity: float | None, n: int) -> float:
    """Sequential time over concurrent time on a perfect server of that model and capacity."""
    if capacity is None:
        return float(n)
    if model == "sharing":
        return float(min(capacity, n))
    return n / math.ceil(n / capacity)


def _points(plan: Any) -> list[tuple[str, float | None]]:
    """``(model, K)`` to measure: each model at each finite K, then one unlimited mock."""
    capacities, _ = SIZES[plan.mode]
    finite = [k for k in capacities if k is not None]
    points = [(model, k) for model in MODELS for k in finite]
    return points + [("unlimited", None)] if None in capacities else points


def capacity_scenario(plan: Any, log: Any) -> dict:
    """The seed's batch, sync vs async, against each capacity model and K."""
    # imported here: scenarios.py imports this module to register the scenario
    from paradigm_kit.bench.scenarios import _measure_on_mock, _ratio_spread, _row

    n, latency_s = plan.seed_requests, plan.seed_latency_s
    _, repetitions = SIZES[plan.mode]
    entries = [
        (SYNC, {"contender": "requests_session", "n_requests": n, "concurrency": 1}),
        (ASYNC, {"contender": "bare_aiohttp", "n_requests": n, "concurrency": None}),
    ]
    entries = [(label, {**spec, "max_tokens": 150}) for label, spec in entries]
    rows = []
    for model, capacity in _points(plan):
        flags = {"latency_s": latency_s}
        if capacity is not None:
            flags[MODELS[model]] = capacity
        log(f" {model} K={'unlimited' if capacity is None else capacity}")
        runs = _measure_on_mock(
            flags,
            entries,
            plan,
            log,
            repetitions=repetitions,
            warmup_requests=plan.latency_warmup_requests,
        )
        factor = _ratio_spread(runs[SYNC], runs[ASYNC], "wall_s")
        ideal = ideal_factor(model, capacity, n)
        for label, _ in entries:
            row = _row(label, runs[label], n, model=model, capacity=capacity)
            if label == ASYNC:
                row["improvement_factor"] = factor
                row["ideal_factor"] = ideal
                row["factor_over_ideal"] = spread(
                    [value / ideal for value in _per_round(runs[SYNC], runs[ASYNC])]
                )
            rows.append(row)
    return {
        "title": f"Server capacity: the seed's {n} requests at {latency_s} s, K in service",
        "params": {
            "n_requests": n,
            "latency_s": latency_s,
            "capacities": ["unlimited" if k is None else k for k in SIZES[plan.mode][0]],
            "models": {**MODELS, "unlimited": None},
            "repetitions": repetitions,
        },
        "rows": rows,
    }


def _per_round(numerators: list[dict], denominators: list[dict]) -> list[float]:
    return [a["wall_s"] / b["wall_s"] for a, b in zip(numerators, denominators, strict=False)]


def _k(row: dict) -> str:
    return "unlimited" if row["capacity"] is None else f"{row['capacity']:g}"


def _median(key: str, fmt: str):
    def cell(row: dict) -> str:
        summary = row.get(key)
        if not summary or summary.get("median") is None:
            return "-"
        if summary.get("n", 1) > 1:
            return f"{fmt.format(summary['median'])} ({fmt.format(summary['min'])}-{fmt.format(summary['max'])})"
        return fmt.format(summary["median"])

    return cell


COLUMNS = [  # one row per (model, K): the async row carries the factor
    ("model", lambda row: row["model"]),
    ("K", _k),
    ("contender", lambda row: row["label"]),
    ("wall s", _median("wall_s", "{:.2f}")),
    ("factor", _median("improvement_factor", "{:.2f}")),
    ("ideal", lambda row: "-" if "ideal_factor" not in row else f"{row['ideal_factor']:.2f}"),
    ("server peak conc.", _median("server_peak_concurrency", "{:.0f}")),
]


def plot_capacity(plt, scenario: dict):
    """Factor against K, per model, with the ideal dashed; unlimited as a horizontal line."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    factor_rows = [row for row in scenario["rows"] if "improvement_factor" in row]
    colors = {"sharing": "#1f77b4", "fifo": "#ff7f0e"}
    for model, color in colors.items():
        rows = sorted((r for r in factor_rows if r["model"] == model), key=lambda r: r["capacity"])
        if not rows:
            continue
        ks = [r["capacity"] for r in rows]
        medians = [r["improvement_factor"]["median"] for r in rows]
        low = [m - r["improvement_factor"]["min"] for m, r in zip(medians, rows, strict=True)]
        high = [r["improvement_factor"]["max"] - m for m, r in zip(medians, rows, strict=True)]
        offset = 0.97 if model == "sharing" else 1.03  # the two models' points side by side
        ax.errorbar(
            [k * offset for k in ks],
            medians,
            yerr=[low, high],
            marker="o",
            capsize=3,
            color=color,
            label=f"measured, {model} ({'--capacity' if model == 'sharing' else '--max-running'} K)",
        )
        ax.plot(
            ks,
            [r["ideal_factor"] for r in rows],
            "--",
            color=color,
            alpha=0.6,
            label=f"ideal, {model}",
        )
    for row in factor_rows:
        if row["model"] == "unlimited":
            ax.axhline(
                row["improvement_factor"]["median"],
                color="#2ca02c",
                linestyle=":",
                label=f"measured, unlimited mock ({row['improvement_factor']['median']:.1f})",
            )
    ax.set_xscale("log")
    ax.set_xlabel("server capacity K (requests in service)")
    ax.set_ylabel("improvement factor (sync wall / async wall)")
    ax.set_title(scenario["title"], fontsize="medium")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig
