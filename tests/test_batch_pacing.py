"""The runner's pacer: client buckets never exceed their allowance, learn limits from headers,
a 429 cools every worker down. Driven by a fake clock: counted, never timed."""

from __future__ import annotations

import asyncio

import pytest
from conftest import FakeClock
from multidict import CIMultiDict

from paradigm_kit.batch.pacing import Pacer, client_bucket, estimate_tokens


def admissions_per_window(times_s: list[float], window_s: float) -> int:
    """The most admissions in any window of ``window_s`` seconds (a sliding window)."""
    times_s = sorted(times_s)
    most, start = 0, 0
    for end, t in enumerate(times_s):
        while t - times_s[start] >= window_s:
            start += 1
        most = max(most, end - start + 1)
    return most


async def admit_all(
    pacer: Pacer, clock: FakeClock, bodies: list[dict], workers: int
) -> list[float]:
    times_s: list[float] = []
    queue = list(bodies)

    async def worker() -> None:
        while queue:
            body = queue.pop()
            assert await pacer.admit(body) is not None
            times_s.append(clock())

    await asyncio.gather(*(worker() for _ in range(workers)))
    return times_s


@pytest.mark.parametrize("per_minute", [60, 600, 6000])
def test_pacer_requests_bucket_never_exceeds_its_allowance(per_minute):
    """Over any window, admissions <= the burst + the refill of that window, with 20 workers."""
    clock = FakeClock()
    pacer = Pacer(max_requests_per_minute=per_minute, sleep=clock.sleep, clock=clock)
    n = max(200, per_minute // 10)
    times_s = asyncio.run(admit_all(pacer, clock, [{"messages": []}] * n, workers=20))
    assert len(times_s) == n
    capacity = max(1.0, per_minute / 60)
    for window_s in (1.0, 5.0, 10.0):
        allowance = capacity + per_minute / 60 * window_s
        assert admissions_per_window(times_s, window_s) <= allowance


def test_pacer_tokens_bucket_never_exceeds_its_allowance():
    """Tokens admitted over any window stay within the bucket's burst + refill."""
    clock = FakeClock()
    tokens_per_minute = 60_000
    pacer = Pacer(max_tokens_per_minute=tokens_per_minute, sleep=clock.sleep, clock=clock)
    body = {"messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 100}
    cost = estimate_tokens(body)
    times_s = asyncio.run(admit_all(pacer, clock, [body] * 300, workers=10))
    per_second = tokens_per_minute / 60
    for window_s in (1.0, 5.0):
        assert admissions_per_window(times_s, window_s) * cost <= per_second + per_second * window_s


def test_pacer_uses_most_of_the_limit():
    """Headroom is small: over a long run the pacer admits >= 97% of the told rate."""
    clock = FakeClock()
    pacer = Pacer(max_requests_per_minute=600, sleep=clock.sleep, clock=clock)
    start_s = clock()
    times_s = asyncio.run(admit_all(pacer, clock, [{}] * 3000, workers=50))
    achieved_per_minute = len(times_s) / (max(times_s) - start_s) * 60
    assert 0.97 * 600 <= achieved_per_minute <= 600 * 1.05  # 1.05: the initial burst


def test_client_bucket_leaves_headroom_under_the_server_limit():
    """The client bucket refills a little slower and bursts one unit less than the server's."""
    bucket = client_bucket(600)
    assert bucket.per_minute < 600
    assert bucket.capacity == 9.0
    assert client_bucket(60).capacity == 1.0  # nothing to spare below one unit
    # tokens: a tenth of the burst, as one token is no margin for a request of hundreds
    assert client_bucket(60_000, spare_fraction=0.1).capacity == 900.0
    assert client_bucket(600, spare_fraction=0.1).capacity == 9.0  # at least one unit


def test_pacer_learns_limits_from_ratelimit_headers():
    """Without a told limit, x-ratelimit-limit-* headers create the buckets, starting at the
    server's remaining level."""
    clock = FakeClock()
    pacer = Pacer(clock=clock)
    assert pacer.requests_bucket is None and pacer.learning
    pacer.learn(
        CIMultiDict(
            {
                "x-ratelimit-limit-requests": "600",
                "x-ratelimit-remaining-requests": "2",
                "x-ratelimit-limit-tokens": "90000",
            }
        )
    )
    assert pacer.learned_requests_per_minute == 600
    assert pacer.learned_tokens_per_minute == 90000
    assert pacer.requests_bucket.level == pytest.approx(2.0)
    assert not pacer.learning


def test_pacer_told_limit_wins_over_headers():
    """A limit the user gave is kept; headers do not replace it."""
    pacer = Pacer(max_requests_per_minute=120)
    pacer.learn(CIMultiDict({"x-ratelimit-limit-requests": "6000"}))
    assert pacer.requests_bucket.per_minute < 120
    assert pacer.learned_requests_per_minute is None


def test_pacer_cooldown_holds_every_worker():
    """After cool_down(2), no worker is admitted before 2 s have passed."""
    clock = FakeClock()
    pacer = Pacer(sleep=clock.sleep, clock=clock)
    pacer.cool_down(2.0)
    start_s = clock()
    times_s = asyncio.run(admit_all(pacer, clock, [{}] * 10, workers=5))
    assert min(times_s) >= start_s + 2.0


def test_pacer_settle_corrects_the_estimate_with_usage():
    """Usage lower than the estimate gives tokens back; higher charges the difference."""
    clock = FakeClock()
    pacer = Pacer(max_tokens_per_minute=6000, sleep=clock.sleep, clock=clock)
    level_before = pacer.tokens_bucket.level
    body = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 10}
    taken = asyncio.run(pacer.admit(body))
    assert taken == estimate_tokens(body)
    pacer.settle(taken, {"prompt_tokens": 2, "completion_tokens": 3}, 10)
    assert pacer.tokens_bucket.level == pytest.approx(level_before - 12)


def test_estimate_tokens_counts_text_and_max_tokens():
    """Prompt characters / 4 + 4 per message, plus max_tokens."""
    body = {"messages": [{"role": "user", "content": "a" * 40}], "max_tokens": 7}
    assert estimate_tokens(body) == 4 + 10 + 7
