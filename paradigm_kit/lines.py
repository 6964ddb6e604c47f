"""One buffered writer of whole lines, for every JSONL file the kit writes as it runs.

The runner's output (``batch.jsonl.OutputWriter``) and the timeline's ``--timeline`` file
(``timeline.TimelineRecorder``) both append one short line per event, up to a hundred thousand of
them, and must never tear a line in the middle. ``LineWriter`` buffers lines (bytes, each ending
with its newline) and writes the buffer in one call, without fsync:

* when it holds ``flush_lines`` lines, so the cost of a write call is shared by many lines;
* ``flush_interval_s`` after its first buffered line, if given, by a timer on the running event
  loop (``call_later``, not a polling task), so a slow run's lines do not wait for a full
  buffer; without an interval (code that may run outside a loop) only the count and ``close``
  flush;
* on ``close``.

Each line is written whole, so a kill can only tear the very last one.
"""

from __future__ import annotations

import asyncio
import os

__all__ = ["LineWriter"]


class LineWriter:
    """Writes whole lines to ``path`` in batches (``append``: keep what the file holds)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        append: bool = True,
        flush_lines: int = 1000,
        flush_interval_s: float | None = 0.05,
    ) -> None:
        self.path = path
        self._file = open(path, "ab" if append else "wb")  # noqa: SIM115 (closed by close())
        self._lines: list[bytes] = []
        self._flush_lines = flush_lines
        self._flush_interval_s = flush_interval_s
        self._timer: asyncio.TimerHandle | None = None

    def write(self, line: bytes) -> None:
        """Buffer one line (bytes ending with a newline)."""
        lines = self._lines
        lines.append(line)
        if len(lines) >= self._flush_lines:
            self.flush()
        elif self._timer is None and self._flush_interval_s is not None:
            self._timer = asyncio.get_running_loop().call_later(self._flush_interval_s, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lines and self._file is not None:
            self._file.write(b"".join(self._lines))
            self._file.flush()
            self._lines.clear()

    def close(self) -> None:
        if self._file is not None:
            self.flush()
            self._file.close()
            self._file = None
