"""Time a notebook's own requests for a timeline.

``track(recorder, request_id, queued_at=None, slot=None)`` times one request into a
``paradigm_kit.timeline.TimelineRecorder``. It is a context manager for both worlds: ``with`` in a
plain loop or a worker thread, ``async with`` in a coroutine. On entry it notes ``t_queued``
(``queued_at``, a ``time.monotonic()`` value, or now), waits for ``slot`` if one is given (an
``asyncio.Semaphore`` with ``async with``, a ``threading.Semaphore`` with ``with``), then notes
``t_started``; on exit it notes ``t_end`` and records one attempt. The caller sets
``span.status = response.status`` (and may call ``span.first_byte()`` when the headers arrive).
The outcome is ``"ok"`` for a status below 400, ``"failed"`` for an error status or an exception,
which is recorded and then re-raised, never swallowed. The recorder's in-memory list is shared
safely by worker threads: one ``list.append`` per request, atomic under the GIL.
"""

from __future__ import annotations

import time
from typing import Any

from ..timeline import TimelineRecorder

__all__ = ["track"]


class track:  # noqa: N801 (used like a function: `with track(recorder, i) as span:`)
    """Time one request into ``recorder``: waiting for ``slot``, then in flight until exit."""

    def __init__(
        self,
        recorder: TimelineRecorder,
        request_id: Any,
        queued_at: float | None = None,
        slot: Any = None,
    ) -> None:
        self.recorder = recorder
        self.request_id = request_id
        self.queued_at = queued_at
        self.slot = slot
        self.status: int | None = None
        self.t_first_byte: float | None = None
        self.t_started = 0.0

    def first_byte(self) -> None:
        """Note that the response headers have arrived."""
        self.t_first_byte = time.monotonic()

    def _queue(self) -> None:
        if self.queued_at is None:
            self.queued_at = time.monotonic()

    def _record(self, raised: bool) -> None:
        failed = raised or (self.status is not None and self.status >= 400)
        self.recorder.record(
            self.request_id,
            1,
            self.queued_at,
            self.t_started,
            self.t_first_byte,
            time.monotonic(),
            self.status,
            "failed" if failed else "ok",
        )

    def __enter__(self) -> track:
        self._queue()
        if self.slot is not None:
            self.slot.__enter__()
        self.t_started = time.monotonic()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._record(raised=exc_type is not None)
        if self.slot is not None:
            self.slot.__exit__(exc_type, exc, tb)

    async def __aenter__(self) -> track:
        self._queue()
        if self.slot is not None:
            await self.slot.__aenter__()
        self.t_started = time.monotonic()
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._record(raised=exc_type is not None)
        if self.slot is not None:
            await self.slot.__aexit__(exc_type, exc, tb)
