"""The mock's capacity model: a server that shares its GPU among the requests in flight.

Real LLM servers (vLLM and the like; Paradigm documents its chat endpoint as a proxy in front of a
vLLM-based deployment) run many requests at once in one batch. While the batch has room, each
request decodes at full speed; beyond it, every running request slows down (continuous batching
shares the GPU), a server may cap how many it runs (the rest wait in a queue) and shed load when
that queue is full (503). Three settings model this, all off by default:

* ``capacity`` K (> 0, may be fractional): while n requests are in service, each advances at
  ``min(1, K / n)`` of full speed (processor sharing). n equal requests then finish together after
  ``max(1, n / K) x work``; throughput is flat from n = K up and latency grows as n / K.
* ``max_running`` M: at most M in service at once; the others wait in FIFO order, and the wait is
  part of their latency (and of a stream's time to first token).
* ``max_queue`` Q (with ``max_running`` only): a request arriving when Q are already waiting is
  refused at once (``Overloaded``: the handler answers 503 with ``Retry-After``).

A request's *work* is what it takes at full speed: ``latency + per_token_latency x tokens``
(+ jitter). Its progress is measured in those seconds of work.

How it runs: event-driven, on a virtual clock
----------------------------------------------
All requests in service advance at the same rate, so one *virtual clock* V serves them all: V
advances at ``rate(n) = min(1, K / n)`` per real second, and a request admitted when V was v0 has
done ``V - v0`` seconds of work. A request waiting for progress p (its end, or a stream's next
token) is a target ``v0 + p`` in a heap; one timer is set for the smallest target, at
``now + (target - V) / rate``. Each arrival or departure advances V to now at the old rate,
changes n, and re-arms that one timer. No polling, no sleep per token for a plain answer: 1,000
requests in service cost one heap entry each and one timer in all.

``SharedServer`` is the pure core (no asyncio, time passed in): the tests drive it with made-up
times and check exact finish times. ``CapacityModel`` wraps it for the aiohttp handlers: futures
for the targets, ``loop.call_at`` for the one timer.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CapacityModel", "Job", "Overloaded", "SharedServer"]

EPSILON = 1e-9  # float slack when comparing virtual times


class Overloaded(Exception):
    """The queue is full: the server sheds this request (503 with ``Retry-After``)."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"server overloaded: {retry_after_s} s")
        self.retry_after_s = retry_after_s


@dataclass(eq=False)
class Job:
    """One request in the server: queued, then in service, then gone."""

    arrived_at: float
    running_at_arrival: int
    queued_at_arrival: int
    v_start: float | None = None  # the virtual time at admission; None while queued
    started_at: float | None = None
    ended_at: float | None = None
    first_token_at: float | None = None
    on_start: Any = None  # called with the job when it is admitted (the driver's future)
    targets: list[tuple[float, Any]] = field(
        default_factory=list
    )  # (progress_s, token) while queued

    @property
    def queue_wait_s(self) -> float | None:
        return None if self.started_at is None else self.started_at - self.arrived_at

    def log_fields(self) -> dict[str, Any]:
        """What ``/_mock/log`` shows of this attempt's time in the server."""
        return {
            "queue_wait_s": self.queue_wait_s,
            "t_service_start": self.started_at,
            "t_service_end": self.ended_at,
            "t_first_token": self.first_token_at,
            "running_at_arrival": self.running_at_arrival,
            "queued_at_arrival": self.queued_at_arrival,
        }


class SharedServer:
    """Processor sharing (``capacity``), a FIFO admission cap (``max_running``) and shedding
    (``max_queue``) on one virtual clock. Times are passed in: no clock of its own."""

    def __init__(
        self,
        capacity: float | None = None,
        max_running: int | None = None,
        max_queue: int | None = None,
    ) -> None:
        self.capacity = capacity
        self.max_running = max_running
        self.max_queue = max_queue
        self.running: set[Job] = set()
        self.queue: deque[Job] = deque()
        self.v_now = 0.0  # the virtual clock: seconds of work done by each request in service
        self.t_last = 0.0  # when v_now was last brought up to date (real time)
        self.heap: list[tuple[float, int, Any]] = []  # (virtual target, tie-break, token)
        self.counter = itertools.count()
        self.peak_running = 0
        self.peak_queued = 0
        self.shed = 0

    # --- the clock ------------------------------------------------------------------------------

    def rate(self) -> float:
        """How fast each request in service advances, as a fraction of full speed."""
        n = len(self.running)
        if n == 0 or self.capacity is None:
            return 1.0
        return min(1.0, self.capacity / n)

    def advance(self, now: float) -> None:
        """Bring the virtual clock up to ``now`` at the current rate (call before any change)."""
        if now > self.t_last:
            if self.running:
                self.v_now += (now - self.t_last) * self.rate()
            self.t_last = now

    # --- arrivals and departures ----------------------------------------------------------------

    def arrive(self, now: float, on_start: Any = None) -> Job:
        """A request arrives: admitted, queued, or refused with ``Overloaded``."""
        self.advance(now)
        job = Job(now, len(self.running), len(self.queue), on_start=on_start)
        if self.max_running is None or len(self.running) < self.max_running:
            self._start(now, job)
        elif self.max_queue is not None and len(self.queue) >= self.max_queue:
            self.shed += 1
            raise Overloaded(self._retry_after_s())
        else:
            self.queue.append(job)
            self.peak_queued = max(self.peak_queued, len(self.queue))
        return job

    def leave(self, now: float, job: Job) -> None:
        """A request leaves (finished, or its client hung up): the next queued one starts."""
        self.advance(now)
        job.ended_at = now
        if job in self.running:
            self.running.discard(job)
        elif job in self.queue:
            self.queue.remove(job)
        while self.queue and (self.max_running is None or len(self.running) < self.max_running):
            self._start(now, self.queue.popleft())

    def _start(self, now: float, job: Job) -> None:
        job.v_start = self.v_now
        job.started_at = now
        self.running.add(job)
        self.peak_running = max(self.peak_running, len(self.running))
        for progress_s, token in job.targets:
            self._push(job, progress_s, token)
        job.targets.clear()
        if job.on_start is not None:
            job.on_start(job)

    def _retry_after_s(self) -> int:
        """Whole seconds (at least 1) until a queue slot is likely free: the time the oldest
        request in service still needs, at the current rate, is a fair and cheap guess."""
        return 1

    # --- waiting for progress -------------------------------------------------------------------

    def watch(self, now: float, job: Job, progress_s: float, token: Any) -> bool:
        """Ask to be told (``due`` returns ``token``) when ``job`` has done ``progress_s`` of work.

        Returns True if it already has (nothing is queued then)."""
        self.advance(now)
        if job.v_start is None:
            job.targets.append((progress_s, token))
            return False
        if self.v_now - job.v_start >= progress_s - EPSILON:
            return True
        self._push(job, progress_s, token)
        return False

    def _push(self, job: Job, progress_s: float, token: Any) -> None:
        assert job.v_start is not None
        heapq.heappush(self.heap, (job.v_start + progress_s, next(self.counter), token))

    def next_event_at(self) -> float | None:
        """The real time of the next target, at today's rate (None if nothing waits)."""
        if not self.heap:
            return None
        return self.t_last + max(0.0, self.heap[0][0] - self.v_now) / self.rate()

    def due(self, now: float) -> list[Any]:
        """Pop and return every token whose target is reached by ``now``."""
        self.advance(now)
        fired = []
        while self.heap and self.heap[0][0] <= self.v_now + EPSILON:
            fired.append(heapq.heappop(self.heap)[2])
        return fired

    def snapshot(self) -> dict[str, Any]:
        """Counts for ``/_mock/stats`` and the room view."""
        return {
            "capacity": self.capacity,
            "max_running": self.max_running,
            "max_queue": self.max_queue,
            "running": len(self.running),
            "queued": len(self.queue),
            "peak_running": self.peak_running,
            "peak_queued": self.peak_queued,
            "shed": self.shed,
        }

    def reset_peaks(self) -> None:
        self.peak_running = len(self.running)
        self.peak_queued = len(self.queue)
        self.shed = 0


class CapacityModel:
    """``SharedServer`` driven by the event loop: what the chat handler awaits.

    ``job = model.arrive()`` (may raise ``Overloaded``); ``await model.started(job)``;
    ``await model.progress(job, seconds_of_work)`` as often as needed; ``model.leave(job)`` in a
    ``finally`` (a client that hangs up frees its share at once)."""

    def __init__(self, server: SharedServer) -> None:
        self.server = server
        self.timer: asyncio.TimerHandle | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def arrive(self) -> Job:
        loop = self.loop
        started = loop.create_future()

        def on_start(job: Job) -> None:
            if not started.done():
                started.set_result(None)

        job = self.server.arrive(loop.time(), on_start)
        job.started_future = started  # type: ignore[attr-defined]
        self._rearm()
        return job

    async def started(self, job: Job) -> None:
        await job.started_future  # type: ignore[attr-defined]

    async def progress(self, job: Job, progress_s: float) -> None:
        """Return once ``job`` has done ``progress_s`` seconds of work at full speed."""
        future = self.loop.create_future()
        if self.server.watch(self.loop.time(), job, progress_s, future):
            return
        self._rearm()
        await future

    def leave(self, job: Job) -> None:
        self.server.leave(self.loop.time(), job)
        self._fire()

    def _fire(self) -> None:
        for future in self.server.due(self.loop.time()):
            if not future.done():
                future.set_result(None)
        self._rearm()

    def _rearm(self) -> None:
        """One timer, for the next target at today's rate (the rate changes only on arrivals and
        departures, which call this again)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        at = self.server.next_event_at()
        if at is not None:
            # a tiny step past the target, so float rounding cannot leave it just short
            self.timer = self.loop.call_at(math.nextafter(at, math.inf) + 1e-7, self._fire)
