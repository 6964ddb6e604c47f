"""The mock's capacity model: the scheduler on made-up times (exact), then the real server."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import aiohttp
import pytest

from paradigm_kit.mock import MockConfig, running_mock
from paradigm_kit.mock.capacity import Overloaded, SharedServer

WORK_S = 2.0


def run_to_completion(server: SharedServer, arrivals: list[tuple[float, float]]) -> list[float]:
    """Feed (arrival time, work) pairs; return each job's finish time, driving the clock by
    jumping from event to event exactly as the event loop's one timer would."""
    jobs, finish = [], {}
    pending = sorted(enumerate(arrivals), key=lambda item: item[1][0])
    now = 0.0
    while pending or len(finish) < len(arrivals):
        next_finish = server.next_event_at()
        if pending and (next_finish is None or pending[0][1][0] <= next_finish):
            index, (at, work) = pending.pop(0)
            now = at
            job = server.arrive(now)
            jobs.append(job)
            server.watch(now, job, work, index)
            if job.v_start is not None and server.v_now - job.v_start >= work:
                finish[index] = now
            continue
        now = next_finish
        for index in server.due(now):
            finish[index] = now
            server.leave(now, jobs[index])
    return [finish[i] for i in range(len(arrivals))]


@pytest.mark.parametrize(
    ("capacity", "n"),
    [
        pytest.param(1.0, 1, id="alone"),
        pytest.param(4.0, 4, id="batch-has-room"),
        pytest.param(4.0, 8, id="twice-the-capacity"),
        pytest.param(2.5, 10, id="fractional-capacity"),
    ],
)
def test_n_equal_requests_finish_together_at_max_1_n_over_k_times_work(capacity, n):
    finishes = run_to_completion(SharedServer(capacity=capacity), [(0.0, WORK_S)] * n)
    expected_s = max(1.0, n / capacity) * WORK_S
    assert finishes == pytest.approx([expected_s] * n)


def test_a_short_request_leaves_early_and_the_others_speed_up():
    # K=1, two jobs: work 1 and 3. Both at 1/2 speed until t=2 (short one done), then full speed.
    finishes = run_to_completion(SharedServer(capacity=1.0), [(0.0, 1.0), (0.0, 3.0)])
    assert finishes == pytest.approx([2.0, 4.0])


def test_max_running_serves_in_fifo_waves():
    finishes = run_to_completion(SharedServer(max_running=2), [(0.0, WORK_S)] * 5)
    assert finishes == pytest.approx([2.0, 2.0, 4.0, 4.0, 6.0])


def test_max_queue_sheds_beyond_the_queue_with_retry_after():
    server = SharedServer(max_running=1, max_queue=2)
    jobs = [server.arrive(0.0) for _ in range(3)]
    with pytest.raises(Overloaded) as refused:
        server.arrive(0.0)
    assert refused.value.retry_after_s >= 1
    assert server.snapshot() | {} == {
        "capacity": None,
        "max_running": 1,
        "max_queue": 2,
        "running": 1,
        "queued": 2,
        "peak_running": 1,
        "peak_queued": 2,
        "shed": 1,
    }
    assert [job.queued_at_arrival for job in jobs] == [0, 0, 1]


def test_queue_wait_and_service_times_are_recorded():
    server = SharedServer(max_running=1)
    first, second = server.arrive(0.0), server.arrive(0.5)
    server.leave(2.0, first)
    assert second.started_at == 2.0 and second.queue_wait_s == pytest.approx(1.5)
    assert (second.running_at_arrival, second.queued_at_arrival) == (1, 0)
    server.leave(3.0, second)
    assert second.log_fields()["t_service_end"] == 3.0


def test_stream_tokens_follow_the_shared_clock():
    # K=1, two streams in service: each token's target in seconds of work arrives at twice that.
    server = SharedServer(capacity=1.0)
    a, b = server.arrive(0.0), server.arrive(0.0)
    for i, progress_s in enumerate((0.5, 0.6, 0.7)):
        server.watch(0.0, a, progress_s, ("a", i))
    server.watch(0.0, b, 10.0, ("b", 0))
    times = []
    while (at := server.next_event_at()) is not None and at < 5:
        times += [(token, at) for token in server.due(at)]
    assert times == [
        (("a", 0), pytest.approx(1.0)),
        (("a", 1), pytest.approx(1.2)),
        (("a", 2), pytest.approx(1.4)),
    ]


@pytest.mark.parametrize(
    "flags",
    [
        pytest.param({"capacity": 0}, id="capacity-zero"),
        pytest.param({"capacity": -1}, id="capacity-negative"),
        pytest.param({"capacity": float("nan")}, id="capacity-nan"),
        pytest.param({"capacity": float("inf")}, id="capacity-inf"),
        pytest.param({"max_running": 0}, id="max-running-zero"),
        pytest.param({"max_queue": 4}, id="max-queue-alone"),
        pytest.param({"connect_latency_s": float("nan")}, id="connect-latency-nan"),
    ],
)
def test_bad_capacity_settings_are_refused(flags):
    with pytest.raises(ValueError):
        MockConfig(**flags)


@pytest.mark.parametrize(
    "args",
    [["--capacity", "0"], ["--capacity", "nan"], ["--max-running", "0"], ["--max-queue", "3"]],
    ids=["capacity-zero", "capacity-nan", "max-running-zero", "max-queue-alone"],
)
def test_bad_capacity_flags_are_one_line_and_exit_2(args):
    result = subprocess.run(
        [sys.executable, "-m", "paradigm_kit.mock", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("mock_paradigm.py: error:")


async def _send(base_url: str, n: int, stream: bool = False) -> list[int]:
    payload = {"model": "alfred-4.2", "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer k"}) as session:

        async def one(i: int) -> int:
            body = dict(payload, stream=stream, messages=[{"role": "user", "content": f"hi {i}"}])
            async with session.post(f"{base_url}/chat/completions", json=body) as response:
                await response.read()
                return response.status

        return await asyncio.gather(*(one(i) for i in range(n)))


async def _get(url: str) -> dict:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return await response.json()


def test_end_to_end_fifo_waves_and_shedding_in_the_log():
    """max_running=2, max_queue=2, 6 at once: 2 served, 2 queued (waited), 2 shed with 503."""
    with running_mock(latency=0.2, max_running=2, max_queue=2) as base_url:
        statuses = asyncio.run(_send(base_url, 6))
        root = base_url.removesuffix("/api/v2")
        log = asyncio.run(_get(f"{root}/_mock/log"))["records"]
        stats = asyncio.run(_get(f"{root}/_mock/stats"))
    assert sorted(statuses) == [200, 200, 200, 200, 503, 503]
    served = [r for r in log if r["status"] == 200]
    waited = sorted(r["queue_wait_s"] for r in served)
    assert waited[:2] == [0, 0] and all(w > 0 for w in waited[2:])
    for record in served:
        assert record["t_service_start"] <= record["t_service_end"] <= record["t_end"]
    assert stats["server"]["peak_running"] == 2
    assert stats["server"]["peak_queued"] == 2
    assert stats["server"]["shed"] == 2
    assert stats["requests_by_status"]["503"] == 2


def test_end_to_end_streams_record_their_first_token():
    with running_mock(latency=0.05, per_token_latency=0.001, capacity=2) as base_url:
        statuses = asyncio.run(_send(base_url, 4, stream=True))
        log = asyncio.run(_get(base_url.removesuffix("/api/v2") + "/_mock/log"))["records"]
    assert statuses == [200] * 4
    for record in log:
        assert record["t_service_start"] <= record["t_first_token"] <= record["t_service_end"]
