"""Per-attempt records of a run, and the Gantt chart that makes concurrency visible.

Each attempt of each request becomes one ``RequestRecord``: when it was ready to go
(``t_queued``), when it got its slot and was sent (``t_started``), when the response headers came
back (``t_first_byte``), when it ended (``t_end``), its HTTP status (``None`` for a timeout or a
dropped connection), its ``outcome`` (``"ok"``, ``"retry"``: failed and will be sent again, or
``"failed"``: final) and, for a retry, how long the runner then waited (``retry_wait_s``). Times
are seconds since the recorder's start, so records of one run share one time axis.

For the first attempt ``t_queued`` is when the request entered the run (a batch submits all its
requests at the start); for a retry it is when its wait ended. So every attempt's bar reads:
waiting for a slot (``t_queued`` to ``t_started``: a busy worker pool, a rate limit, a shared
cooldown), in flight (``t_started`` to ``t_end``), then waiting to retry (``t_end`` to
``t_end + retry_wait_s``).

``TimelineRecorder`` keeps records in a list (notebooks: a few hundred requests), or streams them
as JSON lines to a file (the runner's ``--timeline FILE``: memory stays flat at 100k requests).
Recording is cheap enough to leave on: the runner passes plain numbers, the recorder formats one
short line per attempt and writes them in batches (``lines.LineWriter``, the runner's writer too).

``plot_timeline(records, title=...)`` draws one row per request, time in seconds on the x axis,
the four states in distinct colours, with a legend. matplotlib is imported inside the function
only, so the runner never pays for it unless a chart is asked for.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from .lines import LineWriter

__all__ = ["RequestRecord", "TimelineRecorder", "load_timeline", "plot_timeline"]

OUTCOMES = ("ok", "retry", "failed")


@dataclass(slots=True)
class RequestRecord:
    """One attempt of one request; times in seconds since the run started."""

    id: Any
    attempt: int
    t_queued: float
    t_started: float
    t_first_byte: float | None
    t_end: float
    status: int | None
    outcome: str  # "ok", "retry" or "failed"
    retry_wait_s: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


class TimelineRecorder:
    """Collects ``RequestRecord``s in memory, or streams them as JSONL to ``path``.

    ``t0`` is the monotonic time that becomes 0 on the chart (default: now). ``record`` takes
    monotonic times and converts them, so a caller never does the arithmetic itself. Use it as a
    context manager, or call ``close`` when done, to write the last lines.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        t0: float | None = None,
        flush_every: int = 512,
    ) -> None:
        self.t0 = time.monotonic() if t0 is None else t0
        self.path = path
        self.records: list[RequestRecord] = []
        # no flush timer: record() may be called outside an event loop (a notebook's track())
        self._file = (
            LineWriter(path, append=False, flush_lines=flush_every, flush_interval_s=None)
            if path is not None
            else None
        )

    def record(
        self,
        request_id: Any,
        attempt: int,
        t_queued: float,
        t_started: float,
        t_first_byte: float | None,
        t_end: float,
        status: int | None,
        outcome: str,
        retry_wait_s: float = 0.0,
    ) -> None:
        """Add one attempt; the ``t_*`` arguments are ``time.monotonic()`` values."""
        t0 = self.t0
        if self._file is None:
            self.records.append(
                RequestRecord(
                    request_id,
                    attempt,
                    round(t_queued - t0, 6),
                    round(t_started - t0, 6),
                    None if t_first_byte is None else round(t_first_byte - t0, 6),
                    round(t_end - t0, 6),
                    status,
                    outcome,
                    round(retry_wait_s, 6),
                )
            )
            return
        first_byte = "null" if t_first_byte is None else f"{t_first_byte - t0:.6f}"
        self._file.write(
            f'{{"id":{json.dumps(request_id)},"attempt":{attempt},'
            f'"t_queued":{t_queued - t0:.6f},"t_started":{t_started - t0:.6f},'
            f'"t_first_byte":{first_byte},"t_end":{t_end - t0:.6f},'
            f'"status":{"null" if status is None else status},"outcome":"{outcome}",'
            f'"retry_wait_s":{retry_wait_s:.6f}}}\n'.encode()
        )

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> TimelineRecorder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def load_timeline(path: str | os.PathLike[str]) -> list[RequestRecord]:
    """Read the records a ``TimelineRecorder`` (or the runner's ``--timeline``) wrote."""
    with open(path, encoding="utf-8") as lines:
        return [RequestRecord(**json.loads(line)) for line in lines if line.strip()]


# Colours of the four states (colour-blind-safe Okabe-Ito picks), in legend order.
STATE_COLOURS = {
    "waiting for a slot": "#d9d9d9",
    "in flight": "#0072B2",
    "waiting to retry": "#E69F00",
    "failed": "#D55E00",
}


def _rows(records: Iterable[RequestRecord]) -> Iterator[tuple[Any, list[RequestRecord]]]:
    """Group attempts by request, requests in order of their first appearance."""
    by_id: dict[Any, list[RequestRecord]] = {}
    for record in records:
        by_id.setdefault(record.id, []).append(record)
    ordered = sorted(
        by_id.items(), key=lambda item: min((r.t_queued, r.t_started) for r in item[1])
    )
    for request_id, attempts in ordered:
        yield request_id, sorted(attempts, key=lambda r: r.attempt)


def plot_timeline(
    records: Iterable[RequestRecord],
    title: str | None = None,
    *,
    ax: Any = None,
    max_rows: int = 400,
) -> Any:
    """Draw a Gantt chart of ``records``: one row per request, time in seconds on x.

    Returns the matplotlib ``Axes`` (a new figure unless ``ax`` is given). Beyond ``max_rows``
    requests only the first ``max_rows`` are drawn, and the title says so.
    """
    import matplotlib.pyplot as plt  # lazily: the runner never imports matplotlib otherwise
    from matplotlib.patches import Patch

    rows = list(_rows(records))
    shown = rows[:max_rows]
    if ax is None:
        height_in = min(12.0, max(2.5, 0.22 * len(shown) + 1.5))
        _, ax = plt.subplots(figsize=(10, height_in))
    spans: dict[str, list[tuple[float, float]]] = {state: [] for state in STATE_COLOURS}
    span_rows: dict[str, list[int]] = {state: [] for state in STATE_COLOURS}

    def add(state: str, row: int, start: float, end: float) -> None:
        if end > start:
            spans[state].append((start, end - start))
            span_rows[state].append(row)

    for row, (_, attempts) in enumerate(shown):
        for record in attempts:
            add("waiting for a slot", row, record.t_queued, record.t_started)
            state = "failed" if record.outcome == "failed" else "in flight"
            add(state, row, record.t_started, record.t_end)
            if record.outcome == "retry":
                add("waiting to retry", row, record.t_end, record.t_end + record.retry_wait_s)
            if record.outcome != "ok" and record.status is not None:
                ax.text(record.t_end, row, f" {record.status}", va="center", fontsize=7)
    for state, colour in STATE_COLOURS.items():
        # one broken_barh call per (state, row) keeps drawing fast for hundreds of rows
        by_row: dict[int, list[tuple[float, float]]] = {}
        for row, span in zip(span_rows[state], spans[state], strict=True):
            by_row.setdefault(row, []).append(span)
        for row, row_spans in by_row.items():
            ax.broken_barh(row_spans, (row - 0.4, 0.8), facecolors=colour)
    if len(shown) <= 60:
        ax.set_yticks(range(len(shown)))
        ax.set_yticklabels([str(request_id) for request_id, _ in shown], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("time since the start of the run (s)")
    ax.set_ylabel("request id" if len(shown) <= 60 else "request (in order of start)")
    ax.set_xlim(left=0)
    attempts_total = sum(len(attempts) for _, attempts in rows)
    default = f"{len(rows)} requests, {attempts_total} attempts"
    if len(rows) > len(shown):
        default += f" (first {len(shown)} shown)"
    ax.set_title(f"{title}\n{default}" if title else default)
    handles = [Patch(facecolor=colour, label=state) for state, colour in STATE_COLOURS.items()]
    ax.legend(handles=handles, loc="upper right", fontsize=8, ncols=4)
    ax.grid(axis="x", alpha=0.3)
    return ax
