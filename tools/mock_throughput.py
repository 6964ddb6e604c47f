"""Measure the mock's throughput: ``python tools/mock_throughput.py [--requests N] [--concurrency C]``.

Not a test (no timing is ever a pass/fail here): a script that prints figures for the notes.
It starts a mock subprocess and drives it with the benchmarks' harness
(``paradigm_kit.bench.measure.run_contender``, the ``bare_aiohttp`` contender: raw aiohttp, a
semaphore, answers dropped), so server and client each get their own interpreter, as in real use:

1. ``--requests`` chat completions at zero latency, ``--concurrency`` in flight (default 5,000 and
   100), after a short warm-up: requests per second, and the mock's CPU time per request (read
   from /proc on Linux), which a busy shared machine disturbs much less than the rate;
2. ``--slow-requests`` requests all at once against a mock with 0.5 s latency (default 1,000):
   how many succeeded, and the wall time (ideal: 0.5 s plus overhead).
"""

from __future__ import annotations

import argparse
import os

from paradigm_kit.bench.measure import new_run_keys, run_contender
from paradigm_kit.mock import mock_stats, running_mock, start_mock

RUN_TIMEOUT_S = 600.0


def drive(base_url: str, n_requests: int, concurrency: int) -> tuple[int, float]:
    """Send ``n_requests`` with at most ``concurrency`` in flight: (succeeded, wall seconds)."""
    spec = {
        "contender": "bare_aiohttp",
        "base_url": base_url,
        "n_requests": n_requests,
        "concurrency": concurrency,
        "warmup_requests": 0,  # the mock's CPU is read around the timed runs: nothing else
        "max_tokens": 20,
    }
    run = run_contender(spec, new_run_keys(), timeout_s=RUN_TIMEOUT_S)
    return run["statuses"].get("200", 0), run["wall_s"]


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (Linux /proc; None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--slow-requests", type=int, default=1000)
    parser.add_argument(
        "--repeat", type=int, default=3, help="timed runs at zero latency (best and median shown)"
    )
    args = parser.parse_args()

    handle = start_mock(latency_s=0.0)
    try:
        drive(handle.base_url, 500, args.concurrency)  # the mock's warm-up
        rates = []
        cpu_before_s = process_cpu_s(handle.pid)
        for _ in range(args.repeat):
            succeeded, wall_s = drive(handle.base_url, args.requests, args.concurrency)
            rates.append(args.requests / wall_s)
            assert succeeded == args.requests, f"only {succeeded} of {args.requests} succeeded"
        cpu_after_s = process_cpu_s(handle.pid)
    finally:
        handle.stop()
    rates.sort()
    print(
        f"zero latency: {args.requests} requests, {args.concurrency} concurrent: "
        f"best {rates[-1]:.0f} req/s, median {rates[len(rates) // 2]:.0f} req/s over {args.repeat} runs"
    )
    if cpu_before_s is not None and cpu_after_s is not None:
        per_request_us = (cpu_after_s - cpu_before_s) / (args.requests * args.repeat) * 1e6
        print(
            f"mock CPU per request: {per_request_us:.0f} us (a ceiling of {1e6 / per_request_us:.0f} req/s on one free core)"
        )

    with running_mock(latency_s=0.5) as base_url:
        succeeded, wall_s = drive(base_url, args.slow_requests, args.slow_requests)
        peak = mock_stats(base_url)["peak_concurrency"]
        print(
            f"0.5 s latency: {succeeded}/{args.slow_requests} succeeded, all in flight at once "
            f"(mock peak concurrency {peak}), wall {wall_s:.2f} s"
        )


if __name__ == "__main__":
    main()
