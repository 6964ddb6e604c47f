"""What the room view costs the mock: ``python -m tools.room_bench [--attendees 50] [--concurrency 20]``.

Not a test (no timing is ever a pass/fail): a script that prints figures for the notes. The
question (issue 16): with the room page open and 50 attendees sending 20 concurrent requests each,
does the mock's CPU per request stay within 10% of what it is with no page open?

It starts one mock subprocess (``--latency``, default 0.05 s, so that about a thousand requests
are in flight at once) and drives it from this process with raw aiohttp: ``--attendees`` sessions,
each with its own key and ``X-Attendee`` name, each keeping ``--concurrency`` requests in flight
until it has sent ``--requests-each``. Runs alternate *page closed* and *page open*, ``--repeats``
times each, with a reset between runs. *Page open* means ``--viewers`` pollers (default 3: a
projector and two laptops) asking ``/_mock/room/feed?since=SEQ`` every 250 ms, exactly what the
page's script does, from a process of their own (``--watch ROOT``) so that the busy load
generator does not slow them down; the browser's own drawing costs the browser, not the mock.

The figure is the mock's CPU time (user + system, from /proc on Linux) per request answered,
which a busy shared machine disturbs much less than the rate; requests/s is printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import subprocess
import sys
import time

import aiohttp

from paradigm_kit.mock import start_mock
from tools.mock_throughput import process_cpu_s

POLL_S = 0.25  # what the page does


async def attendee(root: str, index: int, concurrency: int, n_requests: int) -> int:
    """One attendee's batch: ``concurrency`` workers until ``n_requests`` are answered."""
    headers = {"Authorization": f"Bearer bench-key-{index}", "X-Attendee": f"attendee {index:02d}"}
    url = f"{root}/api/v2/chat/completions"
    sent = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:

        async def worker() -> None:
            nonlocal sent
            while sent < n_requests:
                sent += 1
                payload = {
                    "model": "alfred-4.2",
                    "messages": [{"role": "user", "content": f"hi {sent}"}],
                }
                async with session.post(url, json=payload) as response:
                    await response.read()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return sent


async def viewer(root: str, stop: asyncio.Event) -> int:
    """Poll the feed as the page does until ``stop``; return the frames read."""
    seq = frames = 0
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            started = time.monotonic()
            async with session.get(f"{root}/_mock/room/feed", params={"since": seq}) as response:
                frame = await response.json()
            seq, frames = frame["seq"], frames + 1
            await asyncio.sleep(max(0.0, POLL_S - (time.monotonic() - started)))  # start to start
    return frames


async def watch(root: str, viewers: int) -> None:
    """``--watch``: poll with ``viewers`` pages until SIGTERM, then print the frames read."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    frames = await asyncio.gather(*(viewer(root, stop) for _ in range(viewers)))
    print(sum(frames), flush=True)


def start_watchers(root: str, viewers: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "tools.room_bench", "--watch", root, "--viewers", str(viewers)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


async def one_run(root: str, pid: int, args: argparse.Namespace, viewers: int) -> dict:
    async with aiohttp.ClientSession() as session, session.post(f"{root}/_mock/reset") as reset:
        reset.raise_for_status()
    watchers = start_watchers(root, viewers) if viewers else None
    await asyncio.sleep(1.0 if viewers else 0.0)  # the pages are open before the batches start
    cpu_before_s = process_cpu_s(pid)
    started = time.monotonic()
    sent = await asyncio.gather(
        *(attendee(root, i, args.concurrency, args.requests_each) for i in range(args.attendees))
    )
    wall_s = time.monotonic() - started
    cpu_after_s = process_cpu_s(pid)
    frames = 0
    if watchers is not None:
        watchers.terminate()
        frames = int(watchers.communicate(timeout=30)[0].strip() or 0)
    requests = sum(sent)
    return {
        "viewers": viewers,
        "requests": requests,
        "rps": requests / wall_s,
        "cpu_us_per_request": (cpu_after_s - cpu_before_s) / requests * 1e6,
        "frames_per_s": frames / viewers / wall_s if viewers else 0.0,
    }


async def main(args: argparse.Namespace) -> None:
    handle = start_mock(latency_s=args.latency)
    try:
        root = handle.base_url.rsplit("/api/v2", 1)[0]
        await one_run(
            root, handle.pid, argparse.Namespace(**{**vars(args), "requests_each": 20}), 0
        )
        results: dict[int, list[dict]] = {0: [], args.viewers: []}
        for _ in range(args.repeats):
            for viewers in (0, args.viewers):
                run = await one_run(root, handle.pid, args, viewers)
                results[viewers].append(run)
                print(
                    f"viewers={viewers}  requests={run['requests']}  {run['rps']:7.0f} req/s  "
                    f"mock CPU {run['cpu_us_per_request']:6.1f} us/request  "
                    f"frames/s per viewer {run['frames_per_s']:.1f}"
                )
    finally:
        handle.stop()
    closed, opened = (
        statistics.median(r["cpu_us_per_request"] for r in results[v]) for v in (0, args.viewers)
    )
    rps_closed, rps_opened = (
        statistics.median(r["rps"] for r in results[v]) for v in (0, args.viewers)
    )
    print(
        f"median: page closed {closed:.1f} us/request ({rps_closed:.0f} req/s); "
        f"page open ({args.viewers} viewers) {opened:.1f} us/request ({rps_opened:.0f} req/s); "
        f"CPU per request {100 * (opened / closed - 1):+.1f}%"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attendees", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=20, help="in flight per attendee")
    parser.add_argument("--requests-each", type=int, default=200, help="requests per attendee")
    parser.add_argument("--latency", type=float, default=0.05, help="the mock's latency (s)")
    parser.add_argument("--viewers", type=int, default=3, help="pages open during 'page open'")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--watch", metavar="ROOT", help=argparse.SUPPRESS)  # the viewers' process
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.watch:
        asyncio.run(watch(arguments.watch, arguments.viewers))
    else:
        asyncio.run(main(arguments))
