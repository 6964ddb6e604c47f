"""What a request costs in tokens: one estimate, shared by the mock and the runner.

A tokens-per-minute limit only works if both sides count the same thing. The mock charges each
request at admission and the runner's pacer takes the same amount from its own bucket before
sending it; if the two rules differ by one rounding or one default, a client told the server's
limit still earns 429s. So the rule lives here, on the ground floor, and nowhere else:

* a text costs ``ceil(characters / 4)`` tokens (the usual rule of thumb, at least one for a
  non-empty text); no tokenizer, as tiktoken downloads its tables at run time;
* a message costs ``CHAT_FRAMING_TOKENS`` (4) plus its content: a string, or OpenAI content parts
  (``[{"type": "text", "text": ...}, ...]``) whose texts are counted together;
* a request is admitted at its prompt plus its completion budget: ``max_completion_tokens``, else
  ``max_tokens``, else ``DEFAULT_COMPLETION_TOKENS``. Servers charge the budget up front, as they
  cannot know the answer's length before writing it.

These are the mock's settings, not the real Paradigm service's: its tokenizer and its defaults
are not documented here. The runner corrects its estimate by the ``usage`` a server returns, so a
different real rule costs only the first few requests' accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "CHARS_PER_TOKEN",
    "CHAT_FRAMING_TOKENS",
    "DEFAULT_COMPLETION_TOKENS",
    "completion_budget",
    "estimate_prompt_tokens",
    "estimate_text_tokens",
    "estimate_tokens",
]

CHARS_PER_TOKEN = 4
#: Tokens per message for the chat template's role markers.
CHAT_FRAMING_TOKENS = 4
#: Completion tokens charged for a request that sets no ``max_tokens``.
DEFAULT_COMPLETION_TOKENS = 100


def estimate_text_tokens(text: str) -> int:
    """``ceil(len(text) / 4)``: about four characters a token, at least one if not empty."""
    return -(-len(text) // CHARS_PER_TOKEN)


def _content_chars(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):  # content parts: only their texts count
        return sum(
            len(part["text"])
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return 0  # None (an assistant's tool call) or anything a server would refuse


def estimate_prompt_tokens(messages: Any) -> int:
    """Tokens of a ``messages`` list; entries that are not objects count nothing."""
    if not isinstance(messages, list):
        return 0
    return sum(
        CHAT_FRAMING_TOKENS + -(-_content_chars(message.get("content")) // CHARS_PER_TOKEN)
        for message in messages
        if isinstance(message, dict)
    )


def completion_budget(max_tokens: Any) -> int:
    """The completion tokens charged up front: ``max_tokens`` if a positive int, else the default."""
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens > 0:
        return max_tokens
    return DEFAULT_COMPLETION_TOKENS


def estimate_tokens(body: Mapping[str, Any]) -> int:
    """Tokens a chat-completions ``body`` costs at admission (prompt plus completion budget)."""
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    return estimate_prompt_tokens(body.get("messages")) + completion_budget(max_tokens)
