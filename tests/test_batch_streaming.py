"""Streaming in the runner: reassembly, usage, deadlines, cut streams, Ctrl-C.

A small aiohttp server in the test (a real HTTP server on 127.0.0.1, a free port) plays the
misbehaving servers the mock does not: a cut stream, a refused ``stream_options``, a stall.
The bundled mock checks that a streamed answer equals the plain one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from conftest import serving_app

from paradigm_kit.batch import run_batch
from paradigm_kit.batch.streaming import (
    StreamDeadlines,
    StreamInterrupted,
    assemble,
    stream_attempt,
)

RELEASE = web.AppKey("release", asyncio.Event)


def _chunk(delta: dict, finish: str | None = None, **extra: object) -> dict:
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 7,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }


CHUNKS = [
    _chunk({"role": "assistant", "content": ""}),
    _chunk({"content": "Bon"}),
    _chunk({"content": "jour é"}),
    _chunk({}, "stop"),
]
USAGE = {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}


def _sse(chunks: list[dict], *, usage: bool = True, done: bool = True) -> bytes:
    events = [b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in chunks]
    if usage:
        events.append(
            b"data: " + json.dumps({"id": "c1", "choices": [], "usage": USAGE}).encode() + b"\n\n"
        )
    events.insert(1, b": keep-alive\n\n")
    if done:
        events.append(b"data: [DONE]\n\n")
    return b"".join(events)


async def _serve(handler: Callable[[web.Request], Awaitable[web.StreamResponse]], test):
    """Run ``test(url, seen)`` against a one-route server; ``seen`` collects request bodies."""
    seen: list[dict] = []

    async def chat(request: web.Request) -> web.StreamResponse:
        seen.append(await request.json())
        return await handler(request, seen)

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "alfred-4.2"}]})

    app = web.Application()
    app[RELEASE] = asyncio.Event()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    async with serving_app(app) as root_url:
        try:
            return await test(f"{root_url}/v1", seen)
        finally:
            app[RELEASE].set()  # let a stalled handler end, so the server stops at once


async def _write_stream(request: web.Request, body: bytes, pieces: int = 7) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    step = max(1, len(body) // pieces)
    for start in range(0, len(body), step):  # split anywhere, as a network does
        await response.write(body[start : start + step])
        await asyncio.sleep(0)
    return response


async def _attempt(url: str, **kwargs) -> object:
    async with aiohttp.ClientSession() as session:
        body = {"model": "m", "messages": [{"role": "user", "content": "Say hello"}]}
        return await stream_attempt(
            session,
            url + "/chat/completions",
            body,
            {},
            kwargs.pop("deadlines", StreamDeadlines()),
            **kwargs,
        )


def test_assemble_gives_the_plain_completion_shape() -> None:
    """Chunks make one chat.completion: role, joined content, finish_reason, usage."""
    completion, finished = assemble(CHUNKS + [{"id": "c1", "choices": [], "usage": USAGE}])
    assert finished
    assert completion == {
        "id": "c1",
        "object": "chat.completion",
        "created": 7,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Bonjour é"},
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE,
    }


def test_stream_reassembled_with_usage_and_ttft() -> None:
    """A stream split across reads, with comments and CRLF, gives the completion and usage."""

    async def handler(request, seen):
        return await _write_stream(request, _sse(CHUNKS))

    result = asyncio.run(_serve(handler, lambda url, seen: _attempt(url)))
    assert result.status == 200 and not result.usage_estimated
    assert result.response["choices"][0]["message"]["content"] == "Bonjour é"
    assert result.response["usage"] == USAGE
    assert result.ttft_s is not None and result.tokens_per_s is not None


def test_stream_without_usage_is_estimated_and_flagged() -> None:
    """No usage chunk: usage estimated (characters / 4) and flagged."""

    async def handler(request, seen):
        return await _write_stream(request, _sse(CHUNKS, usage=False))

    result = asyncio.run(_serve(handler, lambda url, seen: _attempt(url)))
    assert result.usage_estimated
    assert result.response["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": 3,
        "total_tokens": 10,
    }


def test_refused_stream_options_is_dropped_and_resent() -> None:
    """A 400 naming stream_options: the same request again without it, usage estimated."""

    async def handler(request, seen):
        if "stream_options" in seen[-1]:
            return web.json_response(
                {"error": {"message": "Unknown field stream_options"}}, status=400
            )
        return await _write_stream(request, _sse(CHUNKS, usage=False))

    async def test(url, seen):
        result = await _attempt(url)
        return result, seen

    result, seen = asyncio.run(_serve(handler, test))
    assert [("stream_options" in body) for body in seen] == [True, False]
    assert result.status == 200 and result.stream_options_refused and result.usage_estimated


def test_cut_stream_is_a_failure_not_an_answer() -> None:
    """A stream that ends before [DONE] and finish_reason is a stream_cut failure."""

    async def handler(request, seen):
        return await _write_stream(request, _sse(CHUNKS[:2], usage=False, done=False))

    result = asyncio.run(_serve(handler, lambda url, seen: _attempt(url)))
    assert result.status is None and result.failure["type"] == "stream_cut"


@pytest.mark.parametrize(
    ("stall_after", "deadline"),
    [pytest.param(0, "first token", id="first-token"), pytest.param(2, "silence", id="idle")],
)
def test_stalled_stream_hits_its_deadline(stall_after: int, deadline: str) -> None:
    """No content before the first-token deadline, or silence past the idle one: a timeout."""

    async def handler(request, seen):
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for chunk in CHUNKS[:stall_after]:
            await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        await request.app[RELEASE].wait()
        return response

    deadlines = StreamDeadlines(first_token_s=0.3, idle_s=0.3)
    result = asyncio.run(_serve(handler, lambda url, seen: _attempt(url, deadlines=deadlines)))
    assert result.failure["type"] == "timeout" and deadline in result.failure["message"]


def test_stop_closes_an_open_stream_at_once() -> None:
    """Setting the stop event (Ctrl-C) closes the stream and raises StreamInterrupted."""

    async def handler(request, seen):
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: " + json.dumps(CHUNKS[1]).encode() + b"\n\n")
        await request.app[RELEASE].wait()
        return response

    async def test(url, seen):
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.2, stop.set)
        with pytest.raises(StreamInterrupted):
            await _attempt(url, stop=stop)
        return True

    assert asyncio.run(_serve(handler, test))


def test_bad_deadline_is_refused() -> None:
    """A deadline <= 0 or nan is a ValueError naming it."""
    with pytest.raises(ValueError, match="idle"):
        StreamDeadlines(idle_s=0)
    with pytest.raises(ValueError, match="first token"):
        StreamDeadlines(first_token_s=float("nan"))


def test_runner_retries_a_cut_stream_whole_and_flags_it(tmp_path) -> None:
    """The runner re-sends a cut stream; the line has the whole answer and stream_cuts: 1."""
    calls = {"n": 0}

    async def handler(request, seen):
        calls["n"] += 1
        if calls["n"] == 1:
            return await _write_stream(request, _sse(CHUNKS[:2], usage=False, done=False))
        return await _write_stream(request, _sse(CHUNKS))

    out = tmp_path / "out.jsonl"

    async def test(url, seen):
        return await run_batch(
            [{"id": "a", "messages": [{"role": "user", "content": "hi"}], "stream": True}],
            out,
            base_url=url,
            api_key="k",
            progress=False,
            retry_policy=None,
            max_retries=2,
        )

    summary = asyncio.run(_serve(handler, test))
    line = json.loads(out.read_text())
    assert summary.succeeded == 1 and line["attempts"] == 2 and line["stream_cuts"] == 1
    assert line["response"]["choices"][0]["message"]["content"] == "Bonjour é"
    assert "ttft_s" in line and "tokens_per_s" in line


def test_runner_streamed_equals_plain_against_the_mock(
    start_mock_server, tmp_path, api_key
) -> None:
    """Against the mock, --stream gives the same content and usage as a plain run."""
    url = start_mock_server()
    requests = [
        {"id": i, "messages": [{"role": "user", "content": f"Tell me about item {i}"}]}
        for i in range(6)
    ]
    lines = {}
    for stream in (False, True):
        out = tmp_path / f"{stream}.jsonl"
        summary = asyncio.run(
            run_batch(
                requests,
                out,
                base_url=url,
                api_key=api_key,
                progress=False,
                stream=stream,
                concurrency=3,
            )
        )
        assert summary.succeeded == 6
        lines[stream] = {
            (row := json.loads(text))["id"]: row for text in out.read_text().splitlines()
        }
    for i in range(6):
        plain, streamed = lines[False][i]["response"], lines[True][i]["response"]
        assert streamed["choices"] == plain["choices"]
        assert streamed["usage"] == plain["usage"]
        assert "ttft_s" in lines[True][i] and "ttft_s" not in lines[False][i]
