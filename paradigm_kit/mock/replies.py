"""What the mock says: deterministic replies, token counts, and the OpenAI payload shapes.

Replies are a pure function of the prompt, so a rerun, a retry or a second mock gives the same
text, and a notebook's committed output stays stable:

* the seed's greeting prompt, in French (``... personnalisé à : Alice``) or English
  (``... welcome to: Alice``), gets one sentence that greets that name, in the prompt's language;
  the sentence is picked by a hash of the name, so twenty names do not all get the same words;
* anything else gets a short reply that quotes the start of the last user message.

Prompt tokens are counted by ``paradigm_kit.tokens``, the rule the kit's runner budgets with too
(``ceil(characters / 4)`` per message plus 4 for the chat framing); here:

* a completion token is one word of the reply with its following space (``"Bonjour "``), so
  ``max_tokens`` cuts on a word boundary (``finish_reason: "length"``) and a streamed chunk is
  one token.

The payload builders (``completion_payload``, ``chunk_payload``, ``models_payload``,
``error_payload``) return the exact shapes the official ``openai`` package parses; handlers in
``app.py`` only pick which one to send. Work that does not depend on the request (model list,
templates) is computed once, and replies are cached by prompt. The one answer on the hot path,
a non-streamed completion, is serialised by ``completion_body`` from a precomputed template
(only the reply text and model go through ``json.dumps``), about four times cheaper than dumping
the dict; ``completion_payload`` stays as the readable definition it must match.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from typing import Any

__all__ = [
    "Reply",
    "chunk_payload",
    "completion_body",
    "completion_payload",
    "error_payload",
    "make_reply",
    "models_payload",
]

FRENCH_GREETING = re.compile(r"personnalis\w*\s+(?:à|a)\s*:\s*(?P<name>.+?)\s*$", re.I | re.S)
ENGLISH_GREETING = re.compile(r"welcome\s+(?:to|for)\s*:\s*(?P<name>.+?)\s*$", re.I | re.S)

FRENCH_TEMPLATES = (
    "Bienvenue sur Paradigm, {name} : nous sommes ravis de vous compter parmi nous !",
    "Bonjour {name}, bienvenue sur Paradigm, votre nouvel espace pour explorer l'IA en toute confiance !",
    "Ravi de vous accueillir sur Paradigm, {name}, que vos premières idées y prennent vite forme !",
    "Bonjour {name} ! Paradigm vous ouvre ses portes, et nous avons hâte de voir ce que vous allez créer.",
    "{name}, bienvenue sur Paradigm : toute l'équipe vous souhaite une excellente découverte !",
)
ENGLISH_TEMPLATES = (
    "Welcome to Paradigm, {name}: we are delighted to have you with us!",
    "Hello {name}, welcome aboard Paradigm, your new place to explore AI with confidence!",
    "Great to have you on Paradigm, {name}, may your first ideas take shape quickly!",
    "Hi {name}! Paradigm opens its doors to you, and we cannot wait to see what you build.",
    "{name}, welcome to Paradigm: the whole team wishes you a wonderful start!",
)
GREETINGS = ((FRENCH_GREETING, FRENCH_TEMPLATES), (ENGLISH_GREETING, ENGLISH_TEMPLATES))
WORD_PIECE = re.compile(r"\S+\s*")
QUOTE_CHARS = 60


def _pick(templates: tuple[str, ...], name: str) -> str:
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=4).digest()
    return templates[int.from_bytes(digest, "big") % len(templates)].format(name=name)


def reply_text(prompt: str) -> str:
    """The full reply to the last user message ``prompt`` (before any ``max_tokens`` cut)."""
    if ":" in prompt:  # both greeting prompts end with ": {name}"; skip the regexes otherwise
        for pattern, templates in GREETINGS:
            match = pattern.search(prompt)
            if match:
                return _pick(templates, match.group("name").strip().rstrip(".!"))
    quoted = " ".join(prompt.split())
    if len(quoted) > QUOTE_CHARS:
        quoted = quoted[:QUOTE_CHARS].rstrip() + "..."
    return f"This is the mock Paradigm server answering your message: \u201c{quoted}\u201d."


class Reply:
    """A reply cut to ``max_tokens``: its text, its word pieces, and why it stopped."""

    __slots__ = ("finish_reason", "pieces", "text")

    def __init__(self, pieces: tuple[str, ...], finish_reason: str) -> None:
        self.pieces = pieces
        self.text = "".join(pieces)
        self.finish_reason = finish_reason

    @property
    def completion_tokens(self) -> int:
        return len(self.pieces)


@functools.lru_cache(maxsize=4096)
def _pieces(prompt: str) -> tuple[str, ...]:
    return tuple(WORD_PIECE.findall(reply_text(prompt)))


def make_reply(prompt: str, max_tokens: int | None) -> Reply:
    """The reply to ``prompt``; cut to ``max_tokens`` words with ``finish_reason="length"``."""
    pieces = _pieces(prompt)
    if max_tokens is not None and len(pieces) > max_tokens:
        return Reply(pieces[:max_tokens], "length")
    return Reply(pieces, "stop")


def last_user_text(messages: list[dict[str, Any]]) -> str:
    """The text the reply answers: the last user message (else the last message)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return _content_text(message.get("content"))
    return _content_text(messages[-1].get("content"))


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: [{"type": "text", "text": ...}, ...]
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


# --- payload shapes ---------------------------------------------------------------------------


def completion_payload(
    completion_id: str, created: int, model: str, reply: Reply, prompt_tokens: int
) -> dict[str, Any]:
    """A ``chat.completion`` object."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.text},
                "finish_reason": reply.finish_reason,
            }
        ],
        "usage": usage_payload(prompt_tokens, reply.completion_tokens),
    }


_COMPLETION_TEMPLATE = (
    '{"id":"%s","object":"chat.completion","created":%d,"model":%s,"choices":[{"index":0,'
    '"message":{"role":"assistant","content":%s},"finish_reason":"%s"}],'
    '"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}'
)


def completion_body(
    completion_id: str, created: int, model: str, reply: Reply, prompt_tokens: int
) -> bytes:
    """``completion_payload`` serialised, fast: one template, only the strings JSON-encoded.

    The hot path of the mock; the tests check it parses to exactly ``completion_payload``.
    ``completion_id`` and ``finish_reason`` are the mock's own ASCII tokens, safe unquoted.
    """
    completion_tokens = reply.completion_tokens
    return (
        _COMPLETION_TEMPLATE
        % (
            completion_id,
            created,
            json.dumps(model),
            json.dumps(reply.text),
            reply.finish_reason,
            prompt_tokens,
            completion_tokens,
            prompt_tokens + completion_tokens,
        )
    ).encode()


def usage_payload(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chunk_payload(
    completion_id: str,
    created: int,
    model: str,
    delta: dict[str, str],
    finish_reason: str | None = None,
) -> dict[str, Any]:
    """One ``chat.completion.chunk`` event of a stream."""
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def models_payload(models: tuple[str, ...], created: int) -> dict[str, Any]:
    """The OpenAI ``list`` of ``model`` objects for ``GET /models``."""
    return {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "created": created, "owned_by": "lighton"} for m in models
        ],
    }


def error_payload(
    message: str, error_type: str, code: str | None, param: str | None = None
) -> dict:
    """The OpenAI error shape: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}
