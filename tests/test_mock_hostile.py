"""The mock under a hostile client: a client's mistake is never a 5xx, every error is JSON.

A real mock subprocess (the CLI's own server, so the connection-level errors aiohttp answers
before any handler are covered too), hit with generated bodies, headers and parameters
(hypothesis), then with the specific reproductions of issue 10 as rules.
"""

from __future__ import annotations

import gzip
import json
import socket

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paradigm_kit.mock import mock_stats, running_mock

KEY = "hostile-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def base_url():
    with running_mock(latency_s=0.0, quota_requests=None) as url:
        yield url


@pytest.fixture(scope="module")
def http():
    with requests.Session() as session:
        yield session


def assert_json_error_or_success(response: requests.Response) -> None:
    assert response.status_code < 500, response.text[:300]
    assert response.headers.get("Content-Type", "").startswith("application/json"), response.text[
        :300
    ]
    payload = response.json()
    if response.status_code >= 400:
        assert isinstance(payload.get("error"), dict) and "message" in payload["error"]


# --- the property -------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
messages = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "role": st.sampled_from(["user", "system", "assistant", "tool"]) | json_values,
            "content": st.text(max_size=30)
            | st.lists(
                st.fixed_dictionaries(
                    {}, optional={"type": st.just("text") | json_values, "text": json_values}
                ),
                max_size=3,
            )
            | json_values,
        },
    )
    | json_values,
    max_size=3,
)
chat_bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": st.just("alfred-4.2") | json_values,
        "messages": messages,
        "max_tokens": st.integers(min_value=-5, max_value=10**30) | json_values,
        "temperature": json_values,
        "stream": st.booleans() | json_values,
        "stream_options": json_values,
        "n": json_values,
        "input": json_values,
    },
).map(lambda body: json.dumps(body).encode())
bodies = chat_bodies | st.binary(max_size=200)
encodings = st.sampled_from([None, "gzip", "deflate", "identity", "x-garbage"])
paths = st.sampled_from(["/chat/completions", "/embeddings", "/models", "/models/alfred-4.2"])


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(path=paths, body=bodies, encoding=encodings, key=st.sampled_from([KEY, "", "x y"]))
def test_no_5xx_unless_injected_and_always_json(base_url, http, path, body, encoding, key):
    # a fresh connection each time: the mock closes one after an unreadable body, and a pooled
    # connection reused in that instant fails on the client's side, not the server's
    headers = {"Content-Type": "application/json", "Connection": "close"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if encoding:
        headers["Content-Encoding"] = encoding
    method = "GET" if path.startswith("/models") else "POST"
    mismatched_encoding = encoding in ("gzip", "deflate")
    try:
        response = http.request(
            method,
            base_url + path,
            data=body,
            headers=headers,
            timeout=5 if mismatched_encoding else 30,
        )
    except (requests.ConnectionError, requests.exceptions.ReadTimeout):
        # Known limit: aiohttp's parser fails a body that does not match its Content-Encoding
        # while it is still arriving and may close the connection before the mock's JSON 400
        # is out (reproduced deterministically in test_a_client_mistake_is_a_json_4xx), or, seen
        # rarely for a deflate body, leave it unanswered. Any other dropped or unanswered
        # connection is a failure.
        assert mismatched_encoding, "the mock dropped a connection or did not answer"
        return
    assert_json_error_or_success(response)


# --- the reproductions, as rules ------------------------------------------------------------


def post(http, base_url, body, path="/chat/completions", **headers) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return http.post(base_url + path, data=data, headers={**AUTH, **headers}, timeout=60)


def message(**fields):
    return {"model": "alfred-4.2", "messages": [{"role": "user", "content": "hi", **fields}]}


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        pytest.param(message(role=["user"]), {}, 400, id="role-is-a-list"),
        pytest.param(message(role={"a": 1}), {}, 400, id="role-is-an-object"),
        pytest.param(
            message(content=[{"type": "text", "text": 5}]), {}, 400, id="text-part-is-a-number"
        ),
        pytest.param(message(content=[5]), {}, 400, id="content-part-not-an-object"),
        pytest.param(
            b'{"model": "alfred-4.2", "max_tokens": ' + b"9" * 5000 + b', "messages": []}',
            {},
            400,
            id="max-tokens-of-5000-digits",
        ),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, {}, 400, id="nesting-100k-deep"),
        pytest.param(
            json.dumps(message()).encode(), {"Content-Encoding": "gzip"}, 400, id="gzip-that-is-not"
        ),
        pytest.param(
            gzip.compress(json.dumps(message()).encode()),
            {"Content-Encoding": "gzip"},
            200,
            id="real-gzip",
        ),
    ],
)
def test_a_client_mistake_is_a_json_4xx(base_url, http, body, headers, status):
    response = post(http, base_url, body, **headers)
    assert response.status_code == status, response.text[:300]
    assert_json_error_or_success(response)


def test_an_unreadable_body_closes_the_connection_and_says_so(base_url, http):
    """The mock cannot read another request after a half-decoded body: its 400 says
    `Connection: close`, so the client's pool opens a new connection for the next request."""
    response = post(http, base_url, b"not gzip at all", **{"Content-Encoding": "gzip"})
    assert response.status_code == 400
    assert response.headers.get("Connection", "").lower() == "close"
    assert post(http, base_url, message()).status_code == 200  # same session, next request


def test_a_2_mib_prompt_is_accepted_and_over_8_mib_is_a_json_413(base_url, http):
    long_prompt = message(content="word " * (2 * 1024 * 1024 // 5))
    assert post(http, base_url, long_prompt).status_code == 200
    response = post(http, base_url, b'{"x": "' + b"a" * (8 * 1024 * 1024 + 10) + b'"}')
    assert response.status_code == 413
    assert_json_error_or_success(response)


def test_a_header_too_long_is_a_json_4xx(base_url):
    """Sent raw: aiohttp refuses it before any handler runs."""
    host, port = base_url.split("//")[1].split("/")[0].rsplit(":", 1)
    request = (
        f"GET /api/v2/models HTTP/1.1\r\nHost: {host}\r\nX-Long: {'a' * 20000}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    assert 400 <= status < 500
    assert b"application/json" in head.lower()
    assert "message" in json.loads(body)["error"]


def test_embeddings_inputs_are_capped_with_a_400(base_url, http):
    body = {"model": "alfred-4.2", "input": ["word"] * 2049}
    response = post(http, base_url, body, path="/embeddings")
    assert response.status_code == 400 and "2048" in response.json()["error"]["message"]
    body["input"] = ["word"] * 2048
    assert post(http, base_url, body, path="/embeddings").status_code == 200


# --- settings that need a mock of their own ----------------------------------------------


def test_quota_per_key_then_insufficient_quota(http):
    with running_mock(latency_s=0.0, quota_requests=2) as url:
        statuses = [post(http, url, message()).status_code for _ in range(3)]
        refused = post(http, url, message())
        other_key = http.post(
            url + "/chat/completions",
            json=message(),
            headers={"Authorization": "Bearer other"},
            timeout=30,
        )
    assert statuses == [200, 200, 429] and other_key.status_code == 200
    assert refused.json()["error"]["code"] == "insufficient_quota"
    assert "Retry-After" not in refused.headers


def test_the_runner_records_insufficient_quota_at_once(tmp_path):
    """End to end: the runner meets the mock's quota and does not retry it."""
    import asyncio

    from paradigm_kit.batch import run_batch

    requests_ = [
        {"id": i, "max_tokens": 5, "messages": [{"role": "user", "content": f"hi {i}"}]}
        for i in range(5)
    ]
    with running_mock(latency_s=0.0, quota_requests=2) as url:
        summary = asyncio.run(
            run_batch(
                requests_,
                tmp_path / "out.jsonl",
                base_url=url,
                api_key=KEY,
                concurrency=1,
                progress=False,
            )
        )
        total = mock_stats(url)["total"]
    assert (summary.succeeded, summary.out_of_quota, summary.retried) == (2, 3, 0)
    assert total == 5  # each refused request sent once


def test_runs_are_bounded_the_oldest_forgotten(http):
    with running_mock(latency_s=0.0, max_runs=3) as url:
        for run in ("a", "b", "c", "d"):
            http.post(
                url + "/chat/completions",
                json=message(),
                headers={**AUTH, "X-Run-Id": run},
                timeout=30,
            )
        runs = mock_stats(url)["runs"]
        total = mock_stats(url)["total"]
    assert sorted(runs) == ["b", "c", "d"] and total == 4


def test_an_idle_keep_alive_connection_is_closed_by_the_mock():
    """With --keepalive-timeout, an idle connection is closed by the server (recv sees EOF);
    the bound of the wait is only there to fail instead of hanging."""
    with running_mock(latency_s=0.0, keepalive_timeout_s=0.2) as url:
        host, port = url.split("//")[1].split("/")[0].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=60) as connection:
            connection.sendall(
                f"GET /api/v2/models HTTP/1.1\r\nHost: {host}\r\n{AUTH_LINE}\r\n\r\n".encode()
            )
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += connection.recv(65536)
            head, _, body = answer.partition(b"\r\n\r\n")
            length = int(
                next(
                    line
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ).split(b":")[1]
            )
            while len(body) < length:
                body += connection.recv(65536)
            assert connection.recv(65536) == b""  # closed by the mock, not by us


AUTH_LINE = f"Authorization: Bearer {KEY}"
