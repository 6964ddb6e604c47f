"""Measure what a client costs to run: threads + requests against asyncio + aiohttp.

The measurement behind notebook 02's threads section and the benchmarks' client-cost scenario.

``measure_client(client, base_url, n_requests, max_in_flight)`` sends ``n_requests`` greetings to
a *local* mock, at most ``max_in_flight`` at once, with ``"threads"`` (a ``ThreadPoolExecutor`` of
``max_in_flight`` workers, one ``requests.Session`` per worker thread) or ``"asyncio"`` (one
``aiohttp.ClientSession``, an ``asyncio.Semaphore(max_in_flight)``), and returns what it cost:
wall time, CPU time (``time.process_time``: every thread of the process), the most threads alive
at once and the most resident memory the process held, both noted as each request ends (no
sampling thread, no polling): ``threading.active_count()``, and the resident set size read from
``/proc/self/statm`` (Linux; elsewhere the memory figures are ``None``). Memory is reported twice:
the process's peak (interpreter, imports and run) and how much it grew during the run (peak minus
the size before the first request). Both are process-wide, so each client must be measured in a
fresh process: ``measure_in_subprocess`` runs ``python -m paradigm_kit.bench.client_cost CLIENT ...`` with
``sys.executable`` and reads back the JSON line it prints. (Not ``ru_maxrss``: on Linux a child
started from a large process such as a Jupyter kernel inherits the parent's peak, and it only
grows, so it would report the kernel's size.) The base URL must
be on the loopback interface: a thousand-request benchmark never goes to the paid API by mistake.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
from typing import Any

__all__ = ["CLIENTS", "measure_client", "measure_in_subprocess"]

CLIENTS = ("threads", "asyncio")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
MOCK_KEY = "mock-key-not-a-secret"  # the local mock accepts any non-empty key
GREETING = "Dis bonjour au nouvel utilisateur sur Paradigm ! Accueil d'une phrase pour : {name}"


def _payload(index: int) -> dict[str, Any]:
    content = GREETING.format(name=f"user {index}")
    return {"model": "alfred-4.2", "messages": [{"role": "user", "content": content}]}


def _rss_mib() -> float | None:
    """The resident memory now (Linux: /proc/self/statm, in pages); None elsewhere."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            resident_pages = int(statm.read().split()[1])
    except OSError:
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class _Peaks:
    """The most threads and resident memory seen, noted by each request as it ends.

    Memory is read at every ``RSS_EVERY``-th note only: reading ``/proc`` costs CPU time, which is
    one of the figures being measured.
    """

    RSS_EVERY = 10

    def __init__(self) -> None:
        self.threads = threading.active_count()
        self.rss_before_mib = _rss_mib()
        self.rss_mib = self.rss_before_mib
        self.notes = 0

    def note(self) -> None:  # a lost update between two threads only loses one sample
        self.threads = max(self.threads, threading.active_count())
        self.notes += 1
        if self.notes % self.RSS_EVERY:
            return
        rss_mib = _rss_mib()
        if rss_mib is not None:
            self.rss_mib = max(self.rss_mib, rss_mib)


def _require_loopback(base_url: str) -> None:
    host = urllib.parse.urlsplit(base_url).hostname
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"measure_client only talks to a local mock, not to {host!r}")


def _send_with_threads(
    chat_url: str, n_requests: int, max_in_flight: int, peaks: _Peaks
) -> list[int]:
    from concurrent.futures import ThreadPoolExecutor

    import requests

    local = threading.local()  # a requests.Session is not thread-safe: one per worker thread
    headers = {"Authorization": f"Bearer {MOCK_KEY}"}

    def send(index: int) -> int:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        response = local.session.post(chat_url, json=_payload(index), headers=headers, timeout=60)
        peaks.note()
        return response.status_code

    with ThreadPoolExecutor(max_workers=max_in_flight) as executor:
        statuses = list(executor.map(send, range(n_requests)))
    return statuses


async def _send_with_asyncio(
    chat_url: str, n_requests: int, max_in_flight: int, peaks: _Peaks
) -> list[int]:
    import aiohttp

    semaphore = asyncio.Semaphore(max_in_flight)

    async def send(session: aiohttp.ClientSession, index: int) -> int:
        async with semaphore, session.post(chat_url, json=_payload(index)) as response:
            await response.read()
            peaks.note()
            return response.status

    headers = {"Authorization": f"Bearer {MOCK_KEY}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        statuses = await asyncio.gather(*(send(session, i) for i in range(n_requests)))
    return statuses


def measure_client(
    client: str, base_url: str, n_requests: int, max_in_flight: int
) -> dict[str, Any]:
    """Send ``n_requests`` with ``client`` ("threads" or "asyncio"); return what the run cost.

    Call it in a fresh process (see ``measure_in_subprocess``): the memory figure is the growth
    of this process's peak resident memory during the run.
    """
    _require_loopback(base_url)
    if client == "threads":
        import requests  # noqa: F401 (imported before the baseline, like aiohttp below)
    elif client == "asyncio":
        import aiohttp  # noqa: F401
    else:
        raise ValueError(f"client must be one of {CLIENTS}, not {client!r}")
    chat_url = f"{base_url.rstrip('/')}/chat/completions"
    peaks = _Peaks()
    threads_before = peaks.threads
    cpu_start_s = time.process_time()
    start_s = time.monotonic()
    if client == "threads":
        statuses = _send_with_threads(chat_url, n_requests, max_in_flight, peaks)
    else:
        statuses = asyncio.run(_send_with_asyncio(chat_url, n_requests, max_in_flight, peaks))
    peak_mib = None if peaks.rss_mib is None else round(peaks.rss_mib, 1)
    growth_mib = None if peaks.rss_mib is None else round(peaks.rss_mib - peaks.rss_before_mib, 1)
    return {
        "client": client,
        "requests": n_requests,
        "max_in_flight": max_in_flight,
        "ok": sum(status == 200 for status in statuses),
        "wall_s": round(time.monotonic() - start_s, 3),
        "cpu_s": round(time.process_time() - cpu_start_s, 3),
        "threads_before": threads_before,
        "peak_threads": peaks.threads,
        "rss_growth_mib": growth_mib,
        "peak_rss_mib": peak_mib,
    }


def measure_in_subprocess(
    client: str, base_url: str, n_requests: int, max_in_flight: int, timeout_s: float = 120.0
) -> dict[str, Any]:
    """``measure_client`` in a fresh ``sys.executable`` process, for clean memory figures."""
    command = [
        sys.executable,
        "-m",
        "paradigm_kit.bench.client_cost",
        client,
        "--base-url",
        base_url,
    ]
    command += ["--requests", str(n_requests), "--max-in-flight", str(max_in_flight)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m paradigm_kit.bench.client_cost",
        description="Send N requests to a local mock with threads or asyncio; print the cost "
        "as one JSON line.",
    )
    parser.add_argument("client", choices=CLIENTS)
    parser.add_argument("--base-url", required=True, help="a loopback URL, e.g. the mock's")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--max-in-flight", type=int, default=100)
    args = parser.parse_args(argv)
    figures = measure_client(args.client, args.base_url, args.requests, args.max_in_flight)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
