"""run_batch against the mock: nothing lost or doubled under faults, no retry of what cannot
succeed, Retry-After honoured, rate limits used without 429 storms, resume and retry-failed."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web
from conftest import serving_app

from paradigm_kit.batch import BatchConfigError, Pacer, estimate_batch, preflight, run_batch
from paradigm_kit.batch.runner import idempotency_key
from paradigm_kit.mock import mock_report, mock_stats
from paradigm_kit.retry import RetryPolicy
from paradigm_kit.timeline import TimelineRecorder

KEY = "test-key-not-a-secret"


def make_requests(n: int, prefix: str = "r") -> list[dict]:
    return [
        {
            "id": f"{prefix}{i}",
            "max_tokens": 20,
            "messages": [{"role": "user", "content": f"Say hello to user {i}"}],
        }
        for i in range(n)
    ]


def read_output(path) -> list[dict]:
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def run(requests, output, base_url, **options):
    options.setdefault("progress", False)
    return asyncio.run(
        run_batch(
            requests, output, base_url=base_url, api_key=options.pop("api_key", KEY), **options
        )
    )


def key_of(request: dict) -> str:
    """The Idempotency-Key the runner sends for ``request`` (the mock's identity for it)."""
    body = {k: v for k, v in request.items() if k != "id"}
    body.setdefault("model", "alfred-4.2")
    return idempotency_key(request["id"], json.dumps(body).encode())


def test_run_batch_under_faults_every_request_succeeds_exactly_once(start_mock_server, tmp_path):
    """20% injected 429/500/503 and dropped connections: one success line per id, and the
    mock's attempt count of each request equals the output's attempts."""
    base_url = start_mock_server(error_rate=0.15, drop_rate=0.05, retry_after_s=0.05, seed=7)
    requests = make_requests(300)
    output = tmp_path / "out.jsonl"
    summary = run(requests, output, base_url, concurrency=30, max_retries=9)
    records = read_output(output)
    assert sorted(r["id"] for r in records) == sorted(r["id"] for r in requests)
    assert all("response" in r for r in records)
    assert summary.succeeded == 300 and summary.failed == 0 and summary.exit_code == 0
    attempts = mock_stats(base_url)["attempts_by_identity"]
    by_id = {r["id"]: r["attempts"] for r in records}
    assert {request["id"]: attempts[key_of(request)] for request in requests} == by_id
    assert summary.retried == sum(by_id.values()) - 300


@pytest.mark.parametrize(
    ("mock_flags", "request_fields", "api_key", "status"),
    [
        pytest.param({}, {"temperature": 7}, KEY, 400, id="400-bad-parameter"),
        pytest.param({"api_key": "the-right-key"}, {}, "a-wrong-key", 401, id="401-wrong-key"),
        pytest.param({}, {"model": "no-such-model"}, KEY, 404, id="404-unknown-model"),
    ],
)
def test_run_batch_records_client_errors_at_once(
    start_mock_server, tmp_path, mock_flags, request_fields, api_key, status
):
    """400/401/404 are recorded after one attempt: the mock sees each request once."""
    base_url = start_mock_server(**mock_flags)
    requests = [{**r, **request_fields} for r in make_requests(5)]
    output = tmp_path / "out.jsonl"
    summary = run(requests, output, base_url, api_key=api_key, check_first=False)
    records = read_output(output)
    assert [r["error"]["status"] for r in records] == [status] * 5
    assert all(r["attempts"] == 1 for r in records)
    assert mock_stats(base_url)["total"] == 5
    assert summary.failed == 5 and summary.exit_code == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_run_batch_never_retries_a_final_status(tmp_path, status):
    """Whatever 4xx the server answers among 400/401/403/404/422, it is sent exactly once."""
    seen: list[str] = []

    async def chat(request: web.Request) -> web.Response:
        seen.append(request.headers["Idempotency-Key"])
        return web.json_response(
            {"error": {"message": "no", "type": "invalid_request_error"}}, status=status
        )

    async def scenario() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        async with serving_app(app) as root_url:
            await run_batch(
                make_requests(3),
                tmp_path / "out.jsonl",
                base_url=f"{root_url}/v1",
                api_key=KEY,
                check_first=False,
                progress=False,
            )

    asyncio.run(scenario())
    assert len(seen) == 3 == len(set(seen))
    assert [r["error"]["status"] for r in read_output(tmp_path / "out.jsonl")] == [status] * 3


def test_preflight_learns_limits_from_the_models_answer():
    """x-ratelimit-* headers on GET /models set the pace before the first request is sent."""

    async def models(request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == f"Bearer {KEY}"
        body = {"object": "list", "data": [{"id": "alfred-4.2", "object": "model"}]}
        return web.json_response(body, headers={"x-ratelimit-limit-requests": "600"})

    async def scenario() -> Pacer:
        app = web.Application()
        app.router.add_get("/v1/models", models)
        pacer = Pacer()
        headers = {"Authorization": f"Bearer {KEY}"}
        async with serving_app(app) as root_url, aiohttp.ClientSession(headers=headers) as session:
            base_url = f"{root_url}/v1"
            assert await preflight(session, base_url, ["alfred-4.2"], pacer) == ["alfred-4.2"]
        return pacer

    pacer = asyncio.run(scenario())
    assert pacer.learned_requests_per_minute == 600
    assert pacer.requests_bucket is not None


def test_run_batch_honours_retry_after(start_mock_server, tmp_path):
    """Injected 429/503 with Retry-After: the mock's report card finds no early retry."""
    base_url = start_mock_server(
        error_rate=0.3, error_statuses="429,503", retry_after_s=0.3, seed=3
    )
    summary = run(
        make_requests(40), tmp_path / "out.jsonl", base_url, concurrency=10, max_retries=9
    )
    assert summary.succeeded == 40
    # the fates are seeded per request and attempt: 24 injected errors, each retried once
    assert summary.retried == 24
    assert mock_stats(base_url)["requests_by_status"] == {"200": 40, "429": 12, "503": 12}
    problems = mock_report(base_url)["problems"]
    assert problems["retried_before_retry_after"]["count"] == 0
    assert problems["retried_non_retryable_4xx"]["count"] == 0


def test_run_batch_retries_timeouts(start_mock_server, tmp_path):
    """An attempt with no answer within timeout_s is abandoned and retried, not lost."""
    base_url = start_mock_server(slow_rate=0.3, slow_seconds=5, seed=11)
    summary = run(
        make_requests(20),
        tmp_path / "out.jsonl",
        base_url,
        concurrency=20,
        timeout_s=0.5,
        retry_policy=RetryPolicy(max_retries=9, base_delay_s=0.01),
    )
    assert summary.succeeded == 20
    # seeded: 8 attempts drawn slow, each abandoned at 0.5 s (the mock logs 499) and sent again
    assert summary.retried == 8
    assert mock_stats(base_url)["requests_by_status"] == {"200": 20, "499": 8}


def test_run_batch_timeout_starts_when_the_request_has_its_slot(start_mock_server, tmp_path):
    """With one slot, twenty 0.1 s requests each get their own 1 s: none times out waiting.

    Were the clock started at submission, the 11th request would have waited at least 10 x 0.1 s
    (the mock's latency, a floor whatever the machine's load) and timed out; a request in flight
    has 0.9 s of slack, which no load on a test machine eats."""
    base_url = start_mock_server(latency_s=0.1)
    summary = run(
        make_requests(20),
        tmp_path / "out.jsonl",
        base_url,
        concurrency=1,
        timeout_s=1.0,
        max_retries=0,
    )
    assert summary.succeeded == 20 and summary.retried == 0
    assert mock_stats(base_url)["requests_by_status"] == {"200": 20}  # no 499: none abandoned


def test_run_batch_fails_a_request_whose_retry_after_is_over_the_cap(start_mock_server, tmp_path):
    """A Retry-After beyond max_retry_after_s fails the request with that reason, at once."""
    base_url = start_mock_server(error_rate=1.0, error_statuses="503", retry_after_s=30)
    policy = RetryPolicy(max_retry_after_s=5)
    run(make_requests(2), tmp_path / "out.jsonl", base_url, retry_policy=policy)
    records = read_output(tmp_path / "out.jsonl")
    assert [r["error"]["type"] for r in records] == ["retry_after_too_long"] * 2
    assert [r["attempts"] for r in records] == [1, 1]


def test_run_batch_told_the_limit_gets_no_429(start_mock_server, tmp_path):
    """Told the server's requests-per-minute, the runner is never throttled."""
    base_url = start_mock_server(rpm=1200)
    summary = run(
        make_requests(60),
        tmp_path / "out.jsonl",
        base_url,
        concurrency=20,
        max_requests_per_minute=1200,
    )
    assert summary.succeeded == 60
    assert mock_stats(base_url)["requests_by_status"] == {"200": 60}


def test_run_batch_learns_the_limit_from_headers(start_mock_server, tmp_path):
    """Not told any limit, the runner paces by x-ratelimit-* headers: at most one burst of
    429s (the requests already in flight when the first headers arrived), then none."""
    base_url = start_mock_server(rpm=1200)
    concurrency = 40  # twice the server's burst of 20: the first wave does meet the limit
    summary = run(make_requests(80), tmp_path / "out.jsonl", base_url, concurrency=concurrency)
    assert summary.succeeded == 80
    assert summary.limits.endswith("(from headers)")
    assert mock_stats(base_url)["requests_by_status"].get("429", 0) < concurrency


def test_run_batch_resume_skips_done_ids(fresh_mock_url, tmp_path):
    """Rerun with the same output: ids already there (success or error) are not sent again."""
    requests = make_requests(20)
    output = tmp_path / "out.jsonl"
    done = [{"id": "r0", "response": {}}, {"id": "r1", "error": {"status": 400}}]
    output.write_text("".join(json.dumps(r) + "\n" for r in done) + '{"id": "r2", "resp')  # torn
    summary = run(requests, output, fresh_mock_url)
    records = read_output(output)
    assert sorted(r["id"] for r in records) == sorted(r["id"] for r in requests)
    assert summary.skipped == 2 and summary.requests == 18
    attempts = mock_stats(fresh_mock_url)["attempts_by_identity"]
    assert key_of(requests[0]) not in attempts and key_of(requests[1]) not in attempts
    assert summary.exit_code == 1  # the earlier error line is still there


def test_run_batch_retry_failed_redoes_only_errors(start_mock_server, tmp_path):
    """--retry-failed sends only the ids whose line is an error, and each id keeps one line."""
    base_url = start_mock_server(api_key="the-right-key")
    requests = make_requests(6)
    output = tmp_path / "out.jsonl"
    run(requests[:3], output, base_url, api_key="the-right-key")
    run(requests, output, base_url, api_key="a-wrong-key", check_first=False)  # 3 x 401
    assert sum("error" in r for r in read_output(output)) == 3
    summary = run(requests, output, base_url, api_key="the-right-key", retry_failed=True)
    records = read_output(output)
    assert sorted(r["id"] for r in records) == sorted(r["id"] for r in requests)
    assert all("response" in r for r in records)
    assert summary.requests == 3 and summary.exit_code == 0


def test_run_batch_reports_a_malformed_line_and_does_the_rest(fresh_mock_url, tmp_path):
    """A broken input line is an error line with its line number as id; the others succeed."""
    path = tmp_path / "in.jsonl"
    lines = [json.dumps(r) for r in make_requests(4)]
    lines.insert(2, '{"messages": [oops')
    path.write_text("\n".join(lines) + "\n")
    summary = run(path, tmp_path / "out.jsonl", fresh_mock_url)
    records = read_output(tmp_path / "out.jsonl")
    errors = [r for r in records if "error" in r]
    assert [(r["id"], r["line"], r["error"]["type"]) for r in errors] == [(3, 3, "invalid_input")]
    assert sum("response" in r for r in records) == 4
    assert summary.exit_code == 1


def test_run_batch_ordered_output_follows_the_input(fresh_mock_url, tmp_path):
    """ordered=True rewrites the output in input order."""
    requests = make_requests(30)
    run(requests, tmp_path / "out.jsonl", fresh_mock_url, concurrency=10, ordered=True)
    assert [r["id"] for r in read_output(tmp_path / "out.jsonl")] == [r["id"] for r in requests]


def test_run_batch_records_a_timeline_of_every_attempt(start_mock_server, tmp_path):
    """One record per attempt, times ordered, outcomes matching the output."""
    base_url = start_mock_server(latency_s=0.02, error_rate=0.3, error_statuses="500", seed=5)
    recorder = TimelineRecorder()
    summary = run(
        make_requests(20),
        tmp_path / "out.jsonl",
        base_url,
        concurrency=5,
        timeline=recorder,
        retry_policy=RetryPolicy(base_delay_s=0.01),
    )
    records = recorder.records
    assert len(records) == summary.requests + summary.retried
    for record in records:
        assert 0 <= record.t_queued <= record.t_started <= record.t_first_byte <= record.t_end
        assert record.outcome in ("ok", "retry")
        assert (record.retry_wait_s > 0) == (record.outcome == "retry")
    assert sum(r.outcome == "ok" for r in records) == 20


@pytest.mark.parametrize(
    ("base_url", "model", "message"),
    [
        pytest.param("http://127.0.0.1:9/api/v2", "alfred-4.2", "cannot reach", id="unreachable"),
        pytest.param(None, "no-such-model", "not served", id="unknown-model"),
    ],
)
def test_run_batch_preflight_stops_before_sending_or_writing(
    fresh_mock_url, tmp_path, base_url, model, message
):
    """A configuration that cannot work raises BatchConfigError; nothing sent, nothing written."""
    output = tmp_path / "out.jsonl"
    with pytest.raises(BatchConfigError, match=message):
        run(make_requests(3), output, base_url or fresh_mock_url, model=model)
    assert not output.exists()
    assert mock_stats(fresh_mock_url)["total"] == 0


def test_estimate_batch_counts_and_prices_without_sending(tmp_path):
    """The dry run counts requests and estimates tokens and cost; it needs no server."""
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in make_requests(10)) + "oops\n")
    estimate = estimate_batch(path, price_per_1k_tokens=2.0)
    assert estimate.requests == 10 and estimate.invalid_lines == 1
    assert estimate.estimated_cost == pytest.approx(estimate.estimated_tokens / 1000 * 2.0)
