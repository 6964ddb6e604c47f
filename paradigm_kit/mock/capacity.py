"""The mock's capacity model: a server that shares its GPU, runs at most M, queues and sheds.

A real LLM server (vLLM and its peers) serves the requests in flight together (continuous
batching), so each one slows down as more run; it caps how many run, queues the rest, and sheds
load (503) when the queue is full. ``Scheduler`` models exactly that, off unless ``--capacity``
or ``--max-running`` is set:

* a request's *work* is what it takes alone at full speed (``latency + per_token_latency x
  tokens + jitter``, decided by the handler);
* **processor sharing** (``capacity`` K): with n requests in service each advances at
  ``min(1, K / n)`` of full speed, so n equal requests finish together after
  ``max(1, n / K) x work``;
* **FIFO admission** (``max_running`` M): at most M in service; the others wait in arrival order,
  and the wait is part of their latency;
* **shedding** (``max_queue`` Q): a request arriving when Q already wait is refused at once
  (``submit`` returns None; the handler answers 503 with ``Retry-After``).

Event driven, on a *virtual clock*: ``V`` counts the seconds of work a request in service has
received, and advances at the current per-request rate ``min(1, K/n)``. A job admitted at
``V = v0`` reaches its milestone ``m`` (seconds of its own work) at ``V = v0 + m``, whatever
the load does in between, so every job's next milestone sits in one heap keyed by virtual time,
and one timer is armed for the heap's top: ``(top - V) / rate`` real seconds ahead. An arrival
or a departure changes the rate, so it settles ``V`` up to now and re-arms the timer. Nothing
polls and nothing sleeps per token: a plain answer has one milestone (its end), a stream one per
token (the first content chunk when the ``latency`` part is done, token i after
``latency + i x per_token_latency``), so time to first token and between tokens degrade under
load as on a real server.

The scheduler is plain Python, driven by two callables (``clock()`` in seconds and
``call_later(delay_s, callback) -> handle`` with ``handle.cancel()``), so tests run it on a fake
clock; the app passes the event loop's. ``snapshot()`` is its public view (running, queued,
peaks, shed count) for ``/_mock/stats`` and the room page.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["Job", "Scheduler"]

# A milestone this close (in seconds of work) counts as reached: the event loop may fire a timer
# a hair early, and floating-point sums drift by far less than this.
EPSILON_S = 1e-6


class Job:
    """One request in the scheduler: its milestones and what happened to it, in real seconds.

    ``marks`` are ascending seconds of the job's own work; ``on_mark(index)`` is called as each
    is reached, the last one ending the job. The times are the scheduler's clock.
    """

    __slots__ = (
        "admitted_s",
        "arrival_s",
        "done",
        "finished_s",
        "first_mark_s",
        "marks",
        "next_mark",
        "on_admit",
        "on_mark",
        "queued_at_arrival",
        "running_at_arrival",
        "start_v",
    )

    def __init__(
        self,
        marks: list[float],
        on_mark: Callable[[int], None],
        on_admit: Callable[[], None] | None,
    ) -> None:
        self.marks = marks
        self.on_mark = on_mark
        self.on_admit = on_admit
        self.next_mark = 0
        self.start_v = 0.0
        self.arrival_s = 0.0
        self.admitted_s: float | None = None
        self.first_mark_s: float | None = None
        self.finished_s: float | None = None
        self.running_at_arrival = 0
        self.queued_at_arrival = 0
        self.done = False

    @property
    def queue_wait_s(self) -> float | None:
        return None if self.admitted_s is None else self.admitted_s - self.arrival_s


class Scheduler:
    """Processor sharing over a FIFO-admitted set of running jobs, on one timer."""

    def __init__(
        self,
        capacity: float | None,
        max_running: int | None,
        max_queue: int | None,
        *,
        clock: Callable[[], float],
        call_later: Callable[[float, Callable[[], None]], Any],
    ) -> None:
        self._clock = clock
        self._call_later = call_later
        self.capacity = capacity
        self.max_running = max_running
        self.max_queue = max_queue
        self._running: set[Job] = set()
        self._waiting: deque[Job] = deque()
        self._heap: list[tuple[float, int, Job]] = []  # (virtual time of next mark, seq, job)
        self._seq = itertools.count()
        self._v = 0.0  # the virtual clock: seconds of work each running job has received
        self._t = clock()  # when _v was last settled
        self._timer: Any = None
        self.peak_running = 0
        self.peak_queued = 0
        self.shed = 0

    # --- the public side --------------------------------------------------------------------

    def submit(
        self,
        marks: list[float],
        on_mark: Callable[[int], None],
        on_admit: Callable[[], None] | None = None,
    ) -> Job | None:
        """Queue or start a job; None when the queue is full (the caller answers 503)."""
        self._settle()
        job = Job(marks, on_mark, on_admit)
        job.arrival_s = self._t
        job.running_at_arrival = len(self._running)
        job.queued_at_arrival = len(self._waiting)
        if self._has_room():
            self._start(job)
        elif self.max_queue is not None and len(self._waiting) >= self.max_queue:
            self.shed += 1
            return None
        else:
            self._waiting.append(job)
            self.peak_queued = max(self.peak_queued, len(self._waiting))
        self._rearm()
        return job

    def cancel(self, job: Job) -> None:
        """Forget a job whose client left: it frees its share (or its place in the queue)."""
        if job.done:
            return
        self._settle()
        job.done = True
        if job in self._running:
            self._running.discard(job)  # its heap entry is skipped lazily
            self._admit_waiting()
        else:
            self._waiting.remove(job)
        self._rearm()

    def set_limits(
        self, capacity: float | None, max_running: int | None, max_queue: int | None
    ) -> None:
        """Change the capacity while serving (``POST /_mock/config``); queued jobs may start."""
        self._settle()
        self.capacity, self.max_running, self.max_queue = capacity, max_running, max_queue
        self._admit_waiting()
        self._rearm()

    def snapshot(self) -> dict[str, Any]:
        """Now: running and queued counts, their peaks, and how many were shed."""
        return {
            "running": len(self._running),
            "queued": len(self._waiting),
            "peak_running": self.peak_running,
            "peak_queued": self.peak_queued,
            "shed": self.shed,
            "capacity": self.capacity,
            "max_running": self.max_running,
            "max_queue": self.max_queue,
        }

    def reset_peaks(self) -> None:
        """``POST /_mock/reset``: peaks back to what runs now, shed count to zero."""
        self.peak_running = len(self._running)
        self.peak_queued = len(self._waiting)
        self.shed = 0

    # --- the clock ----------------------------------------------------------------------------

    def _rate(self) -> float:
        """Seconds of work per real second each running job receives now."""
        n = len(self._running)
        if n == 0 or self.capacity is None:
            return 1.0
        return min(1.0, self.capacity / n)

    def _settle(self) -> None:
        """Advance the virtual clock to now at the rate that held since the last event."""
        now = self._clock()
        self._v += (now - self._t) * self._rate()
        self._t = now

    def _rearm(self) -> None:
        """One timer, for the heap's top (skipping entries of jobs that are gone)."""
        while self._heap and self._heap[0][2].done:
            heapq.heappop(self._heap)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._heap:
            delay_s = max(0.0, (self._heap[0][0] - self._v) / self._rate())
            self._timer = self._call_later(delay_s, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._settle()
        while self._heap and self._heap[0][0] - self._v <= EPSILON_S:
            _, _, job = heapq.heappop(self._heap)
            if not job.done:
                self._reach_mark(job)
        self._rearm()

    # --- jobs -----------------------------------------------------------------------------------

    def _has_room(self) -> bool:
        return self.max_running is None or len(self._running) < self.max_running

    def _start(self, job: Job) -> None:
        job.admitted_s = self._t
        job.start_v = self._v
        self._running.add(job)
        self.peak_running = max(self.peak_running, len(self._running))
        heapq.heappush(self._heap, (job.start_v + job.marks[0], next(self._seq), job))
        if job.on_admit is not None:
            job.on_admit()

    def _reach_mark(self, job: Job) -> None:
        index = job.next_mark
        job.next_mark += 1
        if index == 0:
            job.first_mark_s = self._t
        if job.next_mark == len(job.marks):
            job.done = True
            job.finished_s = self._t
            self._running.discard(job)
            self._admit_waiting()
        else:
            mark_v = job.start_v + job.marks[job.next_mark]
            heapq.heappush(self._heap, (mark_v, next(self._seq), job))
        job.on_mark(index)

    def _admit_waiting(self) -> None:
        while self._waiting and self._has_room():
            self._start(self._waiting.popleft())
