"""The retry policy: which failures retry, how long to wait, Retry-After parsing."""

from __future__ import annotations

import asyncio
import email.utils
import random

import aiohttp
import pytest
from multidict import CIMultiDict

from paradigm_kit.retry import (
    NEVER_RETRIED_STATUSES,
    RETRYABLE_EXCEPTIONS,
    RetryPolicy,
    is_retryable_status,
    parse_retry_after_s,
)


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 599])
def test_is_retryable_status_true_for_transient_statuses(status):
    """408, 409, 429 and every 5xx may succeed later: retried."""
    assert is_retryable_status(status)


@pytest.mark.parametrize("status", [*sorted(NEVER_RETRIED_STATUSES), 405, 413])
def test_is_retryable_status_false_for_client_errors(status):
    """400, 401, 403, 404, 422 (and other 4xx) cannot succeed by being resent."""
    assert not is_retryable_status(status)


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(asyncio.TimeoutError(), id="timeout"),
        pytest.param(aiohttp.ServerDisconnectedError(), id="server-disconnected"),
        pytest.param(aiohttp.ClientPayloadError("truncated"), id="payload"),
        pytest.param(aiohttp.ClientOSError(104, "reset"), id="connection-reset"),
    ],
)
def test_retryable_exceptions_cover_timeouts_and_dropped_connections(error):
    """Timeouts, dropped connections and truncated bodies are worth another attempt."""
    assert isinstance(error, RETRYABLE_EXCEPTIONS)


@pytest.mark.parametrize(
    ("headers", "expected_s"),
    [
        pytest.param({"Retry-After": "3"}, 3.0, id="seconds"),
        pytest.param({"Retry-After": "1.5"}, 1.5, id="fractional-seconds"),
        pytest.param({"retry-after-ms": "250"}, 0.25, id="milliseconds"),
        pytest.param({"retry-after-ms": "250", "Retry-After": "9"}, 0.25, id="ms-wins"),
        pytest.param({"Retry-After": "-4"}, 0.0, id="negative-is-zero"),
        pytest.param({}, None, id="absent"),
        pytest.param({"Retry-After": "soon"}, None, id="unreadable"),
    ],
)
def test_parse_retry_after_reads_seconds_and_milliseconds(headers, expected_s):
    """retry-after-ms wins over Retry-After; garbage or absence means 'not said'."""
    assert parse_retry_after_s(CIMultiDict(headers)) == expected_s


def test_parse_retry_after_reads_an_http_date():
    """Retry-After as an HTTP date is the time left until that date."""
    now_s = 1_700_000_000.0
    date = email.utils.formatdate(now_s + 30, usegmt=True)
    assert parse_retry_after_s(CIMultiDict({"Retry-After": date}), now_s=now_s) == pytest.approx(
        30.0
    )
    past = email.utils.formatdate(now_s - 30, usegmt=True)
    assert parse_retry_after_s(CIMultiDict({"Retry-After": past}), now_s=now_s) == 0.0


def test_backoff_equal_jitter_grows_and_stays_within_bounds():
    """Equal jitter waits between half and all of base * 2^(k-1), capped: gaps keep growing."""
    policy = RetryPolicy(base_delay_s=0.5, max_delay_s=8.0, jitter="equal")
    rng = random.Random(1)
    for retry_number in range(1, 10):
        ceiling_s = min(8.0, 0.5 * 2 ** (retry_number - 1))
        for _ in range(50):
            assert ceiling_s / 2 <= policy.backoff_s(retry_number, rng) <= ceiling_s


def test_backoff_full_jitter_stays_under_the_cap():
    """Full jitter waits anywhere between 0 and the capped exponential."""
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=4.0, jitter="full")
    rng = random.Random(2)
    waits = [policy.backoff_s(6, rng) for _ in range(200)]
    assert all(0.0 <= wait <= 4.0 for wait in waits)
    assert min(waits) < 1.0 < max(waits)  # really spread, not a constant


def test_delay_honours_retry_after_with_at_most_ten_percent_more():
    """With a Retry-After the wait is at least that long, and at most 10% (<= 1 s) longer."""
    policy = RetryPolicy()
    rng = random.Random(3)
    for retry_after_s in (0.0, 0.2, 1.0, 30.0):
        for retry_number in (1, 5):
            wait_s = policy.delay_s(retry_number, retry_after_s, rng)
            assert retry_after_s <= wait_s <= retry_after_s + min(1.0, 0.1 * retry_after_s)


def test_retry_after_over_the_cap_is_too_long():
    """A Retry-After beyond max_retry_after_s fails the request instead of stalling the run."""
    policy = RetryPolicy(max_retry_after_s=120.0)
    assert policy.retry_after_too_long(3600.0)
    assert not policy.retry_after_too_long(120.0)
    assert not policy.retry_after_too_long(None)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"max_retries": -1}, id="negative-retries"),
        pytest.param({"jitter": "none"}, id="unknown-jitter"),
        pytest.param({"base_delay_s": -0.1}, id="negative-delay"),
    ],
)
def test_retry_policy_rejects_nonsense(kwargs):
    """An impossible policy is a ValueError at construction, not a surprise mid-run."""
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)
