"""Run the chosen scenarios in order, then write ``results.json``, the plots and the tables.

``run_benchmarks(plan, out_dir, scenario_names)`` is what ``scripts/bench.py`` calls. It records
the machine and the load average before and after (the figures mean little without them), runs
each scenario (a scenario that fails, say a contender that crashed, is recorded with its error and
the others still run), evaluates the issue-6 targets, and writes into ``out_dir``:

* ``results.json``: the plan, the machine, every scenario's rows and ideals, the targets; only
  plain JSON (a figure that could not be measured is ``null``, never ``NaN``);
* one PNG per scenario (``plots.PLOT_FILES``);
* ``results.md``: the targets and the tables in markdown, ready for the README.

It returns the results dict; the caller prints the tables and decides the exit status.
``redraw(results_json, out_dir)`` writes the same outputs again from a saved run, without
measuring anything (to restyle a plot, or to rebuild the tables after a report change).
"""

from __future__ import annotations

import datetime
import functools
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable

from paradigm_kit.bench.machine import describe_machine, load_average
from paradigm_kit.bench.measure import BenchRunError
from paradigm_kit.bench.plan import Plan
from paradigm_kit.bench.plots import write_plots
from paradigm_kit.bench.report import evaluate_targets, format_tables, format_targets
from paradigm_kit.bench.scenarios import SCENARIOS
from paradigm_kit.mock import MockStartError

__all__ = ["redraw", "run_benchmarks"]


def _plain_json(value: object) -> object:
    """NaN and infinities become ``null``: strict JSON has no spelling for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _plain_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_json(item) for item in value]
    return value


def run_benchmarks(
    plan: Plan,
    out_dir: str,
    scenario_names: Iterable[str],
    *,
    log: Callable[[str], None] | None = None,
) -> dict:
    log = log or functools.partial(print, flush=True)  # progress shows at once, even piped
    os.makedirs(out_dir, exist_ok=True)
    started = time.monotonic()
    results: dict = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
        "plan": plan.as_dict(),
        "machine": {**describe_machine(), "load_average_start": load_average()},
        "scenarios": {},
    }
    for name in scenario_names:
        log(f"== {name}")
        scenario_started = time.monotonic()
        try:
            scenario = SCENARIOS[name](plan, log)
        except (BenchRunError, MockStartError) as error:
            log(f"   {name} FAILED: {error}")
            scenario = {"title": name, "error": str(error)}
        scenario["duration_s"] = round(time.monotonic() - scenario_started, 1)
        results["scenarios"][name] = scenario
    results["machine"]["load_average_end"] = load_average()
    results["duration_s"] = round(time.monotonic() - started, 1)
    results["targets"] = evaluate_targets(results)
    results = _plain_json(results)
    _write_outputs(results, out_dir)
    return results


def redraw(results_path: str, out_dir: str) -> dict:
    """Plots, tables and targets again from a saved ``results.json`` (no measuring)."""
    with open(results_path, encoding="utf-8") as file:
        results = json.load(file)
    os.makedirs(out_dir, exist_ok=True)
    results["targets"] = _plain_json(evaluate_targets(results))
    _write_outputs(results, out_dir)
    return results


def _write_outputs(results: dict, out_dir: str) -> None:
    results["plots"] = write_plots(results, out_dir)
    with open(os.path.join(out_dir, "results.json"), "w", encoding="utf-8") as file:
        json.dump(results, file, indent=1, allow_nan=False)
    with open(os.path.join(out_dir, "results.md"), "w", encoding="utf-8") as file:
        file.write(format_targets(results["targets"], markdown=True) + "\n\n")
        file.write(format_tables(results, markdown=True) + "\n")
