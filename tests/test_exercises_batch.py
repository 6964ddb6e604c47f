"""The checks of lesson 05b (nothing lost, and the runner): each passes a correct attempt and
explains the usual wrong one.

As in ``test_exercises.py``, every attempt really sends its requests to the exercises' local mock
(started on first use, stopped at the end of this module), so each check judges the mock's log;
no assertion depends on a timing.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp

from paradigm_kit.batch import run_batch
from paradigm_kit.batch.jsonl import scan_output
from paradigm_kit.workshop.exercises import (
    RESUME_DONE,
    check_batch_summary,
    check_failures_recorded,
    check_resumed,
    exercise,
    reply_text,
    write_resume_files,
)


async def send_with_retries(session, ex, payload, *, retry_5xx=True, max_attempts=8):
    """One payload to its end: the reply's text, or an error record for a 4xx (or a last 5xx)."""
    for _attempt in range(max_attempts):
        async with session.post(ex.chat_url, json=payload) as response:
            if response.status == 200:
                return reply_text(await response.json())
            body = await response.json()
            if response.status < 500 or not retry_5xx:
                return {"error": {"status": response.status, "message": body["error"]["message"]}}
            retry_after_s = float(response.headers.get("Retry-After", "0.1"))
        await asyncio.sleep(retry_after_s)
    return {"error": {"status": response.status, "message": "out of retries"}}


async def send_all(ex, payloads, **options):
    async with aiohttp.ClientSession(headers=ex.headers()) as session:
        return await asyncio.gather(
            *(send_with_retries(session, ex, p, **options) for p in payloads)
        )


def test_failures_recorded_passes_a_404_record_in_place():
    ex = exercise("05b-failures")
    results = asyncio.run(send_all(ex, ex.payloads()))
    assert check_failures_recorded(ex, results).solved


def test_failures_recorded_explains_an_exception_and_lost_503s():
    ex = exercise("05b-failures")
    results = asyncio.run(send_all(ex, ex.payloads()))
    results[ex.spec.failing_index] = aiohttp.ClientResponseError(None, (), status=404)
    assert "exception" in check_failures_recorded(ex, results).message
    unretried = exercise("05b-failures")
    results = asyncio.run(send_all(unretried, unretried.payloads(), retry_5xx=False))
    assert "retry a 503" in check_failures_recorded(unretried, results).message


def test_failures_recorded_rejects_retrying_the_404():
    ex = exercise("05b-failures")
    bad = ex.payloads()[ex.spec.failing_index]

    async def retried_404():
        async with aiohttp.ClientSession(headers=ex.headers()) as session:
            for _ in range(2):
                async with session.post(ex.chat_url, json=bad) as response:
                    await response.read()

    asyncio.run(retried_404())
    assert "sent 2 times" in check_failures_recorded(ex, []).message


async def resume_by_hand(ex, input_path, output_path, *, skip_done=True, drop_torn=True):
    """Send the input's requests without a whole line in the output; append their lines."""
    done = scan_output(output_path, repair=drop_torn).done_ids if skip_done else set()
    requests = [json.loads(line) for line in input_path.read_text(encoding="utf-8").splitlines()]
    todo = [r for r in requests if r["id"] not in done]
    async with aiohttp.ClientSession(headers=ex.headers()) as session:

        async def one(request):
            body = {key: value for key, value in request.items() if key != "id"}
            async with session.post(ex.chat_url, json=body) as response:
                return {"id": request["id"], "response": await response.json()}

        records = await asyncio.gather(*(one(r) for r in todo))
    with open(output_path, "a", encoding="utf-8") as output:
        output.writelines(json.dumps(record) + "\n" for record in records)


def test_resumed_passes_by_hand_and_with_run_batch(tmp_path):
    ex = exercise("05b-resume")
    input_path, output_path = write_resume_files(ex, tmp_path / "by-hand")
    asyncio.run(resume_by_hand(ex, input_path, output_path))
    assert check_resumed(ex, output_path).solved
    ex = exercise("05b-resume")
    input_path, output_path = write_resume_files(ex, tmp_path / "runner")
    summary = asyncio.run(
        run_batch(input_path, output_path, base_url=ex.base_url, api_key=ex.api_key, progress=False)
    )
    assert summary.skipped == RESUME_DONE
    assert check_resumed(ex, output_path).solved


def test_resumed_explains_sending_everything_again(tmp_path):
    ex = exercise("05b-resume")
    input_path, output_path = write_resume_files(ex, tmp_path)
    asyncio.run(resume_by_hand(ex, input_path, output_path, skip_done=False))
    assert "skip the ids already in the output" in check_resumed(ex, output_path).message


def test_resumed_explains_a_torn_line_left_in_place(tmp_path):
    ex = exercise("05b-resume")
    input_path, output_path = write_resume_files(ex, tmp_path)
    asyncio.run(resume_by_hand(ex, input_path, output_path, drop_torn=False))
    assert "not JSON" in check_resumed(ex, output_path).message


def test_batch_summary_wants_requests_retried_not_retries(tmp_path):
    ex = exercise("05b-run-batch")
    summary = asyncio.run(
        run_batch(
            ex.payloads(),
            tmp_path / "out.jsonl",
            base_url=ex.base_url,
            api_key=ex.api_key,
            progress=False,
        )
    )
    assert check_batch_summary(ex, summary, summary.requests_retried).solved
    if summary.retried != summary.requests_retried:
        assert "number of retries" in check_batch_summary(ex, summary, summary.retried).message
    assert "what `await run_batch" in check_batch_summary(ex, None, 0).message
