"""The checks of lesson 09 (choosing concurrency): each passes a correct attempt and explains the
usual wrong one.

As in ``test_exercises.py``, every attempt really sends its requests to the exercises' local mock
(capacity 4, started on first use, stopped at the end of this module), so each check judges the
mock's log; no assertion depends on a timing.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from paradigm_kit.batch.probe import probe_capacity
from paradigm_kit.workshop.exercises import (
    CONCURRENCY_EXERCISE_CAPACITY,
    PROBE_EXERCISE_BUDGET,
    check_capped_probe,
    check_knee,
    check_littles_law,
    exercise,
)


async def send_bounded(ex, payloads, bound):
    """Send ``payloads`` with at most ``bound`` in flight: (latencies_s, wall_s)."""
    semaphore, latencies_s = asyncio.Semaphore(bound), []
    async with aiohttp.ClientSession(headers=ex.headers()) as session:

        async def one(payload):
            async with semaphore:
                t_start_s = time.monotonic()
                async with session.post(ex.chat_url, json=payload) as response:
                    await response.json()
                latencies_s.append(time.monotonic() - t_start_s)

        t0_s = time.monotonic()
        await asyncio.gather(*(one(p) for p in payloads))
        return latencies_s, time.monotonic() - t0_s


def test_littles_law_passes_throughput_times_latency():
    ex = exercise("09-littles-law")
    latencies_s, wall_s = asyncio.run(send_bounded(ex, ex.payloads(), 10))
    in_flight = len(latencies_s) / wall_s * (sum(latencies_s) / len(latencies_s))
    assert check_littles_law(ex, in_flight).solved


def test_littles_law_rejects_the_bound_for_the_estimate():
    ex = exercise("09-littles-law")
    asyncio.run(send_bounded(ex, ex.payloads(), 10))
    result = check_littles_law(ex, 1.0)  # one in flight: far from the log's mean
    assert not result.solved and "in flight" in result.message


def test_knee_passes_the_capacity_after_measuring_to_8():
    ex = exercise("09-knee")
    asyncio.run(send_bounded(ex, [ex.payload("Alice")] * 16, 8))
    measured = {1: 5.0, 2: 10.0, 4: 19.6, 8: 20.0}
    assert check_knee(ex, measured, CONCURRENCY_EXERCISE_CAPACITY).solved


def test_knee_rejects_an_unmeasured_level_and_the_plateau_end():
    ex = exercise("09-knee")
    asyncio.run(send_bounded(ex, [ex.payload("Alice")] * 8, 4))
    measured = {1: 5.0, 2: 10.0, 4: 19.6, 8: 20.0}
    assert "in flight" in check_knee(ex, measured, 4).message
    asyncio.run(send_bounded(ex, [ex.payload("Alice")] * 16, 8))
    assert not check_knee(ex, measured, 8).solved  # the plateau's end, not its start
    assert not check_knee(ex, [5.0, 10.0], 4).solved


def test_capped_probe_passes_within_budget_and_rejects_a_bigger_one():
    ex = exercise("09-capped-probe")
    probe = asyncio.run(probe_capacity(ex.base_url, ex.api_key, max_requests=PROBE_EXERCISE_BUDGET))
    assert check_capped_probe(ex, probe).solved
    over = exercise("09-capped-probe")
    probe = asyncio.run(probe_capacity(over.base_url, over.api_key, max_requests=60))
    assert not check_capped_probe(over, probe).solved
