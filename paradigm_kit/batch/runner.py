"""``run_batch``: a fixed pool of workers sending a JSONL file of chat requests, nothing lost.

The design, as a reader should follow it (the package docstring has the user's view):

1. **Refusals** (``checks``): numbers, key, URL, the output and timeline files, duplicate ids,
   a request no token budget could admit: each is one ``BatchConfigError`` line (the CLI exits
   2) raised before anything is sent or written. The input is read once for this (``survey``),
   which also gives the models named and the number of lines left to send.
2. **Preflight** (``preflight``): ``GET {base}/models`` with the key, retried like a request
   (429, 5xx, timeouts). A refused key, an unreachable host or a non-API answer stops the run.
   Lines naming a model the server does not serve get an error line each without being sent,
   wherever they are in the file; if no line to send names a served model, the run is refused
   instead (a typo in ``--model``). Rate-limit headers on that answer teach the pacer.
3. **Resume** (``jsonl.scan_output``): a leftover ``--retry-failed`` side file is merged and a
   torn last line dropped (the only line a repair removes); ids already done are skipped. With
   ``retry_failed``, only the successes are skipped: error lines are redone, and lines never
   sent (an interrupted run) are sent too, so such a run never ends with input lines unsent.
4. **Workers**: ``concurrency`` coroutines pull from one shared iterator over the input. The
   input itself is the queue: a worker takes the next line when it is free, so memory holds at
   most ``concurrency`` requests whatever the input size, with no producer task and no
   ``asyncio.Queue`` hand-off per request (a bounded queue would only add a buffer and two
   context switches per request, and the runner's CPU per request must stay within 10% of a
   bare aiohttp loop). No task is created per request.
5. **One request** (``_Run._send``): the body is serialised once; every attempt carries the same
   ``Idempotency-Key`` (a hash of the id and the body, so the same id in two different files is
   not mistaken for one request). Before each attempt the pacer admits it (cooldown, buckets);
   then the attempt runs under its own ``aiohttp.ClientTimeout``. Because a worker has at most
   one request in flight and the connection pool has ``concurrency`` connections, the timeout
   starts once the request has its slot: it never counts a wait for a connection. Each attempt
   gives an ``_Attempt`` and ``_judge`` turns it into a ``_Verdict`` (ok, retry after a wait, or
   failed with an error). Retries follow ``paradigm_kit.retry``: the worker keeps its request,
   sleeps for ``Retry-After`` or a backoff, and sends it again; a 429 also starts the pacer's
   shared cooldown, except ``insufficient_quota`` (out of credit), recorded at once. (A request
   waiting to retry holds its worker, so heavy faults lower the effective concurrency; the
   cookbook re-queues retries instead, at the price of a queue and more state per request.)
   One ``aiohttp.ClientSession`` for the run, its pool sized to the concurrency; proxies from
   the environment as ``trust_env=True`` would find them, but looked up once (``proxy_from_env``).
   Redirects are never followed: the ``Authorization`` header must not reach another origin.
6. **Output**: one line per request, written whole in batches (``jsonl.OutputWriter``). A
   successful response's bytes are copied into the line as they came, after ``json.loads`` has
   checked them: no re-serialisation on the hot path. Any text that came from the server has
   the key masked (``***``) before it is written or shown.
7. **Stop** (``_Stop``): with ``handle_signals`` (the CLI), SIGINT/SIGTERM are handled from
   the start. During the preflight, or while a worker only waits (backoff, rate limit,
   cooldown), the run ends at once. With requests in flight, the first signal stops taking new
   lines and lets them finish (each bounded by its timeout) and be written; a request
   interrupted between attempts gets no line, so the next run sends it again. A second signal
   cancels the in-flight attempts too. Exit code 130 after SIGINT, 143 after SIGTERM. In a
   notebook, interrupting the cell cancels the run; the lines already finished are flushed.

7. **Adaptive concurrency and streams** (kept apart, in ``_slot``/``_tell_controller``/
   ``_post_stream``): with ``concurrency="auto"`` the pool has ``max_concurrency`` workers and each
   *attempt* takes a slot of a ``ConcurrencyGate`` whose size the controller (``concurrency``)
   sets from every answer; the slot is given back before a retry's wait. A streamed request
   (``stream=True`` or ``"stream": true``) goes through ``streaming.stream_attempt`` instead of the
   plain POST and comes back as the same ``_Attempt``, so judging, retries and output are shared.
   A fixed concurrency takes neither path: no gate, the hot path unchanged.

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
line (plus one in the up-front survey), one ``json.dumps`` of the body, one hash, one POST and
one ``json.loads`` of the answer, then formats one output line. Counters are plain integers; the
progress bar is advanced by tqdm's own ``update`` (a counter increment; it redraws at most twice
a second); a timeline record costs about 2 us.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import yarl
from aiohttp.helpers import get_env_proxy_for_url

from ..retry import (
    RETRYABLE_EXCEPTIONS,
    RetryPolicy,
    is_final_429,
    is_retryable_status,
    parse_retry_after_s,
)
from ..server_text import summarise_body
from ..settings import ATTENDEE_HEADER, DEFAULT_MODEL, MissingApiKey, api_settings, attendee_name
from ..timeline import TimelineRecorder
from .checks import (
    BatchConfigError,
    InputSurvey,
    check_api_key,
    check_base_url,
    check_number,
    check_paths,
    survey,
)
from .concurrency import DEFAULT_MAX_CONCURRENCY, AdaptiveConcurrency, ConcurrencyGate
from .jsonl import (
    OutputFileError,
    OutputWriter,
    empty_output,
    merge_retried,
    read_requests,
    scan_output,
    side_path,
    sort_output,
)
from .pacing import Pacer, estimate_tokens
from .preflight import PREFLIGHT_TIMEOUT_S, preflight
from .streaming import StreamDeadlines, StreamInterrupted, stream_attempt

__all__ = [
    "PREFLIGHT_TIMEOUT_S",
    "BatchConfigError",
    "BatchEstimate",
    "BatchSummary",
    "estimate_batch",
    "idempotency_key",
    "preflight",
    "run_batch",
]

#: Exit codes after a stop, by signal (the shell's 128 + signal number).
EXIT_AFTER_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}


@dataclass
class BatchSummary:
    """What a run did. ``exit_code``: 0 all succeeded, 1 some failed, 130 interrupted (143 when
    by SIGTERM)."""

    output_path: str
    requests: int = 0  # requests handled by this run (new lines written)
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0  # already in the output from an earlier run
    earlier_failures: int = 0  # error lines left in the output by earlier runs
    retried: int = 0  # retries (attempts beyond the first), all requests together
    requests_retried: int = 0
    rate_limited: int = 0  # 429 answers seen
    out_of_quota: int = 0  # 429 insufficient_quota: recorded at once, never retried
    unknown_model: int = 0  # lines naming a model the server does not serve: not sent
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens: int = 0
    cost: float | None = None
    wall_s: float = 0.0
    interrupted: bool = False
    stopped_by: int | None = None  # the signal number that stopped the run, if one did
    limits: str = "no rate limit"
    concurrency: int = 0
    concurrency_auto: str = ""  # --concurrency auto: how the limit moved (empty when fixed)
    # --concurrency auto: (answers seen, new limit, reason) at each change, for plots and the bench
    concurrency_history: list[tuple[int, int, str]] = field(default_factory=list)
    error_statuses: Counter = field(default_factory=Counter)  # non-2xx answers by status

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_AFTER_SIGNAL.get(self.stopped_by, 130)
        return 1 if self.failed or self.earlier_failures else 0

    def __str__(self) -> str:
        earlier = f" (+{self.earlier_failures} error lines from earlier runs)"
        lines = [
            f"requests     {self.requests} in this run ({self.skipped} already done)",
            f"succeeded    {self.succeeded}",
            f"failed       {self.failed}" + (earlier if self.earlier_failures else ""),
            f"retried      {self.retried} retries over {self.requests_retried} requests, "
            f"{self.rate_limited} answers were 429",
            f"tokens       {self.tokens} ({self.prompt_tokens} prompt + {self.completion_tokens} completion)",
        ]
        if self.out_of_quota:
            lines.append(
                f"quota        {self.out_of_quota} requests refused with insufficient_quota "
                "(the account is out of credit: not retried; top it up, then --retry-failed)"
            )
        if self.unknown_model:
            lines.append(
                f"models       {self.unknown_model} lines name a model the server does not "
                "serve: not sent, recorded as errors"
            )
        if self.cost is not None:
            lines.append(f"cost         {self.cost:.4f} (at the given price per 1k tokens)")
        lines += [
            f"wall time    {self.wall_s:.2f} s, {self.requests_per_s:.1f} requests/s "
            f"(concurrency {self.concurrency}{self.concurrency_auto}, {self.limits})",
            f"output       {self.output_path}"
            + ("  [interrupted: run again to finish]" if self.interrupted else ""),
        ]
        return "\n".join(lines)


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


# --- stopping -----------------------------------------------------------------------------


class _Stop:
    """The run's stop flag, set by a signal (or ``stop()``); ``sleep`` returns early once set.

    The first signal sets the flag and wakes every sleeper; a second one calls ``on_force``
    (the runner cancels its workers). Handlers are installed by ``handling_signals``.
    """

    def __init__(self) -> None:
        self.stopping = False
        self.forced = False
        self.signal_number: int | None = None
        self.on_force: Callable[[], None] = lambda: None
        self._event = asyncio.Event()

    @property
    def event(self) -> asyncio.Event:
        """Set once the run stops: what a stream watches to close at once."""
        return self._event

    def stop(self, signal_number: int | None = None) -> None:
        if self.stopping:
            self.forced = True
            self.on_force()
        self.stopping = True
        self.signal_number = self.signal_number or signal_number
        self._event.set()

    async def sleep(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless the run stops first; False if it stopped."""
        if self.stopping:
            return False
        if seconds > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._event.wait(), seconds)
        return not self.stopping

    async def unless_stopped(self, work: Any) -> tuple[bool, Any]:
        """Await ``work`` (a coroutine) unless a stop comes first: ``(True, result)``, or
        ``(False, None)`` with ``work`` cancelled."""
        task = asyncio.ensure_future(work)
        waiter = asyncio.ensure_future(self._event.wait())
        try:
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if task.cancelled():
            return False, None
        return True, task.result()

    @contextlib.contextmanager
    def handling_signals(self, enabled: bool) -> Iterator[None]:
        """SIGINT/SIGTERM call ``stop`` while inside (POSIX; a no-op on Windows)."""
        loop = asyncio.get_running_loop()
        installed: list[int] = []
        if enabled and sys.platform != "win32":
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, self.stop, signum)
                installed.append(signum)
        try:
            yield
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)


# --- one attempt, and what it means -------------------------------------------------------


@dataclass(slots=True)
class _Attempt:
    """What one POST gave: an answer (``status`` set) or a failure before any answer."""

    status: int | None
    headers: Any
    body: bytes
    t_first_byte: float | None
    failure: dict | None = None  # no answer: {"type", "message"}
    final: bool = False  # the failure cannot get better by sending again


@dataclass(slots=True)
class _Verdict:
    """``ok`` (with the parsed response), ``retry`` (after ``wait_s``) or ``failed`` (with the
    error for the output line)."""

    kind: str
    response: Any = None
    wait_s: float = 0.0
    error: dict | None = None


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
        stop: _Stop,
        api_key: str,
        unserved: Callable[[str], str | None],
        gate: ConcurrencyGate | None = None,
        stream_all: bool = False,
        deadlines: StreamDeadlines | None = None,
    ) -> None:
        self.session, self.url, self.source, self.writer = session, url, source, writer
        # adaptive concurrency (the gate) and streaming
        self.gate, self.stream_all = gate, stream_all
        self.deadlines = deadlines or StreamDeadlines()
        self.stream_cuts = 0
        self.pacer, self.policy, self.timeout, self.recorder = pacer, policy, timeout, recorder
        self.summary, self.progress, self.stop = summary, progress, stop
        self.unserved = unserved  # model -> why it cannot be sent, or None
        self._key = api_key.encode()
        self._escaped_key = json.dumps(api_key)[1:-1].encode()
        self.t0 = time.monotonic()  # every request of the batch is queued from the start

    async def worker(self) -> None:
        """Take the next request from the shared input until it is exhausted or the run stops."""
        progress, stop = self.progress, self.stop
        for line_number, request_id, body, problem in self.source:
            kind = "invalid_input"
            if problem is None and (problem := self.unserved(body.get("model"))) is not None:
                kind = "model_not_found"  # checked by the preflight: not sent at all
                self.summary.unknown_model += 1
            if problem is not None:
                error = {"status": None, "type": kind, "message": problem}
                self._write_failed(request_id, line_number, 0, 0.0, error)
            else:
                try:
                    await self._send(line_number, request_id, body)
                except _Stopping:
                    return
            if progress is not None:
                progress.update(1)
            if stop.stopping:
                return

    async def _send(self, line_number: int, request_id: Any, body: dict) -> None:
        """All attempts of one request, until it succeeds, fails for good, or the run stops."""
        payload = json.dumps(body).encode()
        headers = {"Idempotency-Key": idempotency_key(request_id, payload)}
        pacer, recorder = self.pacer, self.recorder
        t_queued = t_first_sent = self.t0
        attempt_number = 0
        streamed = self.stream_all or body.get("stream") is True
        extra: dict = {}  # streaming's fields for the output line
        while True:
            attempt_number += 1
            async with self._slot() as (inflight, epoch):
                tokens_taken = await pacer.admit(body)
                if tokens_taken is None:
                    raise _Stopping
                t_started = time.monotonic()
                if attempt_number == 1:
                    t_first_sent = t_started
                if streamed:
                    attempt = await self._post_stream(body, headers, extra)
                else:
                    attempt = await self._post(payload, headers)
                t_end = time.monotonic()
                if self.gate is not None:
                    self._tell_controller(attempt, t_end - t_started, inflight, epoch, extra)
            if attempt.headers is not None and pacer.learning:
                pacer.learn(attempt.headers)
            verdict = self._judge(attempt, attempt_number)
            if recorder is not None:
                recorder.record(
                    request_id,
                    attempt_number,
                    t_queued,
                    t_started,
                    attempt.t_first_byte,
                    t_end,
                    attempt.status,
                    verdict.kind,
                    verdict.wait_s,
                )
            latency_s = t_end - t_first_sent
            if verdict.kind == "ok":
                response = verdict.response
                usage = response.get("usage") if isinstance(response, dict) else None
                self._write_ok(
                    request_id, line_number, attempt_number, latency_s, attempt.body, usage, extra
                )
                if tokens_taken:
                    pacer.settle(tokens_taken, usage, body.get("max_tokens"))
                return
            if verdict.kind == "failed":
                self._write_failed(
                    request_id, line_number, attempt_number, latency_s, verdict.error
                )
                return
            if not await self.stop.sleep(verdict.wait_s):
                raise _Stopping
            t_queued = time.monotonic()

    # --- the slot of an attempt, the controller's samples, a streamed attempt ---------------

    def _slot(self) -> Any:
        """The gate's slot for one attempt (released before a retry's wait), or no gate."""
        return self.gate.slot() if self.gate is not None else _NO_SLOT

    def _tell_controller(
        self, attempt: _Attempt, attempt_s: float, inflight: int, epoch: int, extra: dict
    ) -> None:
        controller = self.gate.controller
        status, failure = attempt.status, attempt.failure
        if status == 200:
            tokens = extra.pop("_completion_tokens", None)
            if tokens is None:
                tokens = _completion_tokens(attempt.body)
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

    async def _post_stream(self, body: dict, headers: dict, extra: dict) -> _Attempt:
        """One streamed attempt, as an ``_Attempt``; ``extra`` gets the line's stream fields."""
        try:
            result = await stream_attempt(
                self.session, self.url, body, headers, self.deadlines, stop=self.stop.event
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
        return _Attempt(
            result.status, result.headers, result.body, result.t_first_byte, result.failure
        )

    async def _post(self, payload: bytes, headers: dict) -> _Attempt:
        """One attempt; a timeout or a dropped connection gives an ``_Attempt`` without status."""
        try:
            async with self.session.post(
                self.url, data=payload, headers=headers, timeout=self.timeout, allow_redirects=False
            ) as response:
                t_first_byte = time.monotonic()
                return _Attempt(
                    response.status, response.headers, await response.read(), t_first_byte
                )
        except asyncio.TimeoutError:
            failure = {"type": "timeout", "message": f"no answer within {self.timeout.total:g} s"}
            return _Attempt(None, None, b"", None, failure)
        except RETRYABLE_EXCEPTIONS as error:
            failure = {"type": "connection_error", "message": f"{type(error).__name__}: {error}"}
            return _Attempt(None, None, b"", None, failure)
        except aiohttp.ClientError as error:  # not worth retrying (an invalid URL, ...)
            failure = {"type": "client_error", "message": f"{type(error).__name__}: {error}"}
            return _Attempt(None, None, b"", None, failure, final=True)

    def _judge(self, attempt: _Attempt, attempt_number: int) -> _Verdict:
        """What one attempt's result means (see ``_Verdict``)."""
        status, failure = attempt.status, attempt.failure
        if status is not None and 200 <= status < 300:
            try:
                return _Verdict("ok", response=json.loads(attempt.body))
            except ValueError:  # a truncated or garbled answer: worth another attempt
                failure = {"type": "invalid_response", "message": "the response is not valid JSON"}
        summary, policy = self.summary, self.policy
        if status is not None:
            summary.error_statuses[status] += 1
            if status == 429:
                summary.rate_limited += 1
            if failure is None:
                failure, final = _error_fields(attempt.body, status)
                if final:
                    summary.out_of_quota += failure.get("code") == "insufficient_quota"
                    return _Verdict("failed", error={"status": status, **failure})
        elif attempt.final:
            return _Verdict("failed", error={"status": None, **failure})
        retry_after_s = (
            parse_retry_after_s(attempt.headers) if attempt.headers is not None else None
        )
        if policy.retry_after_too_long(retry_after_s):
            message = (
                f"the server asked to retry after {retry_after_s:.0f} s, over the "
                f"{policy.max_retry_after_s:.0f} s cap (--max-retry-after)"
            )
            return _Verdict(
                "failed",
                error={"status": status, "type": "retry_after_too_long", "message": message},
            )
        if attempt_number > policy.max_retries:
            message = f"gave up after {attempt_number} attempts: {failure.get('message')}"
            return _Verdict("failed", error={"status": status, **failure, "message": message})
        wait_s = policy.delay_s(attempt_number, retry_after_s)
        if status == 429:  # the account is over its limit: every worker pauses, not just this one
            self.pacer.cool_down(wait_s)
        summary.retried += 1
        if attempt_number == 1:
            summary.requests_retried += 1
        if self.progress is not None:
            self._show_counts()
        return _Verdict("retry", wait_s=wait_s)

    def _mask(self, data: bytes) -> bytes:
        """``data`` with the key (raw or JSON-escaped) replaced by ``***``."""
        if self._key and self._key in data:
            data = data.replace(self._key, b"***")
        if self._escaped_key and self._escaped_key in data:
            data = data.replace(self._escaped_key, b"***")
        return data

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
                self._mask(raw),
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
        self.writer.write(self._mask(json.dumps(record).encode()) + b"\n")
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


def _error_fields(raw: bytes, status: int) -> tuple[dict, bool]:
    """``message``/``type``/``code`` of an error answer (a one-line summary of a non-API body),
    and whether it is final: a status never retried, or a 429 saying the account is out of
    credit."""
    try:
        error = json.loads(raw).get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict) and error:
        fields = {key: error[key] for key in ("message", "type", "code") if key in error}
    else:
        fields = {"message": summarise_body(raw)}
    final = not is_retryable_status(status) or (status == 429 and is_final_429(error))
    return fields, final


# --- the run ------------------------------------------------------------------------------


@dataclass
class _Settings:
    """The checked configuration of a run."""

    base_url: str
    api_key: str
    policy: RetryPolicy


def _check_settings(
    base_url: str | None,
    api_key: str | None,
    *,
    concurrency: int,
    max_retries: int,
    retry_policy: RetryPolicy | None,
    timeout_s: float,
    max_requests_per_minute: float | None,
    max_tokens_per_minute: float | None,
    price_per_1k_tokens: float | None,
) -> _Settings:
    """Every number, the key and the URL, or ``BatchConfigError``."""
    if not isinstance(concurrency, int) or concurrency < 1:
        raise BatchConfigError(f"concurrency must be an integer >= 1, got {concurrency!r}")
    check_number("the timeout (seconds)", timeout_s)
    check_number("max_requests_per_minute", max_requests_per_minute)
    check_number("max_tokens_per_minute", max_tokens_per_minute)
    check_number("the price per 1k tokens", price_per_1k_tokens, strict=False)
    try:
        policy = retry_policy or RetryPolicy(max_retries=max_retries)
    except ValueError as error:
        raise BatchConfigError(str(error)) from None
    if base_url is None or api_key is None:
        try:
            settings = api_settings(require_key=api_key is None)
        except MissingApiKey as error:
            raise BatchConfigError(str(error)) from None
        base_url = base_url or settings.base_url
        api_key = api_key or settings.api_key
    if not api_key:
        raise BatchConfigError(str(MissingApiKey()))
    check_api_key(api_key)
    check_base_url(base_url)
    return _Settings(base_url.rstrip("/"), api_key, policy)


def _check_input(requests: Any) -> Any:
    """A readable input file, or an iterable of dicts made re-iterable (the survey reads it
    once before the run does)."""
    if isinstance(requests, (str, os.PathLike)):
        if not os.path.isfile(requests):
            raise BatchConfigError(f"input file not found: {os.fspath(requests)}")
        if not os.access(requests, os.R_OK):
            raise BatchConfigError(f"cannot read the input file {os.fspath(requests)}")
        return requests
    return list(requests) if iter(requests) is requests else requests


def _unserved_rule(
    plan: InputSurvey, served: list[str], base_url: str
) -> Callable[[Any], str | None]:
    """model -> why its lines are not sent (``None`` if served). One rule wherever a line is:
    its model is not served, so its line is an error line. Refused up front only when no line
    to send names a served model (a typo in ``--model``): nothing could succeed."""
    unknown = [model for model in plan.lines_by_model if model not in served]
    if not unknown:
        return lambda model: None
    available = ", ".join(served) or "none"
    if len(unknown) == len(plan.lines_by_model):
        raise BatchConfigError(
            f"no line names a model served by {base_url}: {plan.lines_naming(unknown)} "
            f"are not served (available: {available})"
        )
    why = {m: f"model {m!r} is not served by {base_url} (available: {available})" for m in unknown}
    return why.get


def _prepare_output(output_path: str, overwrite: bool) -> None:
    """Once the preflight passed: empty the output for ``overwrite`` (atomically), or merge a
    leftover side file and drop a torn last line."""
    if overwrite:
        empty_output(output_path)
    else:
        scan_output(output_path, repair=True)


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
    overwrite: bool = False,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    stream: bool = False,
    stream_deadlines: StreamDeadlines | None = None,
) -> BatchSummary:
    """Send every request of ``requests`` (a JSONL path, or an iterable of request dicts) and
    append one line per request to ``output_path``; return a ``BatchSummary``.

    Await it from a notebook (``summary = await run_batch(...)``); a script wraps it in
    ``asyncio.run``. ``base_url``/``api_key`` default to ``PARADIGM_BASE_URL`` /
    ``PARADIGM_API_KEY``. Requests without ``model`` use ``model``; without ``id``, their line
    number (1-based); ids must be unique. ``max_retries`` is ignored when a ``retry_policy`` is
    given. ``retry_failed`` redoes the error lines and sends the lines never sent.
    ``timeline`` is a JSONL path or a ``TimelineRecorder`` to record every attempt in.
    ``handle_signals`` (the CLI) makes SIGINT/SIGTERM stop the run gracefully. ``overwrite``
    empties an existing output that holds something else. Raises ``BatchConfigError`` before
    sending or writing anything if the configuration cannot work.

    ``concurrency="auto"`` adapts the requests in flight to the server (``batch.concurrency``),
    up to ``max_concurrency``. ``stream=True`` streams every request (a line with
    ``"stream": true`` is streamed anyway), under ``stream_deadlines`` (``batch.streaming``).
    """
    controller = _controller(concurrency, max_concurrency)
    concurrency = controller.limit if controller is not None else concurrency
    settings = _check_settings(
        base_url,
        api_key,
        concurrency=concurrency,
        max_retries=max_retries,
        retry_policy=retry_policy,
        timeout_s=timeout_s,
        max_requests_per_minute=max_requests_per_minute,
        max_tokens_per_minute=max_tokens_per_minute,
        price_per_1k_tokens=price_per_1k_tokens,
    )
    requests = _check_input(requests)
    output_path = os.fspath(output_path)
    input_path = os.fspath(requests) if isinstance(requests, (str, os.PathLike)) else None
    timeline_path = os.fspath(timeline) if isinstance(timeline, (str, os.PathLike)) else None
    check_paths(input_path, output_path, timeline_path, overwrite=overwrite)
    try:  # read-only until the preflight has passed; a side file counts as merged
        state = scan_output(output_path, repair=False) if not overwrite else None
    except OutputFileError as error:
        raise BatchConfigError(str(error)) from None
    done = state.done_ids if state is not None else set()
    skip_ids = done - state.failed_ids if retry_failed and state is not None else done

    def every_line() -> Iterator[tuple]:
        return read_requests(requests, default_model=model)

    plan = survey(
        every_line(), every_line, skip_ids=skip_ids, max_tokens_per_minute=max_tokens_per_minute
    )
    stop = _Stop()
    pacer = Pacer(
        max_requests_per_minute=max_requests_per_minute,
        max_tokens_per_minute=max_tokens_per_minute,
        learn_from_headers=learn_limits_from_headers,
        sleep=stop.sleep,
    )
    summary = BatchSummary(output_path=output_path, concurrency=concurrency)
    base_url, api_key, policy = settings.base_url, settings.api_key, settings.policy
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    if attendee := attendee_name():  # PARADIGM_ATTENDEE: this run's name in the room view
        headers[ATTENDEE_HEADER] = attendee
    proxy, proxy_auth = proxy_from_env(base_url)
    workers = controller.ceiling if controller is not None else concurrency
    connector = aiohttp.TCPConnector(limit=workers)
    with stop.handling_signals(handle_signals):
        async with aiohttp.ClientSession(
            headers=headers, connector=connector, proxy=proxy, proxy_auth=proxy_auth
        ) as session:
            unserved: Callable[[Any], str | None] = lambda model: None  # noqa: E731
            if check_first:
                if pacer.requests_bucket is not None:
                    pacer.requests_bucket.charge(1)  # servers may count GET /models too
                answered, served = await stop.unless_stopped(
                    preflight(
                        session,
                        base_url,
                        (),
                        pacer,
                        policy=policy,
                        sleep=stop.sleep,
                        api_key=api_key,
                    )
                )
                if not answered or served is None:  # stopped: nothing sent, nothing written
                    summary.interrupted, summary.stopped_by = True, stop.signal_number
                    return summary
                unserved = _unserved_rule(plan, served, base_url)

            # the configuration works: from here on, the output may be written
            _prepare_output(output_path, overwrite)
            summary.skipped = plan.already_done
            summary.earlier_failures = 0 if retry_failed or state is None else len(state.failed_ids)
            await _run(
                session,
                requests=read_requests(requests, default_model=model, skip_ids=skip_ids),
                write_to=side_path(output_path) if retry_failed else output_path,
                plan=plan,
                base_url=base_url,
                api_key=api_key,
                pacer=pacer,
                policy=policy,
                timeout_s=timeout_s,
                timeline=timeline,
                summary=summary,
                progress=progress,
                stop=stop,
                unserved=unserved,
                workers=workers,
                controller=controller,
                stream=stream,
                stream_deadlines=stream_deadlines,
            )
    if retry_failed:
        merge_retried(output_path)
    if ordered:
        sort_output(output_path)
    summary.tokens = summary.prompt_tokens + summary.completion_tokens
    summary.limits = pacer.describe()
    if price_per_1k_tokens is not None:
        summary.cost = summary.tokens / 1000.0 * price_per_1k_tokens
    return summary


async def _run(
    session: aiohttp.ClientSession,
    *,
    requests: Iterator[tuple],
    write_to: str,
    plan: InputSurvey,
    base_url: str,
    api_key: str,
    pacer: Pacer,
    policy: RetryPolicy,
    timeout_s: float,
    timeline: Any,
    summary: BatchSummary,
    progress: bool,
    stop: _Stop,
    unserved: Callable[[Any], str | None],
    workers: int,
    controller: AdaptiveConcurrency | None,
    stream: bool,
    stream_deadlines: StreamDeadlines | None,
) -> None:
    """The workers' part: open the writer, timeline and progress bar, run, close them all."""
    recorder = (
        timeline
        if isinstance(timeline, TimelineRecorder) or timeline is None
        else TimelineRecorder(timeline)
    )
    bar = None
    if progress:
        from tqdm.auto import tqdm  # lazily: a notebook widget or a terminal bar

        bar = tqdm(
            total=plan.already_done + plan.to_send,
            initial=plan.already_done,
            unit="req",
            mininterval=0.5,
            smoothing=0.05,
            file=sys.stderr,
        )
    writer = OutputWriter(write_to)
    run = _Run(
        session=session,
        url=f"{base_url}/chat/completions",
        source=requests,
        writer=writer,
        pacer=pacer,
        policy=policy,
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        recorder=recorder,
        summary=summary,
        progress=bar,
        stop=stop,
        api_key=api_key,
        unserved=unserved,
        gate=ConcurrencyGate(controller) if controller is not None else None,
        stream_all=stream,
        deadlines=stream_deadlines,
    )
    t_start = time.monotonic()
    try:
        await _run_workers(run, workers)
    finally:
        summary.wall_s = time.monotonic() - t_start
        if controller is not None:
            summary.concurrency = controller.limit
            summary.concurrency_auto = _describe_auto(controller, run.gate)
            summary.concurrency_history = [
                (step.samples_seen, step.limit, step.reason) for step in controller.history
            ]
        summary.interrupted, summary.stopped_by = stop.stopping, stop.signal_number
        writer.close()
        if recorder is not None and recorder is not timeline:
            recorder.close()
        if bar is not None:
            bar.close()


def _controller(concurrency: int | str, max_concurrency: int) -> AdaptiveConcurrency | None:
    """The controller for ``concurrency="auto"``, None for a fixed number; bad values refused."""
    if (
        isinstance(max_concurrency, bool)
        or not isinstance(max_concurrency, int)
        or max_concurrency < 1
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


async def _run_workers(run: _Run, concurrency: int) -> None:
    """Run ``concurrency`` workers to the end; on a second signal (or on cancellation) cancel
    the workers, whose unfinished requests then get no line."""
    workers = [asyncio.create_task(run.worker()) for _ in range(concurrency)]

    def cancel_workers() -> None:
        for task in workers:
            task.cancel()

    run.stop.on_force = cancel_workers
    try:
        await asyncio.gather(*workers)
    except asyncio.CancelledError:
        run.stop.stopping = True
        if not run.stop.forced:  # cancelled from outside (a notebook's interrupt): propagate
            raise
    finally:
        cancel_workers()
        await asyncio.gather(*workers, return_exceptions=True)


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
    try:
        state = scan_output(output_path, repair=False) if output_path is not None else None
    except OutputFileError as error:
        raise BatchConfigError(str(error)) from None
    done = state.done_ids if state is not None else set()
    failed = state.failed_ids if state is not None else set()
    skip_ids = done - failed if retry_failed else done
    count = invalid = tokens = 0
    for _, _, body, problem in read_requests(requests, default_model=model, skip_ids=skip_ids):
        if problem is not None:
            invalid += 1
            continue
        count += 1
        tokens += estimate_tokens(body)
    cost = tokens / 1000.0 * price_per_1k_tokens if price_per_1k_tokens is not None else None
    return BatchEstimate(count, len(skip_ids), invalid, tokens, cost)
