"""The adaptive controller on synthetic servers: no network, no clock, deterministic."""

from __future__ import annotations

import asyncio
import random

import pytest

from paradigm_kit.batch.concurrency import (
    AdaptiveConcurrency,
    Baseline,
    ConcurrencyGate,
    FixedConcurrency,
)

FIXED_S, PER_TOKEN_S = 0.2, 0.01


def _sharing_server(
    controller: AdaptiveConcurrency,
    capacity: float,
    samples: int,
    *,
    seed: int = 1,
    stream: bool = False,
    queue_limit: int | None = None,
) -> list[int]:
    """Feed ``samples`` answers from a processor-sharing server of capacity ``capacity``:
    latency = (a + b x tokens) x max(1, n / K) with n the controller's limit. With
    ``queue_limit``, a limit beyond it gets 503s instead. Returns the limit after each sample."""
    rng = random.Random(seed)
    limits = []
    for _ in range(samples):
        n, epoch = controller.limit, controller.epoch
        if queue_limit is not None and n > queue_limit:
            controller.on_overload("queue_full", epoch=epoch)
        else:
            tokens = rng.randint(5, 400)
            slowdown = max(1.0, n / capacity) * rng.uniform(1.0, 1.05)
            latency_s = (FIXED_S + PER_TOKEN_S * tokens) * slowdown
            ttft_s = FIXED_S * slowdown if stream else None
            controller.on_sample(latency_s, tokens, inflight=n, epoch=epoch, ttft_s=ttft_s)
        limits.append(controller.limit)
    return limits


@pytest.mark.parametrize("capacity", [1, 3, 8, 32, 100])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_controller_settles_in_the_band_of_a_sharing_server(capacity: int, stream: bool) -> None:
    """On a server of capacity K the limit ends between 0.9K and 1.35K (at least 1)."""
    controller = AdaptiveConcurrency()
    limits = _sharing_server(controller, capacity, 3000, stream=stream)
    tail = limits[-500:]
    assert min(tail) >= max(1, int(0.9 * capacity)) - 1
    assert max(tail) <= max(2, 1.35 * capacity)


def test_controller_does_not_oscillate_once_settled() -> None:
    """Once in the band, the limit stays within +-15% of its final value."""
    controller = AdaptiveConcurrency()
    limits = _sharing_server(controller, 16, 4000)
    final = limits[-1]
    assert all(abs(limit - final) <= 0.15 * final for limit in limits[-2000:])


def test_controller_ramps_fast_on_an_unlimited_server() -> None:
    """An idle fast server: the ceiling (256) within a few hundred answers, not thousands."""
    controller = AdaptiveConcurrency()
    limits = _sharing_server(controller, 10_000, 400)
    assert limits[-1] == 256


def test_controller_never_above_its_ceiling_or_told_limit() -> None:
    """``max_concurrency`` and a told limit are never exceeded."""
    for controller, cap in [
        (AdaptiveConcurrency(max_concurrency=20), 20),
        (AdaptiveConcurrency(told_limit=12), 12),
        (AdaptiveConcurrency(max_concurrency=50, told_limit=70), 50),
    ]:
        limits = _sharing_server(controller, 10_000, 600)
        assert max(limits) == cap


def test_controller_backs_off_on_503_and_never_below_its_floor() -> None:
    """503s halve the limit, once per round; a server shedding everything leaves the floor."""
    controller = AdaptiveConcurrency(calibration_samples=0, initial=64)
    controller.on_overload("queue_full", epoch=controller.epoch)
    assert controller.limit == 32
    controller.on_overload("queue_full", epoch=controller.epoch - 1)  # sent before the cut
    assert controller.limit == 32
    for _ in range(50):
        controller.on_overload("queue_full", epoch=controller.epoch)
    assert controller.limit == 1


def test_controller_settles_under_a_shedding_fifo_server() -> None:
    """Over the queue's limit, 503s; the limit settles under it and stays."""
    controller = AdaptiveConcurrency()
    limits = _sharing_server(controller, 8, 3000, queue_limit=24)
    assert max(limits[-1000:]) <= 24
    assert min(limits[-1000:]) >= 7


def _round(controller: AdaptiveConcurrency, answers: int, rejected: int = 0) -> None:
    """One round on an idle server: ``rejected`` 429s, then ``answers`` unloaded answers."""
    for _ in range(rejected):
        controller.on_overload("rate_limited", epoch=controller.epoch)
    for _ in range(answers):
        controller.on_sample(1.0, 10, inflight=controller.limit, epoch=controller.epoch)


def test_controller_429_cuts_mildly_and_holds_growth() -> None:
    """One 429 in a round (a quota on rate) cuts x0.9 when the round ends; for
    ``rate_hold_rounds`` rounds the limit may grow back to one under the limit that drew the
    429, never to it (a 429 cut that overshot is not pinned there)."""
    controller = AdaptiveConcurrency(calibration_samples=0, initial=40)
    controller.baseline.add(1.0, 10)
    controller.on_overload("rate_limited", epoch=controller.epoch)
    assert controller.limit == 40  # no cut before the round ends
    _round(controller, controller.round_size)
    assert controller.limit == 36
    for _ in range(controller.rate_hold_rounds - 1):
        _round(controller, controller.round_size)
        assert 36 <= controller.limit <= 39
    assert controller.limit == 39
    _round(controller, controller.round_size)
    assert controller.limit > 39


@pytest.mark.parametrize(("answers", "rejected", "limit"), [(20, 20, 20), (20, 5, 32), (20, 1, 36)])
def test_controller_429_cut_follows_the_share_rejected(answers, rejected, limit) -> None:
    """The cut is the share of attempts the quota accepted, between x0.5 and x0.9: far over a
    rate the limit halves in one round instead of eight rounds of x0.9."""
    controller = AdaptiveConcurrency(calibration_samples=0, initial=40)
    controller.baseline.add(1.0, 10)
    _round(controller, answers, rejected)
    assert controller.limit == limit


def test_controller_429_again_after_the_hold_doubles_it() -> None:
    """A 429 each time the limit is back at the one that drew it (the quota is where it was):
    the next hold is twice as long, so the probes that earn 429s get rarer."""
    controller = AdaptiveConcurrency(calibration_samples=0, initial=20, rate_hold_rounds=4)
    controller.baseline.add(1.0, 10)
    holds = []
    for _ in range(3):
        hit = controller.limit
        _round(controller, controller.round_size, rejected=2)  # 429s at this limit
        rounds = 0
        while controller.limit < hit:
            _round(controller, controller.round_size)
            rounds += 1
        holds.append(rounds)
    assert holds == [4, 8, 16]


def test_controller_ignores_faults_and_old_epochs() -> None:
    """Samples sent under an older limit are not judged."""
    controller = AdaptiveConcurrency(calibration_samples=0, initial=8)
    controller.baseline.add(1.0, 10)
    for _ in range(100):
        controller.on_sample(10.0, 10, inflight=8, epoch=controller.epoch - 1)
    assert controller.limit == 8


def test_controller_follows_a_capacity_change() -> None:
    """Capacity 16 -> 32 -> 8: the limit follows into each new band."""
    controller = AdaptiveConcurrency()
    _sharing_server(controller, 16, 2000)
    up = _sharing_server(controller, 32, 2000)
    assert 0.9 * 32 - 1 <= up[-1] <= 1.35 * 32
    down = _sharing_server(controller, 8, 2000)
    assert 0.9 * 8 - 1 <= down[-1] <= 1.35 * 8


def test_controller_longer_answers_are_not_queueing() -> None:
    """Answers growing from 10 to 1000 tokens on an idle server never lower the limit."""
    controller = AdaptiveConcurrency(calibration_samples=0, initial=16, max_concurrency=16)
    for tokens in (10, 20, 40, 80, 160, 320, 640):
        controller.baseline.add(FIXED_S + PER_TOKEN_S * tokens, tokens)
    for i in range(1000):
        tokens = 10 + i
        controller.on_sample(
            FIXED_S + PER_TOKEN_S * tokens, tokens, inflight=16, epoch=controller.epoch
        )
    assert controller.limit == 16


@pytest.mark.parametrize(
    ("samples", "line"),
    [
        pytest.param(
            [(0.7, 50), (2.2, 200), (4.2, 400), (1.2, 100)], (0.2, 0.01), id="fixed-plus-per-token"
        ),
        pytest.param([(0.5, 10), (0.4, 100)], (0.4, 0.0), id="no-per-token-part"),
        pytest.param([(1.0, 100), (2.0, 200)], (0.0, 0.01), id="all-per-token"),
    ],
)
def test_baseline_fits_the_lower_envelope(samples, line) -> None:
    """The unloaded line ``a + b x tokens`` through each band's minimum."""
    baseline = Baseline()
    for latency_s, tokens in samples + [(latency * 3, tokens) for latency, tokens in samples]:
        baseline.add(latency_s, tokens)
    a, b = baseline.line()
    assert a == pytest.approx(line[0], abs=1e-6) and b == pytest.approx(line[1], abs=1e-6)


def test_controller_rejects_bad_parameters() -> None:
    """A limit below 1 is refused."""
    with pytest.raises(ValueError):
        AdaptiveConcurrency(max_concurrency=0)


def test_gate_holds_at_most_the_limit_in_flight() -> None:
    """The gate never lets more than ``limit`` in at once, and follows a changed limit."""
    fixed = FixedConcurrency(3)
    gate = ConcurrencyGate(fixed)

    async def one() -> None:
        async with gate.slot() as (inflight, _):
            assert inflight <= fixed.limit
            await asyncio.sleep(0)

    async def main() -> None:
        await asyncio.gather(*(one() for _ in range(20)))
        fixed.limit = 7
        await asyncio.gather(*(one() for _ in range(40)))

    asyncio.run(main())
    assert gate.peak_inflight == 7 and gate.inflight == 0


def test_controller_calibrates_on_four_answers_at_concurrency_one() -> None:
    """The first four answers are the baseline's anchor, sent one at a time; then ``initial``."""
    controller = AdaptiveConcurrency()
    for _ in range(3):
        controller.on_sample(1.0, 10, inflight=1, epoch=controller.epoch)
        assert controller.limit == 1
    controller.on_sample(1.0, 10, inflight=1, epoch=controller.epoch)
    assert controller.limit == 8 and controller.history[-1].reason == "calibrated"


def test_controller_ramp_judges_the_fresh_half_of_the_window() -> None:
    """While ramping, a round is half the window (the requests the doubling let in), so a
    doubling waits for 32 answers at 64, not 48; once settled, a round is the whole window."""
    controller = AdaptiveConcurrency(calibration_samples=0, initial=64)
    controller.baseline.add(1.0, 10)
    for _ in range(31):
        controller.on_sample(1.0, 10, inflight=64, epoch=controller.epoch)
    assert controller.limit == 64
    controller.on_sample(1.0, 10, inflight=64, epoch=controller.epoch)
    assert controller.limit == 128
    for _ in range(48):  # twice the load: queueing, the ramp is over
        controller.on_sample(2.0, 10, inflight=128, epoch=controller.epoch)
    assert controller.history[-1].reason == "queueing"
    assert controller.round_size == max(16, min(48, controller.limit))


def _closed_loop_on_an_idle_server(controller: AdaptiveConcurrency, latency_s: float) -> list:
    """A fake clock: each answer takes ``latency_s`` whatever the load (a server with room for
    all); a slot freed is filled at once, as ``ConcurrencyGate`` does. ``[(t_s, limit)]``."""
    in_flight: list[tuple[float, int, int]] = []  # (t_end_s, inflight at start, epoch)
    now_s, limits = 0.0, []
    while controller.limit < controller.ceiling and now_s < 100 * latency_s:
        while len(in_flight) < controller.limit:
            in_flight.append((now_s + latency_s, len(in_flight) + 1, controller.epoch))
        in_flight.sort()
        now_s, inflight, epoch = in_flight.pop(0)
        controller.on_sample(latency_s, 20, inflight=inflight, epoch=epoch)
        limits.append((now_s, controller.limit))
    return limits


def test_controller_ramps_one_latency_per_doubling() -> None:
    """An idle server with room for 256: four calibration latencies, then 8 -> 256 in five
    doublings of about one latency each (TCP's slow start), not the 1.5-2 a whole window took."""
    controller = AdaptiveConcurrency()
    limits = _closed_loop_on_an_idle_server(controller, latency_s=1.0)
    t_ceiling_s = next(t_s for t_s, limit in limits if limit == 256)
    assert t_ceiling_s <= 4 + 5 + 1


def _uniform_round(controller: AdaptiveConcurrency, ratio: float) -> None:
    for _ in range(controller.round_size):
        controller.on_sample(ratio, 10, inflight=controller.limit, epoch=controller.epoch)


def test_controller_a_growth_step_that_queues_goes_back_to_where_it_grew_from() -> None:
    """A +10% step that queues mildly returns to the limit before it (measured in the band),
    not under it to 1.15 x the estimate (12 -> 9 on a FIFO server of 8 slots); a step that
    queues badly (the server lost capacity meanwhile) follows the estimate."""
    for ratio, expected in [(1.4, 11), (3.0, 4)]:
        controller = AdaptiveConcurrency(calibration_samples=0, initial=20)
        controller.baseline.add(1.0, 10)
        _uniform_round(controller, 2.0)  # queueing: K ~ 10, limit 11
        assert controller.limit == 11
        _uniform_round(controller, 1.0)  # flat: +10%
        assert controller.limit == 12
        _uniform_round(controller, ratio)
        assert controller.limit == expected
