"""``run_batch``: a fixed pool of workers sending a JSONL file of chat requests, nothing lost.

The design, as a reader should follow it (the package docstring has the user's view):

1. **Preflight** (``preflight``): ``GET {base}/models`` with the key, before anything is sent
   or written. A missing key, an unreachable URL, a refused key (401/403) or a model the server
   does not serve raises ``BatchConfigError`` with one clear line (the CLI exits 2). Rate-limit
   headers on that answer already teach the pacer the server's limits.
2. **Resume** (``jsonl.scan_output``): ids already in the output are skipped; a torn last line
   from a kill is dropped first. Only the set of done ids is kept.
3. **Workers**: ``concurrency`` coroutines pull from one shared iterator over the input. The
   input itself is the queue: a worker takes the next line when it is free, so memory holds at
   most ``concurrency`` requests whatever the input size, with no producer task and no
   ``asyncio.Queue`` hand-off per request (a bounded queue would only add a buffer and two
   context switches per request, and the runner's CPU per request must stay within 10% of a
   bare aiohttp loop). No task is created per request.
4. **One request** (``_Run._send``): the body is serialised once; every attempt carries the same
   ``Idempotency-Key`` (a hash of the id and the body, so the same id in two different files is
   not mistaken for one request). Before each attempt the pacer admits it (cooldown, buckets);
   then the attempt runs under its own ``aiohttp.ClientTimeout``. Because a worker has at most
   one request in flight and the connection pool has ``concurrency`` connections, the timeout
   starts once the request has its slot: it never counts a wait for a connection. Retries follow
   ``paradigm_kit.retry``: the worker keeps its request, sleeps for ``Retry-After`` or a
   backoff, and sends it again; a 429 also starts the pacer's shared cooldown. (A request
   waiting to retry holds its worker, so heavy faults lower the effective concurrency; the
   cookbook re-queues retries instead, at the price of a queue and more state per request.)
   One ``aiohttp.ClientSession`` for the run, its pool sized to the concurrency; proxies from
   the environment as ``trust_env=True`` would find them, but looked up once (``proxy_from_env``).
5. **Output**: one line per request, written whole in batches (``jsonl.OutputWriter``). A
   successful response's bytes are copied into the line as they came, after ``json.loads`` has
   checked them: no re-serialisation on the hot path.
6. **Stop**: SIGINT/SIGTERM (the CLI: ``handle_signals=True``) stop taking new lines and cut
   short every wait (backoff, rate limit, cooldown); in-flight attempts finish or time out and
   are written; a request interrupted between attempts gets no line, so the next run sends it
   again. A second signal cancels the in-flight attempts too. In a notebook, interrupting the
   cell cancels the run; the lines already finished are flushed on the way out.

7. **Issue 13** (kept apart, in ``_slot``/``_tell_controller``/``_post_stream``): with
   ``concurrency="auto"`` the pool has ``max_concurrency`` workers and each *attempt* takes a
   slot of a ``ConcurrencyGate`` whose size the controller (``concurrency``) sets from every
   answer; the slot is given back before a retry's wait. A streamed request (``stream=True`` or
   ``"stream": true``) goes through ``streaming.stream_attempt`` instead of the plain POST and
   comes back as the same tuple, so judging, retries and output are shared. A fixed
   concurrency takes neither path: no gate, the hot path unchanged.

What this does that the OpenAI cookbook's ``api_request_parallel_processor.py`` does not: no
1 ms polling loop and no fire-and-forget tasks (workers are awaited), 429 read from the status
rather than the body text, ``Retry-After`` honoured instead of a fixed 15 s pause, a per-attempt
timeout (not only aiohttp's 300 s default), resume after a crash, one line per request even when
it failed, and output in input order one helper away (``sort_output``).

The hot path was profiled (pyinstrument and cProfile, zero-latency mock, 10k-30k requests).
The one big cost found was aiohttp's ``trust_env=True``: two thread-pool hops per request
(netrc, proxy lookup) made the runner use 2.3x the CPU of a bare aiohttp loop; resolving the
proxy once brought it level (about 150 us of CPU per request on this machine, the bare
``gather`` loop slightly more). Per request the runner now does one ``json.loads`` of the input
line, one ``json.dumps`` of the body, one hash, one POST and one ``json.loads`` of the answer,
then formats one output line. Counters are plain integers; the progress bar is advanced by
tqdm's own ``update`` (a counter increment; it redraws at most twice a second); a timeline
record costs about 2 us.

Ids should be unique within an input: the output holds one line per id, and resume skips by id.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import signal
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import yarl
from aiohttp.helpers import get_env_proxy_for_url

from ..retry import RETRYABLE_EXCEPTIONS, RetryPolicy, is_retryable_status, parse_retry_after_s
from ..settings import DEFAULT_MODEL, MissingApiKey, api_settings
from ..timeline import TimelineRecorder
from .concurrency import DEFAULT_MAX_CONCURRENCY, AdaptiveConcurrency, ConcurrencyGate
from .jsonl import (
    OutputState,
    OutputWriter,
    count_lines,
    merge_retried,
    read_requests,
    scan_output,
    side_path,
    sort_output,
)
from .pacing import Pacer, estimate_tokens
from .streaming import StreamDeadlines, StreamInterrupted, stream_attempt

__all__ = [
    "BatchConfigError",
    "BatchEstimate",
    "BatchSummary",
    "estimate_batch",
    "idempotency_key",
    "preflight",
    "run_batch",
]

PREFLIGHT_TIMEOUT_S = 15.0


class BatchConfigError(Exception):
    """The run cannot start (key, URL, model, input): the message is one line for the user."""


@dataclass
class BatchSummary:
    """What a run did. ``exit_code``: 0 all succeeded, 1 some failed, 130 interrupted."""

    output_path: str
    requests: int = 0  # requests handled by this run (new lines written)
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0  # already in the output from an earlier run
    earlier_failures: int = 0  # error lines left in the output by earlier runs
    retried: int = 0  # retries (attempts beyond the first), all requests together
    requests_retried: int = 0
    rate_limited: int = 0  # 429 answers seen
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens: int = 0
    cost: float | None = None
    wall_s: float = 0.0
    interrupted: bool = False
    limits: str = "no rate limit"
    concurrency: int = 0
    concurrency_auto: str = ""  # --concurrency auto: how the limit moved (empty when fixed)
    # --concurrency auto: (answers seen, new limit, reason) at each change, for plots and the bench
    concurrency_history: list[tuple[int, int, str]] = field(default_factory=list)
    error_statuses: dict[int, int] = field(default_factory=dict)  # non-2xx answers by status

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.failed or self.earlier_failures else 0

    def __str__(self) -> str:
        lines = [
            f"requests     {self.requests} in this run ({self.skipped} already done)",
            f"succeeded    {self.succeeded}",
            f"failed       {self.failed}"
            + (
                f" (+{self.earlier_failures} error lines from earlier runs)"
                if self.earlier_failures
                else ""
            ),
            f"retried      {self.retried} retries over {self.requests_retried} requests, "
            f"{self.rate_limited} answers were 429",
            f"tokens       {self.tokens} ({self.prompt_tokens} prompt + {self.completion_tokens} completion)",
        ]
        if self.cost is not None:
            lines.append(f"cost         {self.cost:.4f} (at the given price per 1k tokens)")
        lines += [
            f"wall time    {self.wall_s:.2f} s, {self.requests_per_s:.1f} requests/s "
            f"(concurrency {self.concurrency}{self.concurrency_auto}, {self.limits})",
            f"output       {self.output_path}"
            + ("  [interrupted: run again to finish]" if self.interrupted else ""),
        ]
        return "\n".join(lines)


# --- preflight ----------------------------------------------------------------------------


async def preflight(
    session: aiohttp.ClientSession, base_url: str, models: Iterable[str], pacer: Pacer | None = None
) -> list[str]:
    """``GET {base_url}/models``: raise ``BatchConfigError`` unless the server answers, accepts
    the key and serves every model in ``models``. Returns the models it serves."""
    url = f"{base_url}/models"
    try:
        async with session.get(
            url, timeout=aiohttp.ClientTimeout(total=PREFLIGHT_TIMEOUT_S)
        ) as response:
            status = response.status
            body = await response.read()
            if pacer is not None:
                pacer.learn(response.headers)
    except (aiohttp.ClientError, asyncio.TimeoutError) as error:
        reason = str(error) or type(error).__name__
        raise BatchConfigError(f"cannot reach {url}: {reason} (check PARADIGM_BASE_URL)") from None
    if status in (401, 403):
        raise BatchConfigError(
            f"the API key was refused ({status}) by {url}: check PARADIGM_API_KEY"
        )
    if status != 200:
        raise BatchConfigError(
            f"{url} answered {status}: {_error_message(body)} (check PARADIGM_BASE_URL)"
        )
    try:
        served = [entry["id"] for entry in json.loads(body)["data"]]
    except (ValueError, KeyError, TypeError):
        raise BatchConfigError(f"{url} did not answer an OpenAI-style model list") from None
    for model in models:
        if model not in served:
            raise BatchConfigError(
                f"model {model!r} is not served by {base_url} (available: {', '.join(served) or 'none'})"
            )
    return served


def proxy_from_env(url: str) -> tuple[yarl.URL | None, aiohttp.BasicAuth | None]:
    """The proxy ``HTTP(S)_PROXY`` / ``NO_PROXY`` give for ``url``: what ``trust_env=True``
    would use, looked up once per run.

    ``ClientSession(trust_env=True)`` looks the proxy up again for every request, and the
    ``~/.netrc`` too, each in a thread-pool hop: two thread round trips per request, which more
    than doubled the runner's CPU per request at zero latency (measured, 10k requests). The
    environment does not change during a run, so the runner asks aiohttp's own helper once.
    (netrc credentials are irrelevant: the key travels in the ``Authorization`` header.)
    """
    try:
        return get_env_proxy_for_url(yarl.URL(url))
    except LookupError:  # no proxy for this URL, or NO_PROXY excludes its host
        return None, None


def _error_message(body: bytes) -> str:
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return body[:200].decode("utf-8", "replace").strip() or "(empty body)"
    if isinstance(error, dict):
        return str(error.get("message") or error.get("code") or error)
    return str(error)


# --- the run ------------------------------------------------------------------------------


class _Stopping(Exception):
    """Raised inside a worker when the run stops between two attempts of a request."""


class _Run:
    """The state of one run, owned by ``run_batch``: counters, pacer, writer, stop flag."""

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        url: str,
        source: Iterator[tuple],
        writer: OutputWriter,
        pacer: Pacer,
        policy: RetryPolicy,
        timeout: aiohttp.ClientTimeout,
        recorder: TimelineRecorder | None,
        summary: BatchSummary,
        progress: Any,
        gate: ConcurrencyGate | None = None,
        stream_all: bool = False,
        deadlines: StreamDeadlines | None = None,
    ) -> None:
        self.session, self.url, self.source, self.writer = session, url, source, writer
        # --- issue 13: adaptive concurrency (gate) and streaming -----------------------------
        self.gate, self.stream_all = gate, stream_all
        self.deadlines = deadlines or StreamDeadlines()
        self.stream_cuts = 0
        self.pacer, self.policy, self.timeout, self.recorder = pacer, policy, timeout, recorder
        self.summary, self.progress = summary, progress
        self.t0 = time.monotonic()  # every request of the batch is queued from the start
        self.stopping = False
        self._stop_event = asyncio.Event()
        self.pacer.sleep = self.sleep

    def stop(self) -> None:
        """Stop taking new work; wake every worker sleeping between attempts."""
        self.stopping = True
        self._stop_event.set()

    async def sleep(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless the run stops first; False if it stopped."""
        if self.stopping:
            return False
        if seconds > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop_event.wait(), seconds)
        return not self.stopping

    async def worker(self) -> None:
        """Take the next request from the shared input until it is exhausted or the run stops."""
        progress = self.progress
        for line_number, request_id, body, problem in self.source:
            if problem is not None:
                error = {"status": None, "type": "invalid_input", "message": problem}
                self._write_failed(request_id, line_number, 0, 0.0, error)
            else:
                try:
                    await self._send(line_number, request_id, body)
                except _Stopping:
                    return
            if progress is not None:
                progress.update(1)
            if self.stopping:
                return

    async def _send(self, line_number: int, request_id: Any, body: dict) -> None:
        """All attempts of one request, until it succeeds, fails for good, or the run stops."""
        payload = json.dumps(body).encode()
        headers = {"Idempotency-Key": idempotency_key(request_id, payload)}
        pacer, recorder = self.pacer, self.recorder
        t_queued = t_first_sent = self.t0
        attempt = 0
        streamed = self.stream_all or body.get("stream") is True
        extra: dict = {}  # streaming's fields for the output line
        while True:
            attempt += 1
            async with self._slot() as (inflight, epoch):
                tokens_taken = await pacer.admit(body)
                if tokens_taken is None:
                    raise _Stopping
                t_started = time.monotonic()
                if attempt == 1:
                    t_first_sent = t_started
                if streamed:
                    status, response_headers, raw, t_first_byte, failure = await self._post_stream(
                        body, headers, extra
                    )
                else:
                    status, response_headers, raw, t_first_byte, failure = await self._post(
                        payload, headers
                    )
                t_end = time.monotonic()
                if self.gate is not None:
                    self._tell_controller(
                        status, failure, raw, t_end - t_started, inflight, epoch, extra
                    )
            if response_headers is not None and pacer.learning:
                pacer.learn(response_headers)
            outcome, detail = self._judge(status, response_headers, raw, failure, attempt)
            if recorder is not None:
                wait_s = detail if outcome == "retry" else 0.0
                recorder.record(
                    request_id,
                    attempt,
                    t_queued,
                    t_started,
                    t_first_byte,
                    t_end,
                    status,
                    outcome,
                    wait_s,
                )
            if outcome == "ok":
                usage = detail.get("usage") if isinstance(detail, dict) else None
                self._write_ok(
                    request_id, line_number, attempt, t_end - t_first_sent, raw, usage, extra
                )
                if tokens_taken:
                    pacer.settle(tokens_taken, usage, body.get("max_tokens"))
                return
            if outcome == "failed":
                self._write_failed(request_id, line_number, attempt, t_end - t_first_sent, detail)
                return
            if not await self.sleep(detail):  # "retry": detail is the wait in seconds
                raise _Stopping
            t_queued = time.monotonic()

    # --- issue 13: the slot of an attempt, the controller's samples, a streamed attempt ------

    def _slot(self) -> Any:
        """The gate's slot for one attempt (released before a retry's wait), or no gate."""
        return self.gate.slot() if self.gate is not None else _NO_SLOT

    def _tell_controller(
        self,
        status: int | None,
        failure: dict | None,
        raw: bytes,
        attempt_s: float,
        inflight: int,
        epoch: int,
        extra: dict,
    ) -> None:
        controller = self.gate.controller
        if status == 200:
            tokens = extra.pop("_completion_tokens", None)
            if tokens is None:
                tokens = _completion_tokens(raw)
            controller.on_sample(
                attempt_s, tokens, inflight=inflight, epoch=epoch, ttft_s=extra.get("ttft_s")
            )
        elif status == 503:
            controller.on_overload("queue_full", epoch=epoch)
        elif status == 429:
            controller.on_overload("rate_limited", epoch=epoch)
        elif failure is not None and failure.get("type") == "timeout":
            controller.on_overload("timeout", epoch=epoch)
        if self.progress is not None and controller.limit != self.summary.concurrency:
            self.summary.concurrency = controller.limit
            self._show_counts()

    async def _post_stream(self, body: dict, headers: dict, extra: dict) -> tuple:
        """One streamed attempt, as ``_post``'s tuple; ``extra`` gets the line's stream fields."""
        try:
            result = await stream_attempt(
                self.session, self.url, body, headers, self.deadlines, stop=self._stop_event
            )
        except StreamInterrupted:
            raise _Stopping from None
        if result.status == 200:
            extra["ttft_s"] = result.ttft_s
            extra["tokens_per_s"] = result.tokens_per_s
            extra["_completion_tokens"] = result.response["usage"].get("completion_tokens", 0)
            if result.usage_estimated:
                extra["usage_estimated"] = True
            if result.stream_options_refused:
                extra["stream_options_refused"] = True
        elif result.failure is not None and result.failure["type"] == "stream_cut":
            # a re-sent request starts generation again, and may be billed again
            extra["stream_cuts"] = extra.get("stream_cuts", 0) + 1
            self.stream_cuts += 1
        return result.status, result.headers, result.body, result.t_first_byte, result.failure

    async def _post(self, payload: bytes, headers: dict) -> tuple:
        """One attempt: ``(status, headers, body, t_first_byte, failure)``; ``status`` is
        ``None`` and ``failure`` says why when no answer came (timeout, dropped connection)."""
        try:
            async with self.session.post(
                self.url, data=payload, headers=headers, timeout=self.timeout
            ) as response:
                t_first_byte = time.monotonic()
                return response.status, response.headers, await response.read(), t_first_byte, None
        except asyncio.TimeoutError:
            failure = {"type": "timeout", "message": f"no answer within {self.timeout.total:g} s"}
        except RETRYABLE_EXCEPTIONS as error:
            failure = {"type": "connection_error", "message": f"{type(error).__name__}: {error}"}
        except aiohttp.ClientError as error:  # not worth retrying (an invalid URL, ...)
            failure = {
                "type": "client_error",
                "message": f"{type(error).__name__}: {error}",
                "final": True,
            }
        return None, None, b"", None, failure

    def _judge(
        self, status: int | None, headers: Any, raw: bytes, failure: dict | None, attempt: int
    ) -> tuple[str, Any]:
        """What one attempt's result means: ``("ok", parsed response)``, ``("retry", wait in
        seconds)`` or ``("failed", error dict for the output line)``."""
        if status is not None and 200 <= status < 300:
            try:
                return "ok", json.loads(raw)
            except ValueError:  # a truncated or garbled answer: worth another attempt
                failure = {"type": "invalid_response", "message": "the response is not valid JSON"}
        summary, policy = self.summary, self.policy
        if status is not None:
            summary.error_statuses[status] = summary.error_statuses.get(status, 0) + 1
            if failure is None:
                failure = _error_fields(raw)
                if not is_retryable_status(status):
                    return "failed", {"status": status, **failure}
        elif failure.pop("final", False):
            return "failed", {"status": None, **failure}
        retry_after_s = parse_retry_after_s(headers) if headers is not None else None
        if status == 429:
            summary.rate_limited += 1
        if policy.retry_after_too_long(retry_after_s):
            message = (
                f"the server asked to retry after {retry_after_s:.0f} s, over the "
                f"{policy.max_retry_after_s:.0f} s cap (--max-retry-after)"
            )
            return "failed", {"status": status, "type": "retry_after_too_long", "message": message}
        if attempt > policy.max_retries:
            failure["message"] = f"gave up after {attempt} attempts: {failure.get('message')}"
            return "failed", {"status": status, **failure}
        wait_s = policy.delay_s(attempt, retry_after_s)
        if status == 429:  # the account is over its limit: every worker pauses, not just this one
            self.pacer.cool_down(wait_s)
        summary.retried += 1
        if attempt == 1:
            summary.requests_retried += 1
        if self.progress is not None:
            self._show_counts()
        return "retry", wait_s

    def _write_ok(
        self,
        request_id: Any,
        line_number: int,
        attempts: int,
        latency_s: float,
        raw: bytes,
        usage: Any,
        extra: dict | None = None,
    ) -> None:
        summary = self.summary
        summary.requests += 1
        summary.succeeded += 1
        if isinstance(usage, dict):
            prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
            if isinstance(prompt, int) and isinstance(completion, int):
                summary.prompt_tokens += prompt
                summary.completion_tokens += completion
        if b"\n" in raw or b"\r" in raw:  # a pretty-printed answer: make it one line
            raw = raw.strip()
            if b"\n" in raw or b"\r" in raw:
                raw = json.dumps(json.loads(raw)).encode()
        # the response's bytes as they came (json.loads has checked them): no re-serialisation
        stream_fields = _stream_fields(extra) if extra else b""
        self.writer.write(
            b'{"id": %s, "line": %d, "attempts": %d, "latency_s": %.3f%s, "response": %s}\n'
            % (
                json.dumps(request_id).encode(),
                line_number,
                attempts,
                latency_s,
                stream_fields,
                raw,
            )
        )

    def _write_failed(
        self, request_id: Any, line_number: int, attempts: int, latency_s: float, error: dict
    ) -> None:
        self.summary.requests += 1
        self.summary.failed += 1
        record = {
            "id": request_id,
            "line": line_number,
            "attempts": attempts,
            "latency_s": round(latency_s, 3),
            "error": error,
        }
        self.writer.write(json.dumps(record).encode() + b"\n")
        if self.progress is not None:
            self._show_counts()

    def _show_counts(self) -> None:
        summary = self.summary
        current = f" concurrency={summary.concurrency}" if self.gate is not None else ""
        self.progress.set_postfix_str(
            f"failed={summary.failed} retries={summary.retried} 429s={summary.rate_limited}"
            + current,
            refresh=False,
        )


_NO_SLOT = contextlib.nullcontext((0, 0))


def _completion_tokens(raw: bytes) -> int:
    """``usage.completion_tokens`` of a plain answer (0 when absent): the controller's length."""
    try:
        usage = json.loads(raw).get("usage") or {}
        return int(usage.get("completion_tokens") or 0)
    except (ValueError, AttributeError, TypeError):
        return 0


def _stream_fields(extra: dict) -> bytes:
    """``, "ttft_s": ..., "tokens_per_s": ...`` and the stream's flags, for the output line."""
    fields = []
    for key in ("ttft_s", "tokens_per_s"):
        if extra.get(key) is not None:
            fields.append(b', "%s": %.3f' % (key.encode(), extra[key]))
    for key in ("usage_estimated", "stream_options_refused"):
        if extra.get(key):
            fields.append(b', "%s": true' % key.encode())
    if extra.get("stream_cuts"):
        fields.append(b', "stream_cuts": %d' % extra["stream_cuts"])
    return b"".join(fields)


def idempotency_key(request_id: Any, payload: bytes) -> str:
    """The ``Idempotency-Key`` of every attempt of a request: a hash of its id and its body."""
    return hashlib.blake2b(
        json.dumps(request_id).encode() + b"\n" + payload, digest_size=16
    ).hexdigest()


def _error_fields(raw: bytes) -> dict:
    """``message``/``type``/``code`` from an OpenAI-shaped error body, else the body's text."""
    try:
        error = json.loads(raw).get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict):
        return {key: error[key] for key in ("message", "type", "code") if key in error}
    if isinstance(error, str):
        return {"message": error}
    return {"message": raw[:500].decode("utf-8", "replace").strip()}


def _peek(iterator: Iterator[tuple]) -> tuple[tuple | None, Iterator[tuple]]:
    """The first item of ``iterator`` and an iterator that still yields it."""
    first = next(iterator, None)
    return first, (iterator if first is None else itertools.chain([first], iterator))


def _check_input(requests: Any) -> None:
    if isinstance(requests, (str, os.PathLike)) and not os.path.isfile(requests):
        raise BatchConfigError(f"input file not found: {os.fspath(requests)}")


def _repair_output(output_path: str) -> OutputState:
    """Once the preflight passed: merge a leftover ``--retry-failed`` side file, drop a torn
    last line, and return what the output holds."""
    if os.path.exists(output_path):
        merge_retried(output_path)
    return scan_output(output_path, repair=True)


async def run_batch(
    requests: str | os.PathLike[str] | Iterable[Mapping[str, Any]],
    output_path: str | os.PathLike[str],
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    concurrency: int | str = 20,
    max_retries: int = 6,
    retry_policy: RetryPolicy | None = None,
    timeout_s: float = 60.0,
    max_requests_per_minute: float | None = None,
    max_tokens_per_minute: float | None = None,
    learn_limits_from_headers: bool = True,
    model: str = DEFAULT_MODEL,
    retry_failed: bool = False,
    ordered: bool = False,
    timeline: str | os.PathLike[str] | TimelineRecorder | None = None,
    price_per_1k_tokens: float | None = None,
    progress: bool = True,
    check_first: bool = True,
    handle_signals: bool = False,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    stream: bool = False,
    stream_deadlines: StreamDeadlines | None = None,
) -> BatchSummary:
    """Send every request of ``requests`` (a JSONL path, or an iterable of request dicts) and
    append one line per request to ``output_path``; return a ``BatchSummary``.

    Await it from a notebook (``summary = await run_batch(...)``); a script wraps it in
    ``asyncio.run``. ``base_url``/``api_key`` default to ``PARADIGM_BASE_URL`` /
    ``PARADIGM_API_KEY``. Requests without ``model`` use ``model``; without ``id``, their line
    number (1-based). ``max_retries`` is ignored when a ``retry_policy`` is given. ``timeline``
    is a JSONL path or a ``TimelineRecorder`` to record every attempt in. ``handle_signals``
    (the CLI) makes SIGINT/SIGTERM stop the run gracefully. Raises ``BatchConfigError`` before
    sending or writing anything if the configuration cannot work.

    ``concurrency="auto"`` adapts the requests in flight to the server (``batch.concurrency``),
    up to ``max_concurrency``. ``stream=True`` streams every request (a line with
    ``"stream": true`` is streamed anyway), under ``stream_deadlines`` (``batch.streaming``).
    """
    controller = _controller(concurrency, max_concurrency)
    concurrency = controller.limit if controller is not None else concurrency
    _check_input(requests)
    if base_url is None or api_key is None:
        try:
            settings = api_settings(require_key=api_key is None)
        except MissingApiKey as error:
            raise BatchConfigError(str(error)) from None
        base_url = base_url or settings.base_url
        api_key = api_key or settings.api_key
    if not api_key:
        raise BatchConfigError(str(MissingApiKey()))
    base_url = base_url.rstrip("/")
    policy = retry_policy or RetryPolicy(max_retries=max_retries)
    output_path = os.fspath(output_path)

    state = scan_output(output_path, repair=False)  # read-only until the preflight has passed
    skip_ids = state.done_ids - state.failed_ids if retry_failed else state.done_ids
    only_ids = state.failed_ids if retry_failed else None
    source = read_requests(requests, default_model=model, skip_ids=skip_ids, only_ids=only_ids)
    first, source = _peek(source)

    pacer = Pacer(
        max_requests_per_minute=max_requests_per_minute,
        max_tokens_per_minute=max_tokens_per_minute,
        learn_from_headers=learn_limits_from_headers,
    )
    summary = BatchSummary(output_path=output_path, concurrency=concurrency)
    workers = controller.ceiling if controller is not None else concurrency
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    proxy, proxy_auth = proxy_from_env(base_url)
    connector = aiohttp.TCPConnector(limit=workers)
    async with aiohttp.ClientSession(
        headers=headers, connector=connector, proxy=proxy, proxy_auth=proxy_auth
    ) as session:
        if check_first:
            if pacer.requests_bucket is not None:
                pacer.requests_bucket.charge(1)  # servers may count GET /models too
            first_model = (
                [first[2]["model"]] if first is not None and first[2] is not None else [model]
            )
            await preflight(session, base_url, first_model, pacer)

        # the configuration works: from here on, the output may be written
        state = _repair_output(output_path)
        summary.skipped = len(skip_ids)
        summary.earlier_failures = 0 if retry_failed else len(state.failed_ids)
        write_to = side_path(output_path) if retry_failed else output_path
        recorder = (
            timeline
            if isinstance(timeline, TimelineRecorder) or timeline is None
            else TimelineRecorder(timeline)
        )
        bar = None
        if progress:
            from tqdm.auto import tqdm  # lazily: a notebook widget or a terminal bar

            total = None
            if retry_failed:
                total = len(state.failed_ids)
            elif isinstance(requests, (str, os.PathLike)):
                total = max(0, count_lines(requests) - len(skip_ids))
            elif hasattr(requests, "__len__"):
                total = max(0, len(requests) - len(skip_ids))
            bar = tqdm(total=total, unit="req", mininterval=0.5, smoothing=0.05, file=sys.stderr)
        writer = OutputWriter(write_to)
        run = _Run(
            session=session,
            url=f"{base_url}/chat/completions",
            source=source,
            writer=writer,
            pacer=pacer,
            policy=policy,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            recorder=recorder,
            summary=summary,
            progress=bar,
            gate=ConcurrencyGate(controller) if controller is not None else None,
            stream_all=stream,
            deadlines=stream_deadlines,
        )
        t_start = time.monotonic()
        try:
            await _run_workers(run, workers, handle_signals)
        finally:
            summary.wall_s = time.monotonic() - t_start
            if controller is not None:
                summary.concurrency = controller.limit
                summary.concurrency_auto = _describe_auto(controller, run.gate)
                summary.concurrency_history = [
                    (step.samples_seen, step.limit, step.reason) for step in controller.history
                ]
            summary.interrupted = run.stopping
            writer.close()
            if recorder is not None and recorder is not timeline:
                recorder.close()
            if bar is not None:
                bar.close()
    if retry_failed:
        merge_retried(output_path)
    if ordered:
        sort_output(output_path)
    summary.tokens = summary.prompt_tokens + summary.completion_tokens
    summary.limits = pacer.describe()
    if price_per_1k_tokens is not None:
        summary.cost = summary.tokens / 1000.0 * price_per_1k_tokens
    return summary


def _controller(concurrency: int | str, max_concurrency: int) -> AdaptiveConcurrency | None:
    """The controller for ``concurrency="auto"``, None for a fixed number; bad values refused."""
    if (
        isinstance(max_concurrency, bool)
        or not isinstance(max_concurrency, int)
        or (max_concurrency < 1)
    ):
        raise BatchConfigError(f"max_concurrency must be an integer >= 1, got {max_concurrency!r}")
    if concurrency == "auto":
        return AdaptiveConcurrency(max_concurrency=max_concurrency)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise BatchConfigError(f"concurrency must be >= 1 or 'auto', got {concurrency!r}")
    return None


def _describe_auto(controller: AdaptiveConcurrency, gate: ConcurrencyGate | None) -> str:
    """`` at the end, auto: peak 24 in flight, 7 changes``, for the summary line."""
    changes = len(controller.history) - 1
    peak = gate.peak_inflight if gate is not None else controller.limit
    return f" at the end, auto: peak {peak} in flight, {changes} changes"


async def _run_workers(run: _Run, concurrency: int, handle_signals: bool) -> None:
    """Run ``concurrency`` workers to the end; on a signal stop gracefully, on a second one (or
    on cancellation) cancel the workers, whose unfinished requests then get no line."""
    loop = asyncio.get_running_loop()
    workers = [asyncio.create_task(run.worker()) for _ in range(concurrency)]
    forced = False

    def on_signal() -> None:
        nonlocal forced
        if run.stopping:  # the second Ctrl-C: stop waiting for in-flight requests
            forced = True
            for task in workers:
                task.cancel()
        run.stop()

    installed: list[int] = []
    if handle_signals and sys.platform != "win32":
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal)
            installed.append(signum)
    try:
        await asyncio.gather(*workers)
    except asyncio.CancelledError:
        run.stopping = True
        if not forced:  # cancelled from outside (a notebook's interrupt): let it propagate
            raise
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        for signum in installed:
            loop.remove_signal_handler(signum)


# --- dry run ------------------------------------------------------------------------------


@dataclass
class BatchEstimate:
    """What a run would send: requests, estimated tokens and cost (``--dry-run``)."""

    requests: int
    skipped: int
    invalid_lines: int
    estimated_tokens: int
    estimated_cost: float | None

    def __str__(self) -> str:
        cost = (
            f", about {self.estimated_cost:.4f} at the given price"
            if self.estimated_cost is not None
            else ""
        )
        return (
            f"dry run: {self.requests} requests to send ({self.skipped} already done, "
            f"{self.invalid_lines} invalid lines), about {self.estimated_tokens} tokens "
            f"(prompt characters / 4 + max_tokens){cost}; nothing sent"
        )


def estimate_batch(
    requests: str | os.PathLike[str] | Iterable[Mapping[str, Any]],
    output_path: str | os.PathLike[str] | None = None,
    *,
    model: str = DEFAULT_MODEL,
    retry_failed: bool = False,
    price_per_1k_tokens: float | None = None,
) -> BatchEstimate:
    """Count what ``run_batch`` would send and estimate its tokens and cost; sends nothing."""
    if isinstance(requests, (str, os.PathLike)) and not os.path.isfile(requests):
        raise BatchConfigError(f"input file not found: {os.fspath(requests)}")
    state = scan_output(output_path, repair=False) if output_path is not None else None
    done = state.done_ids if state is not None else set()
    failed = state.failed_ids if state is not None else set()
    skip_ids = done - failed if retry_failed else done
    count = invalid = tokens = 0
    for _, _, body, problem in read_requests(
        requests, default_model=model, skip_ids=skip_ids, only_ids=failed if retry_failed else None
    ):
        if problem is not None:
            invalid += 1
            continue
        count += 1
        tokens += estimate_tokens(body)
    cost = tokens / 1000.0 * price_per_1k_tokens if price_per_1k_tokens is not None else None
    return BatchEstimate(count, len(skip_ids), invalid, tokens, cost)
