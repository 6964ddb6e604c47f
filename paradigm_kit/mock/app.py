"""The mock's HTTP side: ``create_app(config)`` and its handlers.

Routes (everything under ``/api/v2`` needs ``Authorization: Bearer <key>``)::

    POST /api/v2/chat/completions   chat.completion, or SSE chat.completion.chunk with stream=true
    GET  /api/v2/models             the OpenAI list of models (and /models/{id})
    POST /api/v2/embeddings         a small deterministic vector per input (cheap, for completeness)
    GET  /_mock/stats[?run=ID]      counts, concurrency, attempts per identity, per-key counts
    GET  /_mock/log[?run=ID]        per-attempt records (bounded ring buffer per run)
    GET  /_mock/report[?run=ID]     the report card: what the client did wrong
    POST /_mock/reset               forget everything (counts, logs, attempts, rate-limit buckets);
                                    off loopback it needs the facilitator token (``auth.py``)
    GET  /_mock/room                the room view: a live page of every attendee (``room.py``)
    GET  /_mock/room/feed?since=N   its feed: compact JSON frames, made once per tick
    POST /_mock/reset               forget everything (counts, logs, attempts, rate-limit buckets)
    POST /_mock/config              change capacity, max_running, max_queue while serving
                                    (off loopback: the facilitator token, as for reset)

One chat attempt goes through these steps, in this order, and stops at the first that answers:

1. count the attempt in (``stats.Recorder.begin``): its run, identity and attempt number;
2. key: missing or (with ``--api-key``) wrong -> 401;
3. body: not JSON, not an object, bad or missing parameter -> 400; unknown model -> 404;
4. rate limits (``RateLimits``, the shared ``TokenBucket``): over a per-key or global bucket ->
   429 with ``Retry-After`` at once, charging nothing;
5. faults (``faults.draw``): an injected error (with ``Retry-After`` on 429/503), a dropped
   connection, or a slow answer;
6. the answer, after ``latency + per_token_latency * completion_tokens + jitter``; a stream
   waits ``latency + jitter`` before its first chunk and ``per_token_latency`` between chunks;
   with the capacity model on (``--capacity``, ``--max-running``: ``capacity.py``) that work
   is queued and shared with the other requests in service instead, or shed with 503 when
   ``--max-queue`` are already waiting (faults above bypass the model);
7. count the attempt out (``Recorder.end``) with its status, whatever happened (a client that
   hangs up is cancelled here, since the server runs with ``handler_cancellation``: 499).

Errors are OpenAI-shaped (``{"error": {"message", "type", "param", "code"}}``) and a client's
mistake is never a 500: only ``--error-statuses`` injects 5xx. Validation raises ``ClientError``,
the one exception the handler turns into an answer; anything else is a bug and surfaces as one.

Rate-limit headers, on every chat answer past the key check when a limit is set (and never
with ``--no-rate-limit-headers``, as Paradigm documents none)::

    x-ratelimit-limit-requests: 600            the binding requests-per-minute limit
    x-ratelimit-remaining-requests: 9          whole requests left in its bucket now
    x-ratelimit-reset-requests: 0.100s         seconds until the bucket is full: always a
                                               decimal number of seconds with an "s" suffix
    (and the same -tokens trio with --tpm / --global-tpm)

and on a rate-limited 429, ``Retry-After`` (whole seconds, rounded up, at least 1) plus
``retry-after-ms`` (the exact wait). Injected 429/503 carry ``--retry-after`` the same way:
``Retry-After`` rounded up to whole seconds (HTTP allows no fraction), ``retry-after-ms`` exact. "Binding" means the bucket with the fewest units left when
both a per-key and a global limit are set. A request costs 1 in a requests bucket and
``prompt tokens + max_tokens`` (``DEFAULT_COMPLETION_TOKENS`` when absent) in a tokens bucket,
the estimate real APIs charge up front, counted by ``paradigm_kit.tokens`` (the rule the runner
budgets with); it is not corrected by the actual usage.

Speed (it must never be the bottleneck of a measurement): no middleware and no access log, the
fault draw skips hashing when no fault or jitter is configured, no ``sleep`` when the latency is
zero, one ``json.dumps`` per answer, and the models list is serialised once.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import itertools
import json
import math
import struct
import time
import weakref
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from ..ratelimit import TokenBucket
from ..tokens import completion_budget, estimate_prompt_tokens, estimate_text_tokens
from .auth import FACILITATOR_TOKEN, new_facilitator_token, require_facilitator
from .capacity import Job, Scheduler
from .config import MockConfig
from .faults import DROP, ERROR, SLOW, draw, identity_of_body
from .replies import (
    chunk_payload,
    completion_body,
    error_payload,
    last_user_text,
    make_reply,
    models_payload,
    usage_payload,
)
from .room import ROOM, Room, attendee_of, capacity_snapshot, room_feed, room_page
from .stats import STATUS_CLIENT_CLOSED, STATUS_DROPPED, Recorder, key_hash

__all__ = ["MOCK", "ClientError", "MockState", "RateLimits", "create_app"]

API = "/api/v2"
MAX_RUN_ID_CHARS = 100
EMBEDDING_DIMENSIONS = 16
#: Bodies up to this size are read (a real long prompt is a few MB); beyond: a JSON 413.
MAX_BODY_BYTES = 8 * 1024 * 1024
#: Inputs per embeddings request, as OpenAI caps them: more is a 400, so that one request
#: cannot hold the event loop (and every other client) for seconds.
MAX_EMBEDDING_INPUTS = 2048
NUMBER_RANGES = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
}
VALID_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
RETRY_AFTER_STATUSES = frozenset({429, 503})
INJECTED_ERRORS = {  # status -> (type, code, message)
    429: (
        "rate_limit_error",
        "rate_limit_exceeded",
        "Too many requests (injected fault): retry later.",
    ),
    500: ("server_error", "internal_error", "The server had an error (injected fault): retry."),
    502: ("server_error", "bad_gateway", "Bad gateway (injected fault): retry."),
    503: (
        "server_error",
        "service_maintenance",
        "The service is temporarily unavailable (injected fault): retry later.",
    ),
    504: ("server_error", "gateway_timeout", "Gateway timeout (injected fault): retry."),
}
JSON_SEPARATORS = (",", ":")


class ClientError(Exception):
    """A request the mock refuses: becomes an OpenAI-shaped error answer with ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        close_connection: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.code = code
        self.param = param
        # True when the connection cannot carry another request (a body left half-read): the
        # answer then says `Connection: close`, so a client's pool does not reuse a closing socket
        self.close_connection = close_connection


# --- rate limits ----------------------------------------------------------------------------


class RateLimits:
    """Per-key and global token buckets for requests and tokens (any of the four may be off)."""

    def __init__(self, config: MockConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self.enabled = config.has_rate_limits
        self.reset()

    def reset(self) -> None:
        config = self._config
        self._global = (self._bucket(config.global_rpm), self._bucket(config.global_tpm))
        self._per_key: dict[str, tuple[TokenBucket | None, TokenBucket | None]] = {}

    def _buckets(self, key: str) -> tuple[list[TokenBucket], list[TokenBucket]]:
        per_key = self._per_key.get(key)
        if per_key is None:
            per_key = self._per_key[key] = (
                self._bucket(self._config.rpm),
                self._bucket(self._config.tpm),
            )
        requests = [b for b in (per_key[0], self._global[0]) if b is not None]
        tokens = [b for b in (per_key[1], self._global[1]) if b is not None]
        return requests, tokens

    def admit(self, key: str, token_cost: float) -> tuple[float, str, dict[str, str]]:
        """Charge the request if every bucket has room: ``(0, "", headers)``.

        Else charge nothing and return ``(seconds to wait, which limit, headers)``.
        """
        requests, tokens = self._buckets(key)
        wait_s, which = 0.0, ""
        for kind, buckets, cost in (("requests", requests, 1.0), ("tokens", tokens, token_cost)):
            for bucket in buckets:
                bucket_wait_s = bucket.wait_time(cost)
                if bucket_wait_s > wait_s:
                    wait_s, which = bucket_wait_s, f"{kind} per minute ({bucket.per_minute:g})"
        if wait_s == 0.0:
            for bucket in requests:
                bucket.try_take(1.0)
            for bucket in tokens:
                bucket.try_take(token_cost)
        return wait_s, which, _limit_headers(requests, tokens)

    def headers(self, key: str) -> dict[str, str]:
        """The ``x-ratelimit-*`` headers for ``key`` without charging anything."""
        return _limit_headers(*self._buckets(key))

    def _bucket(self, per_minute: float | None) -> TokenBucket | None:
        return TokenBucket(per_minute, clock=self._clock) if per_minute is not None else None


def _limit_headers(requests: list[TokenBucket], tokens: list[TokenBucket]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for kind, buckets in (("requests", requests), ("tokens", tokens)):
        if buckets:
            binding = min(buckets, key=lambda b: b.level)
            headers[f"x-ratelimit-limit-{kind}"] = f"{binding.per_minute:g}"
            headers[f"x-ratelimit-remaining-{kind}"] = str(binding.remaining())
            headers[f"x-ratelimit-reset-{kind}"] = f"{binding.reset_s():.3f}s"
    return headers


# --- app state ------------------------------------------------------------------------------


@dataclass
class MockState:
    """Everything one app instance owns; reached from handlers via ``request.app[MOCK]``."""

    config: MockConfig
    recorder: Recorder
    limits: RateLimits
    models_body: bytes
    completion_ids: itertools.count
    key_hashes: dict[str, str]
    answered_by_key: collections.Counter  # successful chat answers per key hash (the quota)
    scheduler: Scheduler
    # transports that already paid --connect-latency (weak: a closed connection drops out)
    connections: weakref.WeakSet

    @property
    def capacity_on(self) -> bool:
        """The capacity model applies (now: ``POST /_mock/config`` may switch it)."""
        return self.scheduler.capacity is not None or self.scheduler.max_running is not None

    def hash_key(self, api_key: str) -> str:
        known = self.key_hashes.get(api_key)
        if known is None:
            if len(self.key_hashes) > 1024:  # a bounded cache, whatever keys clients invent
                self.key_hashes.clear()
            known = self.key_hashes[api_key] = key_hash(api_key)
        return known

    def public_config(self) -> dict[str, Any]:
        """The settings, for ``/_mock/stats``; the accepted key only as whether one is set."""
        return self.config.public()


MOCK = web.AppKey("mock", MockState)


def create_app(
    config: MockConfig | None = None, *, clock: Callable[[], float] = time.monotonic
) -> web.Application:
    """A ready-to-serve mock application; building it starts nothing.

    ``clock`` drives the rate-limit buckets and the recorder's timestamps (and so the report
    card): tests pass a fake one to count admissions and judge retry gaps without timing anything.
    """
    config = config or MockConfig()
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[MOCK] = MockState(
        config=config,
        recorder=Recorder.for_config(config, clock=clock),
        limits=RateLimits(config, clock),
        models_body=_dumps(models_payload(config.models, int(time.time()))),
        completion_ids=itertools.count(1),
        key_hashes={},
        answered_by_key=collections.Counter(),
        scheduler=Scheduler(
            config.capacity,
            config.max_running,
            config.max_queue,
            clock=clock,
            call_later=lambda delay_s, callback: asyncio.get_running_loop().call_later(
                delay_s, callback
            ),
        ),
        connections=weakref.WeakSet(),
    )
    app[ROOM] = Room(app[MOCK].recorder, lambda: capacity_snapshot(app))
    app[FACILITATOR_TOKEN] = config.facilitator_token or new_facilitator_token(config.host)
    _add_routes(app)
    return app


def _add_routes(app: web.Application) -> None:
    routes = (
        (f"{API}/chat/completions", "POST", chat_completions),
        (f"{API}/models", "GET", list_models),
        (f"{API}/models/{{model}}", "GET", get_model),
        (f"{API}/embeddings", "POST", embeddings),
        ("/_mock/stats", "GET", mock_stats),
        ("/_mock/log", "GET", mock_log),
        ("/_mock/report", "GET", mock_report),
        ("/_mock/reset", "POST", mock_reset),
        ("/_mock/room", "GET", room_page),
        ("/_mock/room/feed", "GET", room_feed),
        ("/_mock/config", "POST", mock_config),
    )
    for path, method, handler in routes:
        resource = app.router.add_resource(path)
        resource.add_route(method, handler)
        resource.add_route("*", _method_not_allowed(method))
    app.router.add_route("*", "/{tail:.*}", not_found)


# --- helpers --------------------------------------------------------------------------------


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=JSON_SEPARATORS).encode()


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=_dumps(payload), status=status, headers=headers, content_type="application/json"
    )


def error_response(error: ClientError, headers: dict[str, str] | None = None) -> web.Response:
    payload = error_payload(error.message, error.error_type, error.code, error.param)
    response = json_response(payload, error.status, headers)
    if error.close_connection:
        response.force_close()
    return response


def _method_not_allowed(allowed: str):
    async def method_not_allowed(request: web.Request) -> web.Response:
        error = ClientError(
            405,
            f"Method {request.method} is not allowed on {request.path}: use {allowed}.",
            code="method_not_allowed",
        )
        return error_response(error, {"Allow": allowed})

    return method_not_allowed


async def not_found(request: web.Request) -> web.Response:
    return error_response(
        ClientError(
            404, f"Unknown path {request.path}: the API lives under {API}.", code="not_found"
        )
    )


def _api_key(request: web.Request) -> str:
    authorization = request.headers.get("Authorization", "")
    scheme, _, key = authorization.partition(" ")
    return key.strip() if scheme.lower() == "bearer" else ""


def check_key(config: MockConfig, api_key: str) -> None:
    """401 unless the key is present and (with ``--api-key``) the accepted one."""
    if not api_key:
        raise ClientError(
            401,
            "You didn't provide an API key: send it as 'Authorization: Bearer <key>' "
            "(any non-empty key works with the mock unless it was started with --api-key).",
            error_type="authentication_error",
            code="missing_api_key",
        )
    if config.api_key is not None and not hmac.compare_digest(
        api_key.encode(), config.api_key.encode()
    ):
        raise ClientError(
            401,
            "Incorrect API key provided.",
            error_type="authentication_error",
            code="invalid_api_key",
        )


# --- request validation ---------------------------------------------------------------------


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat-completions request: only what the mock uses."""

    model: str
    messages: list[dict[str, Any]]
    max_tokens: int | None
    stream: bool
    include_usage: bool


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_range(payload: dict, name: str, low: float, high: float) -> None:
    value = payload.get(name)
    if value is not None and not (_is_number(value) and low <= value <= high):
        raise ClientError(
            400,
            f"Invalid '{name}': {value!r}; expected a number from {low:g} to {high:g}.",
            code="invalid_value",
            param=name,
        )


def _positive_int(payload: dict, name: str) -> int | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ClientError(
            400,
            f"Invalid '{name}': {value!r}; expected an integer >= 1.",
            code="invalid_value",
            param=name,
        )
    return value


def _check_messages(messages: Any) -> list[dict[str, Any]]:
    if messages is None:
        raise ClientError(
            400,
            "Missing required parameter: 'messages'.",
            code="missing_required_parameter",
            param="messages",
        )
    if not isinstance(messages, list) or not messages:
        raise ClientError(
            400,
            "Invalid 'messages': expected a non-empty array of message objects.",
            code="invalid_type",
            param="messages",
        )
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ClientError(
                400,
                f"Invalid 'messages[{index}]': expected an object.",
                code="invalid_type",
                param=f"messages[{index}]",
            )
        role = message.get("role")
        if not isinstance(role, str) or role not in VALID_ROLES:
            raise ClientError(
                400,
                f"Invalid 'messages[{index}].role': {role!r}; expected one of "
                f"{', '.join(sorted(VALID_ROLES))}.",
                code="invalid_value",
                param=f"messages[{index}].role",
            )
        content = message.get("content")
        if not (isinstance(content, (str, list)) or (content is None and role == "assistant")):
            raise ClientError(
                400,
                f"Invalid 'messages[{index}].content': expected a string or an "
                "array of content parts.",
                code="invalid_type",
                param=f"messages[{index}].content",
            )
        if isinstance(content, list):
            _check_content_parts(content, index)
    return messages


def _check_content_parts(parts: list, index: int) -> None:
    """Each part an object with a string ``type``; a ``text`` part's ``text`` a string."""
    for number, part in enumerate(parts):
        where = f"messages[{index}].content[{number}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise ClientError(
                400,
                f"Invalid '{where}': expected an object with a string 'type'.",
                code="invalid_type",
                param=where,
            )
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise ClientError(
                400,
                f"Invalid '{where}.text': expected a string.",
                code="invalid_type",
                param=f"{where}.text",
            )


def _json_object(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or ``ClientError`` 400 (bad JSON, not an object)."""
    try:
        payload = json.loads(body.decode("utf-8"))
    # ValueError: also an integer of over 4,300 digits; RecursionError: nesting too deep
    except (ValueError, RecursionError) as error:
        raise ClientError(
            400, f"The body is not valid JSON: {error}.", code="invalid_json"
        ) from None
    if not isinstance(payload, dict):
        raise ClientError(400, "The body must be a JSON object.", code="invalid_type")
    return payload


async def read_body(request: web.Request) -> bytes:
    """The request body, or ``ClientError``: 413 over ``MAX_BODY_BYTES``, 400 when it cannot be
    decoded (a ``Content-Encoding`` the body does not match): a client's mistake, never a 5xx."""
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ClientError(
            413,
            f"The body is larger than {MAX_BODY_BYTES // (1024 * 1024)} MiB.",
            code="request_too_large",
            close_connection=True,
        ) from None
    except (
        RequestPayloadError,
        aiohttp.ClientPayloadError,
        HttpProcessingError,
        ValueError,
        zlib.error,
    ) as error:
        raise ClientError(
            400,
            f"The body could not be read ({type(error).__name__}): check Content-Encoding.",
            code="invalid_body",
            close_connection=True,
        ) from None


def _model_field(payload: dict[str, Any]) -> str:
    """The body's ``model``, or ``ClientError`` 400 when it is missing or not a string."""
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise ClientError(
            400,
            "Missing required parameter: 'model' (a model id string).",
            code="missing_required_parameter",
            param="model",
        )
    return model


def parse_chat_request(body: bytes, models: tuple[str, ...]) -> ChatRequest:
    """Validate a chat-completions body: ``ClientError`` 400 or 404, else a ``ChatRequest``."""
    payload = _json_object(body)
    model = _model_field(payload)
    messages = _check_messages(payload.get("messages"))
    for name in NUMBER_RANGES.keys() & payload.keys():  # only the parameters the client sent
        _check_range(payload, name, *NUMBER_RANGES[name])
    max_tokens = _positive_int(payload, "max_tokens")
    max_completion_tokens = _positive_int(payload, "max_completion_tokens")
    n = _positive_int(payload, "n")
    if n is not None and n != 1:
        raise ClientError(
            400,
            f"Invalid 'n': {n}; the mock answers one choice (n=1).",
            code="invalid_value",
            param="n",
        )
    stream = payload.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise ClientError(
            400,
            f"Invalid 'stream': {stream!r}; expected true or false.",
            code="invalid_type",
            param="stream",
        )
    stream_options = payload.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise ClientError(
            400,
            "Invalid 'stream_options': expected an object.",
            code="invalid_type",
            param="stream_options",
        )
    if model not in models:
        raise ClientError(
            404,
            f"The model '{model}' does not exist; available: {', '.join(models)}.",
            code="model_not_found",
            param="model",
        )
    return ChatRequest(
        model=model,
        messages=messages,
        max_tokens=max_completion_tokens if max_completion_tokens is not None else max_tokens,
        stream=bool(stream),
        include_usage=bool(stream_options.get("include_usage")),
    )


# --- POST /chat/completions -----------------------------------------------------------------


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """One attempt: counted in, answered (or refused, or dropped), counted out."""
    mock = request.app[MOCK]
    recorder = mock.recorder
    t_start = recorder.now()
    api_key = _api_key(request)
    key = mock.hash_key(api_key)
    run = request.headers.get("X-Run-Id", "")[:MAX_RUN_ID_CHARS] or key
    try:
        body = await read_body(request)
    except ClientError as error:  # refused before it is an attempt: not counted
        return error_response(error)
    identity = request.headers.get("Idempotency-Key") or identity_of_body(body)
    attendee = attendee_of(request.headers.get("X-Attendee"), api_key)
    stats, attempt = recorder.begin(run, key, identity, t_start, attendee)
    status, retry_after_s = STATUS_CLIENT_CLOSED, None  # if cancelled: the client hung up
    served: list[Job] = []  # the capacity model's record of this attempt, when it applied
    try:
        await _pay_connect_latency(request, mock)
        response, status, retry_after_s = await _answer_chat(
            request, mock, api_key, key, body, identity, attempt, served
        )
        return response
    finally:
        service = _service_fields(served[0], recorder.t0) if served else None
        recorder.end(stats, key, identity, attempt, t_start, status, retry_after_s, service)


async def _pay_connect_latency(request: web.Request, mock: MockState) -> None:
    """``--connect-latency``: the first request on a new connection waits for the handshakes."""
    delay_s = mock.config.connect_latency_s
    transport = request.transport
    if delay_s > 0 and transport is not None and transport not in mock.connections:
        mock.connections.add(transport)
        await asyncio.sleep(delay_s)


def _service_fields(job: Job, t0: float) -> tuple:
    """The log's capacity fields of one attempt, times relative to the recorder's start."""

    def since_t0(t: float | None) -> float | None:
        return None if t is None else t - t0

    return (
        job.queue_wait_s,
        since_t0(job.admitted_s),
        since_t0(job.finished_s),
        since_t0(job.first_mark_s),
        job.running_at_arrival,
        job.queued_at_arrival,
    )


async def _answer_chat(
    request: web.Request,
    mock: MockState,
    api_key: str,
    key: str,
    body: bytes,
    identity: str,
    attempt: int,
    served: list[Job],
) -> tuple[web.StreamResponse, int, float | None]:
    """The answer to one attempt, the status to record, and the ``Retry-After`` it carries.

    ``served`` receives the capacity model's job when the answer went through it.
    """
    config = mock.config
    headers = {"x-mock-attempt": str(attempt)}
    try:
        check_key(config, api_key)
        if mock.limits.enabled and config.rate_limit_headers:
            headers.update(mock.limits.headers(key))
        chat = parse_chat_request(body, config.models)
        _check_quota(mock, key)
    except ClientError as error:
        return error_response(error, headers), error.status, None
    prompt_tokens = estimate_prompt_tokens(chat.messages)
    if mock.limits.enabled:
        token_cost = prompt_tokens + completion_budget(chat.max_tokens)
        wait_s, which, limit_headers = mock.limits.admit(key, token_cost)
        if config.rate_limit_headers:
            headers.update(limit_headers)
        if wait_s > 0:
            return _rate_limited(wait_s, which, headers), 429, wait_s
    fate = draw(config, identity, attempt)
    jitter_s = config.jitter_s * fate.jitter_fraction
    if fate.fault == ERROR:
        await _sleep(config.latency_s + jitter_s)
        response, retry_after_s = _injected_error(fate.error_status, config.retry_after_s, headers)
        return response, fate.error_status, retry_after_s
    if fate.fault == DROP:
        await _sleep(config.latency_s + jitter_s)
        return _drop_connection(request), STATUS_DROPPED, None
    reply = make_reply(last_user_text(chat.messages), chat.max_tokens)
    first_byte_delay_s = config.slow_seconds if fate.fault == SLOW else config.latency_s + jitter_s
    completion_id = f"chatcmpl-mock{next(mock.completion_ids)}"
    if mock.capacity_on and fate.fault != SLOW:  # faults bypass the model, as decided above
        return await _answer_scheduled(
            request, mock, chat, reply, prompt_tokens, completion_id, jitter_s, headers, served
        )
    if chat.stream:
        response = web.StreamResponse(status=200, headers=headers)
        try:
            await _stream(
                request,
                response,
                chat,
                reply,
                prompt_tokens,
                completion_id,
                first_byte_delay_s,
                config.per_token_latency_s,
            )
        except ConnectionResetError:  # the client left mid-stream: nothing more to send
            return response, STATUS_CLIENT_CLOSED, None
        return response, 200, None
    await _sleep(first_byte_delay_s + config.per_token_latency_s * reply.completion_tokens)
    body = completion_body(completion_id, int(time.time()), chat.model, reply, prompt_tokens)
    return web.Response(body=body, headers=headers, content_type="application/json"), 200, None


def _check_quota(mock: MockState, key: str) -> None:
    """429 ``insufficient_quota`` once a key has had ``quota_requests`` chat requests: what
    OpenAI-style APIs answer when the account is out of credit (no wait makes it succeed).
    Counted when admitted, so concurrent requests cannot overdraw it."""
    quota = mock.config.quota_requests
    if quota is None:
        return
    if mock.answered_by_key[key] >= quota:
        raise ClientError(
            429,
            "You exceeded your current quota, please check your plan and billing details "
            "(mock: --quota-requests).",
            error_type="insufficient_quota",
            code="insufficient_quota",
        )
    mock.answered_by_key[key] += 1


# --- answers under the capacity model (capacity.py) --------------------------------------------


def _work_marks(latency_s: float, per_token_latency_s: float, tokens: int, stream: bool) -> list:
    """Seconds of work at which the answer's parts are due: a stream's tokens, or its end.

    A stream's first content chunk is due when the ``latency`` part is done, token i at
    ``latency + i x per_token_latency``, and its end when the whole work is done.
    """
    total_s = latency_s + per_token_latency_s * tokens
    if not stream or per_token_latency_s <= 0 or tokens == 0:
        return [total_s]
    return [latency_s + i * per_token_latency_s for i in range(tokens)] + [total_s]


async def _answer_scheduled(
    request: web.Request,
    mock: MockState,
    chat: ChatRequest,
    reply: Any,
    prompt_tokens: int,
    completion_id: str,
    jitter_s: float,
    headers: dict[str, str],
    served: list[Job],
) -> tuple[web.StreamResponse, int, float | None]:
    """Queue the work, wait for its milestones on the scheduler's clock, answer (or shed)."""
    config = mock.config
    marks = _work_marks(
        config.latency_s + jitter_s,
        config.per_token_latency_s,
        reply.completion_tokens,
        chat.stream,
    )
    loop = asyncio.get_running_loop()
    reached = [loop.create_future() for _ in marks]

    def on_mark(index: int) -> None:
        if not reached[index].done():  # a cancelled waiter (the client left) takes no result
            reached[index].set_result(None)

    job = mock.scheduler.submit(marks, on_mark)
    if job is None:
        return _overloaded(config.retry_after_s, headers), 503, float(config.retry_after_s)
    served.append(job)
    try:
        if not chat.stream:
            await reached[-1]
            body = completion_body(
                completion_id, int(time.time()), chat.model, reply, prompt_tokens
            )
            response = web.Response(body=body, headers=headers, content_type="application/json")
            return response, 200, None
        response = web.StreamResponse(status=200, headers=headers)
        try:
            await _stream_scheduled(
                request, response, chat, reply, prompt_tokens, completion_id, reached
            )
        except ConnectionResetError:
            return response, STATUS_CLIENT_CLOSED, None
        return response, 200, None
    finally:
        mock.scheduler.cancel(job)  # a no-op once done; frees the share of a client that left


def _overloaded(retry_after_s: float, headers: dict[str, str]) -> web.Response:
    """503 from a full queue (``--max-queue``): a server shedding load, OpenAI-shaped."""
    headers["Retry-After"] = str(max(1, math.ceil(retry_after_s)))
    headers["retry-after-ms"] = str(max(1, math.ceil(retry_after_s * 1000)))
    error = ClientError(
        503,
        "The server is overloaded: its queue is full. Retry later, or send fewer requests at once.",
        error_type="server_error",
        code="server_overloaded",
    )
    return error_response(error, headers)


async def _stream_scheduled(
    request: web.Request,
    response: web.StreamResponse,
    chat: ChatRequest,
    reply: Any,
    prompt_tokens: int,
    completion_id: str,
    reached: list[asyncio.Future],
) -> None:
    """SSE paced by the scheduler: each token's chunk once its milestone is reached."""
    created = int(time.time())
    response.content_type = "text/event-stream"
    response.headers["Cache-Control"] = "no-cache"

    def content(piece: str) -> bytes:
        return _event(chunk_payload(completion_id, created, chat.model, {"content": piece}))

    await reached[0]
    await response.prepare(request)
    role = {"role": "assistant", "content": ""}
    events = [_event(chunk_payload(completion_id, created, chat.model, role))]
    pieces = list(reply.pieces)
    if len(reached) == 1:  # no per-token pace: every token is due with the first
        events += [content(piece) for piece in pieces]
    else:
        for index, piece in enumerate(pieces):
            await reached[index]
            events.append(content(piece))
            await response.write(b"".join(events))
            events.clear()
        await reached[-1]
    events += _closing_events(chat, reply, prompt_tokens, completion_id, created)
    await response.write(b"".join(events))
    await response.write_eof()


def _closing_events(
    chat: ChatRequest, reply: Any, prompt_tokens: int, completion_id: str, created: int
) -> list[bytes]:
    """The finish_reason chunk, the usage chunk when asked for, and ``[DONE]``."""
    events = [_event(chunk_payload(completion_id, created, chat.model, {}, reply.finish_reason))]
    if chat.include_usage:
        usage = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": chat.model,
            "choices": [],
            "usage": usage_payload(prompt_tokens, reply.completion_tokens),
        }
        events.append(_event(usage))
    events.append(b"data: [DONE]\n\n")
    return events


async def _sleep(delay_s: float) -> None:
    if delay_s > 0:  # no sleep(0): at zero latency an answer costs no extra loop iteration
        await asyncio.sleep(delay_s)


def _drop_connection(request: web.Request) -> web.Response:
    """Close the connection with no status line and no body: the client sees a disconnection.

    aiohttp needs a response object back, but writing it to the closed transport is a
    ``ConnectionError`` that aiohttp ignores, so nothing is sent.
    """
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=STATUS_DROPPED)


def _rate_limited(wait_s: float, which: str, headers: dict[str, str]) -> web.Response:
    retry_after_s = max(1, math.ceil(wait_s))
    headers["Retry-After"] = str(retry_after_s)
    headers["retry-after-ms"] = str(max(1, math.ceil(wait_s * 1000)))
    error = ClientError(
        429,
        f"Rate limit reached for {which}: retry after {wait_s:.3f} s.",
        error_type="rate_limit_error",
        code="rate_limit_exceeded",
    )
    return error_response(error, headers)


def _injected_error(
    status: int, retry_after_s: float, headers: dict[str, str]
) -> tuple[web.Response, float | None]:
    error_type, code, message = INJECTED_ERRORS[status]
    sent_retry_after_s = None
    if status in RETRY_AFTER_STATUSES:
        headers["Retry-After"] = str(math.ceil(retry_after_s))  # HTTP wants whole seconds
        headers["retry-after-ms"] = str(math.ceil(retry_after_s * 1000))
        sent_retry_after_s = retry_after_s
    return error_response(
        ClientError(status, message, error_type=error_type, code=code), headers
    ), sent_retry_after_s


def _event(payload: Any) -> bytes:
    return b"data: " + _dumps(payload) + b"\n\n"


async def _stream(
    request: web.Request,
    response: web.StreamResponse,
    chat: ChatRequest,
    reply: Any,
    prompt_tokens: int,
    completion_id: str,
    first_byte_delay_s: float,
    per_token_latency_s: float,
) -> None:
    """Server-Sent Events: role, one chunk per token, finish_reason, [usage], ``[DONE]``.

    Without ``--per-token-latency`` all events go out in one write (they still parse as separate
    chunks); with it, each token is written after its delay.
    """
    created = int(time.time())
    response.content_type = "text/event-stream"
    response.headers["Cache-Control"] = "no-cache"
    await _sleep(first_byte_delay_s)
    await response.prepare(request)
    events = [
        _event(
            chunk_payload(completion_id, created, chat.model, {"role": "assistant", "content": ""})
        )
    ]
    for piece in reply.pieces:
        if per_token_latency_s > 0:
            await response.write(b"".join(events))
            events.clear()
            await asyncio.sleep(per_token_latency_s)
        events.append(_event(chunk_payload(completion_id, created, chat.model, {"content": piece})))
    events += _closing_events(chat, reply, prompt_tokens, completion_id, created)
    await response.write(b"".join(events))
    await response.write_eof()


# --- GET /models, POST /embeddings ----------------------------------------------------------


async def list_models(request: web.Request) -> web.Response:
    mock = request.app[MOCK]
    api_key = _api_key(request)
    try:
        check_key(mock.config, api_key)
    except ClientError as error:
        return error_response(error)
    # The limits ride along (charging nothing), so a client's preflight learns them before its
    # first wave of requests instead of from that wave's 429s.
    send_limits = mock.limits.enabled and mock.config.rate_limit_headers
    headers = mock.limits.headers(mock.hash_key(api_key)) if send_limits else None
    return web.Response(body=mock.models_body, content_type="application/json", headers=headers)


async def get_model(request: web.Request) -> web.Response:
    mock = request.app[MOCK]
    model = request.match_info["model"]
    try:
        check_key(mock.config, _api_key(request))
        if model not in mock.config.models:
            raise ClientError(
                404, f"The model '{model}' does not exist.", code="model_not_found", param="model"
            )
    except ClientError as error:
        return error_response(error)
    return json_response({"id": model, "object": "model", "created": 0, "owned_by": "lighton"})


def _embedding(text: str) -> list[float]:
    """A deterministic unit vector of ``EMBEDDING_DIMENSIONS`` floats derived from the text."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=EMBEDDING_DIMENSIONS * 2).digest()
    raw = [value / 32768.0 - 1.0 for value in struct.unpack(f">{EMBEDDING_DIMENSIONS}H", digest)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [round(x / norm, 6) for x in raw]


async def embeddings(request: web.Request) -> web.Response:
    """Minimal ``POST /embeddings``: ``input`` a string or a list of strings."""
    mock = request.app[MOCK]
    try:
        check_key(mock.config, _api_key(request))
        payload = _json_object(await read_body(request))
        texts = payload.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise ClientError(
                400,
                "Invalid 'input': expected a string or an array of strings.",
                code="invalid_type",
                param="input",
            )
        if len(texts) > MAX_EMBEDDING_INPUTS:
            raise ClientError(
                400,
                f"Invalid 'input': {len(texts)} inputs; at most {MAX_EMBEDDING_INPUTS} per request.",
                code="invalid_value",
                param="input",
            )
        model = _model_field(payload)
    except ClientError as error:
        return error_response(error)
    prompt_tokens = sum(estimate_text_tokens(text) for text in texts)
    data = [
        {"object": "embedding", "index": i, "embedding": _embedding(t)} for i, t in enumerate(texts)
    ]
    return json_response(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        }
    )


# --- /_mock ---------------------------------------------------------------------------------


def _run_param(request: web.Request) -> str | None:
    return request.query.get("run") or None


async def mock_stats(request: web.Request) -> web.Response:
    mock = request.app[MOCK]
    stats = mock.recorder.stats(_run_param(request))
    stats["config"] = mock.public_config()
    capacity = mock.scheduler.snapshot()
    stats["capacity"] = capacity
    for name in ("peak_running", "peak_queued", "shed"):
        stats[name] = capacity[name]
    return json_response(stats)


async def mock_log(request: web.Request) -> web.Response:
    return json_response(request.app[MOCK].recorder.log(_run_param(request)))


async def mock_report(request: web.Request) -> web.Response:
    return json_response(request.app[MOCK].recorder.report(_run_param(request)))


async def mock_reset(request: web.Request) -> web.Response:
    if (refusal := require_facilitator(request)) is not None:
        return refusal
    mock = request.app[MOCK]
    mock.recorder.reset()
    mock.limits.reset()
    mock.answered_by_key.clear()
    mock.scheduler.reset_peaks()
    return json_response({"reset": True})


CAPACITY_SETTINGS = ("capacity", "max_running", "max_queue")


async def mock_config(request: web.Request) -> web.Response:
    """``POST /_mock/config`` with ``{"capacity": K, "max_running": M, "max_queue": Q}``.

    Changes the capacity model while the mock serves (null switches a part off; an omitted field
    keeps its value). A mock that listens beyond loopback needs the facilitator token
    (``auth.py``: printed at start, or ``--facilitator-token``), as ``/_mock/reset`` does.
    """
    if (refusal := require_facilitator(request)) is not None:
        return refusal
    mock = request.app[MOCK]
    try:
        payload = _json_object(await request.read())
        unknown = sorted(payload.keys() - set(CAPACITY_SETTINGS))
        if unknown:
            raise ClientError(
                400,
                f"Unknown setting(s) {', '.join(unknown)}: POST /_mock/config changes "
                f"{', '.join(CAPACITY_SETTINGS)}.",
                code="invalid_value",
            )
        scheduler = mock.scheduler
        current = {name: getattr(scheduler, name) for name in CAPACITY_SETTINGS}
        wanted = {**current, **payload}
        try:  # the same checks as at start-up, by building the config it would be
            MockConfig(**{**_config_fields(mock.config), **wanted})
        except (TypeError, ValueError) as error:
            raise ClientError(
                400, f"Invalid capacity settings: {error}.", code="invalid_value"
            ) from None
    except ClientError as error:
        return error_response(error)
    scheduler.set_limits(wanted["capacity"], wanted["max_running"], wanted["max_queue"])
    return json_response({"capacity": scheduler.snapshot()})


def _config_fields(config: MockConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}
