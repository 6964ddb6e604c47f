"""Measure what a client costs to run: threads + requests against asyncio + aiohttp.

The measurement behind notebook 02's threads section and the benchmarks' client-cost scenario.

``measure_client(client, base_url, n_requests, max_in_flight)`` sends ``n_requests`` of the seed's
greetings to a *local* mock, at most ``max_in_flight`` at once, with ``"threads"`` (a
``ThreadPoolExecutor`` of ``max_in_flight`` workers, one ``requests.Session`` per worker thread:
the ``threads`` contender) or ``"asyncio"`` (one ``aiohttp.ClientSession`` and a ``Semaphore``:
the ``bare_aiohttp`` contender), and returns what it cost.

It is the benchmarks' own harness (``measure.run_contender``), not a second one: the client runs
in a fresh ``sys.executable`` process, since CPU time and memory are process-wide; one request
warms it up (imports done, one thread and one connection opened), then the timed run. The
figures, under the names notebook 02 prints:

* ``ok`` (answers with status 200), ``wall_s``, ``cpu_s`` (the timed run's, every thread);
* ``peak_threads``: threads alive at the end of the run, the pool's peak (pools never shrink);
* ``peak_rss_mib``: the process's peak resident memory (``child.peak_rss_mb``, the one way the
  kit reads memory), and ``rss_growth_mib``: how much that peak rose during the timed run.

The base URL must be on the loopback interface: a thousand-request measurement never goes to the
paid API by mistake. ``python -m paradigm_kit.bench.client_cost CLIENT --base-url URL`` prints
the figures as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from typing import Any

from .measure import new_run_keys, run_contender

__all__ = ["CLIENTS", "measure_client", "measure_in_subprocess"]

#: The client a notebook names -> the benchmark contender that is that client.
CLIENTS = {"threads": "threads", "asyncio": "bare_aiohttp"}
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_TOKENS = 150  # the seed's


def _require_loopback(base_url: str) -> None:
    host = urllib.parse.urlsplit(base_url).hostname
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"measure_client only talks to a local mock, not to {host!r}")


def measure_client(
    client: str, base_url: str, n_requests: int, max_in_flight: int, timeout_s: float = 120.0
) -> dict[str, Any]:
    """Send ``n_requests`` with ``client`` ("threads" or "asyncio") from a fresh process; return
    what the run cost (see the module docstring)."""
    _require_loopback(base_url)
    if client not in CLIENTS:
        raise ValueError(f"client must be one of {tuple(CLIENTS)}, not {client!r}")
    spec = {
        "contender": CLIENTS[client],
        "base_url": base_url.rstrip("/"),
        "n_requests": n_requests,
        "concurrency": max_in_flight,
        "warmup_requests": 1,
        "max_tokens": MAX_TOKENS,
    }
    run = run_contender(spec, new_run_keys(), timeout_s=timeout_s)
    return {
        "client": client,
        "requests": n_requests,
        "max_in_flight": max_in_flight,
        "ok": run["statuses"].get("200", 0),
        "wall_s": round(run["wall_s"], 3),
        "cpu_s": round(run["cpu_s"], 3),
        "peak_threads": run["threads_peak"],
        "rss_growth_mib": round(run["peak_rss_mb"] - run["peak_rss_before_mb"], 1),
        "peak_rss_mib": round(run["peak_rss_mb"], 1),
    }


#: The name notebook 02 imports (the measurement always ran in a subprocess).
measure_in_subprocess = measure_client


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m paradigm_kit.bench.client_cost",
        description="Send N requests to a local mock with threads or asyncio; print the cost "
        "as one JSON line.",
    )
    parser.add_argument("client", choices=tuple(CLIENTS))
    parser.add_argument("--base-url", required=True, help="a loopback URL, e.g. the mock's")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--max-in-flight", type=int, default=100)
    args = parser.parse_args(argv)
    figures = measure_client(args.client, args.base_url, args.requests, args.max_in_flight)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
