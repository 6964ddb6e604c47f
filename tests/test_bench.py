"""The benchmark works: it runs, writes well-formed results and its plots (timings never asserted)."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from paradigm_kit.bench.measure import new_run_keys, run_contender
from paradigm_kit.bench.plots import PLOT_FILES
from paradigm_kit.bench.scenarios import SCENARIOS
from paradigm_kit.bench.stats import latency_percentiles, spread
from paradigm_kit.mock import running_mock

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "scripts" / "bench.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    out_dir = tmp_path_factory.mktemp("bench")
    completed = subprocess.run(
        [sys.executable, "-W", "error", str(BENCH), "--tiny", "--out", str(out_dir)],
        cwd=tmp_path_factory.getbasetemp(),  # not the repository: nothing tracked can be touched
        capture_output=True,
        text=True,
        timeout=240,
    )
    return completed, out_dir


def test_bench_tiny_run_exits_zero_and_prints_tables(tiny_run):
    """`bench.py --tiny -W error` runs every scenario and prints the tables and the targets."""
    completed, _ = tiny_run
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "Targets (issue 6)" in completed.stdout
    for scenario in SCENARIOS:
        assert f"== {scenario}" in completed.stdout


def test_bench_results_json_is_well_formed(tiny_run):
    """results.json is strict JSON with the machine, the plan, every scenario's rows and targets."""
    _, out_dir = tiny_run
    text = (out_dir / "results.json").read_text(encoding="utf-8")
    results = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in results.json"))
    assert results["plan"]["mode"] == "tiny"
    assert results["machine"]["cpu_count"] >= 1
    assert results["machine"]["packages"]["aiohttp"]
    assert set(results["scenarios"]) == set(SCENARIOS)
    for name, scenario in results["scenarios"].items():
        assert "error" not in scenario, name
        assert scenario["rows"], name
        for row in scenario["rows"]:
            wall = row["wall_s"]
            assert wall["min"] <= wall["median"] <= wall["max"], (name, row["label"])
            assert row["failed_requests"] == 0 or name == "rate_limit", (name, row["label"])
    assert {target["met"] for target in results["targets"]} <= {True, False}


def test_bench_writes_one_png_per_scenario(tiny_run):
    """Every scenario has its PNG in --out, listed in results.json."""
    _, out_dir = tiny_run
    results = json.loads((out_dir / "results.json").read_text(encoding="utf-8"))
    assert sorted(results["plots"]) == sorted(PLOT_FILES.values())
    for name in PLOT_FILES.values():
        assert (out_dir / name).read_bytes()[:8] == PNG_MAGIC, name


def test_bench_redraw_rebuilds_outputs_without_measuring(tiny_run, tmp_path):
    """--redraw writes the plots, results.md and the same figures again from a saved run."""
    _, out_dir = tiny_run
    completed = subprocess.run(
        [sys.executable, "-W", "error", str(BENCH), "--redraw", str(out_dir / "results.json"),
         "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "== seed" not in completed.stdout  # nothing was measured
    saved = json.loads((out_dir / "results.json").read_text(encoding="utf-8"))
    redrawn = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert redrawn["scenarios"] == saved["scenarios"]
    assert redrawn["targets"] == saved["targets"]
    for name in PLOT_FILES.values():
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC, name
    assert "| target |" in (tmp_path / "results.md").read_text(encoding="utf-8")


def test_bench_unknown_scenario_is_a_usage_error(tmp_path):
    """An unknown --scenarios name stops at once with argparse's usage error (exit 2)."""
    completed = subprocess.run(
        [sys.executable, str(BENCH), "--scenarios", "seed,nope", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 2
    assert "nope" in completed.stderr
    assert not (tmp_path / "results.json").exists()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="VmHWM is Linux's")
def test_bench_child_peak_rss_ignores_the_parents_memory():
    """A contender's peak RSS is its own, however large the process that started it."""
    ballast = bytearray(150 * 1024 * 1024)
    ballast[::4096] = b"\x01" * len(ballast[::4096])  # touch every page: it is resident
    spec = {
        "contender": "bare_aiohttp",
        "n_requests": 2,
        "concurrency": 2,
        "warmup_requests": 0,
        "max_tokens": 5,
    }
    with running_mock(latency_s=0) as base_url:
        result = run_contender({**spec, "base_url": base_url}, new_run_keys(), timeout_s=60)
    assert result["peak_rss_mb"] < 150
    assert result["statuses"] == {"200": 2}
    del ballast


@pytest.mark.parametrize(
    "values",
    [
        pytest.param([3.0], id="one-value"),
        pytest.param([5.0, 1.0, 4.0], id="odd"),
        pytest.param([2.0, 9.0, 1.0, 7.0], id="even"),
    ],
)
def test_stats_latency_p50_is_the_median_and_max_the_largest(values):
    """p50 is the median, max the largest value, p99 between the two largest (interpolated)."""
    figures = latency_percentiles(values)
    assert figures["p50_s"] == pytest.approx(statistics.median(values))
    assert figures["max_s"] == max(values)
    assert sorted(values)[-min(2, len(values))] <= figures["p99_s"] <= max(values)


def test_stats_percentiles_of_one_or_no_value():
    """One latency is every percentile; none gives NaN, not an error."""
    assert set(latency_percentiles([0.25]).values()) == {0.25}
    assert all(math.isnan(v) for v in latency_percentiles([]).values())


def test_stats_spread_quartiles_interpolate_linearly():
    """Four or more repetitions add q1 and q3, linearly interpolated (numpy's default)."""
    summary = spread([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (summary["q1"], summary["median"], summary["q3"]) == (2.0, 3.0, 4.0)
    assert spread([1.0, 2.0, 3.0, 4.0])["q1"] == pytest.approx(1.75)


def test_stats_spread_ignores_unmeasured_values():
    """A NaN (a figure that could not be measured) is left out, not averaged in."""
    summary = spread([1.0, math.nan, 3.0])
    assert summary["n"] == 2
    assert summary["median"] == pytest.approx(statistics.median([1.0, 3.0]))
    assert (summary["min"], summary["max"]) == (1.0, 3.0)


def test_bench_capacity_scenario_covers_each_model_and_k(tiny_run):
    """The "server capacity" scenario (issue 12): a sync and an async row per (model, K), the
    async one carrying the measured factor beside its ideal (the figures are not checked)."""
    _, out_dir = tiny_run
    results = json.loads((out_dir / "results.json").read_text(encoding="utf-8"))
    rows = results["scenarios"]["capacity"]["rows"]
    points = {(row["model"], row["capacity"]) for row in rows}
    assert points == {("sharing", 2), ("fifo", 2), ("unlimited", None)}
    for row in rows:
        assert row["failed_requests"] == 0, row["label"]
        if row["label"].startswith("async"):
            assert row["improvement_factor"]["median"] > 0
            assert row["ideal_factor"] == (4.0 if row["capacity"] is None else 2.0)
        else:
            assert "improvement_factor" not in row
    assert "capacity.png" in results["plots"]


@pytest.mark.parametrize(
    ("model", "capacity", "n", "expected"),
    [
        ("sharing", 5, 20, 5.0),  # N * latency / K
        ("sharing", 50, 20, 20.0),  # more capacity than requests: all at once
        ("fifo", 5, 20, 5.0),  # ceil(20 / 5) = 4 waves
        ("fifo", 3, 20, 20 / 7),  # 7 waves, the last one partial
        ("fifo", None, 20, 20.0),  # unlimited
    ],
)
def test_bench_capacity_ideal_factor(model, capacity, n, expected):
    """The ideal factor of each capacity model: processor sharing min(K, N), FIFO N / ceil(N/K)."""
    from paradigm_kit.bench.capacity import ideal_factor

    assert ideal_factor(model, capacity, n) == pytest.approx(expected)
