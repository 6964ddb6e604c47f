"""The token estimate both sides share: its rules, the mock charging exactly it, and a batch told
the mock's tokens-per-minute limit never throttled (requests without ``max_tokens`` included)."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from conftest import FakeClock

from paradigm_kit.batch import run_batch
from paradigm_kit.mock import MockConfig, create_app, mock_stats
from paradigm_kit.tokens import (
    DEFAULT_COMPLETION_TOKENS,
    completion_budget,
    estimate_prompt_tokens,
    estimate_text_tokens,
    estimate_tokens,
)


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        pytest.param("", 0, id="empty-is-free"),
        pytest.param("a", 1, id="one-char-is-one-token"),
        pytest.param("abcd", 1, id="four-chars-one-token"),
        pytest.param("abcde", 2, id="rounds-up"),
        pytest.param("é" * 8, 2, id="counts-characters-not-bytes"),
    ],
)
def test_estimate_text_tokens_is_characters_over_four_rounded_up(text, tokens):
    """ceil(characters / 4)."""
    assert estimate_text_tokens(text) == tokens


@pytest.mark.parametrize(
    ("messages", "tokens"),
    [
        pytest.param([{"role": "user", "content": "a" * 40}], 4 + 10, id="string-content"),
        pytest.param(
            [{"role": "user", "content": [{"type": "text", "text": "a" * 20}] * 2}],
            4 + 10,
            id="content-parts-counted-together",
        ),
        pytest.param(
            [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                }
            ],
            4 + 1,
            id="parts-rounded-once-per-message",
        ),
        pytest.param(
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            4,
            id="non-text-parts-free",
        ),
        pytest.param([{"role": "assistant", "content": None}], 4, id="no-content-framing-only"),
        pytest.param([{"role": "user", "content": "hi"}] * 3, 3 * (4 + 1), id="per-message"),
        pytest.param("not a list", 0, id="not-a-list"),
        pytest.param(["not a message"], 0, id="not-a-message"),
    ],
)
def test_estimate_prompt_tokens_frames_each_message(messages, tokens):
    """4 per message plus the message's text (a string or its parts' texts) / 4, rounded up."""
    assert estimate_prompt_tokens(messages) == tokens


@pytest.mark.parametrize(
    ("max_tokens", "budget"),
    [
        pytest.param(7, 7, id="told"),
        pytest.param(None, DEFAULT_COMPLETION_TOKENS, id="absent"),
        pytest.param(0, DEFAULT_COMPLETION_TOKENS, id="zero-is-unset"),
        pytest.param(True, DEFAULT_COMPLETION_TOKENS, id="bool-is-not-a-number"),
        pytest.param("12", DEFAULT_COMPLETION_TOKENS, id="string-is-not-a-number"),
    ],
)
def test_completion_budget_is_max_tokens_or_the_default(max_tokens, budget):
    """A positive int max_tokens is charged as is; anything else charges the default."""
    assert completion_budget(max_tokens) == budget


def test_estimate_tokens_prefers_max_completion_tokens():
    """max_completion_tokens wins over max_tokens, as the mock reads it."""
    messages = [{"role": "user", "content": "a" * 40}]
    assert estimate_tokens({"messages": messages, "max_tokens": 7}) == 14 + 7
    assert (
        estimate_tokens({"messages": messages, "max_completion_tokens": 9, "max_tokens": 7}) == 23
    )
    assert estimate_tokens({"messages": messages}) == 14 + DEFAULT_COMPLETION_TOKENS


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            {"messages": [{"role": "user", "content": "Hello there"}]}, id="no-max-tokens"
        ),
        pytest.param(
            {"messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 30},
            id="max-tokens",
        ),
        pytest.param(
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hello " * 9}]}]},
            id="content-parts",
        ),
        pytest.param(
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi"},
                ],
                "max_completion_tokens": 12,
            },
            id="two-messages-max-completion-tokens",
        ),
    ],
)
def test_mock_charges_exactly_the_shared_estimate(body):
    """The tokens the mock takes from its bucket are estimate_tokens(body), to the token."""
    tokens_per_minute = 60_000  # a bucket of 1000 tokens, refilled only when the clock moves

    async def scenario():
        app = create_app(MockConfig(latency_s=0.0, tpm=tokens_per_minute), clock=FakeClock())
        async with TestServer(app) as server, aiohttp.ClientSession() as session:
            url = str(server.make_url("/api/v2/chat/completions"))
            payload = {"model": "alfred-4.2", **body}
            headers = {"Authorization": "Bearer k", "Content-Type": "application/json"}
            async with session.post(url, data=json.dumps(payload), headers=headers) as response:
                assert response.status == 200
                return int(response.headers["x-ratelimit-remaining-tokens"])

    assert asyncio.run(scenario()) == tokens_per_minute // 60 - estimate_tokens(body)


def test_run_batch_without_max_tokens_told_the_tpm_gets_no_429(start_mock_server, tmp_path):
    """Requests that omit max_tokens, under --tpm, told the same limit: no 429 at all (the
    client and the mock charge the same default completion budget and the same prompt)."""
    tokens_per_minute = 66_000  # 1100 tokens/s: about ten of these requests a second
    base_url = start_mock_server(tpm=tokens_per_minute)
    requests = [
        {"id": f"r{i}", "messages": [{"role": "user", "content": f"Say hello to user {i}"}]}
        for i in range(40)
    ]
    summary = asyncio.run(
        run_batch(
            requests,
            tmp_path / "out.jsonl",
            base_url=base_url,
            api_key="test-key-not-a-secret",
            concurrency=20,
            max_tokens_per_minute=tokens_per_minute,
            progress=False,
        )
    )
    assert summary.succeeded == 40
    assert mock_stats(base_url)["requests_by_status"] == {"200": 40}
