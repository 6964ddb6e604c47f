"""Server-Sent Events: one incremental reader (and the one-line writer) for chat streams.

An OpenAI-compatible server streams ``chat.completion.chunk`` objects as SSE: ``data: {...}``
lines, a blank line after each event, ``data: [DONE]`` at the end. The network does not respect
those boundaries: a read may end in the middle of an event, of a line, of a ``\\r\\n`` pair or of a
multi-byte UTF-8 character. ``SSEDecoder`` is fed whatever bytes arrived and returns the events
that are complete, keeping the rest for the next read. The rules (the WHATWG SSE format, as
openai-python's ``_streaming.py`` reads it):

* lines end with ``\\n``, ``\\r\\n`` or ``\\r``; a ``\\r`` at the end of a read is kept until the next
  byte says whether a ``\\n`` follows (else ``\\r\\n`` split across two reads would count twice);
* lines are split as bytes, then decoded: a UTF-8 continuation byte is never ``\\r`` or ``\\n``, so
  a character cut between reads is whole again before it is decoded;
* ``:`` starts a comment (servers send ``: keep-alive`` through idle proxies): ignored;
* ``field: value`` (one space after the colon dropped); several ``data:`` lines of one event are
  joined with ``\\n``; ``event``, ``id`` and ``retry`` are kept, other fields ignored;
* a blank line ends the event; an event without ``data`` is not dispatched (spec);
* ``close()`` returns the last event if the stream ended without its blank line.

``[DONE]`` is not special here (``SSEEvent.is_done`` tells it): the reader of chat chunks
decides what the end means. The mock writes its events with ``encode_event``.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

__all__ = ["DONE", "SSEDecoder", "SSEEvent", "encode_event", "iter_events"]

DONE = "[DONE]"


@dataclass(frozen=True)
class SSEEvent:
    """One dispatched event: its joined ``data``, and ``event``/``id`` when the server set them."""

    data: str
    event: str = "message"
    id: str | None = None
    retry_ms: int | None = None

    @property
    def is_done(self) -> bool:
        """True for the ``data: [DONE]`` sentinel that ends an OpenAI stream."""
        return self.data.strip() == DONE


def encode_event(data: str | bytes) -> bytes:
    """``data: ...`` and the blank line, for a one-line payload (JSON has no raw newlines)."""
    if isinstance(data, str):
        data = data.encode()
    return b"data: " + data + b"\n\n"


class SSEDecoder:
    """Incremental SSE parser: ``feed(chunk) -> [events]``, then ``close() -> [events]``."""

    def __init__(self) -> None:
        self._pending = b""  # the bytes of an unfinished line
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self._retry_ms: int | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """The events completed by ``chunk`` (possibly none)."""
        buffer = self._pending + chunk
        events: list[SSEEvent] = []
        start = 0
        length = len(buffer)
        while True:
            cr, lf = buffer.find(b"\r", start), buffer.find(b"\n", start)
            if cr == -1 and lf == -1:
                break
            if cr != -1 and (lf == -1 or cr < lf):
                if cr == length - 1:  # a lone \r at the end: is it \r\n? wait for the next byte
                    break
                end, after = cr, cr + 2 if buffer[cr + 1 : cr + 2] == b"\n" else cr + 1
            else:
                end, after = lf, lf + 1
            event = self._line(buffer[start:end])
            if event is not None:
                events.append(event)
            start = after
        self._pending = buffer[start:]
        return events

    def close(self) -> list[SSEEvent]:
        """The end of the stream: an unterminated last line and event still count."""
        events = []
        if self._pending:
            pending, self._pending = self._pending, b""
            line = pending[:-1] if pending.endswith(b"\r") else pending
            event = self._line(line)
            if event is not None:
                events.append(event)
        event = self._dispatch()
        if event is not None:
            events.append(event)
        return events

    def _line(self, raw: bytes) -> SSEEvent | None:
        if not raw:
            return self._dispatch()
        line = raw.decode("utf-8", "replace")
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self._retry_ms = int(value)
        return None

    def _dispatch(self) -> SSEEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = SSEEvent("\n".join(self._data), self._event or "message", self._id, self._retry_ms)
        self._data, self._event = [], ""
        return event


async def iter_events(chunks: AsyncIterable[bytes]) -> AsyncIterator[SSEEvent]:
    """Events from an async iterable of byte chunks (``response.content.iter_any()``)."""
    decoder = SSEDecoder()
    async for chunk in chunks:
        for event in decoder.feed(chunk):
            yield event
    for event in decoder.close():
        yield event
