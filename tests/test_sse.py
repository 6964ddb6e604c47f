"""The SSE reader: every test stream parses the same whatever the split points of its reads."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from paradigm_kit.sse import SSEDecoder, SSEEvent, encode_event, iter_events


def _parse(chunks: list[bytes]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    return events + decoder.close()


def _splits(stream: bytes, parts: int):
    """Every way to cut ``stream`` into ``parts`` reads (parts - 1 cut points)."""
    for cuts in itertools.combinations(range(1, len(stream)), parts - 1):
        bounds = (0, *cuts, len(stream))
        yield [stream[a:b] for a, b in itertools.pairwise(bounds)]


STREAMS = [
    pytest.param(
        b'data: {"a": 1}\n\ndata: [DONE]\n\n',
        [SSEEvent('{"a": 1}'), SSEEvent("[DONE]")],
        id="lf",
    ),
    pytest.param(
        b'data: {"a": 1}\r\n\r\ndata: [DONE]\r\n\r\n',
        [SSEEvent('{"a": 1}'), SSEEvent("[DONE]")],
        id="crlf",
    ),
    pytest.param(b"data: x\r\rdata: y\r\r", [SSEEvent("x"), SSEEvent("y")], id="cr-only"),
    pytest.param(
        b": keep-alive\n\ndata: x\n: comment inside\n\n:\n\n", [SSEEvent("x")], id="comments"
    ),
    pytest.param(
        b"data: one\ndata: two\ndata:three\n\n", [SSEEvent("one\ntwo\nthree")], id="multi-line-data"
    ),
    pytest.param(
        'data: {"c": "é€😀"}\n\n'.encode(), [SSEEvent('{"c": "é€😀"}')], id="utf8-multibyte"
    ),
    pytest.param(
        b"event: ping\nid: 7\nretry: 500\ndata: p\n\n",
        [SSEEvent("p", event="ping", id="7", retry_ms=500)],
        id="fields",
    ),
    pytest.param(b"event: lonely\n\ndata: x\n\n", [SSEEvent("x")], id="event-without-data"),
    pytest.param(b"data: last", [SSEEvent("last")], id="no-final-blank-line"),
    pytest.param(b"data: cut\r", [SSEEvent("cut")], id="ends-on-cr"),
]


@pytest.mark.parametrize(("stream", "expected"), STREAMS)
def test_sse_same_events_at_every_split_point(stream: bytes, expected: list[SSEEvent]) -> None:
    """One read, or two reads cut at any byte, give the same events."""
    assert _parse([stream]) == expected
    for chunks in _splits(stream, 2):
        assert _parse(chunks) == expected, chunks


@pytest.mark.parametrize(("stream", "expected"), STREAMS[:6])
def test_sse_same_events_one_byte_at_a_time(stream: bytes, expected: list[SSEEvent]) -> None:
    """Byte by byte (and every three-way split of the short streams) changes nothing."""
    assert _parse([bytes([b]) for b in stream]) == expected
    if len(stream) <= 40:
        for chunks in _splits(stream, 3):
            assert _parse(chunks) == expected


def test_sse_crlf_split_between_reads_is_one_line_end() -> None:
    """A \\r at the end of a read followed by \\n at the start of the next is one line end."""
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\n\r") == []
    assert decoder.feed(b"\n") == [SSEEvent("a")]


def test_sse_done_sentinel() -> None:
    """``is_done`` tells the [DONE] sentinel from data."""
    assert SSEEvent("[DONE]").is_done and not SSEEvent("{}").is_done


def test_sse_encode_event_round_trips() -> None:
    """What ``encode_event`` writes, the decoder reads back."""
    assert _parse([encode_event('{"x": 1}'), encode_event(b"[DONE]")]) == [
        SSEEvent('{"x": 1}'),
        SSEEvent("[DONE]"),
    ]


def test_sse_iter_events_over_async_chunks() -> None:
    """``iter_events`` reads an async iterable of chunks."""

    async def chunks():
        for piece in (b"da", b"ta: 1\n", b"\ndata: 2"):
            yield piece

    async def collect():
        return [event async for event in iter_events(chunks())]

    assert asyncio.run(collect()) == [SSEEvent("1"), SSEEvent("2")]
