"""``--concurrency auto``: how many requests to keep in flight, learned from the answers.

The physics. A server that shares its capacity K among the requests it runs (continuous
batching) gives every concurrency from K up the same throughput, and each request's latency
grows as n/K beyond it; a FIFO server with M slots makes the extra requests wait, and sheds
them (503) when its queue is full. The useful band is about 0.9K to 1.3K: below, the server
idles; above, every answer only takes longer, until timeouts and 503s. K is not documented for
Paradigm, and a private instance has whatever GPUs its owner gave it, so the runner measures it.

The signal: **latency against an unloaded baseline, normalised for the answer's length.**
Netflix's Gradient2 and Vegas, Envoy's adaptive concurrency filter and Vector's ARC compare
end-to-end latency with a tracked minimum; for an LLM that is wrong, since a 400-token answer
takes ten times a 40-token one on an idle server. Here each answer's latency is divided by what
an unloaded server takes for that many output tokens:

* plain answers: ``a + b x completion_tokens``, a line fitted through the lower envelope of the
  (tokens, latency) samples: the lower quartile of the unloaded latencies in each power-of-two
  band of token counts, fitted by least squares with ``a, b >= 0`` (a fixed part
  makes "per token" alone misleading for short answers);
* streamed answers: ``a`` is the lower quartile of unloaded times to first token, ``b`` that
  of time per output token after the first, so queueing (TTFT grows) and sharing (both grow) both show.

The ratio of a round's samples (median, so one slow answer changes nothing) is the load: 1 is
an idle server, n/K a sharing one past its capacity.

The algorithm (one decision per **round**: ``clamp(limit, 16, 48)`` samples of requests that
*started* under the current limit, so a decision never judges the previous limit's answers;
while ramping, ``clamp(limit // 2, 8, 48)``, see 2):

1. **Calibrate**: the first ``calibration_samples`` (4) requests go at concurrency 1, the
   baseline's anchor (Envoy measures its minRTT at a low concurrency the same way). Cost: four
   unloaded latencies, once per run (it was six: on an idle server with room for 256, the
   calibration was half of auto's fixed cost; four points already fit the line, and every
   clearly unloaded round refines it, see ``Baseline``).
2. **Ramp**: from ``initial`` (8), x2 per round while the ratio stays under ``flat`` (1.15): an
   idle fast server is reached in log2(256/8) = 5 rounds, not an hour of +1 steps. A ramp
   round is **the fresh half of the window**: when the limit doubles from L/2 to L, L/2 requests
   start at once, under the full new load, and are the first of the new limit to finish, one
   latency later; waiting for a whole window (L answers) would take about 1.5 latencies per
   round. So each doubling costs one latency, as TCP's slow start (x2 per round trip); 8
   answers at least (a median of 8 still ignores three slow ones). Why not x4, or a higher
   start: both multiply the one overshoot round's latency (x4 past K, or 16 on a server of
   capacity 1 makes each answer 16 times as long, and timeouts), for a gain of one or two
   latencies per run.
3. **Queueing** (ratio above ``high``, 1.3): the server is past its capacity by that ratio, so
   K ~ limit / ratio; the limit goes to ``target`` (1.15) x that estimate, never above 0.9 x
   the current limit. Between ``flat`` and ``high`` the limit holds: that is the band.
4. **Growth after a decrease**: +10% (at least +1) per flat round, the step doubling with each
   consecutive flat round (so a server that gained capacity is found again in a few rounds), and
   back to +10% on any other round. There is no cycle: in the band nothing moves.
5. **Overload**, at most one decrease per round, counted only for requests sent under the
   current limit (TCP's one cut per window): a **503** (queue full, shedding) x0.5; a
   **timeout** x0.75; a **429** is a quota on the account's *rate*, not the server's capacity,
   and its latencies stay flat, so latency cannot say how far over the rate the limit is. The
   round's share of 429s can: the limit goes to the share of its attempts the quota accepted
   (between x0.5 and x0.9; x0.9 per round took eight rounds of 429s from 16 to 5 on a 20/s
   quota with no rate-limit headers, p50 latency 17x unloaded with the retries' waits). Then
   it does not grow back to the limit that drew the 429, only to one under it (retries' 429s
   make the share overshoot, and a hold at the cut itself left 3 where 6 fit), for
   ``rate_hold_rounds`` (10) rounds, twice as long at each 429 in a row (10, 20, 40, 80: the
   probe that finds the quota where it was gets rarer, for few 429s once settled); a round
   without 429 at the limit that drew one resets that. After a queueing cut, likewise not
   back to the limit that queued: on K = 3 the limit sits at 3 and tries 4 for one round in
   eleven, a probe, not a 3 <-> 4 cycle; and a +10% step that queues mildly (ratio under 1.5)
   goes back to the limit it grew from, which was measured in the band, rather than under it
   (on a FIFO server of 8 slots the median ratio is not n/K, and 12 -> 9 left the band). Other
   errors (500, 502, a dropped connection) are faults, not load: ignored.
6. Always ``floor <= limit <= ceiling``, ``floor`` 1 (no starvation: one request is always
   allowed) and ``ceiling`` = min(``--max-concurrency`` (256), a limit the caller was told).

When the signals disagree: an error in the round wins over a flat latency (a 503 or 429 is the
server saying "too much" outright); a high latency without errors still cuts (queueing is the
first sign, 503s the last); a flat latency with 500/502 faults grows (faults are not load).

A request waiting out a ``Retry-After`` or a backoff does **not** keep its slot
(``ConcurrencyGate``): the slot counts what the server is working on, and the waiting request
takes a slot again before its next attempt. The number of requests held at once (in flight or
waiting) is bounded by the number of workers, ``max_concurrency``.

``AdaptiveConcurrency`` holds no clock and does no I/O: it is fed one sample at a time, as
Netflix's limits are (``on_sample``/``on_overload``), so it is tested on synthetic latencies.
"""

from __future__ import annotations

import asyncio
import statistics
from collections import deque
from collections.abc import Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

__all__ = ["AdaptiveConcurrency", "Baseline", "ConcurrencyGate", "FixedConcurrency"]

DEFAULT_MAX_CONCURRENCY = 256


class Baseline:
    """What an unloaded server takes for an answer of ``tokens`` output tokens: ``a + b x tokens``.

    Fed only *unloaded* answers: the calibration's, and those of rounds whose median ratio was
    at most 1.05. Once settled, every answer comes from a server working at 1.1-1.3x its capacity, so a
    baseline fed every answer would drift up to the loaded latency and the controller would read
    its own queueing as "unloaded" (Vegas and Gradient2 need periodic probes for that). Plain
    answers: per power-of-two band of token counts, the lower quartile of its last ``keep``
    unloaded answers; the line is fitted through those points. Streamed answers: the lower
    quartiles of time to first token and of time per token.
    """

    def __init__(self, keep: int = 64) -> None:
        self._keep = keep
        self._bands: dict[int, deque[tuple[int, float]]] = {}  # band -> (tokens, latency_s)
        self._ttft: deque[float] = deque(maxlen=keep)
        self._per_token: deque[float] = deque(maxlen=keep)
        self._fit: tuple[float, float] | None = None

    def add(self, latency_s: float, tokens: int, ttft_s: float | None = None) -> None:
        self._fit = None
        if ttft_s is not None and tokens >= 2:
            self._ttft.append(ttft_s)
            self._per_token.append(max(0.0, latency_s - ttft_s) / (tokens - 1))
            return
        tokens = max(0, tokens)
        band = self._bands.setdefault(tokens.bit_length(), deque(maxlen=self._keep))
        band.append((tokens, latency_s))

    def expected_s(self, tokens: int) -> float | None:
        """The unloaded latency for ``tokens`` output tokens, or None before any sample."""
        a, b = self.line()
        if a is None:
            return None
        return a + b * max(0, tokens)

    def line(self) -> tuple[float | None, float]:
        """``(a_s, b_s_per_token)``; streamed samples win when there are any."""
        if self._fit is None:
            if self._ttft:
                self._fit = _low(list(self._ttft)), _low(list(self._per_token))
            elif self._bands:
                self._fit = _fit_line([_low_point(list(band)) for band in self._bands.values()])
            else:
                return None, 0.0
        return self._fit


def _low(values: list[float]) -> float:
    """The lower quartile: an unloaded latency, not the luckiest one (a minimum sits 10% under
    the typical unloaded answer on a noisy machine, and every answer then looks loaded)."""
    values = sorted(values)
    return values[(len(values) - 1) // 4]


def _low_point(points: list[tuple[int, float]]) -> tuple[int, float]:
    points = sorted(points, key=lambda point: point[1])
    return points[(len(points) - 1) // 4]


def _fit_line(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least squares ``latency = a + b x tokens`` with ``a, b >= 0``."""
    if len(points) < 2:
        return min(latency for _, latency in points), 0.0
    xs, ys = [float(x) for x, _ in points], [y for _, y in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return min(ys), 0.0
    b = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread
    if b < 0:  # longer answers were faster: no per-token part to speak of
        return min(ys), 0.0
    a = mean_y - b * mean_x
    if a < 0:  # through the origin instead: all per-token
        return 0.0, sum(x * y for x, y in zip(xs, ys, strict=True)) / sum(x * x for x in xs)
    return a, b


@dataclass
class Decision:
    """One round's outcome, kept in ``AdaptiveConcurrency.history`` (the bench plots it)."""

    samples_seen: int
    limit: int
    reason: str
    ratio: float | None


class AdaptiveConcurrency:
    """The limit for ``--concurrency auto`` (see the module docstring for the algorithm)."""

    def __init__(
        self,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        told_limit: int | None = None,
        initial: int = 8,
        floor: int = 1,
        calibration_samples: int = 4,
        flat: float = 1.15,
        high: float = 1.3,
        target: float = 1.15,
        rate_hold_rounds: int = 10,
    ) -> None:
        if max_concurrency < 1 or floor < 1 or initial < 1:
            raise ValueError("max_concurrency, floor and initial must be >= 1")
        self.ceiling = min(max_concurrency, told_limit) if told_limit else max_concurrency
        self.floor = min(floor, self.ceiling)
        self.initial = self._clamp(initial)
        self.flat, self.high, self.target = flat, high, target
        self.rate_hold_rounds = rate_hold_rounds
        self.baseline = Baseline()
        self._calibrating = calibration_samples
        self.limit = self.floor if calibration_samples > 0 else self.initial
        self.epoch = 0  # bumped at every change: samples from an older epoch are not judged
        self._ratios: list[float] = []
        self._inflight: list[int] = []
        self._samples: list[tuple[float, int, float | None]] = []
        self._overload: str | None = None
        self._ramping = True
        self._flat_rounds = 0
        self._rate_ceiling: int | None = None
        self._rate_hold = 0
        self._rejected = 0  # 429s of the current round (sent under the current limit)
        self._rate_strikes = 0  # 429 cuts since a round without one at that limit
        self._rate_hit_limit: int | None = None  # the limit that drew the last 429
        self._grew_from: int | None = None  # the limit before the last +10% step
        self.samples_seen = 0
        self.history: list[Decision] = [Decision(0, self.limit, "start", None)]

    def _clamp(self, value: float) -> int:
        return max(self.floor, min(self.ceiling, int(value)))

    @property
    def round_size(self) -> int:
        """Samples per decision: a whole window (16-48) once settled, its fresh half while ramping."""
        if self._ramping:
            return max(8, min(48, self.limit // 2))
        return max(16, min(48, self.limit))

    def on_sample(
        self,
        latency_s: float,
        completion_tokens: int,
        *,
        inflight: int,
        epoch: int,
        ttft_s: float | None = None,
    ) -> None:
        """A successful answer: its latency from the attempt's start, its length, the requests in
        flight when it was sent, and the epoch it was sent in (``ConcurrencyGate`` gives both)."""
        self.samples_seen += 1
        if self._calibrating > 0:
            self.baseline.add(latency_s, completion_tokens, ttft_s)
            self._calibrating -= 1
            if self._calibrating == 0:
                self._set(self.initial, "calibrated", None)
            return
        expected_s = self.baseline.expected_s(completion_tokens)
        if epoch != self.epoch or expected_s is None:
            return
        self._ratios.append(latency_s / expected_s if expected_s > 0 else 1.0)
        self._inflight.append(inflight)
        self._samples.append((latency_s, completion_tokens, ttft_s))
        if len(self._ratios) >= self.round_size:
            self._decide()

    def on_overload(self, kind: str, *, epoch: int) -> None:
        """``kind``: ``"queue_full"`` (503), ``"timeout"`` or ``"rate_limited"`` (429)."""
        if epoch != self.epoch or self._calibrating > 0:
            return
        if kind == "rate_limited":
            self._rejected += 1
        severity = {"rate_limited": 1, "timeout": 2, "queue_full": 3}
        if self._overload is None or severity[kind] > severity[self._overload]:
            self._overload = kind
        if kind != "rate_limited":  # cut at once: waiting for a round of samples sends more
            self._decide()

    def _decide(self) -> None:
        ratio = statistics.median(self._ratios) if self._ratios else None
        limit = self.limit
        if self._rate_hold > 0:
            self._rate_hold -= 1
            if self._rate_hold == 0:
                self._rate_ceiling = None
        grew_from, self._grew_from = self._grew_from, None
        if self._overload == "rate_limited":
            self._ramping, self._flat_rounds = False, 0
            self._set(self._rate_cut(limit), "rate_limited", ratio)
        elif self._overload is not None:
            factor = {"queue_full": 0.5, "timeout": 0.75}[self._overload]
            self._ramping, self._flat_rounds = False, 0
            self._set(min(limit - 1, limit * factor), self._overload, ratio)
        elif ratio is not None and ratio > self.high:
            capacity = limit / ratio  # n / K = ratio on a sharing server
            new = min(limit * 0.9, capacity * self.target)
            if grew_from is not None and ratio < 1.5:
                # a +10% step that queued mildly: back to the limit it grew from, which was
                # measured in the band (the estimate would drop under it: 12 -> 9 on FIFO 8)
                new = max(new, grew_from)
            self._ramping, self._flat_rounds = False, 0
            # do not climb straight back to where queueing was seen (3 <-> 4 on K = 3)
            self._rate_ceiling, self._rate_hold = max(self.floor, limit - 1), self.rate_hold_rounds
            self._set(new, "queueing", ratio)
        elif ratio is not None and ratio <= self.flat:
            if ratio <= 1.05:  # clearly unloaded: a baseline (a 1.1 round would let it creep)
                for latency_s, tokens, ttft_s in self._samples:
                    self.baseline.add(latency_s, tokens, ttft_s)
            if self._rate_hit_limit is not None and limit >= self._rate_hit_limit:
                self._rate_strikes = 0  # a round without 429 where one came: the quota moved
            self._flat_rounds += 1
            if self._ramping:
                new = limit * 2
            else:
                new = limit + max(1, round(limit * 0.1 * 2 ** (self._flat_rounds - 1)))
                new = min(new, limit * 2)
            if self._rate_ceiling is not None and new > self._rate_ceiling:
                new, self._flat_rounds = max(limit, self._rate_ceiling), 0  # held: no escalation
            if not self._ramping and new > limit:
                self._grew_from = limit
            self._set(new, "flat", ratio)
        else:
            self._flat_rounds = 0
            self._set(limit, "in band", ratio)

    def _rate_cut(self, limit: int) -> int:
        """After a round with 429s: cut by the share of attempts the quota accepted (x0.5 to
        x0.9); hold under the limit that drew it, the hold doubling with each 429 in a row."""
        answered = len(self._ratios)
        accepted = answered / (answered + self._rejected) if self._rejected else 1.0
        new = self._clamp(min(limit - 1, limit * max(0.5, min(0.9, accepted))))
        self._rate_strikes += 1
        self._rate_hit_limit = limit
        # up to just under the limit that drew the 429, not back to it (5 <-> 6 at 20/s), and not
        # pinned at the cut: a cut by the share of 429s overshoots when retries add to them
        self._rate_ceiling = max(self.floor, limit - 1)
        self._rate_hold = self.rate_hold_rounds * 2 ** min(3, self._rate_strikes - 1)
        return new

    def _set(self, value: float, reason: str, ratio: float | None) -> None:
        new = self._clamp(value)
        self._ratios, self._inflight, self._samples, self._overload = [], [], [], None
        self._rejected = 0
        self.epoch += 1
        if new != self.limit or reason in ("queue_full", "timeout", "rate_limited"):
            self.history.append(Decision(self.samples_seen, new, reason, ratio))
        self.limit = new


class FixedConcurrency:
    """A fixed limit with the controller's interface: what ``--concurrency N`` uses."""

    def __init__(self, limit: int) -> None:
        self.limit = self.ceiling = limit
        self.epoch = 0
        self.history: list[Decision] = []

    def on_sample(self, *args: object, **kwargs: object) -> None:
        pass

    def on_overload(self, *args: object, **kwargs: object) -> None:
        pass


class ConcurrencyGate:
    """Slots for requests in flight, as many as ``controller.limit`` says at each moment.

    ``async with gate.slot() as (inflight, epoch):`` waits for a free slot; ``inflight`` counts
    this request, ``epoch`` is the controller's at admission. When the limit drops, requests in
    flight finish; no new one starts until the count is under the new limit. FIFO: an
    ``asyncio.Condition`` wakes waiters in order.
    """

    def __init__(self, controller: AdaptiveConcurrency | FixedConcurrency) -> None:
        self.controller = controller
        self.inflight = 0
        self.peak_inflight = 0
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def slot(self) -> Iterator[tuple[int, int]]:
        async with self._changed:
            await self._changed.wait_for(lambda: self.inflight < self.controller.limit)
            self.inflight += 1
        self.peak_inflight = max(self.peak_inflight, self.inflight)
        try:
            yield self.inflight, self.controller.epoch
        finally:
            self.inflight -= 1
            async with self._changed:
                self._changed.notify(max(1, self.controller.limit - self.inflight))
