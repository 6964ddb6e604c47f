"""The mock's capacity model: the scheduler on a fake clock (exact), then the real server.

The scheduler (``paradigm_kit.mock.capacity``) is driven by a clock and a ``call_later`` it is
given, so ``FakeLoop`` runs it with no real time at all: every figure asserted here is exact (to
floating-point rounding). The end-to-end tests use the mock's own log, never wall-clock time.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import math
import subprocess
import sys

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from paradigm_kit.mock import MockConfig, create_app
from paradigm_kit.mock.app import _work_marks
from paradigm_kit.mock.capacity import Scheduler

AUTH = {"Authorization": "Bearer test-key"}


class FakeLoop:
    """A clock and a timer queue that move only when ``run()`` fires the next timer."""

    def __init__(self) -> None:
        self.now_s = 0.0
        self._timers: list[list] = []
        self._order = 0

    def clock(self) -> float:
        return self.now_s

    def call_later(self, delay_s: float, callback):
        timer = [self.now_s + delay_s, self._order, callback, False]
        self._order += 1
        heapq.heappush(self._timers, timer)

        class Handle:
            def cancel(self) -> None:
                timer[3] = True

        return Handle()

    def run(self, until_s: float = math.inf) -> None:
        while self._timers and self._timers[0][0] <= until_s:
            when_s, _, callback, cancelled = heapq.heappop(self._timers)
            if not cancelled:
                self.now_s = when_s
                callback()
        self.now_s = max(self.now_s, until_s) if until_s < math.inf else self.now_s


def scheduler(loop: FakeLoop, capacity=None, max_running=None, max_queue=None) -> Scheduler:
    return Scheduler(capacity, max_running, max_queue, clock=loop.clock, call_later=loop.call_later)


def submit_all(loop: FakeLoop, sched: Scheduler, works_s: list[float]) -> list[float]:
    """Submit plain jobs at once, run to the end; the real time each finished."""
    ends = [math.nan] * len(works_s)
    for i, work_s in enumerate(works_s):

        def done(index, i=i):
            ends[i] = loop.now_s

        sched.submit([work_s], done)
    loop.run()
    return ends


# --- the scheduler on a fake clock -----------------------------------------------------------


@pytest.mark.parametrize(("n", "capacity"), [(1, 2.0), (2, 2.0), (10, 2.0), (10, 2.5), (7, 0.5)])
def test_processor_sharing_equal_requests_finish_together(n, capacity):
    """n equal requests under capacity K all finish at max(1, n/K) x work."""
    loop = FakeLoop()
    ends = submit_all(loop, scheduler(loop, capacity=capacity), [0.4] * n)
    assert ends == pytest.approx([0.4 * max(1.0, n / capacity)] * n)


def test_processor_sharing_rerates_when_a_request_leaves():
    """K=1, works 0.3 and 0.8 s: the short ends at 0.6 s, the long at 0.6 + 0.5 = 1.1 s."""
    loop = FakeLoop()
    assert submit_all(loop, scheduler(loop, capacity=1.0), [0.3, 0.8]) == pytest.approx([0.6, 1.1])


def test_max_running_serves_fifo_waves():
    """--max-running 2: ten 0.4 s requests end in waves at 0.4, 0.8, ..., 2.0 s, in order."""
    loop = FakeLoop()
    sched = scheduler(loop, max_running=2)
    ends = submit_all(loop, sched, [0.4] * 10)
    assert ends == pytest.approx([0.4 * (i // 2 + 1) for i in range(10)])
    assert sched.snapshot()["peak_running"] == 2
    assert sched.snapshot()["peak_queued"] == 8


def test_max_queue_sheds_the_arrivals_beyond_it():
    """--max-running 2 --max-queue 3: of ten at once, 5 are admitted and 5 shed at once."""
    loop = FakeLoop()
    sched = scheduler(loop, max_running=2, max_queue=3)
    jobs = [sched.submit([0.4], lambda index: None) for _ in range(10)]
    assert [job is None for job in jobs] == [False] * 5 + [True] * 5
    assert sched.snapshot() == {
        "running": 2,
        "queued": 3,
        "peak_running": 2,
        "peak_queued": 3,
        "shed": 5,
        "capacity": None,
        "max_running": 2,
        "max_queue": 3,
    }


def test_stream_marks_first_token_and_inter_token_times_under_load():
    """Two streams sharing K=1: each token's chunk comes at twice its unloaded time."""
    loop = FakeLoop()
    sched = scheduler(loop, capacity=1.0)
    marks = _work_marks(0.3, 0.1, 3, stream=True)
    assert marks == pytest.approx([0.3, 0.4, 0.5, 0.6])  # tokens at L + i x p, then the end
    times: list[list[float]] = [[], []]
    for i in range(2):
        sched.submit(marks, lambda index, i=i: times[i].append(loop.now_s))
    loop.run()
    for stream_times in times:
        assert stream_times == pytest.approx([0.6, 0.8, 1.0, 1.2])


def test_queued_stream_first_token_waits_for_its_place():
    """--max-running 1: the second stream's first token comes after the first's whole work."""
    loop = FakeLoop()
    sched = scheduler(loop, max_running=1)
    marks = _work_marks(0.3, 0.01, 10, stream=True)
    jobs = [sched.submit(marks, lambda index: None) for _ in range(2)]
    loop.run()
    assert jobs[0].first_mark_s == pytest.approx(0.3)
    assert jobs[1].first_mark_s == pytest.approx(0.4 + 0.3)


def test_log_fields_queue_wait_and_service_times():
    """Each job records its arrival counts, queue wait, service start and end."""
    loop = FakeLoop()
    sched = scheduler(loop, max_running=1)
    first = sched.submit([0.5], lambda index: None)
    loop.run(0.2)
    second = sched.submit([0.5], lambda index: None)
    loop.run()
    assert (first.running_at_arrival, first.queued_at_arrival) == (0, 0)
    assert (second.running_at_arrival, second.queued_at_arrival) == (1, 0)
    assert first.queue_wait_s == pytest.approx(0.0)
    assert second.queue_wait_s == pytest.approx(0.3)
    assert (second.admitted_s, second.finished_s) == pytest.approx((0.5, 1.0))


def test_cancelled_job_frees_its_share():
    """A client that leaves gives its share back: the other speeds up from then on."""
    loop = FakeLoop()
    sched = scheduler(loop, capacity=1.0)
    ends: list[float] = []
    leaver = sched.submit([1.0], lambda index: None)
    sched.submit([1.0], lambda index: ends.append(loop.now_s))
    loop.run(0.4)  # both at half speed: 0.2 s of work done each
    sched.cancel(leaver)
    loop.run()
    assert ends == pytest.approx([0.4 + 0.8])


def test_set_limits_while_serving_admits_the_queue():
    """Raising --max-running mid-run starts the waiting jobs at once."""
    loop = FakeLoop()
    sched = scheduler(loop, max_running=1)
    ends = [math.nan] * 3
    for i in range(3):
        sched.submit([1.0], lambda index, i=i: ends.__setitem__(i, loop.now_s))
    loop.run(0.5)
    sched.set_limits(None, 3, None)
    loop.run()
    assert ends == pytest.approx([1.0, 1.5, 1.5])


# --- bad values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"capacity": 0}, "capacity must be"),
        ({"capacity": -2}, "capacity must be"),
        ({"capacity": math.nan}, "capacity must be"),
        ({"capacity": math.inf}, "capacity must be"),
        ({"max_running": 0}, "max_running must be"),
        ({"max_queue": 3}, "max_queue needs max_running"),
        ({"connect_latency_s": -1}, "connect_latency_s must be"),
    ],
)
def test_bad_capacity_values_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        MockConfig(**fields)


@pytest.mark.parametrize(
    "args",
    [["--capacity", "0"], ["--capacity", "nan"], ["--max-running", "0"], ["--max-queue", "2"]],
)
def test_bad_capacity_flags_are_one_line_errors(args):
    result = subprocess.run(
        [sys.executable, "-m", "paradigm_kit.mock", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert args[0] in result.stderr.strip().splitlines()[-1]


def test_seed_profile_sets_its_values_and_flags_override_them():
    from paradigm_kit.mock.config import build_parser, config_from_args, parse_config_args

    parser = build_parser()
    config = config_from_args(parser, parse_config_args(parser, ["--profile", "seed"]))
    assert config.capacity is not None and config.connect_latency_s > 0
    parser = build_parser()
    args = ["--profile", "seed", "--capacity", "2"]
    assert config_from_args(parser, parse_config_args(parser, args)).capacity == 2


# --- the real server, small numbers -------------------------------------------------------------


def chat(name: str, **fields) -> dict:
    content = f"Donne un accueil court d'une phrase hautement personnalisé à : {name}"
    return {"model": "alfred-4.2", "messages": [{"role": "user", "content": content}], **fields}


def serve(scenario, **config_fields):
    """Run ``scenario(session, base, root)`` against ``create_app(MockConfig(**fields))``."""
    app = create_app(MockConfig(**config_fields))

    async def main():
        async with TestServer(app) as server, aiohttp.ClientSession(headers=AUTH) as session:
            return await scenario(
                session, str(server.make_url("/api/v2")), str(server.make_url(""))
            )

    return asyncio.run(main())


async def burst(session, base, n, **fields):
    async def one(i):
        async with session.post(f"{base}/chat/completions", json=chat(f"P{i}", **fields)) as r:
            await r.read()
            return r.status, r.headers.get("Retry-After"), await r.text()

    return await asyncio.gather(*(one(i) for i in range(n)))


async def log_and_stats(session, root):
    async with session.get(f"{root.rstrip('/')}/_mock/log") as r:
        records = (await r.json())["records"]
    async with session.get(f"{root.rstrip('/')}/_mock/stats") as r:
        return records, await r.json()


def test_server_waves_and_shedding_in_its_log_and_stats():
    """--max-running 2 --max-queue 1 against 4 at once: 3 served in order, 1 shed with 503."""

    async def scenario(session, base, root):
        results = await burst(session, base, 4, max_tokens=3)
        return results, *(await log_and_stats(session, root))

    results, records, stats = serve(scenario, latency_s=0.05, max_running=2, max_queue=1)
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200, 200, 200, 503]
    shed = next(r for r in results if r[0] == 503)
    assert shed[1] == "1" and json.loads(shed[2])["error"]["code"] == "server_overloaded"
    assert (stats["peak_running"], stats["peak_queued"], stats["shed"]) == (2, 1, 1)
    served = sorted((r for r in records if r["status"] == 200), key=lambda r: r["t_service_start"])
    assert served[2]["queue_wait_s"] > 0  # the third waited for a place
    assert served[2]["t_service_start"] >= min(r["t_service_end"] for r in served[:2])
    assert all(r["queue_wait_s"] is None for r in records if r["status"] == 503)


def test_model_off_log_has_the_new_fields_as_none():
    async def scenario(session, base, root):
        await burst(session, base, 1)
        return await log_and_stats(session, root)

    records, stats = serve(scenario, latency_s=0.0)
    assert records[0]["queue_wait_s"] is None and records[0]["t_service_start"] is None
    assert stats["shed"] == 0


def test_no_rate_limit_headers_switch():
    """--no-rate-limit-headers: the limit still applies (429 + Retry-After), no x-ratelimit-*."""

    async def scenario(session, base, root):
        statuses, limit_headers = [], []
        for i in range(2):
            async with session.post(f"{base}/chat/completions", json=chat(f"P{i}")) as r:
                await r.read()
                statuses.append((r.status, r.headers.get("Retry-After")))
                limit_headers += [h for h in r.headers if h.lower().startswith("x-ratelimit")]
        return statuses, limit_headers

    statuses, limit_headers = serve(scenario, latency_s=0.0, rpm=1, rate_limit_headers=False)
    assert [s for s, _ in statuses] == [200, 429] and statuses[1][1] is not None
    assert limit_headers == []


def test_post_mock_config_changes_capacity_and_refuses_bad_values():
    async def scenario(session, base, root):
        url = f"{root.rstrip('/')}/_mock/config"
        async with session.post(url, json={"max_running": 3, "max_queue": 5}) as r:
            changed = r.status, await r.json()
        async with session.post(url, json={"capacity": 0}) as r:
            refused = r.status, await r.json()
        async with session.post(url, json={"latency_s": 1}) as r:
            unknown = r.status
        return changed, refused, unknown

    changed, refused, unknown = serve(scenario, latency_s=0.0)
    assert changed[0] == 200 and changed[1]["capacity"]["max_running"] == 3
    assert changed[1]["capacity"]["max_queue"] == 5
    assert refused[0] == 400 and "capacity must be" in refused[1]["error"]["message"]
    assert unknown == 400
