"""The exercise checks: each one passes a correct attempt and explains an incorrect one.

Every attempt below really sends its requests to the exercises' local mock (started on first use,
stopped at the end of this module), so each check judges the mock's own log, as in a notebook.
A check never raises: an incorrect attempt is ``solved=False`` with a message saying what to fix.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import aiohttp
import pytest

from paradigm_kit.workshop.exercises import (
    CheckResult,
    check_401_reported,
    check_bounded,
    check_deadline,
    check_first_call,
    check_ideal_time,
    check_input_order,
    check_one_failure_contained,
    check_retry_after,
    check_subprocess_run,
    check_top_level_await,
    exercise,
    peak_in_flight,
    reply_text,
)

# --- small clients: the attempts a learner might write ------------------------------------------


async def post(session, ex, payload, *, with_key=True):
    """One request; raises ClientResponseError on an error status."""
    async with session.post(ex.chat_url, json=payload, headers=ex.headers(with_key=with_key)) as r:
        r.raise_for_status()
        return await r.json()


async def gather_all(ex, *, max_in_flight=None, return_exceptions=False):
    """All of ex.payloads() with gather, optionally under a semaphore."""
    semaphore = asyncio.Semaphore(max_in_flight) if max_in_flight else None

    async def one(session, payload):
        if semaphore is None:
            return await post(session, ex, payload)
        async with semaphore:
            return await post(session, ex, payload)

    async with aiohttp.ClientSession() as session:
        return await asyncio.gather(
            *(one(session, p) for p in ex.payloads()), return_exceptions=return_exceptions
        )


async def one_by_one(ex):
    """All of ex.payloads(), each awaited before the next is sent."""
    async with aiohttp.ClientSession() as session:
        return [await post(session, ex, payload) for payload in ex.payloads()]


async def with_retries(ex, *, honour_retry_after):
    """Retry each 429, after its Retry-After (or at once, the mistake)."""

    async def one(session, payload):
        while True:
            async with session.post(ex.chat_url, json=payload, headers=ex.headers()) as r:
                if r.status != 429:
                    r.raise_for_status()
                    return await r.json()
                wait_s = float(r.headers["Retry-After"]) if honour_retry_after else 0.01
            await asyncio.sleep(wait_s)

    async with aiohttp.ClientSession() as session:
        return await asyncio.gather(*(one(session, p) for p in ex.payloads()))


# --- 01 ------------------------------------------------------------------------------------------


def test_exercises_first_call_wants_the_reply_text():
    """check_first_call: solved with the reply's text; the whole JSON body is not the answer."""
    ex = exercise("01-first-call")
    body = asyncio.run(gather_all(ex))[0]
    assert check_first_call(ex, reply_text(body)).solved
    verdict = check_first_call(ex, body)
    assert not verdict.solved and "choices" in verdict.message


def test_exercises_first_call_without_requests_is_not_solved(capsys):
    """An empty attempt prints "not solved yet" and does not raise."""
    verdict = check_first_call(exercise("01-first-call"), None)
    assert not verdict.solved
    assert "not solved yet: no request of this attempt reached the mock" in capsys.readouterr().out


def test_exercises_not_started_hint_is_specific_to_the_exercise():
    """An empty attempt's hint names that exercise's first step (1.B: with_key=False)."""
    assert "with_key=False" in check_401_reported(exercise("01-401"), None, None).message
    assert "Semaphore(5)" in check_bounded(exercise("02-bound"), None).message


def test_exercises_401_reported_with_status_and_server_message():
    """check_401_reported: the status and the error's message pass; the raw body does not."""
    ex = exercise("01-401")

    async def attempt():
        async with aiohttp.ClientSession() as session:
            payload = ex.payload("Alice")
            async with session.post(
                ex.chat_url, json=payload, headers=ex.headers(with_key=False)
            ) as r:
                return r.status, await r.json()

    status, body = asyncio.run(attempt())
    assert check_401_reported(ex, status, body["error"]["message"]).solved
    assert not check_401_reported(ex, status, str(body)).solved
    assert not check_401_reported(ex, "401", body["error"]["message"]).solved


# --- 02 ------------------------------------------------------------------------------------------


def test_exercises_input_order_rejects_shuffled_replies():
    """check_input_order: gather's order passes; the same replies reversed do not."""
    ex = exercise("02-in-order")
    replies = asyncio.run(gather_all(ex))
    assert check_input_order(ex, replies).solved
    verdict = check_input_order(ex, replies[::-1])
    assert not verdict.solved and "input order" in verdict.message


def test_exercises_one_failure_contained_only_with_return_exceptions():
    """check_one_failure_contained: return_exceptions=True passes; a raising batch does not."""
    ex = exercise("02-one-failure")
    results = asyncio.run(gather_all(ex, return_exceptions=True))
    assert check_one_failure_contained(ex, results).solved

    ex = exercise("02-one-failure")
    try:
        asyncio.run(gather_all(ex))
    except aiohttp.ClientResponseError as error:
        raised = error
    verdict = check_one_failure_contained(ex, raised)
    assert not verdict.solved and "return_exceptions=True" in verdict.message


@pytest.mark.parametrize(
    ("max_in_flight", "solved"),
    [pytest.param(5, True, id="semaphore-5"), pytest.param(None, False, id="unbounded")],
)
def test_exercises_bounded_judges_peak_concurrency(max_in_flight, solved):
    """check_bounded: a semaphore of 5 passes; an unbounded gather (20 at once) does not."""
    ex = exercise("02-bound")
    replies = asyncio.run(gather_all(ex, max_in_flight=max_in_flight))
    assert check_bounded(ex, replies, max_in_flight=5).solved is solved


def test_exercises_bounded_rejects_sequential():
    """check_bounded: one request at a time is within the bound but is not concurrency."""
    ex = exercise("02-bound")
    replies = asyncio.run(one_by_one(ex))
    verdict = check_bounded(ex, replies, max_in_flight=5)
    assert not verdict.solved and "sequential" in verdict.message


# --- 02b · a deadline per request ------------------------------------------------------------------

DEADLINE_S = 1.0


async def with_deadline(ex, where):
    """20 requests behind a Semaphore(4); the deadline inside the slot, around it, or none."""
    slot = asyncio.Semaphore(4)

    async def in_slot(session, payload):
        async with slot:
            if where == "inside":
                return await asyncio.wait_for(post(session, ex, payload), DEADLINE_S)
            return await post(session, ex, payload)

    async def one(session, payload):
        if where == "around":  # the mistake: the clock also runs while the request waits
            return await asyncio.wait_for(in_slot(session, payload), DEADLINE_S)
        return await in_slot(session, payload)

    async with aiohttp.ClientSession(headers=ex.headers()) as session:
        return await asyncio.gather(
            *(one(session, p) for p in ex.payloads()), return_exceptions=True
        )


@pytest.mark.parametrize(
    ("where", "solved", "hint"),
    [
        pytest.param("inside", True, "cut at", id="deadline-in-the-slot"),
        pytest.param("around", False, "waiting for a slot", id="deadline-around-the-wait"),
        pytest.param(None, False, "no deadline cut it", id="no-deadline"),
    ],
)
def test_exercises_deadline_wants_the_clock_to_start_with_the_slot(where, solved, hint):
    """check_deadline: only a deadline started inside the semaphore cuts the slow request alone."""
    ex = exercise("02b-deadline")
    results = asyncio.run(with_deadline(ex, where))
    verdict = check_deadline(ex, results, max_in_flight=4, deadline_s=DEADLINE_S)
    assert verdict.solved is solved and hint in verdict.message


# --- 03 ------------------------------------------------------------------------------------------


def test_exercises_ideal_time_wants_whole_waves():
    """check_ideal_time: ceil(N / C) x latency passes; N / C x latency is explained as close."""
    ex = exercise("03-ideal-time")
    asyncio.run(gather_all(ex, max_in_flight=6))
    waves = -(-len(ex.names) // 6)
    assert check_ideal_time(ex, waves * ex.latency_s, max_in_flight=6).solved
    verdict = check_ideal_time(ex, len(ex.names) / 6 * ex.latency_s, max_in_flight=6)
    assert not verdict.solved and "ceil" in verdict.message


# --- 04 ------------------------------------------------------------------------------------------


def test_exercises_top_level_await_needs_the_replies():
    """check_top_level_await: the awaited replies pass; a result that was not kept does not."""
    ex = exercise("04-await")
    replies = asyncio.run(gather_all(ex))
    assert check_top_level_await(ex, replies).solved
    assert not check_top_level_await(ex, []).solved


def test_exercises_subprocess_run_on_the_kernels_python():
    """check_subprocess_run: the script on sys.executable passes; another Python's output does not."""
    ex = exercise("04-subprocess")
    done = subprocess.run(
        [sys.executable, str(ex.write_script())],
        env=ex.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check_subprocess_run(ex, done.returncode, done.stdout).solved
    other = done.stdout.replace(sys.executable, "/usr/bin/python-elsewhere")
    verdict = check_subprocess_run(ex, done.returncode, other)
    assert not verdict.solved and "sys.executable" in verdict.message


# --- 05 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("honour_retry_after", "solved"),
    [pytest.param(True, True, id="waits-retry-after"), pytest.param(False, False, id="at-once")],
)
def test_exercises_retry_after_judges_the_wait(honour_retry_after, solved):
    """check_retry_after: retrying after Retry-After passes; retrying at once does not."""
    ex = exercise("05-retry-after")
    results = asyncio.run(with_retries(ex, honour_retry_after=honour_retry_after))
    verdict = check_retry_after(ex, results)
    assert verdict.solved is solved
    if not solved:
        assert "too early" in verdict.message


# --- the pieces ------------------------------------------------------------------------------------


def test_exercises_runs_are_isolated():
    """Two attempts at the same exercise never see each other's requests."""
    first, second = exercise("02-bound"), exercise("02-bound")
    asyncio.run(gather_all(first))
    assert check_bounded(second, [], max_in_flight=5).solved is False
    assert first.run_id != second.run_id


def test_exercises_check_never_raises_on_odd_input():
    """A check given the wrong kind of object prints a verdict instead of raising."""
    verdict = check_input_order("not an exercise", object())
    assert isinstance(verdict, CheckResult) and not verdict.solved


def test_exercises_peak_in_flight_counts_overlap():
    """peak_in_flight: an attempt that starts when another ends does not overlap it."""
    from paradigm_kit.workshop.exercises import Attempt

    def attempt(t_start, t_end):
        return Attempt("id", 1, t_start, t_end, 200, None)

    assert peak_in_flight([attempt(0, 1), attempt(1, 2), attempt(0.5, 1.5)]) == 2


def test_exercises_reply_text_reads_every_shape():
    """reply_text: a str, a JSON body and a failure (exception, error dict) are read right."""
    body = {"choices": [{"message": {"content": "Bonjour Alice"}}]}
    assert reply_text(body) == "Bonjour Alice"
    assert reply_text("Bonjour Alice") == "Bonjour Alice"
    assert reply_text(ValueError("x")) is None
    assert reply_text({"error": {"message": "nope"}}) is None


def test_exercises_client_closed_status_is_the_mocks():
    """exercises.CLIENT_CLOSED mirrors the mock's own constant (kept apart to keep imports light)."""
    from paradigm_kit.mock.stats import STATUS_CLIENT_CLOSED
    from paradigm_kit.workshop import exercises

    assert exercises.CLIENT_CLOSED == STATUS_CLIENT_CLOSED
