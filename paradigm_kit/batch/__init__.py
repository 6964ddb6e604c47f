"""The production batch runner: many chat requests, rate limits, retries, nothing lost.

Problem: ``asyncio.gather`` over 20 prompts is where tutorials stop; a real batch is 100,000
prompts against a rate-limited API that answers 429s, 5xx and timeouts, on a machine that may be
killed halfway. ``run_batch`` sends them all with a bounded pool of workers and ends with one
output line per input line, whatever happened.

Features:

* streams a JSONL file (or an iterable of dicts) through ``concurrency`` workers; memory stays
  flat at 100k requests (no task per line, nothing kept per finished request);
* retries only what can succeed (408, 409, 429, 5xx, timeouts, dropped connections) with
  exponential backoff and jitter, honouring ``Retry-After`` / ``retry-after-ms``
  (``paradigm_kit.retry``); the same ``Idempotency-Key`` on every attempt;
* client-side ``max_requests_per_minute`` / ``max_tokens_per_minute`` with the same token bucket
  as the mock, limits learned from ``x-ratelimit-*`` headers, a cooldown shared by all workers
  after a 429 (``pacing``);
* resume: rerun with the same output and only the missing ids are sent; ``retry_failed`` redoes
  the error lines; a torn last line from a kill is dropped (``jsonl``);
* preflight ``GET /models`` (key, URL, model) before anything is sent; a dry run; a progress bar;
  a summary with tokens, cost, wall time and requests/s; per-attempt timeline records.

Example (a notebook cell; a script uses ``asyncio.run``, or the CLI
``python scripts/paradigm_batch.py prompts.jsonl results.jsonl --concurrency 50``)::

    from paradigm_kit.batch import run_batch
    summary = await run_batch("prompts.jsonl", "results.jsonl", concurrency=50,
                              max_requests_per_minute=600)
    print(summary)

Input lines: ``{"id": "q1", "messages": [...], "model": "alfred-4.2", "max_tokens": 100}``; ``id``
is optional (default: the 1-based line number), ``model`` too (default ``run_batch(model=...)``);
every other field is sent as it is. Output lines, in completion order (``sort_output`` or
``ordered=True`` for input order)::

    {"id": "q1", "line": 1, "attempts": 1, "latency_s": 0.512, "response": {...}}
    {"id": "q2", "line": 2, "attempts": 3, "latency_s": 4.2, "error": {"status": 400, "message": ...}}

Structure: ``runner`` (``run_batch``, preflight, the workers, ``BatchSummary``), ``pacing``
(when may the next attempt go), ``jsonl`` (reading, writing, resuming, sorting). Each module's
docstring explains its part of the design.
"""

from .jsonl import read_requests, sort_output
from .pacing import Pacer, estimate_tokens
from .runner import (
    BatchConfigError,
    BatchEstimate,
    BatchSummary,
    estimate_batch,
    preflight,
    run_batch,
)

__all__ = [
    "BatchConfigError",
    "BatchEstimate",
    "BatchSummary",
    "Pacer",
    "estimate_batch",
    "estimate_tokens",
    "preflight",
    "read_requests",
    "run_batch",
    "sort_output",
]
