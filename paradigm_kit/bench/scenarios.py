"""The scenarios of issue 6, each a function ``plan -> result dict`` against its own mock.

Every scenario follows the same protocol, so the figures of one are comparable with another's:

1. start the bundled mock with the scenario's flags (``running_mock``: a subprocess on a free
   loopback port, stopped at the end);
2. ``repetitions`` rounds; in each round every contender runs once, and the order rotates from
   round to round (A B C, B C A, C A B...), so a slow patch of the shared machine does not always
   land on the same contender; each run is a fresh process with its own warm-up
   (``measure.run_contender``);
3. after each run, the mock's own view of that run (statuses, peak concurrency, per-request
   server latencies when needed) is read from ``/_mock/stats`` and ``/_mock/log`` filtered by the
   run's key;
4. the rows: per contender (and size), the median of each figure over the rounds with its spread,
   beside the ideal the scenario defines.

The ideals, stated once:

* seed and scaling: ``ceil(N / C) * latency`` for a bound ``C`` (``latency`` when unbounded),
  ``N * latency`` sequentially, so the ideal factor for N requests at once is N;
* variable latency: sequential time is the sum of the requests' latencies, concurrent time the
  largest one, so the ideal factor is ``sum / max``, computed from the latencies the mock itself
  logged for that run (not from its settings);
* rate limit: ``R`` per minute; a run of N requests also gets the bucket's initial burst
  (``max(1, R / 60)``), which the steady rate discounts: ``(N - burst) / wall``.

Nothing here asserts anything: a scenario measures and records; ``report`` compares with the
targets and says which are met.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from paradigm_kit.bench.adaptive import adaptive_scenario
from paradigm_kit.bench.capacity import capacity_scenario
from paradigm_kit.bench.measure import new_run_keys, run_contender
from paradigm_kit.bench.plan import Plan
from paradigm_kit.bench.stats import spread
from paradigm_kit.mock import mock_log, mock_stats, running_mock
from paradigm_kit.mock.stats import key_hash

__all__ = ["SCENARIOS"]

Log = Callable[[str], None]
RUN_TIMEOUT_S = 900.0


def _measure_on_mock(
    mock_settings: dict[str, Any], entries: list[tuple[str, dict]], plan: Plan, log: Log, **options
) -> dict[str, list[dict]]:
    """``_measure_rounds`` against a mock of its own, started with ``mock_settings``."""
    with running_mock(**mock_settings) as base_url:
        return _measure_rounds(base_url, entries, plan, log, **options)


def _measure_rounds(
    base_url: str,
    entries: list[tuple[str, dict]],
    plan: Plan,
    log: Log,
    *,
    repetitions: int | None = None,
    warmup_requests: int | None = None,
    server_latencies: bool = False,
) -> dict[str, list[dict]]:
    """Run every ``(label, spec)`` once per round, rotating the order; return runs by label.

    ``warmup_requests`` defaults to the plan's zero-latency warm-up; scenarios with a latency
    pass ``plan.latency_warmup_requests``."""
    repetitions = repetitions or plan.repetitions
    if warmup_requests is None:
        warmup_requests = plan.warmup_requests
    runs: dict[str, list[dict]] = {label: [] for label, _ in entries}
    for round_index in range(repetitions):
        shift = round_index % len(entries)
        for label, spec in entries[shift:] + entries[:shift]:
            keys = new_run_keys()
            full_spec = {
                "base_url": base_url,
                "warmup_requests": min(warmup_requests, spec["n_requests"]),
                "max_tokens": 20,
                **spec,
            }
            result = run_contender(full_spec, keys, timeout_s=RUN_TIMEOUT_S)
            result["server"] = _server_view(base_url, keys.api_key, server_latencies)
            runs[label].append(result)
            log(
                f"  round {round_index + 1}/{repetitions} {label:<28} "
                f"{result['wall_s']:8.3f} s wall, {result['cpu_s']:7.3f} s CPU"
            )
    return runs


def _server_view(base_url: str, api_key: str, with_latencies: bool) -> dict:
    """The mock's own figures for the run made with ``api_key``."""
    run_id = key_hash(api_key)  # the mock files a run without X-Run-Id under its key's hash
    stats = mock_stats(base_url, run=run_id)
    view = {
        "requests_by_status": stats.get("requests_by_status", {}),
        "peak_concurrency": stats.get("peak_concurrency"),
    }
    if with_latencies:
        view["latencies_s"] = [
            record["t_end"] - record["t_start"]
            for record in mock_log(base_url, run=run_id)
            if record.get("status") == 200
        ]
    return view


def _row(label: str, runs: list[dict], n_requests: int, **extra: Any) -> dict:
    """Median and spread of every figure of one contender's runs."""

    def over_runs(get: Callable[[dict], float]) -> dict:
        return spread([get(run) for run in runs])

    failed = sum(
        count for run in runs for status, count in run["statuses"].items() if status != "200"
    )
    server_statuses: dict[str, int] = {}
    for run in runs:
        for status, count in run["server"]["requests_by_status"].items():
            server_statuses[status] = server_statuses.get(status, 0) + count
    return {
        "label": label,
        "n_requests": n_requests,
        "repetitions": len(runs),
        "wall_s": over_runs(lambda run: run["wall_s"]),
        "requests_per_s": over_runs(lambda run: n_requests / run["wall_s"]),
        "cpu_us_per_request": over_runs(lambda run: run["cpu_s"] / n_requests * 1e6),
        "cpu_s": over_runs(lambda run: run["cpu_s"]),
        "process_cpu_s": over_runs(lambda run: run["process_cpu_s"]),
        "peak_rss_mb": over_runs(lambda run: run["peak_rss_mb"]),
        "threads_peak": over_runs(lambda run: run["threads_peak"]),
        "p50_s": over_runs(lambda run: run["latency"]["p50_s"]),
        "p90_s": over_runs(lambda run: run["latency"]["p90_s"]),
        "p99_s": over_runs(lambda run: run["latency"]["p99_s"]),
        "server_peak_concurrency": over_runs(
            lambda run: run["server"]["peak_concurrency"] or math.nan
        ),
        "failed_requests": failed,
        "server_requests_by_status": server_statuses,
        **extra,
    }


def _ratio_spread(numerators: list[dict], denominators: list[dict], key: str) -> dict:
    """Per-round ratios of two contenders' figures (they ran in the same round), summarised."""
    return spread([a[key] / b[key] for a, b in zip(numerators, denominators, strict=False)])


# --- the scenarios ----------------------------------------------------------------------------


def seed_scenario(plan: Plan, log: Log) -> dict:
    """The seed's comparison: N greetings at a fixed latency, one by one vs all at once."""
    n, latency_s = plan.seed_requests, plan.seed_latency_s
    entries = [
        (
            "sync (requests.Session)",
            {"contender": "requests_session", "n_requests": n, "concurrency": 1, "max_tokens": 150},
        ),
        (
            "async (aiohttp + gather)",
            {"contender": "bare_aiohttp", "n_requests": n, "concurrency": None, "max_tokens": 150},
        ),
        (
            "async (kit runner)",
            {"contender": "runner", "n_requests": n, "concurrency": n, "max_tokens": 150},
        ),
    ]
    runs = _measure_on_mock(
        {"latency_s": latency_s}, entries, plan, log, warmup_requests=plan.latency_warmup_requests
    )
    sync_runs = runs["sync (requests.Session)"]
    rows = []
    for label, _ in entries:
        factor = _ratio_spread(sync_runs, runs[label], "wall_s")
        ideal_wall_s = n * latency_s if label.startswith("sync") else latency_s
        rows.append(
            _row(label, runs[label], n, improvement_factor=factor, ideal_wall_s=ideal_wall_s)
        )
    return {
        "title": f"Seed: {n} requests at {latency_s} s, sync vs async",
        "params": {"n_requests": n, "latency_s": latency_s},
        "ideal_factor": float(n),
        "rows": rows,
    }


def scaling_scenario(plan: Plan, log: Log) -> dict:
    """Wall time against N at a bound C and unbounded, beside ``ceil(N / C) * latency``."""
    latency_s, bound = plan.scaling_latency_s, plan.scaling_concurrency
    rows = []
    with running_mock(latency_s=latency_s) as base_url:
        for n in plan.scaling_sizes:
            entries = [
                (f"aiohttp C={bound}", {"contender": "bare_aiohttp", "concurrency": bound}),
                ("aiohttp unbounded", {"contender": "bare_aiohttp", "concurrency": None}),
                (f"kit runner C={bound}", {"contender": "runner", "concurrency": bound}),
            ]
            if n in plan.scaling_sync_sizes:
                entries.append(
                    ("sync (requests.Session)", {"contender": "requests_session", "concurrency": 1})
                )
            log(f" N={n}")
            entries = [(label, {**spec, "n_requests": n}) for label, spec in entries]
            runs = _measure_rounds(
                base_url,
                entries,
                plan,
                log,
                repetitions=plan.scaling_repetitions,
                warmup_requests=plan.latency_warmup_requests,
            )
            for label, spec in entries:
                concurrency = spec["concurrency"] or n
                ideal_wall_s = math.ceil(n / concurrency) * latency_s
                row = _row(
                    label,
                    runs[label],
                    n,
                    ideal_wall_s=ideal_wall_s,
                    concurrency=spec["concurrency"],
                )
                row["time_over_ideal"] = _ratio_to(runs[label], "wall_s", ideal_wall_s)
                rows.append(row)
    return {
        "title": f"Scaling: wall time vs N at {latency_s} s latency, C={bound} and unbounded",
        "params": {"latency_s": latency_s, "concurrency": bound, "sizes": list(plan.scaling_sizes)},
        "rows": rows,
    }


def _ratio_to(runs: list[dict], key: str, reference: float) -> dict:
    return spread([run[key] / reference for run in runs])


def variable_latency_scenario(plan: Plan, log: Log) -> dict:
    """Requests of different lengths (per-token latency): factor vs ``sum / max``."""
    n = plan.variable_requests
    max_tokens = [2 + (i * 7) % 17 for i in range(n)]  # 2..18 words, a spread of lengths
    common = {"n_requests": n, "max_tokens": max_tokens}
    entries = [
        ("sync (requests.Session)", {"contender": "requests_session", "concurrency": 1, **common}),
        ("async (aiohttp + gather)", {"contender": "bare_aiohttp", "concurrency": None, **common}),
        ("async (kit runner)", {"contender": "runner", "concurrency": n, **common}),
    ]
    flags = {
        "latency_s": plan.variable_latency_s,
        "per_token_latency_s": plan.variable_per_token_latency_s,
    }
    runs = _measure_on_mock(
        flags,
        entries,
        plan,
        log,
        server_latencies=True,
        warmup_requests=plan.latency_warmup_requests,
    )
    sync_runs = runs["sync (requests.Session)"]
    ideal_factors = []
    for run in sync_runs:
        latencies_s = run["server"]["latencies_s"]
        ideal_factors.append(sum(latencies_s) / max(latencies_s))
    rows = [
        _row(
            label,
            runs[label],
            n,
            improvement_factor=_ratio_spread(sync_runs, runs[label], "wall_s"),
        )
        for label, _ in entries
    ]
    for run_list in runs.values():  # the per-request latencies served their purpose: keep it small
        for run in run_list:
            latencies_s = run["server"].pop("latencies_s")
            run["server"]["latency_sum_s"] = sum(latencies_s)
            run["server"]["latency_max_s"] = max(latencies_s)
    return {
        "title": f"Variable latency: {n} requests, max_tokens 2-18, factor vs sum/max",
        "params": {**flags, "n_requests": n, "max_tokens": max_tokens},
        "ideal_factor": spread(ideal_factors),
        "server_latency_sum_s": spread([r["server"]["latency_sum_s"] for r in sync_runs]),
        "server_latency_max_s": spread([r["server"]["latency_max_s"] for r in sync_runs]),
        "rows": rows,
    }


# label, contender, concurrent?, fast? (the slow ones send plan.cost_slow_requests)
CLIENT_COST_CONTENDERS = (
    ("bare aiohttp loop", "bare_aiohttp", True, True),
    ("kit runner", "runner", True, True),
    ("openai.AsyncOpenAI", "openai_async", True, False),
    ("httpx.AsyncClient", "httpx_async", True, False),
    ("ThreadPoolExecutor + requests", "threads", True, False),
    ("requests, one Session, sequential", "requests_session", False, False),
    ("requests.post, sequential", "requests_plain", False, False),
)


def client_cost_scenario(plan: Plan, log: Log) -> dict:
    """Zero latency: what each client costs per request (req/s, CPU), ratios to bare aiohttp."""
    entries = []
    for label, contender, concurrent, fast in CLIENT_COST_CONTENDERS:
        n = plan.cost_requests if fast else plan.cost_slow_requests
        bound = plan.cost_concurrency if concurrent else 1
        entries.append((label, {"contender": contender, "n_requests": n, "concurrency": bound}))
    runs = _measure_on_mock({"latency_s": 0}, entries, plan, log)
    bare = runs["bare aiohttp loop"]
    rows = []
    for label, spec in entries:
        n = spec["n_requests"]
        row = _row(label, runs[label], n, concurrency=spec["concurrency"])
        per_request = [{"cpu": r["cpu_s"] / n, "rate": n / r["wall_s"]} for r in runs[label]]
        bare_per_request = [
            {"cpu": r["cpu_s"] / plan.cost_requests, "rate": plan.cost_requests / r["wall_s"]}
            for r in bare
        ]
        row["cpu_ratio_to_bare"] = _ratio_spread(per_request, bare_per_request, "cpu")
        row["throughput_ratio_to_bare"] = _ratio_spread(per_request, bare_per_request, "rate")
        rows.append(row)
    return {
        "title": "Client cost at zero latency: requests/s and CPU per request",
        "params": {
            "n_requests": plan.cost_requests,
            "n_slow_client_requests": plan.cost_slow_requests,
            "concurrency": plan.cost_concurrency,
            "latency_s": 0,
        },
        "rows": rows,
    }


def memory_scenario(plan: Plan, log: Log) -> dict:
    """Peak RSS of the runner against a naive gather, at each size."""
    rows = []
    with running_mock(latency_s=0) as base_url:
        for n in plan.memory_sizes:
            log(f" N={n}")
            entries = [
                ("kit runner", {"contender": "runner", "n_requests": n, "concurrency": 100}),
                (
                    "naive gather",
                    {"contender": "naive_gather", "n_requests": n, "concurrency": 100},
                ),
            ]
            runs = _measure_rounds(
                base_url, entries, plan, log, repetitions=plan.memory_repetitions
            )
            rows += [_row(label, runs[label], n, concurrency=100) for label, _ in entries]
    return {
        "title": "Memory: peak RSS of the whole process vs number of requests",
        "params": {"sizes": list(plan.memory_sizes), "concurrency": 100, "latency_s": 0},
        "rows": rows,
    }


def rate_limit_scenario(plan: Plan, log: Log) -> dict:
    """The mock limited to R/min per key: achieved rate / R and 429s, told vs learned."""
    rpm, n = plan.rate_rpm, plan.rate_requests
    burst = max(1.0, rpm / 60)
    entries = [
        (
            "runner told R",
            {
                "contender": "runner",
                "n_requests": n,
                "concurrency": 100,
                "runner_options": {"max_requests_per_minute": rpm},
            },
        ),
        (
            "runner learning from headers",
            {"contender": "runner", "n_requests": n, "concurrency": 100},
        ),
    ]
    runs = _measure_on_mock(
        {"latency_s": 0, "rpm": rpm},
        entries,
        plan,
        log,
        repetitions=plan.rate_repetitions,
        warmup_requests=plan.latency_warmup_requests,
    )
    rows = []
    for label, _ in entries:
        row = _row(label, runs[label], n)
        row["achieved_per_min"] = spread([n / r["wall_s"] * 60 for r in runs[label]])
        row["steady_fraction_of_limit"] = spread(
            [(n - burst) / r["wall_s"] * 60 / rpm for r in runs[label]]
        )
        row["server_429"] = spread(
            [r["server"]["requests_by_status"].get("429", 0) for r in runs[label]]
        )
        row["server_429_fraction"] = spread(
            [_fraction_429(r["server"]["requests_by_status"]) for r in runs[label]]
        )
        rows.append(row)
    return {
        "title": f"Rate limit: mock at {rpm} requests/min per key, {n} requests",
        "params": {"rpm": rpm, "n_requests": n, "burst": burst, "concurrency": 100},
        "rows": rows,
    }


def _fraction_429(requests_by_status: dict[str, int]) -> float:
    total = sum(requests_by_status.values())
    return requests_by_status.get("429", 0) / total if total else math.nan


def threads_scenario(plan: Plan, log: Log) -> dict:
    """Threads vs asyncio at one bound: wall, peak threads, peak RSS, CPU."""
    n, bound, latency_s = plan.threads_requests, plan.threads_concurrency, plan.threads_latency_s
    entries = [
        (f"ThreadPoolExecutor({bound}) + requests", {"contender": "threads"}),
        (f"asyncio: aiohttp + Semaphore({bound})", {"contender": "bare_aiohttp"}),
        (f"asyncio: kit runner C={bound}", {"contender": "runner"}),
    ]
    entries = [(label, {**spec, "n_requests": n, "concurrency": bound}) for label, spec in entries]
    runs = _measure_on_mock(
        {"latency_s": latency_s},
        entries,
        plan,
        log,
        repetitions=plan.threads_repetitions,
        warmup_requests=plan.latency_warmup_requests,
    )
    ideal_wall_s = math.ceil(n / bound) * latency_s
    return {
        "title": f"Threads vs asyncio: {n} requests, {bound} in flight, {latency_s} s latency",
        "params": {"n_requests": n, "concurrency": bound, "latency_s": latency_s},
        "ideal_wall_s": ideal_wall_s,
        "rows": [_row(label, runs[label], n, ideal_wall_s=ideal_wall_s) for label, _ in entries],
    }


SCENARIOS: dict[str, Callable[[Plan, Log], dict]] = {
    "seed": seed_scenario,
    "scaling": scaling_scenario,
    "variable_latency": variable_latency_scenario,
    "client_cost": client_cost_scenario,
    "memory": memory_scenario,
    "rate_limit": rate_limit_scenario,
    "threads_vs_asyncio": threads_scenario,
    "adaptive": adaptive_scenario,  # issue 13, in bench/adaptive.py
    "capacity": capacity_scenario,  # issue 12, in bench/capacity.py
}
