"""track(): what one request's timeline record says; measure_client(): what a run costs."""

from __future__ import annotations

import asyncio
import threading

import pytest

from paradigm_kit.bench.client_cost import measure_client, measure_in_subprocess
from paradigm_kit.mock import mock_stats, running_mock
from paradigm_kit.timeline import TimelineRecorder
from paradigm_kit.workshop import track


def test_track_waits_for_the_slot_before_the_request_starts():
    """With a slot of one, the second request starts only after the first has ended."""

    async def run(recorder: TimelineRecorder) -> None:
        slot = asyncio.Semaphore(1)
        queued_at = recorder.t0

        async def request(request_id: int) -> None:
            async with track(recorder, request_id, queued_at=queued_at, slot=slot) as span:
                await asyncio.sleep(0.02)
                span.status = 200

        await asyncio.gather(request(0), request(1))

    recorder = TimelineRecorder()
    asyncio.run(run(recorder))
    first, second = sorted(recorder.records, key=lambda record: record.t_started)
    assert first.t_queued == second.t_queued == 0.0
    assert second.t_started >= first.t_end
    assert [first.outcome, second.outcome] == ["ok", "ok"]
    assert [first.status, second.status] == [200, 200]


def test_track_records_an_error_status_as_failed():
    """A status of 400 or more is recorded as a failed attempt, with its status."""
    recorder = TimelineRecorder()
    with track(recorder, "a") as span:
        span.status = 503
    (record,) = recorder.records
    assert (record.id, record.status, record.outcome) == ("a", 503, "failed")


def test_track_records_an_exception_and_reraises_it():
    """An exception inside the block is recorded as failed (no status) and not swallowed."""
    recorder = TimelineRecorder()
    with pytest.raises(TimeoutError), track(recorder, 7):
        raise TimeoutError("no answer")
    (record,) = recorder.records
    assert (record.status, record.outcome) == (None, "failed")


def test_track_releases_a_thread_slot_after_an_exception():
    """A threading.Semaphore slot is given back even when the request raised."""
    recorder = TimelineRecorder()
    slot = threading.Semaphore(1)
    with pytest.raises(ConnectionError), track(recorder, 1, slot=slot):
        raise ConnectionError("dropped")
    assert slot.acquire(blocking=False)


def test_measure_client_refuses_a_remote_url():
    """The benchmark only ever talks to a loopback mock, never to the paid API."""
    with pytest.raises(ValueError, match="local mock"):
        measure_client("asyncio", "https://paradigm.lighton.ai/api/v2", 10, 2)


@pytest.mark.parametrize(
    ("client", "expected_peak_threads"),
    [
        pytest.param("threads", 1 + 4, id="threads-one-per-slot"),
        pytest.param("asyncio", 1, id="asyncio-one-thread"),
    ],
)
def test_measure_in_subprocess_reports_threads_and_holds_the_bound(client, expected_peak_threads):
    """Every request succeeds, the mock never sees more than the bound, threads are counted."""
    with running_mock(latency_s=0.2) as base_url:
        figures = measure_in_subprocess(client, base_url, n_requests=12, max_in_flight=4)
        peak_concurrency = mock_stats(base_url)["peak_concurrency"]
    assert figures["ok"] == 12
    assert figures["peak_threads"] == expected_peak_threads
    assert peak_concurrency == 4
