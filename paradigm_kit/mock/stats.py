"""What the mock saw: counts, concurrency, attempts, a per-attempt log, and a report card.

Every chat request is one *attempt* of one *request identity* (``faults.py`` says what an
identity is) within one *run*. A run is the ``X-Run-Id`` header when a client sends one, else a
short hash of its API key, so each attendee of a workshop, or each exercise, sees only its own
requests. Attempts are numbered per run and identity: two learners sending the seed's identical
prompt do not see each other's attempts as retries.

The recorder keeps, per run:

* counters (``requests_by_status``, ``total``, ``in_flight``, ``peak_concurrency``);
* per identity, a small slotted record: attempts so far, and the end, status and ``Retry-After``
  of the previous attempt, which is all the report card needs to judge the next one;
* a ring buffer of the last ``log_limit`` attempt records (a tuple each), so a 100k-request
  bench does not grow memory without bound.

Statuses are HTTP codes, plus two nginx conventions for attempts that got no answer: ``444``
when the mock dropped the connection on purpose, ``499`` when the client closed it first (a
timeout). All keys of ``requests_by_status`` are thus status-code strings.

The report card judges each retry (attempt 2 and later) against the previous attempt:

* ``retried_before_retry_after``: the gap since the previous answer is shorter than the
  ``Retry-After`` it carried (the smaller of ``Retry-After`` and ``retry-after-ms``, minus 10 ms
  of clock slack);
* ``retried_non_retryable_4xx``: the previous answer was 400/401/403/404/422, which cannot
  succeed unchanged;
* ``retried_without_backoff``: after an error without ``Retry-After`` the gap is under
  ``min_backoff_s``, or three gaps in a row are equal within 10% (a fixed delay, no exponential
  growth; random jitter almost never does that);
* ``too_many_attempts``: an identity needed more than ``max_attempts`` attempts (counted once).

A log record (``/_mock/log``) is ``{identity, attempt, t_start, t_end, status, retry_after_s,
key_hash, run}``: times in seconds since the mock started (or was reset), ``t_start`` when the
request reaches the handler, ``t_end`` when its answer is handed over (or it is dropped or
cancelled); ``retry_after_s`` is the shortest wait the
answer asked for (the exact ``retry-after-ms`` of a rate-limited 429, whose ``Retry-After`` is
rounded up to whole seconds; ``--retry-after`` for injected 429/503), None when it asked none.
Only hashes of API keys are kept, never a key.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["KEY_HASH_CHARS", "NON_RETRYABLE_STATUSES", "Recorder", "key_hash"]

KEY_HASH_CHARS = 12
NON_RETRYABLE_STATUSES = frozenset({400, 401, 403, 404, 422})
STATUS_DROPPED = 444
STATUS_CLIENT_CLOSED = 499
RETRY_AFTER_SLACK_S = 0.010
EQUAL_GAP_TOLERANCE = 0.10
EQUAL_GAPS_FOR_FIXED_DELAY = 3
EXAMPLES_PER_PROBLEM = 5
PROBLEMS = {
    "retried_before_retry_after": "retries sent before Retry-After elapsed",
    "retried_non_retryable_4xx": "retries of a 4xx that cannot succeed (400/401/403/404/422)",
    "retried_without_backoff": "retries without backoff",
    "too_many_attempts": "requests with too many attempts",
}
LOG_FIELDS = ("identity", "attempt", "t_start", "t_end", "status", "retry_after_s", "key_hash")


def key_hash(api_key: str) -> str:
    """A short sha256 hash that stands for an API key in every output of the mock."""
    if not api_key:
        return "no-key"
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()[:KEY_HASH_CHARS]


class IdentityState:
    """Per run and identity: the attempt count and what the previous attempt ended with."""

    __slots__ = ("attempts", "equal_gaps", "last_gap_s", "retry_after_s", "status", "t_end")

    def __init__(self) -> None:
        self.attempts = 0
        self.t_end: float | None = None  # None while the previous attempt is still in flight
        self.status = 0
        self.retry_after_s: float | None = None
        self.last_gap_s: float | None = None
        self.equal_gaps = 0


class RunStats:
    """Everything the mock knows about one run."""

    __slots__ = (
        "identities",
        "in_flight",
        "log",
        "peak_concurrency",
        "problems",
        "requests_by_status",
        "total",
    )

    def __init__(self, log_limit: int) -> None:
        self.requests_by_status: dict[int, int] = {}
        self.total = 0
        self.in_flight = 0
        self.peak_concurrency = 0
        self.identities: dict[str, IdentityState] = {}
        self.log: deque[tuple] = deque(maxlen=log_limit)
        self.problems: dict[str, list] = {name: [0, []] for name in PROBLEMS}  # [count, examples]

    def note_problem(self, name: str, example: dict[str, Any]) -> None:
        entry = self.problems[name]
        entry[0] += 1
        if len(entry[1]) < EXAMPLES_PER_PROBLEM:
            entry[1].append(example)


class Recorder:
    """Counts, logs and grades attempts; one per app, driven by the chat handler."""

    def __init__(
        self,
        *,
        log_limit: int = 20_000,
        max_attempts: int = 8,
        min_backoff_s: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log_limit = log_limit
        self.max_attempts = max_attempts
        self.min_backoff_s = min_backoff_s
        self._clock = clock
        self.reset()

    def reset(self) -> None:
        self.t0 = self._clock()
        self.runs: dict[str, RunStats] = {}
        self.run_keys: dict[str, str] = {}  # run -> key hash of its first attempt
        self.keys: dict[str, dict[int, int]] = {}  # key hash -> requests by status
        self.requests_by_status: dict[int, int] = {}
        self.total = 0
        self.in_flight = 0
        self.peak_concurrency = 0

    def now(self) -> float:
        """Seconds since the mock started (or was reset)."""
        return self._clock() - self.t0

    # --- the hot path: begin and end of each attempt ----------------------------------------

    def begin(self, run: str, key: str, identity: str, t_start: float) -> tuple[RunStats, int]:
        """Count an attempt in; return its run and its attempt number (1 for the first)."""
        stats = self.runs.get(run)
        if stats is None:
            stats = self.runs[run] = RunStats(self.log_limit)
            self.run_keys[run] = key
        state = stats.identities.get(identity)
        if state is None:
            state = stats.identities[identity] = IdentityState()
        state.attempts += 1
        if state.attempts > 1:
            self._grade_retry(stats, identity, state, t_start)
        self.in_flight += 1
        if self.in_flight > self.peak_concurrency:
            self.peak_concurrency = self.in_flight
        stats.in_flight += 1
        if stats.in_flight > stats.peak_concurrency:
            stats.peak_concurrency = stats.in_flight
        state.t_end = None
        return stats, state.attempts

    def end(
        self,
        stats: RunStats,
        key: str,
        identity: str,
        attempt: int,
        t_start: float,
        status: int,
        retry_after_s: float | None,
        server: dict[str, Any] | None = None,
    ) -> None:
        """Count an attempt out with the status it ended with.

        ``server``: with the capacity model on, what the server did with it (queue wait, service
        start and end, first token, running and queued at arrival), times on this clock."""
        t_end = self.now()
        self.in_flight -= 1
        stats.in_flight -= 1
        self.total += 1
        stats.total += 1
        self.requests_by_status[status] = self.requests_by_status.get(status, 0) + 1
        stats.requests_by_status[status] = stats.requests_by_status.get(status, 0) + 1
        by_key = self.keys.get(key)
        if by_key is None:
            by_key = self.keys[key] = {}
        by_key[status] = by_key.get(status, 0) + 1
        stats.log.append((identity, attempt, t_start, t_end, status, retry_after_s, key, server))
        state = stats.identities[identity]
        if attempt == state.attempts:  # the latest attempt (a hedged earlier one may end later)
            state.t_end = t_end
            state.status = status
            state.retry_after_s = retry_after_s

    # --- the report card -----------------------------------------------------------------------

    def _grade_retry(
        self, stats: RunStats, identity: str, state: IdentityState, t_start: float
    ) -> None:
        if state.attempts == self.max_attempts + 1:
            stats.note_problem(
                "too_many_attempts", {"identity": identity, "attempts": state.attempts}
            )
        if state.t_end is None:  # the previous attempt has not ended: a hedge, not a retry
            return
        gap_s = t_start - state.t_end
        example = {
            "identity": identity,
            "attempt": state.attempts,
            "previous_status": state.status,
            "gap_s": round(gap_s, 4),
        }
        if state.status in NON_RETRYABLE_STATUSES:
            stats.note_problem("retried_non_retryable_4xx", example)
        elif state.retry_after_s is not None:
            if gap_s < state.retry_after_s - RETRY_AFTER_SLACK_S:
                stats.note_problem(
                    "retried_before_retry_after", {**example, "retry_after_s": state.retry_after_s}
                )
        elif state.status >= 400:
            self._grade_backoff(stats, state, gap_s, example)

    def _grade_backoff(
        self, stats: RunStats, state: IdentityState, gap_s: float, example: dict
    ) -> None:
        previous_gap_s = state.last_gap_s
        state.last_gap_s = gap_s
        if gap_s < self.min_backoff_s:
            stats.note_problem(
                "retried_without_backoff",
                {**example, "why": f"retried after {gap_s * 1000:.0f} ms"},
            )
            return
        if previous_gap_s and abs(gap_s - previous_gap_s) <= EQUAL_GAP_TOLERANCE * previous_gap_s:
            state.equal_gaps += 1
        else:
            state.equal_gaps = 0
        if state.equal_gaps == EQUAL_GAPS_FOR_FIXED_DELAY - 1:
            stats.note_problem(
                "retried_without_backoff", {**example, "why": "fixed delay: gaps do not grow"}
            )

    # --- the views -----------------------------------------------------------------------------

    def stats(self, run: str | None = None) -> dict[str, Any]:
        """The ``/_mock/stats`` JSON: the whole server, or one run."""
        if run is not None:
            stats = self.runs.get(run) or RunStats(1)
            return {"run": run, "key_hash": self.run_keys.get(run), **_run_view(stats)}
        attempts: dict[str, int] = {}
        for stats in self.runs.values():
            for identity, state in stats.identities.items():
                attempts[identity] = attempts.get(identity, 0) + state.attempts
        return {
            "uptime_s": round(self.now(), 3),
            "requests_by_status": _by_status(self.requests_by_status),
            "total": self.total,
            "in_flight": self.in_flight,
            "peak_concurrency": self.peak_concurrency,
            "requests": len(attempts),
            "attempts_histogram": _histogram(attempts.values()),
            "attempts_by_identity": attempts,
            "runs": {
                name: {
                    "key_hash": self.run_keys.get(name),
                    "total": stats.total,
                    "requests_by_status": _by_status(stats.requests_by_status),
                    "peak_concurrency": stats.peak_concurrency,
                }
                for name, stats in self.runs.items()
            },
            "keys": {
                name: {"total": sum(counts.values()), "requests_by_status": _by_status(counts)}
                for name, counts in self.keys.items()
            },
        }

    def log(self, run: str | None = None) -> dict[str, Any]:
        """The ``/_mock/log`` JSON: attempt records in the order they ended."""
        runs = [run] if run is not None else list(self.runs)
        records = []
        for name in runs:
            stats = self.runs.get(name)
            if stats is None:
                continue
            for record in stats.log:
                *fields, server = record
                entry = dict(zip(LOG_FIELDS, fields, strict=True))
                entry["t_start"] = round(entry["t_start"], 6)
                entry["t_end"] = round(entry["t_end"], 6)
                if server is not None:
                    entry.update(
                        {k: round(v, 6) if isinstance(v, float) else v for k, v in server.items()}
                    )
                entry["run"] = name
                records.append(entry)
        if run is None:
            records.sort(key=lambda entry: entry["t_end"])
        return {"run": run, "log_limit_per_run": self.log_limit, "records": records}

    def report(self, run: str | None = None) -> dict[str, Any]:
        """The ``/_mock/report`` JSON: the report card of one run (or all runs together)."""
        runs = (
            [self.runs[run]]
            if run in self.runs
            else []
            if run is not None
            else list(self.runs.values())
        )
        problems = {name: {"count": 0, "examples": []} for name in PROBLEMS}
        requests = attempts = 0
        for stats in runs:
            requests += len(stats.identities)
            attempts += sum(state.attempts for state in stats.identities.values())
            for name, (count, examples) in stats.problems.items():
                problems[name]["count"] += count
                room = EXAMPLES_PER_PROBLEM - len(problems[name]["examples"])
                problems[name]["examples"] += examples[:room]
        return {
            "run": run,
            "requests": requests,
            "attempts": attempts,
            "retries": attempts - requests,
            "max_attempts": self.max_attempts,
            "problems": problems,
            "verdict": _verdict(requests, attempts, problems),
        }


def _run_view(stats: RunStats) -> dict[str, Any]:
    attempts = {identity: state.attempts for identity, state in stats.identities.items()}
    return {
        "requests_by_status": _by_status(stats.requests_by_status),
        "total": stats.total,
        "in_flight": stats.in_flight,
        "peak_concurrency": stats.peak_concurrency,
        "requests": len(attempts),
        "attempts_histogram": _histogram(attempts.values()),
        "attempts_by_identity": attempts,
    }


def _by_status(counts: dict[int, int]) -> dict[str, int]:
    return {str(status): counts[status] for status in sorted(counts)}


def _histogram(values: Any) -> dict[str, int]:
    """``{"1": requests that took one attempt, "2": ..., ...}``."""
    histogram: dict[int, int] = {}
    for value in values:
        histogram[value] = histogram.get(value, 0) + 1
    return {str(n): histogram[n] for n in sorted(histogram)}


def _verdict(requests: int, attempts: int, problems: dict[str, dict]) -> str:
    if requests == 0:
        return "No requests seen for this run yet."
    found = [f"{p['count']} {PROBLEMS[name]}" for name, p in problems.items() if p["count"]]
    if not found:
        return f"No mistakes seen: {requests} requests, {attempts - requests} retries, all by the rules."
    return "To fix: " + "; ".join(found) + "."
