"""One chat request as a stream: SSE in, one reassembled ``chat.completion`` out.

``stream_attempt`` sends one attempt with ``"stream": true`` and reads its Server-Sent Events
(``paradigm_kit.sse``: events split across reads, comments and keep-alives, ``[DONE]``). The
chunks are reassembled into the object the same request would get without streaming (``id``,
``object: "chat.completion"``, ``created``, ``model``, ``choices[i].message`` with the role and
the joined content, ``finish_reason``, ``usage``), so an output line has one shape either way.

* ``usage``: the runner asks for it with ``stream_options: {"include_usage": true}`` (the
  server then sends a last chunk with ``usage`` and no choices). A server that refuses
  ``stream_options`` (a 400 naming it) gets the request again without it, at once, and
  ``usage`` is then *estimated* (prompt characters / 4 + 4 per message, completion characters
  / 4, as the pacer estimates) and flagged ``usage_estimated`` in the output line. Chunks are not
  counted as tokens: providers put several tokens in one chunk (vLLM's benchmark says the same).
* timing, from the start of the attempt (``t_start``): ``ttft_s`` is the first chunk carrying
  content (a role-only chunk may go out before any work is done); ``tokens_per_s`` is
  completion tokens over the attempt's whole duration.
* four deadlines (``StreamDeadlines``): connect, first token, silence between two reads, total.
  Each becomes a ``timeout`` failure naming the deadline, retried like any timeout.
* a stream that ends before ``[DONE]`` or a ``finish_reason`` is **cut**: a ``stream_cut``
  failure, retried as a whole by the runner (a re-sent request starts generation again and may
  be billed again: the output line counts ``stream_cuts``). Nothing of a cut stream is written.
* ``stop``: an ``asyncio.Event``; when it is set (Ctrl-C) an open stream is closed at once and
  ``StreamInterrupted`` raised (the request gets no line; the next run sends it again).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from ..retry import RETRYABLE_EXCEPTIONS
from ..sse import SSEDecoder
from ..tokens import estimate_prompt_tokens, estimate_text_tokens

__all__ = [
    "StreamDeadlines",
    "StreamInterrupted",
    "StreamResult",
    "assemble",
    "estimate_usage",
    "stream_attempt",
]


@dataclass(frozen=True)
class StreamDeadlines:
    """Seconds allowed for each phase of a streamed attempt (the CLI's four flags)."""

    connect_s: float = 10.0  # TCP (and TLS) connection
    first_token_s: float = 60.0  # from sending to the first content chunk: queue + prefill
    idle_s: float = 30.0  # between two reads once streaming: a stalled server
    total_s: float = 600.0  # the whole attempt: a long answer still ends

    def __post_init__(self) -> None:
        for name in ("connect_s", "first_token_s", "idle_s", "total_s"):
            value = getattr(self, name)
            if not value > 0 or value == float("inf"):
                raise ValueError(f"the {name[:-2].replace('_', ' ')} deadline must be > 0 s")


class StreamInterrupted(Exception):
    """The run is stopping: the stream was closed before it ended."""


@dataclass
class StreamResult:
    """One streamed attempt. ``status`` None: no answer (``failure`` says why)."""

    status: int | None
    headers: Any = None
    body: bytes = b""  # the error body when status is not 2xx; the assembled JSON when 200
    t_first_byte: float | None = None
    failure: dict | None = None
    ttft_s: float | None = None
    tokens_per_s: float | None = None
    usage_estimated: bool = False
    stream_options_refused: bool = False
    response: dict | None = field(default=None, repr=False)


@dataclass
class _Choice:
    role: str = "assistant"
    parts: list[str] = field(default_factory=list)
    finish_reason: str | None = None


def assemble(chunks: list[dict]) -> tuple[dict, bool]:
    """The ``chat.completion`` the chunks of one stream make, and whether a choice finished."""
    choices: dict[int, _Choice] = {}
    head: dict[str, Any] = {}
    usage = None
    for chunk in chunks:
        for key in ("id", "created", "model", "system_fingerprint"):
            if key in chunk and key not in head:
                head[key] = chunk[key]
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            state = choices.setdefault(choice.get("index", 0), _Choice())
            delta = choice.get("delta") or {}
            if delta.get("role"):
                state.role = delta["role"]
            if delta.get("content"):
                state.parts.append(delta["content"])
            if choice.get("finish_reason"):
                state.finish_reason = choice["finish_reason"]
    completion = {
        "id": head.get("id"),
        "object": "chat.completion",
        "created": head.get("created"),
        "model": head.get("model"),
        "choices": [
            {
                "index": index,
                "message": {"role": state.role, "content": "".join(state.parts)},
                "finish_reason": state.finish_reason,
            }
            for index, state in sorted(choices.items())
        ],
    }
    if "system_fingerprint" in head:
        completion["system_fingerprint"] = head["system_fingerprint"]
    if usage is not None:
        completion["usage"] = usage
    finished = bool(choices) and all(state.finish_reason for state in choices.values())
    return completion, finished


def estimate_usage(body: dict, completion: dict) -> dict[str, int]:
    """Token counts when the server sent none: ``tokens.py``'s rule, as the pacer estimates."""
    prompt_tokens = estimate_prompt_tokens(body.get("messages"))
    text = "".join(c["message"]["content"] for c in completion["choices"])
    completion_tokens = estimate_text_tokens(text)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _refuses_stream_options(status: int, body: bytes) -> bool:
    return status in (400, 422) and b"stream_options" in body


async def stream_attempt(
    session: aiohttp.ClientSession,
    url: str,
    body: dict,
    headers: dict,
    deadlines: StreamDeadlines,
    *,
    include_usage: bool = True,
    stop: asyncio.Event | None = None,
) -> StreamResult:
    """One streamed attempt of ``body``; a refused ``stream_options`` is dropped and re-sent."""
    t_start = time.monotonic()
    result = await _attempt(session, url, body, headers, deadlines, include_usage, stop, t_start)
    if (
        include_usage
        and result.status is not None
        and _refuses_stream_options(result.status, result.body)
    ):
        result = await _attempt(session, url, body, headers, deadlines, False, stop, t_start)
        result.stream_options_refused = True
    return result


async def _attempt(
    session: aiohttp.ClientSession,
    url: str,
    body: dict,
    headers: dict,
    deadlines: StreamDeadlines,
    include_usage: bool,
    stop: asyncio.Event | None,
    t_start: float,
) -> StreamResult:
    payload = dict(body, stream=True)
    if include_usage:
        payload["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    else:
        payload.pop("stream_options", None)
    timeout = aiohttp.ClientTimeout(
        total=deadlines.total_s, connect=deadlines.connect_s, sock_read=None
    )
    try:
        async with session.post(
            url, data=json.dumps(payload).encode(), headers=headers, timeout=timeout
        ) as response:
            t_first_byte = time.monotonic()
            if response.status != 200:
                return StreamResult(
                    response.status, response.headers, await response.read(), t_first_byte
                )
            watcher = asyncio.ensure_future(_close_when_set(stop, response)) if stop else None
            try:
                result = await _read_stream(response, body, deadlines, t_start)
            except (aiohttp.ClientError, ConnectionError):
                if stop is not None and stop.is_set():
                    raise StreamInterrupted from None
                raise
            finally:
                if watcher is not None:
                    watcher.cancel()
            if stop is not None and stop.is_set():
                raise StreamInterrupted
            result.headers, result.t_first_byte = response.headers, t_first_byte
            return result
    except asyncio.TimeoutError:
        failure = {"type": "timeout", "message": f"no answer within {deadlines.total_s:g} s"}
    except RETRYABLE_EXCEPTIONS as error:
        failure = {"type": "connection_error", "message": f"{type(error).__name__}: {error}"}
    except aiohttp.ClientError as error:
        failure = {
            "type": "client_error",
            "message": f"{type(error).__name__}: {error}",
            "final": True,
        }
    return StreamResult(None, failure=failure)


async def _read_stream(
    response: aiohttp.ClientResponse, body: dict, deadlines: StreamDeadlines, t_start: float
) -> StreamResult:
    decoder = SSEDecoder()
    chunks: list[dict] = []
    ttft_s = None
    done = False
    while not done:
        elapsed_s = time.monotonic() - t_start
        if ttft_s is None:
            wait_s, which = deadlines.first_token_s - elapsed_s, "first token"
        else:
            wait_s, which = deadlines.idle_s, "silence between chunks"
        wait_s = min(wait_s, deadlines.total_s - elapsed_s)
        data = await _read_some(response, wait_s)
        if data is None:
            limit_s = deadlines.first_token_s if which == "first token" else deadlines.idle_s
            return StreamResult(
                None,
                failure={
                    "type": "timeout",
                    "message": f"stream deadline ({which}, {limit_s:g} s) passed",
                },
            )
        events = decoder.feed(data) if data else decoder.close()
        for event in events:
            if event.is_done:
                done = True
                break
            try:
                chunk = json.loads(event.data)
            except ValueError:
                continue  # not a chunk (a server's own event): nothing to assemble
            if not isinstance(chunk, dict):
                continue
            if "error" in chunk:  # an error in mid-stream (OpenAI sends these): a failure
                error = chunk["error"] if isinstance(chunk["error"], dict) else {}
                return StreamResult(
                    None,
                    failure={
                        "type": "stream_error",
                        "message": str(error.get("message", chunk["error"])),
                    },
                )
            chunks.append(chunk)
            if ttft_s is None and any(
                (c.get("delta") or {}).get("content") for c in chunk.get("choices") or []
            ):
                ttft_s = time.monotonic() - t_start
        if not data:
            break  # end of the body
    completion, finished = assemble(chunks)
    if not (done or finished):
        return StreamResult(
            None,
            failure={
                "type": "stream_cut",
                "message": f"the stream ended after {len(chunks)} chunks, before [DONE]",
            },
        )
    estimated = "usage" not in completion
    if estimated:
        completion["usage"] = estimate_usage(body, completion)
    latency_s = time.monotonic() - t_start
    tokens = completion["usage"].get("completion_tokens") or 0
    return StreamResult(
        200,
        body=json.dumps(completion).encode(),
        ttft_s=ttft_s,
        tokens_per_s=tokens / latency_s if latency_s > 0 else None,
        usage_estimated=estimated,
        response=completion,
    )


async def _read_some(response: aiohttp.ClientResponse, wait_s: float) -> bytes | None:
    """The next bytes (``b""`` at the end of the body), None when ``wait_s`` passed first."""
    if wait_s <= 0:
        return None
    try:
        return await asyncio.wait_for(response.content.readany(), wait_s)
    except asyncio.TimeoutError:
        return None


async def _close_when_set(stop: asyncio.Event, response: aiohttp.ClientResponse) -> None:
    """One watcher per stream (not one task per read): Ctrl-C closes the stream at once."""
    await stop.wait()
    response.close()
