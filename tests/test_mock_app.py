"""The mock's HTTP behaviour, in-process: ``create_app`` served by aiohttp's ``TestServer``.

Fast unit tests of every endpoint and error path. Rate limits and the report card run on a fake
clock passed to ``create_app``, so admissions and retry gaps are counted, never timed. What needs
a real subprocess (CLI, shutdown, client hang-ups) is in ``test_mock_server.py``.
"""

from __future__ import annotations

import asyncio
import json
import re

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from conftest import FakeClock

from paradigm_kit.mock import MockConfig, create_app
from paradigm_kit.mock.replies import (
    ENGLISH_TEMPLATES,
    FRENCH_TEMPLATES,
    completion_body,
    completion_payload,
    make_reply,
)
from paradigm_kit.seed import GREETING_PROMPT as FRENCH_PROMPT  # the seed's
from paradigm_kit.seed import SEED_NAMES

API_KEY = "unit-test-key-0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
ENGLISH_PROMPT = "Say hello to the new user on Paradigm! Give a short, highly personalised one-sentence welcome to: {name}"


def chat(content: str = "Hello", **fields: object) -> dict:
    return {"model": "alfred-4.2", "messages": [{"role": "user", "content": content}], **fields}


def run_app(scenario, *, clock=None, **config_fields):
    """Serve ``create_app(MockConfig(latency_s=0, **config_fields))``; run ``scenario(session, base)``."""
    config_fields.setdefault("latency_s", 0.0)
    app = create_app(MockConfig(**config_fields), **({"clock": clock} if clock else {}))

    async def main():
        async with TestServer(app) as server, aiohttp.ClientSession() as session:
            return await scenario(
                session, str(server.make_url("/api/v2")), str(server.make_url("/"))
            )

    return asyncio.run(main())


async def post(session, url, payload=None, *, headers=AUTH, data=None):
    """POST and return (status, headers, parsed JSON or None)."""
    body = json.dumps(payload).encode() if payload is not None else data
    send_headers = {"Content-Type": "application/json", **headers}
    async with session.post(url, data=body, headers=send_headers) as response:
        text = await response.text()
        return response.status, response.headers, json.loads(text) if text else None


async def get_json(session, url, headers=AUTH):
    async with session.get(url, headers=headers) as response:
        return response.status, response.headers, await response.json(content_type=None)


def assert_openai_error(body: dict, code: str | None = None) -> None:
    assert set(body) == {"error"}
    assert {"message", "type", "code"} <= set(body["error"])
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code


# --- chat completions ---------------------------------------------------------------------


def test_chat_completion_has_openai_shape():
    """A chat completion carries id, object, created, model, one choice and usage that adds up."""

    async def scenario(session, base, root):
        return await post(session, base + "/chat/completions", chat("Hello there"))

    status, headers, body = run_app(scenario)
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert isinstance(body["created"], int)
    assert body["model"] == "alfred-4.2"
    (choice,) = body["choices"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert "Hello there" in choice["message"]["content"]
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["completion_tokens"] == len(choice["message"]["content"].split())


@pytest.mark.parametrize(
    ("template", "sentences"),
    [
        pytest.param(FRENCH_PROMPT, FRENCH_TEMPLATES, id="french-seed-prompt"),
        pytest.param(ENGLISH_PROMPT, ENGLISH_TEMPLATES, id="english-prompt"),
    ],
)
def test_chat_greeting_prompt_greets_the_named_person(template, sentences):
    """The seed's greeting prompt gets one sentence naming the person; names get varied sentences."""

    async def scenario(session, base, root):
        replies = {}
        for name in SEED_NAMES:
            _, _, body = await post(
                session, base + "/chat/completions", chat(template.format(name=name))
            )
            replies[name] = body["choices"][0]["message"]["content"]
        return replies

    replies = run_app(scenario)
    for name, reply in replies.items():
        assert reply in {sentence.format(name=name) for sentence in sentences}  # its language
        assert reply.count(".") + reply.count("!") <= 2  # one sentence (a "!" may end a clause)
    sentence_shapes = {reply.replace(name, "{name}") for name, reply in replies.items()}
    assert len(sentence_shapes) >= 3


def test_chat_french_prompt_gets_french_reply_and_english_gets_english():
    """The greeting answers in the prompt's language."""

    async def scenario(session, base, root):
        _, _, fr = await post(
            session, base + "/chat/completions", chat(FRENCH_PROMPT.format(name="Zoé"))
        )
        _, _, en = await post(
            session, base + "/chat/completions", chat(ENGLISH_PROMPT.format(name="Zoé"))
        )
        return fr["choices"][0]["message"]["content"], en["choices"][0]["message"]["content"]

    french, english = run_app(scenario)
    assert re.search(r"\b(Bienvenue|bienvenue|Bonjour|Ravi)\b", french)
    assert re.search(r"\b(Welcome|welcome|Hello|Hi|Great)\b", english)


def test_chat_reply_is_deterministic():
    """The same prompt gets the same reply, from the same or another mock."""

    async def scenario(session, base, root):
        _, _, first = await post(
            session, base + "/chat/completions", chat("What is a token bucket?")
        )
        _, _, second = await post(
            session, base + "/chat/completions", chat("What is a token bucket?")
        )
        return first["choices"][0]["message"]["content"], second["choices"][0]["message"]["content"]

    first, second = run_app(scenario)
    other, _ = run_app(scenario)
    assert first == second == other


def test_chat_max_tokens_cuts_reply_with_finish_reason_length():
    """max_tokens cuts the reply to that many tokens and finish_reason becomes "length"."""

    async def scenario(session, base, root):
        _, _, full = await post(session, base + "/chat/completions", chat("Tell me something"))
        _, _, cut = await post(
            session, base + "/chat/completions", chat("Tell me something", max_tokens=3)
        )
        return full, cut

    full, cut = run_app(scenario)
    assert cut["usage"]["completion_tokens"] == 3
    assert cut["choices"][0]["finish_reason"] == "length"
    assert full["choices"][0]["message"]["content"].startswith(
        cut["choices"][0]["message"]["content"]
    )
    assert full["usage"]["completion_tokens"] > 3


def test_chat_max_tokens_larger_than_reply_stops_normally():
    """A max_tokens the reply fits in changes nothing: finish_reason "stop"."""

    async def scenario(session, base, root):
        return await post(session, base + "/chat/completions", chat("Hi", max_tokens=150))

    _, _, body = run_app(scenario)
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] < 150


def test_completion_body_matches_completion_payload():
    """The hot path's precomputed serialisation equals the readable payload builder."""
    reply = make_reply('Quote "this" — é\n', 4)
    fast = json.loads(completion_body("chatcmpl-x1", 123, "alfred-4.2", reply, 9))
    assert fast == completion_payload("chatcmpl-x1", 123, "alfred-4.2", reply, 9)


# --- streaming ----------------------------------------------------------------------------


async def read_sse(session, url, payload):
    async with session.post(url, json=payload, headers=AUTH) as response:
        assert response.status == 200
        content_type = response.headers["Content-Type"]
        text = await response.text()
    events = [block for block in text.split("\n\n") if block]
    return content_type, events


def test_stream_sends_sse_chunks_ending_with_done():
    """stream=true: SSE data events, role first, content in several chunks, finish_reason, [DONE]."""

    async def scenario(session, base, root):
        content_type, events = await read_sse(
            session, base + "/chat/completions", chat("Stream me", stream=True)
        )
        _, _, whole = await post(session, base + "/chat/completions", chat("Stream me"))
        return content_type, events, whole

    content_type, events, whole = run_app(scenario)
    assert content_type.startswith("text/event-stream")
    assert all(event.startswith("data: ") for event in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(event[len("data: ") :]) for event in events[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    contents = [c["choices"][0]["delta"].get("content") for c in chunks[1:-1]]
    assert len(contents) >= 2
    assert "".join(contents) == whole["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])


def test_stream_include_usage_adds_a_usage_chunk_and_respects_max_tokens():
    """stream_options.include_usage adds a last chunk with usage; max_tokens gives "length"."""

    async def scenario(session, base, root):
        payload = chat(
            "Stream me please", stream=True, max_tokens=2, stream_options={"include_usage": True}
        )
        return await read_sse(session, base + "/chat/completions", payload)

    _, events = run_app(scenario)
    chunks = [json.loads(event[len("data: ") :]) for event in events[:-1]]
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 2
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert len([c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]) == 2


# --- models and embeddings ------------------------------------------------------------------


def test_models_lists_alfred_and_more_in_openai_list_shape():
    """GET /models is an OpenAI list with alfred-4.2 and at least one other model."""

    async def scenario(session, base, root):
        listed = await get_json(session, base + "/models")
        one = await get_json(session, base + "/models/alfred-4.2")
        missing = await get_json(session, base + "/models/nope")
        return listed, one, missing

    (status, _, body), (one_status, _, one), (missing_status, _, missing) = run_app(scenario)
    assert status == 200 and body["object"] == "list"
    ids = [model["id"] for model in body["data"]]
    assert "alfred-4.2" in ids and len(ids) >= 2
    assert all(model["object"] == "model" for model in body["data"])
    assert one_status == 200 and one["id"] == "alfred-4.2"
    assert missing_status == 404
    assert_openai_error(missing, "model_not_found")


def test_models_list_honours_models_flag():
    """--models replaces the served list, and chat refuses a model not in it."""

    async def scenario(session, base, root):
        listed = await get_json(session, base + "/models")
        refused = await post(session, base + "/chat/completions", chat())
        return listed, refused

    (_, _, listed), (status, _, body) = run_app(scenario, models=("tiny-1", "tiny-2"))
    assert [m["id"] for m in listed["data"]] == ["tiny-1", "tiny-2"]
    assert status == 404
    assert_openai_error(body, "model_not_found")


def test_embeddings_are_deterministic_unit_vectors():
    """POST /embeddings gives one vector per input, the same for the same text."""

    async def scenario(session, base, root):
        payload = {"model": "alfred-4.2", "input": ["a", "b", "a"]}
        return await post(session, base + "/embeddings", payload)

    status, _, body = run_app(scenario)
    assert status == 200
    vectors = [item["embedding"] for item in body["data"]]
    assert len(vectors) == 3 and vectors[0] == vectors[2] != vectors[1]
    assert abs(sum(x * x for x in vectors[0]) - 1.0) < 1e-3


# --- errors ---------------------------------------------------------------------------------

BAD_REQUESTS = [
    pytest.param(None, b"{not json", 400, "invalid_json", id="bad-json"),
    pytest.param(None, b"\xff\xfe", 400, "invalid_json", id="not-utf8"),
    pytest.param([1, 2], None, 400, "invalid_type", id="body-not-an-object"),
    pytest.param(
        {"model": "alfred-4.2"}, None, 400, "missing_required_parameter", id="no-messages"
    ),
    pytest.param(
        {"model": "alfred-4.2", "messages": "hi"},
        None,
        400,
        "invalid_type",
        id="messages-not-a-list",
    ),
    pytest.param(
        {"model": "alfred-4.2", "messages": []}, None, 400, "invalid_type", id="messages-empty"
    ),
    pytest.param(
        {"model": "alfred-4.2", "messages": ["hi"]},
        None,
        400,
        "invalid_type",
        id="message-not-an-object",
    ),
    pytest.param(
        {"model": "alfred-4.2", "messages": [{"role": "boss", "content": "x"}]},
        None,
        400,
        "invalid_value",
        id="bad-role",
    ),
    pytest.param(
        {"model": "alfred-4.2", "messages": [{"role": "user", "content": 3}]},
        None,
        400,
        "invalid_type",
        id="content-not-text",
    ),
    pytest.param(
        {"messages": [{"role": "user", "content": "x"}]},
        None,
        400,
        "missing_required_parameter",
        id="no-model",
    ),
    pytest.param(chat(temperature=3), None, 400, "invalid_value", id="temperature-too-high"),
    pytest.param(
        chat(temperature="warm"), None, 400, "invalid_value", id="temperature-not-a-number"
    ),
    pytest.param(chat(top_p=1.5), None, 400, "invalid_value", id="top-p-too-high"),
    pytest.param(chat(max_tokens=0), None, 400, "invalid_value", id="max-tokens-zero"),
    pytest.param(chat(max_tokens=-5), None, 400, "invalid_value", id="max-tokens-negative"),
    pytest.param(chat(max_tokens=2.5), None, 400, "invalid_value", id="max-tokens-not-an-integer"),
    pytest.param(chat(n=2), None, 400, "invalid_value", id="n-not-one"),
    pytest.param(chat(stream="yes"), None, 400, "invalid_type", id="stream-not-a-boolean"),
    pytest.param({**chat(), "model": "gpt-99"}, None, 404, "model_not_found", id="unknown-model"),
]


@pytest.mark.parametrize(("payload", "raw", "status", "code"), BAD_REQUESTS)
def test_chat_bad_request_is_refused_with_openai_error(payload, raw, status, code):
    """A client's mistake is a 400 (404 for an unknown model) with an OpenAI error, never a 500."""

    async def scenario(session, base, root):
        return await post(session, base + "/chat/completions", payload, data=raw)

    got_status, _, body = run_app(scenario)
    assert got_status == status
    assert_openai_error(body, code)


@pytest.mark.parametrize(
    ("headers", "config", "code"),
    [
        pytest.param({}, {}, "missing_api_key", id="no-key"),
        pytest.param({"Authorization": "Bearer "}, {}, "missing_api_key", id="empty-key"),
        pytest.param({"Authorization": "Basic abc"}, {}, "missing_api_key", id="not-bearer"),
        pytest.param(AUTH, {"api_key": "the-right-key"}, "invalid_api_key", id="wrong-key"),
    ],
)
def test_chat_without_accepted_key_is_401(headers, config, code):
    """A missing key, or a key other than --api-key, is a 401 with an OpenAI error."""

    async def scenario(session, base, root):
        chat_answer = await post(session, base + "/chat/completions", chat(), headers=headers)
        models_answer = await get_json(session, base + "/models", headers=headers)
        return chat_answer, models_answer

    (status, _, body), (models_status, _, models_body) = run_app(scenario, **config)
    assert status == 401 and models_status == 401
    assert_openai_error(body, code)
    assert_openai_error(models_body, code)
    assert body["error"]["type"] == "authentication_error"


def test_chat_with_the_accepted_key_is_served():
    """With --api-key, that key is accepted."""

    async def scenario(session, base, root):
        headers = {"Authorization": "Bearer the-right-key"}
        return await post(session, base + "/chat/completions", chat(), headers=headers)

    status, _, _ = run_app(scenario, api_key="the-right-key")
    assert status == 200


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        pytest.param("GET", "/api/v2/chat/completions", "POST", id="get-chat"),
        pytest.param("PUT", "/api/v2/chat/completions", "POST", id="put-chat"),
        pytest.param("POST", "/api/v2/models", "GET", id="post-models"),
        pytest.param("GET", "/_mock/reset", "POST", id="get-reset"),
    ],
)
def test_wrong_method_is_405_with_allow_header(method, path, allowed):
    """A wrong method is a 405 with an Allow header and an OpenAI error body."""

    async def scenario(session, base, root):
        async with session.request(method, root.rstrip("/") + path, headers=AUTH) as response:
            return response.status, response.headers, await response.json(content_type=None)

    status, headers, body = run_app(scenario)
    assert status == 405
    assert headers["Allow"] == allowed
    assert_openai_error(body, "method_not_allowed")


def test_unknown_path_is_404_with_openai_error():
    """A path the API does not have is a 404 with an OpenAI error body."""

    async def scenario(session, base, root):
        return await get_json(session, base + "/nothing/here")

    status, _, body = run_app(scenario)
    assert status == 404
    assert_openai_error(body, "not_found")


# --- rate limits (fake clock: counted, not timed) -------------------------------------------

RESET_FORMAT = re.compile(r"^\d+\.\d{3}s$")


async def send_many(session, base, count, headers=AUTH, **fields):
    answers = []
    for index in range(count):
        answers.append(
            await post(
                session, base + "/chat/completions", chat(f"req {index}", **fields), headers=headers
            )
        )
    return answers


def test_rpm_admits_one_seconds_worth_then_429_with_retry_after_and_headers():
    """--rpm 120 admits a burst of 2 at one instant; the rest get 429 + Retry-After + x-ratelimit-*."""
    clock = FakeClock()

    async def scenario(session, base, root):
        return await send_many(session, base, 6)

    answers = run_app(scenario, clock=clock, rpm=120)
    statuses = [status for status, _, _ in answers]
    assert statuses == [200, 200, 429, 429, 429, 429]
    for _, headers, _ in answers:
        assert headers["x-ratelimit-limit-requests"] == "120"
        assert RESET_FORMAT.match(headers["x-ratelimit-reset-requests"])
        assert int(headers["x-ratelimit-remaining-requests"]) >= 0
    _, headers, body = answers[2]
    assert headers["Retry-After"] == "1"  # 0.5 s to wait, rounded up to whole seconds, at least 1
    assert headers["retry-after-ms"] == "500"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert_openai_error(body, "rate_limit_exceeded")
    assert "x-ratelimit-limit-tokens" not in headers


def test_rate_limited_429_does_not_consume_the_bucket():
    """Refused requests charge nothing: after the refill of exactly one unit, one request passes."""
    clock = FakeClock()

    async def scenario(session, base, root):
        first = await send_many(session, base, 10)  # 1 admitted, 9 refused
        clock.advance(1.0)  # --rpm 60 refills exactly one request per second
        second = await send_many(session, base, 3)
        return first, second

    first, second = run_app(scenario, clock=clock, rpm=60)
    assert [s for s, _, _ in first].count(200) == 1
    assert [s for s, _, _ in second] == [200, 429, 429]


def test_rpm_admissions_per_window_match_the_bucket():
    """Over 10 simulated seconds at --rpm 120, admitted = burst (2) + refill (2/s * 10 s)."""
    clock = FakeClock()

    async def scenario(session, base, root):
        admitted = 0
        for _ in range(81):  # one attempt every 0.125 s (exact in binary), t = 0 to 10 s
            status, _, _ = await post(session, base + "/chat/completions", chat("x"))
            admitted += status == 200
            clock.advance(0.125)
        return admitted

    assert run_app(scenario, clock=clock, rpm=120) == 2 + 20


def test_tpm_limits_by_prompt_plus_max_tokens_with_token_headers():
    """--tpm charges prompt tokens + max_tokens and sends the -tokens header trio."""
    clock = FakeClock()

    async def scenario(session, base, root):
        return await send_many(session, base, 3, max_tokens=40)

    # capacity 60 tokens (3600/60); each request costs 4 + 2 (prompt) + 40 (max_tokens) = 46
    answers = run_app(scenario, clock=clock, tpm=3600)
    assert [status for status, _, _ in answers] == [200, 429, 429]
    for _, headers, _ in answers:
        assert headers["x-ratelimit-limit-tokens"] == "3600"
        assert RESET_FORMAT.match(headers["x-ratelimit-reset-tokens"])
    assert answers[0][2]["usage"]["prompt_tokens"] == 6
    assert answers[1][1]["x-ratelimit-remaining-tokens"] == "14"


def test_per_key_limit_is_per_key_and_global_limit_is_shared():
    """--rpm binds each key apart; --global-rpm binds all keys together."""
    key_a = {"Authorization": "Bearer key-a"}
    key_b = {"Authorization": "Bearer key-b"}

    async def scenario(session, base, root):
        answers = []
        for headers in (key_a, key_a, key_b):
            status, _, _ = await post(session, base + "/chat/completions", chat(), headers=headers)
            answers.append(status)
        return answers

    assert run_app(scenario, clock=FakeClock(), rpm=60) == [200, 429, 200]
    assert run_app(scenario, clock=FakeClock(), global_rpm=60) == [200, 429, 429]


def test_no_rate_limit_headers_without_limits():
    """Without any limit, answers carry no x-ratelimit-* headers."""

    async def scenario(session, base, root):
        return await post(session, base + "/chat/completions", chat())

    _, headers, _ = run_app(scenario)
    assert not [name for name in headers if name.lower().startswith("x-ratelimit")]


# --- faults ---------------------------------------------------------------------------------


async def statuses_for_keys(session, base, keys):
    statuses = []
    for key in keys:
        headers = {**AUTH, "Idempotency-Key": key}
        try:
            status, _, _ = await post(session, base + "/chat/completions", chat(), headers=headers)
        except aiohttp.ClientConnectionError:
            status = "dropped"
        statuses.append(status)
    return statuses


def test_faults_are_a_function_of_seed_identity_and_attempt():
    """Two mocks with the same seed fail the same identities; another seed fails others."""
    keys = [f"request-{i}" for i in range(40)]

    async def scenario(session, base, root):
        return await statuses_for_keys(session, base, keys)

    first = run_app(scenario, seed=7, error_rate=0.3, drop_rate=0.1)
    second = run_app(scenario, seed=7, error_rate=0.3, drop_rate=0.1)
    other_seed = run_app(scenario, seed=8, error_rate=0.3, drop_rate=0.1)
    assert first == second
    assert first != other_seed
    assert {200, "dropped"} <= set(first)
    assert set(first) - {200, "dropped"} <= {429, 500, 503}


def test_retry_with_same_idempotency_key_is_a_new_attempt_and_can_succeed():
    """Each retry of an identity is the next attempt (a new draw): every request ends up served."""

    async def scenario(session, base, root):
        attempts_needed = []
        for index in range(20):
            headers = {**AUTH, "Idempotency-Key": f"job-{index}"}
            for attempt in range(1, 30):
                status, answer_headers, _ = await post(
                    session, base + "/chat/completions", chat(), headers=headers
                )
                assert answer_headers["x-mock-attempt"] == str(attempt)
                if status == 200:
                    attempts_needed.append(attempt)
                    break
        _, _, stats = await get_json(session, root + "_mock/stats")
        return attempts_needed, stats

    attempts_needed, stats = run_app(scenario, seed=3, error_rate=0.5)
    assert len(attempts_needed) == 20
    assert max(attempts_needed) >= 2  # with a 50% error rate some requests needed retries
    assert stats["attempts_by_identity"] == {f"job-{i}": n for i, n in enumerate(attempts_needed)}
    assert stats["requests_by_status"]["200"] == 20


def test_identity_without_idempotency_key_is_the_body_hash():
    """Without Idempotency-Key, resending the same body counts as the next attempt."""

    async def scenario(session, base, root):
        attempts = []
        for content in ("same", "same", "other"):
            _, headers, _ = await post(session, base + "/chat/completions", chat(content))
            attempts.append(headers["x-mock-attempt"])
        return attempts

    assert run_app(scenario) == ["1", "2", "1"]


@pytest.mark.parametrize(
    ("status", "code", "has_retry_after"),
    [
        pytest.param(429, "rate_limit_exceeded", True, id="429"),
        pytest.param(503, "service_maintenance", True, id="503"),
        pytest.param(500, "internal_error", False, id="500"),
    ],
)
def test_injected_error_is_openai_shaped_with_retry_after_on_429_and_503(
    status, code, has_retry_after
):
    """Injected errors use their status and code; 429/503 carry Retry-After = --retry-after."""

    async def scenario(session, base, root):
        return await post(session, base + "/chat/completions", chat())

    got_status, headers, body = run_app(
        scenario, error_rate=1.0, error_statuses=(status,), retry_after_s=2
    )
    assert got_status == status
    assert_openai_error(body, code)
    assert headers.get("Retry-After") == ("2" if has_retry_after else None)


def test_injected_retry_after_is_whole_seconds_with_exact_milliseconds():
    """A fractional --retry-after is sent as whole seconds (rounded up) plus exact retry-after-ms."""

    async def scenario(session, base, root):
        return await post(session, base + "/chat/completions", chat())

    _, headers, _ = run_app(scenario, error_rate=1.0, error_statuses=(503,), retry_after_s=0.5)
    assert headers["Retry-After"] == "1"
    assert headers["retry-after-ms"] == "500"


def test_drop_fault_closes_the_connection_without_answer():
    """A dropped attempt reaches an aiohttp client as a disconnection; the mock counts it as 444."""

    async def scenario(session, base, root):
        with pytest.raises(aiohttp.ClientConnectionError) as caught:
            await post(session, base + "/chat/completions", chat())
        _, _, stats = await get_json(session, root + "_mock/stats")
        return caught.value, stats

    error, stats = run_app(scenario, drop_rate=1.0)
    assert isinstance(error, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError))
    assert stats["requests_by_status"] == {"444": 1}


def test_invalid_request_is_refused_before_any_fault():
    """Validation comes first: a bad request is a 400 even when every attempt would fault."""

    async def scenario(session, base, root):
        return await post(session, base + "/chat/completions", {"model": "alfred-4.2"})

    status, _, _ = run_app(scenario, error_rate=1.0)
    assert status == 400


# --- stats, log, reset, report card, runs ---------------------------------------------------


def test_stats_count_statuses_peak_concurrency_and_reset_clears_them():
    """/_mock/stats counts by status and peak concurrency; POST /_mock/reset clears everything."""

    async def scenario(session, base, root):
        await asyncio.gather(
            *(post(session, base + "/chat/completions", chat(f"c{i}")) for i in range(8))
        )
        await post(session, base + "/chat/completions", {"model": "alfred-4.2"})
        _, _, before = await get_json(session, root + "_mock/stats")
        status, _, _ = await post(session, root + "_mock/reset", {})
        _, _, after = await get_json(session, root + "_mock/stats")
        _, _, log_after = await get_json(session, root + "_mock/log")
        return before, status, after, log_after

    before, reset_status, after, log_after = run_app(scenario, latency_s=0.5)
    assert before["requests_by_status"] == {"200": 8, "400": 1}
    assert before["total"] == 9 and before["in_flight"] == 0
    assert before["peak_concurrency"] == 8
    assert before["attempts_histogram"] == {"1": 9}
    assert before["config"]["latency_s"] == 0.5
    assert reset_status == 200
    assert (
        after["requests_by_status"] == {} and after["total"] == 0 and after["peak_concurrency"] == 0
    )
    assert log_after["records"] == []


def test_log_records_each_attempt_with_times_status_and_retry_after():
    """/_mock/log lists each attempt: identity, attempt, t_start <= t_end, status, retry_after_s, key hash."""
    clock = FakeClock()

    async def scenario(session, base, root):
        headers = {**AUTH, "Idempotency-Key": "only-one"}
        await post(session, base + "/chat/completions", chat(), headers=headers)
        clock.advance(2.5)
        await post(session, base + "/chat/completions", chat(), headers=headers)
        _, _, log = await get_json(session, root + "_mock/log")
        return log

    log = run_app(scenario, clock=clock, error_rate=1.0, error_statuses=(503,), retry_after_s=2)
    records = log["records"]
    assert [(r["identity"], r["attempt"], r["status"], r["retry_after_s"]) for r in records] == [
        ("only-one", 1, 503, 2.0),
        ("only-one", 2, 503, 2.0),
    ]
    assert records[1]["t_start"] - records[0]["t_end"] == pytest.approx(2.5)
    assert all(r["t_start"] <= r["t_end"] for r in records)
    assert len(records[0]["key_hash"]) == 12 and API_KEY not in json.dumps(log)


def test_log_is_a_bounded_ring_buffer_per_run():
    """/_mock/log keeps only the last --log-limit attempts of a run."""

    async def scenario(session, base, root):
        await send_many(session, base, 7)
        _, _, log = await get_json(session, root + "_mock/log")
        _, _, stats = await get_json(session, root + "_mock/stats")
        return log, stats

    log, stats = run_app(scenario, log_limit=5)
    assert len(log["records"]) == 5
    assert stats["total"] == 7


def test_runs_are_isolated_by_run_header_or_key_hash_and_never_show_raw_keys():
    """?run= restricts stats, log and report to one run: the X-Run-Id header, else the key hash."""
    key_b = "second-key-abcdef"

    async def scenario(session, base, root):
        await post(session, base + "/chat/completions", chat("a"))
        await post(
            session,
            base + "/chat/completions",
            chat("b"),
            headers={"Authorization": f"Bearer {key_b}"},
        )
        await post(
            session,
            base + "/chat/completions",
            chat("c"),
            headers={**AUTH, "X-Run-Id": "exercise-1"},
        )
        await post(
            session,
            base + "/chat/completions",
            chat("d"),
            headers={**AUTH, "X-Run-Id": "exercise-1"},
        )
        _, _, everything = await get_json(session, root + "_mock/stats")
        views = {}
        for run in [*everything["runs"], "no-such-run"]:
            views[run] = [
                (await get_json(session, root + f"_mock/{what}?run={run}"))[2]
                for what in ("stats", "log", "report")
            ]
        dumps = json.dumps(everything) + json.dumps(views)
        return everything, views, dumps

    everything, views, dumps = run_app(scenario)
    assert API_KEY not in dumps and key_b not in dumps
    assert set(everything["runs"]) == {"exercise-1", *everything["keys"]}
    assert len(everything["keys"]) == 2
    run_stats, run_log, run_report = views["exercise-1"]
    assert run_stats["total"] == 2 and run_stats["run"] == "exercise-1"
    assert len(run_log["records"]) == 2 and {r["run"] for r in run_log["records"]} == {"exercise-1"}
    assert run_report["requests"] == 2
    key_runs = [run for run in everything["runs"] if run != "exercise-1"]
    assert sorted(views[run][0]["total"] for run in key_runs) == [1, 1]
    assert views["no-such-run"][0]["total"] == 0
    assert views["no-such-run"][2]["verdict"].startswith("No requests")


def grade(clock, script, **config_fields):
    """Play ``script`` [(idempotency key, body, seconds to advance before)] and return the report."""

    async def scenario(session, base, root):
        for key, payload, wait_s in script:
            clock.advance(wait_s)
            await post(
                session,
                base + "/chat/completions",
                payload,
                headers={**AUTH, "Idempotency-Key": key},
            )
        _, _, report = await get_json(session, root + "_mock/report")
        return report

    return run_app(scenario, clock=clock, **config_fields)


def problem_counts(report):
    return {
        name: problem["count"] for name, problem in report["problems"].items() if problem["count"]
    }


def test_report_flags_retry_before_retry_after():
    """Retrying a 429 sooner than its Retry-After is reported, with the gap and the wait asked."""
    report = grade(
        FakeClock(),
        [("r1", chat(), 0), ("r1", chat(), 0.4), ("r2", chat(), 0), ("r2", chat(), 2.0)],
        error_rate=1.0,
        error_statuses=(429,),
        retry_after_s=2,
    )
    assert problem_counts(report) == {"retried_before_retry_after": 1}
    (example,) = report["problems"]["retried_before_retry_after"]["examples"]
    assert (
        example["identity"] == "r1"
        and example["gap_s"] == pytest.approx(0.4)
        and example["retry_after_s"] == 2
    )
    assert "Retry-After" in report["verdict"]


def test_report_flags_retry_of_a_4xx_that_cannot_succeed():
    """Resending a request that got a 400 is reported as a retry of a non-retryable 4xx."""
    bad = {"model": "alfred-4.2"}
    report = grade(FakeClock(), [("b1", bad, 0), ("b1", bad, 1.0)])
    assert problem_counts(report) == {"retried_non_retryable_4xx": 1}


def test_report_flags_retry_without_backoff_and_fixed_delays():
    """A retry under --min-backoff after a 500, or retries at a fixed delay, is "without backoff"."""
    immediate = grade(
        FakeClock(), [("x", chat(), 0), ("x", chat(), 0.001)], error_rate=1.0, error_statuses=(500,)
    )
    fixed = grade(
        FakeClock(),
        [("y", chat(), 0)] + [("y", chat(), 0.3)] * 4,
        error_rate=1.0,
        error_statuses=(500,),
    )
    growing = grade(
        FakeClock(),
        [("z", chat(), 0)] + [("z", chat(), 0.1 * 2**i) for i in range(4)],
        error_rate=1.0,
        error_statuses=(500,),
    )
    assert problem_counts(immediate) == {"retried_without_backoff": 1}
    assert problem_counts(fixed) == {"retried_without_backoff": 1}
    assert problem_counts(growing) == {}


def test_report_flags_too_many_attempts_once_per_request():
    """More attempts than --max-attempts for one request is reported once."""
    script = [("t", chat(), 0)] + [("t", chat(), 0.1 * 2**i) for i in range(5)]
    report = grade(FakeClock(), script, error_rate=1.0, error_statuses=(500,), max_attempts=3)
    assert problem_counts(report) == {"too_many_attempts": 1}
    assert report["attempts"] == 6 and report["requests"] == 1 and report["retries"] == 5


def test_report_of_a_well_behaved_client_is_clean():
    """Waiting Retry-After and backing off exponentially gives a clean verdict."""
    script = [("g", chat(), 0), ("g", chat(), 1.0), ("g", chat(), 1.0), ("h", chat(), 0)]
    report = grade(
        FakeClock(), script, seed=1, error_rate=0.5, error_statuses=(503,), retry_after_s=1
    )
    assert problem_counts(report) == {}
    assert report["verdict"].startswith("No mistakes seen")


def test_models_answer_carries_the_rate_limit_headers_without_charging():
    """GET /models tells the limits (x-ratelimit-*) and takes nothing from the bucket."""
    clock = FakeClock()

    async def scenario(session, base, root):
        listing = [await get_json(session, base + "/models") for _ in range(5)]
        return listing, await send_many(session, base, 3)

    listing, chats = run_app(scenario, clock=clock, rpm=120)
    for status, headers, _ in listing:
        assert status == 200
        assert headers["x-ratelimit-limit-requests"] == "120"
        assert headers["x-ratelimit-remaining-requests"] == "2"
    assert [status for status, _, _ in chats] == [200, 200, 429]
