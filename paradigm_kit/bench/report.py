"""Turning results into text: the issue-6 targets, met or not, and the printed tables.

``evaluate_targets(results)`` checks the five targets issue 6 sets for the runner against the
medians measured, and returns one record per target: what was required, the measured figure, the
spread behind it, and ``met``. A target whose scenario did not run, or ran at another size (the
``quick`` and ``tiny`` modes shrink N), says so in ``note`` rather than pretending.

``format_tables(results)`` renders every scenario as a plain-text table (the same one the README's
"Results" section shows), each figure a median with its spread in brackets where it matters:
``4.12 [4.05-4.31]`` is the median of the repetitions and their min-max.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from paradigm_kit.bench.adaptive import COLUMNS as ADAPTIVE_COLUMNS
from paradigm_kit.bench.capacity import COLUMNS as CAPACITY_COLUMNS

__all__ = ["evaluate_targets", "format_tables", "format_targets", "median_with_range"]


def median_with_range(summary: dict, fmt: str = "{:.3g}") -> str:
    """``"4.12 [4.05-4.31]"``: median, then min-max when there was more than one repetition."""
    if not summary or summary.get("n", 0) == 0 or summary["median"] is None:
        return "-"
    text = fmt.format(summary["median"])
    if summary["n"] > 1:
        text += f" [{fmt.format(summary['min'])}-{fmt.format(summary['max'])}]"
    return text


def _rows_by_label(scenario: dict) -> dict[str, dict]:
    return {row["label"]: row for row in scenario["rows"]}


# --- targets ----------------------------------------------------------------------------------


def _target(name: str, required: str, measured: str, met: bool | None, note: str = "") -> dict:
    return {"target": name, "required": required, "measured": measured, "met": met, "note": note}


def _seed_target(scenario: dict) -> dict:
    row = _rows_by_label(scenario)["async (kit runner)"]
    factor, ideal = row["improvement_factor"], scenario["ideal_factor"]
    fraction = factor["median"] / ideal
    bare = _rows_by_label(scenario)["async (aiohttp + gather)"]["improvement_factor"]["median"]
    return _target(
        "seed: improvement factor >= 97% of the ideal",
        f">= {0.97 * ideal:.2f} (ideal {ideal:.0f})",
        f"{median_with_range(factor, '{:.2f}')} = {fraction:.1%} of ideal",
        fraction >= 0.97,
        f"bare aiohttp + gather: {bare:.2f} = {bare / ideal:.1%}",
    )


def _scaling_target(scenario: dict) -> dict:
    bound = scenario["params"]["concurrency"]
    n = max(scenario["params"]["sizes"])
    rows = {r["label"]: r for r in scenario["rows"] if r["n_requests"] == n}
    row = rows[f"kit runner C={bound}"]
    over = row["time_over_ideal"]["median"]
    bare_over = rows[f"aiohttp C={bound}"]["time_over_ideal"]["median"]
    note = f"bare aiohttp loop at the same N and C: {bare_over:.3f} x ideal"
    if n != 1000:
        note += f"; measured at N={n}, not 1,000 (smaller mode)"
    return _target(
        f"scaling: N={n} at C={bound} within 3% of the ideal time",
        f"<= {1.03 * row['ideal_wall_s']:.3f} s (ideal {row['ideal_wall_s']:.3f} s)",
        f"{median_with_range(row['wall_s'], '{:.3f}')} s = {over:.3f} x ideal",
        over <= 1.03,
        note,
    )


def _cost_target(scenario: dict) -> dict:
    rows = _rows_by_label(scenario)
    runner, bare = rows["kit runner"], rows["bare aiohttp loop"]
    ratio = runner["cpu_ratio_to_bare"]
    return _target(
        "client cost: runner CPU/request within 10% of bare aiohttp",
        "ratio <= 1.10",
        f"{runner['cpu_us_per_request']['median']:.0f} vs {bare['cpu_us_per_request']['median']:.0f}"
        f" us/request, ratio {median_with_range(ratio, '{:.2f}')}",
        ratio["median"] <= 1.10,
    )


def _memory_target(scenario: dict) -> dict:
    runner_rows = sorted(
        (r for r in scenario["rows"] if r["label"] == "kit runner"), key=lambda r: r["n_requests"]
    )
    small, large = runner_rows[0], runner_rows[-1]
    small_mb, large_mb = small["peak_rss_mb"]["median"], large["peak_rss_mb"]["median"]
    growth = large_mb / small_mb
    return _target(
        f"memory: runner peak RSS at {large['n_requests']:,} < 100 MB and within 10% of {small['n_requests']:,}",
        "< 100 MB, growth <= 1.10",
        f"{large_mb:.1f} MB vs {small_mb:.1f} MB, growth {growth:.3f}",
        large_mb < 100 and growth <= 1.10,
        ""
        if large["n_requests"] == 100_000
        else "smaller sizes than the issue's 10k/100k (smaller mode)",
    )


def _rate_targets(scenario: dict) -> list[dict]:
    targets = []
    for row in scenario["rows"]:
        fraction, share_429 = row["steady_fraction_of_limit"], row["server_429_fraction"]
        targets.append(
            _target(
                f"rate limit ({row['label']}): >= 97% of R with < 1% 429s",
                ">= 0.97 R, 429s < 1%",
                f"{median_with_range(fraction, '{:.3f}')} R, 429s {share_429['median']:.2%}"
                f" ({row['server_429']['median']:.0f} of {row['n_requests']})",
                fraction["median"] >= 0.97 and share_429["median"] < 0.01,
            )
        )
    return targets


TARGET_CHECKS: dict[str, Callable[[dict], Any]] = {
    "seed": _seed_target,
    "scaling": _scaling_target,
    "client_cost": _cost_target,
    "memory": _memory_target,
    "rate_limit": _rate_targets,
}


def evaluate_targets(results: dict) -> list[dict]:
    """One record per issue-6 target, from the scenarios that ran."""
    targets: list[dict] = []
    for name, check in TARGET_CHECKS.items():
        scenario = results["scenarios"].get(name)
        if scenario is None or "error" in scenario:
            targets.append(_target(name, "-", "-", None, "scenario not run or failed"))
            continue
        found = check(scenario)
        targets += found if isinstance(found, list) else [found]
    return targets


def format_targets(targets: list[dict], *, markdown: bool = False) -> str:
    """The targets, one line each (plain text), or a markdown table for the README."""
    verdicts = {True: "met", False: "MISSED", None: "n/a"}
    if markdown:
        lines = [
            "| target | needed | measured (median [min-max]) | verdict | note |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {t['target']} | {t['required']} | {t['measured']} | {verdicts[t['met']]} | {t['note']} |"
            for t in targets
        ]
        return "\n".join(lines)
    lines = ["Targets (issue 6)"]
    for target in targets:
        note = f"  ({target['note']})" if target["note"] else ""
        lines.append(
            f"  {verdicts[target['met']].upper():<7}{target['target']}: {target['measured']};"
            f" need {target['required']}{note}"
        )
    return "\n".join(lines)


# --- tables -----------------------------------------------------------------------------------

Column = tuple[str, Callable[[dict], str]]


def _ms(key: str) -> Callable[[dict], str]:
    """A latency column: the summary in seconds shown in milliseconds."""

    def cell(row: dict) -> str:
        in_ms = {k: (v if k == "n" or v is None else v * 1000) for k, v in row[key].items()}
        return median_with_range(in_ms, "{:.1f}")

    return cell


def _fig(key: str, fmt: str = "{:.3g}") -> Callable[[dict], str]:
    return lambda row: median_with_range(row[key], fmt)


LATENCY_COLUMNS: list[Column] = [
    ("p50 ms", _ms("p50_s")),
    ("p90 ms", _ms("p90_s")),
    ("p99 ms", _ms("p99_s")),
]

COLUMNS: dict[str, list[Column]] = {
    "seed": [
        ("contender", lambda r: r["label"]),
        ("wall s", _fig("wall_s", "{:.3f}")),
        ("ideal s", lambda r: f"{r['ideal_wall_s']:.3f}"),
        ("factor (sync / this)", _fig("improvement_factor", "{:.2f}")),
        *LATENCY_COLUMNS,
    ],
    "scaling": [
        ("N", lambda r: str(r["n_requests"])),
        ("contender", lambda r: r["label"]),
        ("wall s", _fig("wall_s", "{:.3f}")),
        ("ideal s", lambda r: f"{r['ideal_wall_s']:.3f}"),
        ("x ideal", _fig("time_over_ideal", "{:.3f}")),
        ("server peak conc.", _fig("server_peak_concurrency", "{:.0f}")),
        ("p90 ms", _ms("p90_s")),
    ],
    "variable_latency": [
        ("contender", lambda r: r["label"]),
        ("wall s", _fig("wall_s", "{:.3f}")),
        ("factor (sync / this)", _fig("improvement_factor", "{:.2f}")),
        *LATENCY_COLUMNS,
    ],
    "client_cost": [
        ("contender", lambda r: r["label"]),
        ("N", lambda r: str(r["n_requests"])),
        ("req/s", _fig("requests_per_s", "{:.0f}")),
        ("x bare req/s", _fig("throughput_ratio_to_bare", "{:.2f}")),
        ("CPU us/req", _fig("cpu_us_per_request", "{:.0f}")),
        ("x bare CPU", _fig("cpu_ratio_to_bare", "{:.2f}")),
        *LATENCY_COLUMNS,
    ],
    "memory": [
        ("contender", lambda r: r["label"]),
        ("N", lambda r: f"{r['n_requests']:,}"),
        ("peak RSS MB", _fig("peak_rss_mb", "{:.1f}")),
        ("wall s", _fig("wall_s", "{:.2f}")),
        ("req/s", _fig("requests_per_s", "{:.0f}")),
    ],
    "rate_limit": [
        ("contender", lambda r: r["label"]),
        ("achieved /min", _fig("achieved_per_min", "{:.0f}")),
        ("steady / R", _fig("steady_fraction_of_limit", "{:.3f}")),
        ("429s", _fig("server_429", "{:.0f}")),
        ("429 share", lambda r: f"{r['server_429_fraction']['median']:.2%}"),
        ("wall s", _fig("wall_s", "{:.2f}")),
    ],
    "threads_vs_asyncio": [
        ("contender", lambda r: r["label"]),
        ("wall s", _fig("wall_s", "{:.3f}")),
        ("ideal s", lambda r: f"{r['ideal_wall_s']:.3f}"),
        ("peak threads", _fig("threads_peak", "{:.0f}")),
        ("peak RSS MB", _fig("peak_rss_mb", "{:.1f}")),
        ("CPU s (run)", _fig("cpu_s", "{:.2f}")),
        ("CPU s (process)", _fig("process_cpu_s", "{:.2f}")),
        ("p90 ms", _ms("p90_s")),
    ],
    "adaptive": ADAPTIVE_COLUMNS,  # issue 13, in bench/adaptive.py
    "capacity": CAPACITY_COLUMNS,  # issue 12, in bench/capacity.py
}


def _table(columns: list[Column], rows: list[dict], markdown: bool) -> str:
    headers = [header for header, _ in columns]
    cells = [[get(row) for _, get in columns] for row in rows]
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(line) + " |" for line in cells]
        return "\n".join(lines)
    widths = [max(len(h), *(len(line[i]) for line in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in cells]
    return "\n".join(lines)


def format_tables(results: dict, *, markdown: bool = False) -> str:
    """Every scenario that ran, as a titled table (plain text, or markdown for the README)."""
    blocks = []
    for name, scenario in results["scenarios"].items():
        title = scenario.get("title", name)
        if "error" in scenario:
            blocks.append(f"{title}\n  FAILED: {scenario['error']}")
            continue
        parts = [f"**{title}**" if markdown else title, _scenario_note(name, scenario)]
        parts.append(_table(COLUMNS[name], scenario["rows"], markdown))
        # markdown needs blank lines between a paragraph and a table; plain text reads better tight
        blocks.append(("\n\n" if markdown else "\n").join(part for part in parts if part))
    return "\n\n".join(blocks)


def _scenario_note(name: str, scenario: dict) -> str:
    if name == "seed":
        return f"ideal factor {scenario['ideal_factor']:.0f}"
    if name == "variable_latency":
        ideal = median_with_range(scenario["ideal_factor"], "{:.2f}")
        return f"ideal factor sum/max from the mock's own latencies: {ideal}"
    if name == "rate_limit":
        params = scenario["params"]
        return f"limit R = {params['rpm']}/min, initial burst {params['burst']:.0f} discounted in 'steady / R'"
    return ""
