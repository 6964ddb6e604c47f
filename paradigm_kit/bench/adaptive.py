"""Scenario "adaptive": ``--concurrency auto`` against fixed concurrencies, on mock profiles.

Issue 13 item 4. For each profile, the kit's runner sends the same batch (varied prompts and
``max_tokens``, so answers have unequal lengths) once with ``concurrency="auto"`` and once per
fixed concurrency in ``FIXED``; each run against a fresh count (``/_mock/reset``). Per run:
throughput (requests/s), p50/p99 latency (the output lines' ``latency_s``), the attempts the mock
answered 429/503, and for ``auto`` how many answers it needed to settle (its limit within +-15% of
its final median from then on) and where it settled. The rows are compared with the best fixed
throughput and with concurrency 1's p50 (an unloaded server, the same answers).

Profiles (``PROFILES``; the capacity ones need the mock's capacity model, issue 12: a profile the
mock refuses is recorded as skipped, not failed):

* ``sharing-8``: processor sharing, ``--capacity 8``;
* ``fifo-8-16``: ``--max-running 8 --max-queue 16`` (503 beyond);
* ``sharing-32-rpm``: ``--capacity 32`` with an ``--rpm`` limit and no rate-limit headers;
* ``unlimited``: today's mock, every request served in parallel;
* and (e), ``capacity_change``: ``auto`` alone on ``--capacity 16``, set to 32 then to 8 through
  ``POST /_mock/config`` while it runs (full and quick modes): throughput in 2 s windows, the
  seconds until it is back within 10% of the new phase's steady rate, and the limit over time.

Runs are in-process (``run_batch`` in this interpreter): the scenario measures the controller's
decisions, not the client's CPU (``client_cost`` does that). Nothing is asserted here.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import threading
import time
import urllib.request
from typing import Any

from paradigm_kit.batch import run_batch
from paradigm_kit.bench.stats import spread
from paradigm_kit.mock import mock_stats, reset_mock, start_mock
from paradigm_kit.mock.launcher import MockStartError
from paradigm_kit.timeline import TimelineRecorder

__all__ = ["COLUMNS", "adaptive_scenario", "plot_adaptive", "settled_at"]

FIXED = (1, 4, 8, 16, 64, 256)

PROFILES: dict[str, dict[str, Any]] = {
    "sharing-8": {"capacity": 8},
    "fifo-8-16": {"max_running": 8, "max_queue": 16},
    "sharing-32-rpm": {"capacity": 32, "rpm": 3000, "rate_limit_headers": False},
    "unlimited": {},
}

CHANGE = {  # (e): capacity 16, doubled to 32 at a third of the run, halved to 8 at two thirds
    "start": 16,
    "steps": (32, 8),
}
# requests, seconds between steps: enough requests that the run outlasts both steps (at about
# 120 req/s at 16, 240 at 32 and 60 at 8 with 0.1 s + 2 ms/token: 2,400 + 4,800 in the first two
# phases of the full run, 30 s at 8 after; 6,000 at 36 s ended before the halving)
CHANGE_SIZES = {"full": (9000, 20.0), "quick": (3000, 10.0)}

# full: a real batch is thousands of requests. auto's fixed cost (four calibration latencies at
# concurrency 1, then about one latency per doubling) is a few dozen answers on capacity 8 and a
# few hundred on the unlimited mock (256 in flight): on the 600-request runs of the first full
# run it was 7% of capacity 8's and most of the unlimited mock's, a figure of the run's length.
# The rpm profile's limit binds at 50 req/s (1,000 requests are 20 s a run).
FULL_REQUESTS = {"sharing-8": 1500, "fifo-8-16": 1500, "sharing-32-rpm": 1000, "unlimited": 25000}

SIZES = {  # mode -> (requests per run, latency_s, per_token_latency_s, profiles, fixed)
    "full": (FULL_REQUESTS, 0.1, 0.002, tuple(PROFILES), FIXED),
    "quick": (240, 0.1, 0.002, tuple(PROFILES), (1, 8, 64)),
    "tiny": (40, 0.02, 0.0, ("unlimited",), (1, 8)),
}
# a fixed concurrency c sends at most FIXED_WINDOWS x c requests: its throughput is steady from
# its second window on (its first and last are 2% of 100), and fixed 1 on 1,500 requests would
# take over three minutes for a figure that 100 give as well
FIXED_WINDOWS = 100


def _requests(n: int) -> list[dict]:
    """The batch: varied prompts and lengths (``max_tokens`` 8-64)."""
    return [
        {
            "id": i,
            "messages": [{"role": "user", "content": f"Describe item {i} of the catalogue."}],
            "max_tokens": 8 + (i * 37) % 57,
        }
        for i in range(n)
    ]


def settled_at(history: list[tuple[int, int, str]], answers: int) -> tuple[int | None, float]:
    """``(answers needed to settle, final median limit)``: the first change point after which the
    limit stays within +-15% of the median limit over the run's second half."""
    if not history:
        return None, 0.0
    weights = []
    for (start, limit, _), nxt in zip(history, [*history[1:], (answers, 0, "")], strict=True):
        span = max(0, min(nxt[0], answers) - max(start, answers // 2))
        weights += [limit] * span
    final = statistics.median(weights) if weights else float(history[-1][1])
    settled = None
    for index, (start, _, _) in enumerate(history):
        if all(abs(limit - final) <= 0.15 * final for _, limit, _ in history[index:]):
            settled = start
            break
    return settled, final


def _one_run(
    base_url: str, requests: list[dict], concurrency: int | str, timeline: list | None = None
) -> dict:
    """One batch through ``run_batch``; ``timeline`` (a list) receives the answers' end times."""
    reset_mock(base_url)
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "out.jsonl")
        recorder = TimelineRecorder()
        t0 = time.monotonic()
        summary = asyncio.run(
            run_batch(
                requests,
                out,
                base_url=base_url,
                api_key="bench-adaptive",
                concurrency=concurrency,
                progress=False,
                max_retries=10,
                timeline=recorder,
            )
        )
        wall_s = time.monotonic() - t0
        ends = sorted(r.t_end for r in recorder.records if r.outcome == "ok")
        if timeline is not None:
            timeline += ends
        with open(out, encoding="utf-8") as handle:
            latencies = sorted(json.loads(line)["latency_s"] for line in handle)
    by_status = mock_stats(base_url)["requests_by_status"]
    attempts = sum(by_status.values())
    shed = by_status.get("429", 0) + by_status.get("503", 0)
    q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else None
    settled, final = settled_at(summary.concurrency_history, summary.succeeded)
    settled_shed = _shed_once_settled(recorder.records, ends, settled)
    return {
        "label": "auto" if concurrency == "auto" else f"fixed {concurrency}",
        "requests": len(requests),
        "succeeded": summary.succeeded,
        "failed_requests": summary.failed,
        "wall_s": spread([round(wall_s, 3)]),  # the bench's row convention: a spread
        "requests_per_s": round(summary.succeeded / wall_s, 3),
        "p50_s": round(q[49], 4) if q else latencies[0],
        "p99_s": round(q[98], 4) if q else latencies[0],
        "attempts": attempts,
        "shed_429_503": shed,
        "shed_fraction": round(shed / attempts, 4) if attempts else 0.0,
        "shed_fraction_settled": settled_shed if concurrency == "auto" else None,
        "settled_after": settled,
        "final_concurrency": final if concurrency == "auto" else concurrency,
        "history": summary.concurrency_history,
    }


def _shed_once_settled(records: list, ends: list[float], settled: int | None) -> float | None:
    """The fraction of attempts answered 429/503 among those sent after auto settled (after the
    ``settled``-th answer; the target is < 0.5%: the ramp's overshoot is allowed its 503s)."""
    if settled is None or not ends:
        return None
    t_settled = ends[min(settled, len(ends)) - 1] if settled else 0.0
    after = [r for r in records if r.t_started >= t_settled]
    shed = sum(1 for r in after if r.status in (429, 503))
    return round(shed / len(after), 4) if after else 0.0


def adaptive_scenario(plan: Any, log: Any) -> dict:
    """Every profile of the plan's size: auto and each fixed concurrency, one run each."""
    sizes, latency_s, per_token_s, profiles, fixed = SIZES[plan.mode]
    rows, skipped = [], {}
    for profile in profiles:
        n = sizes[profile] if isinstance(sizes, dict) else sizes
        requests = _requests(n)
        flags = dict(PROFILES[profile], latency_s=latency_s, per_token_latency_s=per_token_s)
        try:
            mock = start_mock(**flags)
        except MockStartError as error:  # a mock without the capacity model (issue 12)
            skipped[profile] = str(error).strip().splitlines()[-1][:200]
            log(f"adaptive: profile {profile} skipped: {skipped[profile]}")
            continue
        try:
            runs = [_one_run(mock.base_url, requests, "auto")]
            runs += [_one_run(mock.base_url, requests[: FIXED_WINDOWS * c], c) for c in fixed]
        finally:
            mock.stop()
        best = max(run["requests_per_s"] for run in runs[1:])
        unloaded_p50 = next((r["p50_s"] for r in runs if r["label"] == "fixed 1"), None)
        for run in runs:
            run["profile"] = profile
            run["throughput_vs_best_fixed"] = round(run["requests_per_s"] / best, 3)
            if unloaded_p50:
                run["p50_vs_unloaded"] = round(run["p50_s"] / unloaded_p50, 3)
            log(
                f"adaptive {profile:>15} {run['label']:>9}: {run['requests_per_s']:.1f} req/s, "
                f"p50 {run['p50_s']:.3f} s, shed {run['shed_429_503']}"
            )
        rows += runs
    change = (
        _capacity_change(plan, latency_s, per_token_s, log) if plan.mode in CHANGE_SIZES else None
    )
    return {
        "title": "Adaptive concurrency: auto against fixed, per mock profile",
        "capacity_change": change,
        "params": {
            "requests": sizes,
            "fixed_windows": FIXED_WINDOWS,
            "latency_s": latency_s,
            "per_token_latency_s": per_token_s,
        },
        "profiles": {name: PROFILES[name] for name in profiles},
        "skipped": skipped,
        "rows": rows,
    }


def _cell(key: str, fmt: str = "{:.3g}"):
    return lambda row: "-" if row.get(key) is None else fmt.format(row[key])


COLUMNS = [
    ("profile", lambda row: row["profile"]),
    ("contender", lambda row: row["label"]),
    ("req/s", _cell("requests_per_s", "{:.1f}")),
    ("vs best fixed", _cell("throughput_vs_best_fixed", "{:.2f}")),
    ("p50 s", _cell("p50_s", "{:.3f}")),
    ("p99 s", _cell("p99_s", "{:.3f}")),
    ("p50 / unloaded", _cell("p50_vs_unloaded", "{:.2f}")),
    ("429+503", _cell("shed_429_503", "{}")),
    ("429+503 settled", _cell("shed_fraction_settled", "{:.2%}")),
    ("settled after", _cell("settled_after", "{}")),
    ("final conc.", _cell("final_concurrency", "{:.0f}")),
]


def plot_adaptive(plt, scenario: dict):
    """Throughput of auto and the fixed levels per profile; auto's limit over answers seen."""
    profiles = list(dict.fromkeys(row["profile"] for row in scenario["rows"])) or ["none"]
    fig, axes = plt.subplots(2, len(profiles), figsize=(4.5 * len(profiles), 7), squeeze=False)
    for column, profile in enumerate(profiles):
        rows = [row for row in scenario["rows"] if row["profile"] == profile]
        top, bottom = axes[0][column], axes[1][column]
        top.bar(
            [row["label"] for row in rows],
            [row["requests_per_s"] for row in rows],
            color=["#d62728" if row["label"] == "auto" else "#1f77b4" for row in rows],
        )
        top.set_title(profile)
        top.set_ylabel("requests/s")
        top.tick_params(axis="x", labelsize="small", rotation=45)
        for row in rows:
            if row["label"] == "auto" and row["history"]:
                xs = [step[0] for step in row["history"]] + [row["succeeded"]]
                ys = [step[1] for step in row["history"]] + [row["history"][-1][1]]
                bottom.step(xs, ys, where="post", color="#d62728")
        bottom.set_xlabel("answers seen")
        bottom.set_ylabel("auto: concurrency limit")
    change = scenario.get("capacity_change") or {}
    if change.get("limit_over_time"):
        extra = fig.add_axes((1.02, 0.1, 0.3, 0.8))
        times = [t for t, _ in change["limit_over_time"]]
        extra.step(times, [limit for _, limit in change["limit_over_time"]], where="post")
        for t_change in change["changes_at_s"]:
            extra.axvline(t_change, color="grey", linestyle=":")
        extra.set_title(f"capacity {' -> '.join(map(str, change['capacities']))}")
        extra.set_xlabel("seconds")
        extra.set_ylabel("auto: concurrency limit")
    fig.suptitle(scenario["title"])
    fig.tight_layout()
    return fig


def _set_capacity(base_url: str, capacity: float) -> None:
    """``POST /_mock/config {"capacity": K}`` (the mock's capacity model, issue 12/13)."""
    root = base_url.rsplit("/api/", 1)[0]
    request = urllib.request.Request(
        root + "/_mock/config",
        data=json.dumps({"capacity": capacity}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as response:
        response.read()


def _capacity_change(plan: Any, latency_s: float, per_token_s: float, log: Any) -> dict | None:
    """(e): auto on a sharing server whose capacity doubles, then halves, mid-run. Throughput in
    2 s windows; recovery = seconds from a change until a window reaches 90% of that phase's
    steady throughput (the median of its last half)."""
    n, step_s = CHANGE_SIZES[plan.mode]
    flags = {
        "capacity": CHANGE["start"],
        "latency_s": latency_s,
        "per_token_latency_s": per_token_s,
    }
    try:
        mock = start_mock(**flags)
    except MockStartError as error:
        log(f"adaptive: capacity change skipped: {str(error).strip().splitlines()[-1][:200]}")
        return {"skipped": str(error).strip().splitlines()[-1][:200]}
    ends: list[float] = []
    changes: list[float] = []
    try:
        finished = threading.Event()  # a run that ends early makes no change after its end

        def steps() -> None:
            for index, capacity in enumerate(CHANGE["steps"], start=1):
                if finished.wait(step_s):
                    return
                _set_capacity(mock.base_url, capacity)
                changes.append(index * step_s)

        reset_mock(mock.base_url)
        _set_capacity(mock.base_url, CHANGE["start"])
        timer = threading.Thread(target=steps, daemon=True)
        timer.start()
        run = _one_run(mock.base_url, _requests(n), "auto", timeline=ends)
        finished.set()
        timer.join(timeout=10)
    except OSError as error:  # no POST /_mock/config in this mock
        log(f"adaptive: capacity change skipped: {error}")
        return {"skipped": str(error)}
    finally:
        mock.stop()
    window_s = 2.0
    horizon = int(max(ends) // window_s) + 1 if ends else 0
    rates = [0.0] * horizon
    for t_end in ends:
        rates[int(t_end // window_s)] += 1 / window_s
    bounds = [0.0, *changes, horizon * window_s]
    recovery = []
    for start, stop in zip(bounds[1:-1], bounds[2:], strict=False):
        phase = rates[int(start // window_s) : int(stop // window_s)]
        steady = statistics.median(phase[len(phase) // 2 :]) if phase else 0.0
        hit = next((i for i, rate in enumerate(phase) if rate >= 0.9 * steady), None)
        recovery.append(None if hit is None else round((hit + 1) * window_s, 1))
    # auto's limit over time: the k-th answer's end time for each change of the limit
    limit_over_time = [
        (round(ends[min(seen, len(ends) - 1)], 2) if ends else 0.0, limit)
        for seen, limit, _ in run["history"]
    ]
    log(f"adaptive: capacity change, recovery {recovery} s")
    return {
        "capacities": [CHANGE["start"], *CHANGE["steps"]],
        "changes_at_s": changes,
        "window_s": window_s,
        "requests_per_s_by_window": [round(rate, 2) for rate in rates],
        "recovery_s": recovery,
        "limit_over_time": limit_over_time,
        "run": {key: value for key, value in run.items() if key != "history"},
    }
