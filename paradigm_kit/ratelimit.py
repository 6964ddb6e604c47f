"""One token-bucket limiter, shared by the mock (server side) and the runner (client side).

Both sides must mean the same thing by "R per minute", or a client told the server's limit would
still be throttled. The meaning used everywhere in this kit:

* the bucket holds at most ``capacity = max(1, R / 60)`` units: one second's worth of burst, as
  real APIs enforce per-minute limits over short intervals rather than per calendar minute;
* it refills continuously at ``R / 60`` units per second;
* a request costs one unit of the requests bucket, or its token count in the tokens bucket;
* a cost larger than the whole capacity (one huge prompt under a small tokens-per-minute limit)
  is admitted when the bucket is full and leaves it in debt, so it is slow but never impossible.

``TokenBucket`` is plain arithmetic on a clock you pass in (``time.monotonic`` by default), so
tests can drive it with a fake clock and count admissions per window without timing anything.
The server calls ``try_take`` (answer now: yes, or no and how long to wait); the client's pacer
(``batch/pacing.py``) asks ``wait_time``, sleeps exactly that long instead of polling, then
``charge``s, so it can wait on several buckets and a cooldown at once.

Written by hand rather than taken from aiolimiter: the mock needs a non-blocking "how long until
this fits" answer for ``Retry-After``, and both sides need debt for oversized costs and the same
refill arithmetic; the whole thing is forty lines.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["TokenBucket"]


class TokenBucket:
    """A bucket of ``capacity`` units refilled at ``per_minute / 60`` units per second."""

    def __init__(
        self,
        per_minute: float,
        *,
        capacity: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_minute <= 0:
            raise ValueError(f"per_minute must be positive, got {per_minute}")
        self.per_minute = float(per_minute)
        self.rate_per_s = self.per_minute / 60.0
        self.capacity = float(capacity) if capacity is not None else max(1.0, self.rate_per_s)
        self._clock = clock
        self._level = self.capacity
        self._updated = clock()

    def _refill(self) -> float:
        now = self._clock()
        elapsed = now - self._updated
        if elapsed > 0:
            self._level = min(self.capacity, self._level + elapsed * self.rate_per_s)
            self._updated = now
        return self._level

    @property
    def level(self) -> float:
        """Units available now (negative while in debt)."""
        return self._refill()

    def wait_time(self, cost: float = 1.0) -> float:
        """Seconds until ``cost`` units could be taken (0 if now)."""
        level = self._refill()
        needed = min(cost, self.capacity)  # an oversized cost needs a full bucket, not more
        if level >= needed:
            return 0.0
        return (needed - level) / self.rate_per_s

    def try_take(self, cost: float = 1.0) -> tuple[bool, float]:
        """Take ``cost`` units if they fit now: ``(True, 0)``, else ``(False, seconds to wait)``."""
        wait_s = self.wait_time(cost)
        if wait_s > 0:
            return False, wait_s
        self._level -= cost
        return True, 0.0

    def give_back(self, cost: float) -> None:
        """Return units taken for work that turned out cheaper (an estimate corrected by usage)."""
        self._refill()
        self._level = min(self.capacity, self._level + cost)

    def charge(self, cost: float) -> None:
        """Take units after the fact (usage exceeded the estimate); may leave the bucket in debt."""
        self._refill()
        self._level -= cost

    def remaining(self) -> int:
        """Whole units left, for ``x-ratelimit-remaining-*`` headers."""
        return max(0, int(self._refill()))

    def reset_s(self) -> float:
        """Seconds until the bucket is full again, for ``x-ratelimit-reset-*`` headers."""
        return max(0.0, (self.capacity - self._refill()) / self.rate_per_s)
