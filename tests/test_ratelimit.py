"""The shared token bucket, on a fake clock: burst, refill, debt for an oversized cost, and
give-back when usage was lower than the estimate. Counted, never timed."""

from __future__ import annotations

import pytest
from conftest import FakeClock

from paradigm_kit.ratelimit import TokenBucket


def test_token_bucket_starts_full_with_one_seconds_worth():
    """capacity = max(1, R/60): 600/min holds 10 units, 30/min still holds 1."""
    assert TokenBucket(600, clock=FakeClock()).capacity == 10.0
    assert TokenBucket(30, clock=FakeClock()).capacity == 1.0


def test_token_bucket_refuses_when_empty_and_says_how_long():
    """An empty bucket answers (False, seconds until the cost fits) and takes nothing."""
    clock = FakeClock()
    bucket = TokenBucket(60, clock=clock)  # 1 unit a second, capacity 1
    assert bucket.try_take(1) == (True, 0.0)
    assert bucket.try_take(1) == (False, pytest.approx(1.0))
    clock.advance(0.25)
    assert bucket.try_take(1) == (False, pytest.approx(0.75))
    clock.advance(0.75)
    assert bucket.try_take(1) == (True, 0.0)


def test_token_bucket_refill_stops_at_capacity():
    """A long idle time refills to the capacity, never beyond."""
    clock = FakeClock()
    bucket = TokenBucket(600, clock=clock)
    bucket.charge(10)
    clock.advance(3600)
    assert bucket.level == pytest.approx(10.0)


def test_token_bucket_oversized_cost_needs_a_full_bucket_and_leaves_debt():
    """A cost above the capacity is admitted once the bucket is full, leaving it in debt; the
    next admission waits for the debt to be repaid."""
    clock = FakeClock()
    bucket = TokenBucket(600, clock=clock)  # 10 a second, capacity 10
    assert bucket.try_take(25) == (True, 0.0)
    assert bucket.level == pytest.approx(-15.0)
    assert bucket.try_take(1) == (False, pytest.approx(1.6))  # 16 units at 10 a second
    clock.advance(1.6)
    assert bucket.try_take(1) == (True, 0.0)


def test_token_bucket_charge_after_the_fact_may_go_into_debt():
    """charge() always takes, even below zero (usage above the estimate)."""
    bucket = TokenBucket(600, clock=FakeClock())
    bucket.charge(12)
    assert bucket.level == pytest.approx(-2.0)
    assert bucket.remaining() == 0
    assert bucket.reset_s() == pytest.approx(1.2)


def test_token_bucket_give_back_returns_units_up_to_capacity():
    """give_back() returns what an estimate overcharged, but never fills beyond capacity."""
    bucket = TokenBucket(600, clock=FakeClock())
    bucket.try_take(8)
    bucket.give_back(5)
    assert bucket.level == pytest.approx(7.0)
    bucket.give_back(100)
    assert bucket.level == pytest.approx(10.0)


@pytest.mark.parametrize("per_minute", [0, -5])
def test_token_bucket_rejects_a_non_positive_rate(per_minute):
    """A rate of zero or less is a mistake, said at construction."""
    with pytest.raises(ValueError, match="per_minute must be positive"):
        TokenBucket(per_minute)
