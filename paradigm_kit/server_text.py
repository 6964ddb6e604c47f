"""Text that came from a server, made safe to show: the key masked, a web page cut to one line.

Anything a server sends back may be copied into an output line, a message on stderr or the
doctor's report; a server (or a proxy) that echoes the request's headers would put the API key
there. ``redact`` masks it. ``summarise_body`` turns an error body into one short line: the
message of an OpenAI-style error, else the text of the page with its tags stripped, so an HTML
error page is a readable excerpt rather than a dump. Standard library only: the doctor uses it
on a machine where aiohttp may not be installed yet.
"""

from __future__ import annotations

import html
import json
import re

__all__ = ["EXCERPT_CHARS", "redact", "summarise_body"]

EXCERPT_CHARS = 120

_TAG = re.compile(rb"<(script|style)\b.*?</\1\s*>|<[^>]*>", re.IGNORECASE | re.DOTALL)


def redact(text: str, api_key: str) -> str:
    """``text`` with every occurrence of the key replaced by ``***``."""
    return text.replace(api_key, "***") if api_key and api_key in text else text


def summarise_body(body: bytes, api_key: str = "") -> str:
    """An error body in one short line: an OpenAI-style error's message, else a tag-stripped,
    whitespace-collapsed excerpt of at most ``EXCERPT_CHARS`` characters. The key is masked."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict):
        text = str(error.get("message") or error.get("code") or error)
    elif isinstance(error, str):
        text = error
    else:
        text = html.unescape(_TAG.sub(b" ", body[:65536]).decode("utf-8", "replace"))
    text = " ".join(redact(text, api_key).split())
    if len(text) > EXCERPT_CHARS:
        text = text[: EXCERPT_CHARS - 3] + "..."
    return text or "(empty body)"
