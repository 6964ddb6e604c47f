"""The checks of lesson 08 (streaming): each passes a correct attempt and explains the usual
wrong one.

As in ``test_exercises.py``, every attempt really streams from the exercises' local mock (started
on first use, stopped at the end of this module), so each check judges the mock's log. No test
asserts a duration: ``check_ttft`` compares the client's figures with the mock's own log.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp

from paradigm_kit.sse import SSEDecoder
from paradigm_kit.workshop.exercises import (
    check_cancelled_stream,
    check_stream_read,
    check_ttft,
    exercise,
)


def content_of(event):
    if event.is_done:
        return ""
    choices = json.loads(event.data).get("choices") or [{}]
    return choices[0].get("delta", {}).get("content") or ""


async def stream(ex, stop_after_tokens=None, stream_flag=True):
    """Stream ex.payloads()[0]: (text, events, ttft_s, total_s); stop early if asked."""
    payload = {**ex.payloads()[0], "stream": stream_flag}
    decoder, events, text, ttft_s = SSEDecoder(), [], [], None
    t0 = time.perf_counter()
    async with (
        aiohttp.ClientSession(headers=ex.headers()) as session,
        session.post(ex.chat_url, json=payload) as response,
    ):
        async for chunk in response.content.iter_any():
            for event in decoder.feed(chunk):
                events.append(event)
                if content_of(event):
                    ttft_s = ttft_s or time.perf_counter() - t0
                    text.append(content_of(event))
            if stop_after_tokens is not None and len(text) >= stop_after_tokens:
                break
    total_s = time.perf_counter() - t0
    return "".join(text), events + decoder.close(), ttft_s, total_s


def test_stream_read_solved_and_unsolved():
    ex = exercise("08-read-stream")
    text, events, _ttft_s, _total_s = asyncio.run(stream(ex))
    assert check_stream_read(ex, text, len(events)).solved
    wrong = check_stream_read(ex, None, len(events))
    assert not wrong.solved and "delta" in wrong.message


def test_stream_read_before_any_request():
    result = check_stream_read(exercise("08-read-stream"), None, None)
    assert not result.solved and "no request" in result.message


def test_ttft_solved_and_total_mistaken_for_ttft():
    ex = exercise("08-ttft")
    _text, _events, ttft_s, total_s = asyncio.run(stream(ex))
    assert check_ttft(ex, ttft_s, total_s).solved
    wrong = check_ttft(ex, total_s, total_s)  # the clock stopped at the end, not the first token
    assert not wrong.solved and "first content chunk" in wrong.message


def test_cancelled_stream_solved_and_read_to_the_end():
    ex = exercise("08-cancel")
    text, _events, _ttft_s, _total_s = asyncio.run(stream(ex, stop_after_tokens=1))
    assert check_cancelled_stream(ex, text).solved
    ex = exercise("08-cancel")
    text, _events, _ttft_s, _total_s = asyncio.run(stream(ex))
    wrong = check_cancelled_stream(ex, text)
    assert not wrong.solved and "200" in wrong.message
