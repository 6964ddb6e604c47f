"""The official ``openai`` package as a client of the mock: answers parse, errors map to its classes.

The mock is only useful if code written for the real API runs against it unchanged; the SDK's
strict parsing and its status-to-exception mapping are the sharpest check of that.
"""

from __future__ import annotations

import asyncio

import openai
import pytest

FRENCH_PROMPT = (
    "Dis bonjour au nouvel utilisateur sur Paradigm ! "
    "Donne un accueil court d'une phrase hautement personnalisé à : Alice"
)


def client_for(base_url: str, api_key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=10)


def test_openai_chat_completion_parses(mock_url, api_key):
    """AsyncOpenAI parses a non-streamed completion: content, finish_reason, usage."""

    async def scenario():
        async with client_for(mock_url, api_key) as client:
            return await client.chat.completions.create(
                model="alfred-4.2",
                messages=[{"role": "user", "content": FRENCH_PROMPT}],
                temperature=0.4,
                max_tokens=150,
            )

    completion = asyncio.run(scenario())
    assert "Alice" in completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert (
        completion.usage.total_tokens
        == completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


def test_openai_stream_parses_into_several_chunks(mock_url, api_key):
    """AsyncOpenAI iterates the SSE stream: several content deltas, then finish_reason."""

    async def scenario():
        async with client_for(mock_url, api_key) as client:
            stream = await client.chat.completions.create(
                model="alfred-4.2",
                messages=[{"role": "user", "content": "Hello"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            return [chunk async for chunk in stream]

    chunks = asyncio.run(scenario())
    deltas = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    finish_reasons = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert len(deltas) >= 2
    assert finish_reasons == ["stop"]
    assert chunks[-1].usage.completion_tokens == len(deltas)


def test_openai_models_list(mock_url, api_key):
    """AsyncOpenAI lists the mock's models."""

    async def scenario():
        async with client_for(mock_url, api_key) as client:
            return [model.id async for model in client.models.list()]

    assert "alfred-4.2" in asyncio.run(scenario())


async def create_once(base_url: str, key: str, **fields):
    async with client_for(base_url, key) as client:
        request = {"model": "alfred-4.2", "messages": [{"role": "user", "content": "x"}], **fields}
        return await client.chat.completions.create(**request)


@pytest.mark.parametrize(
    ("fields", "error_class"),
    [
        pytest.param({"model": "no-such-model"}, openai.NotFoundError, id="404-unknown-model"),
        pytest.param({"temperature": 5}, openai.BadRequestError, id="400-bad-temperature"),
    ],
)
def test_openai_error_classes_map_client_mistakes(mock_url, api_key, fields, error_class):
    """The mock's 404 and 400 raise the SDK's NotFoundError and BadRequestError."""
    with pytest.raises(error_class) as caught:
        asyncio.run(create_once(mock_url, api_key, **fields))
    assert caught.value.body["message"]


def test_openai_wrong_key_raises_authentication_error(start_mock_server):
    """A key other than --api-key raises the SDK's AuthenticationError (401)."""
    base_url = start_mock_server(api_key="the-only-key")
    with pytest.raises(openai.AuthenticationError):
        asyncio.run(create_once(base_url, "another-key"))
    assert asyncio.run(create_once(base_url, "the-only-key")).choices


def test_openai_rate_limit_raises_rate_limit_error(start_mock_server, api_key):
    """Over --rpm, the SDK raises RateLimitError and sees Retry-After."""
    base_url = start_mock_server(rpm=1)  # one request, then one more per minute

    async def scenario():
        await create_once(base_url, api_key)
        await create_once(base_url, api_key)

    with pytest.raises(openai.RateLimitError) as caught:
        asyncio.run(scenario())
    assert int(caught.value.response.headers["Retry-After"]) >= 1
    assert caught.value.response.headers["x-ratelimit-limit-requests"] == "1"
