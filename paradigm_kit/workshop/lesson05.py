"""Notebook 05's code, for notebook 05b: the same definitions, word for word.

05b builds on what 05 wrote (a pool of workers, an attempt, retries honouring ``Retry-After``, a
pacer's hooks) and runs in a fresh kernel, so it imports them from here instead of repeating them.
``tests/test_notebook_helper.py`` checks that every definition below is in notebook 05's code
cells as it is here: read them there, with the explanations.
"""

import asyncio
import json

import aiohttp

from paradigm_kit.mock import mock_report
from paradigm_kit.retry import (
    RETRYABLE_EXCEPTIONS,
    RetryPolicy,
    is_retryable_status,
    parse_retry_after_s,
)

ATTEMPT_TIMEOUT = aiohttp.ClientTimeout(total=10)

SEED_NAMES = [
    "Alice", "Bob", "Charlie", "David", "Emma", "Frank", "Grace", "Hannah", "Ian", "Jessica",
    "Kevin", "Linda", "Michael", "Nancy", "Olivia", "Peter", "Quincy", "Rachel", "Samuel", "Tiffany",
]  # fmt: skip
PROMPT = (
    "Dis bonjour au nouvel utilisateur sur Paradigm ! "
    "Donne un accueil court d'une phrase hautement personnalisé à : {name}"
)


def make_requests(count):
    # Requests q001, q002, ...: the seed's names, cycled with a number once all twenty are used.
    requests = []
    for i in range(count):
        name = SEED_NAMES[i % 20] + (f" {i // 20 + 1}" if i >= 20 else "")
        messages = [{"role": "user", "content": PROMPT.format(name=name)}]
        requests.append({"id": f"q{i + 1:03d}", "messages": messages, "max_tokens": 60})
    return requests


def request_body(request, model):
    # What goes over the wire: the request without its id, with a model.
    body = {key: value for key, value in request.items() if key != "id"}
    body.setdefault("model", model)
    return body


def report_card(base_url):
    # The mock's report card: how many times the client made each kind of mistake.
    problems = mock_report(base_url)["problems"]
    return "\n".join(f"{problem['count']:>5}  {name}" for name, problem in problems.items())


async def run_pool(connection, requests, send_one, *, concurrency, on_result):
    # `concurrency` workers share one iterator: a worker takes the next request when it is
    # free, so at most `concurrency` requests are in flight, and no task is made per request.
    pending = iter(requests)
    connector = aiohttp.TCPConnector(limit=concurrency)  # one connection per worker
    async with aiohttp.ClientSession(headers=connection.headers(), connector=connector) as session:

        async def worker():
            for request in pending:
                on_result(await send_one(session, connection, request))

        await asyncio.gather(*(worker() for _ in range(concurrency)))


async def attempt(session, connection, request):
    # One attempt: (status, headers, body); status None when no answer came back.
    headers = {"Idempotency-Key": str(request["id"])}  # the same on every attempt
    body = request_body(request, connection.model)
    try:
        async with session.post(
            connection.chat_url, json=body, headers=headers, timeout=ATTEMPT_TIMEOUT
        ) as response:
            if response.status == 200:
                return 200, response.headers, await response.json()
            return response.status, response.headers, await response.text()
    except RETRYABLE_EXCEPTIONS as error:  # a timeout, a dropped connection
        return None, {}, f"{type(error).__name__}: {error}"


async def send_once(session, connection, request):
    status, _, _ = await attempt(session, connection, request)
    return {"id": request["id"], "status": status}


POLICY = RetryPolicy(max_retries=6, base_delay_s=0.2, max_delay_s=2.0)


def error_message(body):
    try:
        return json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):  # not an OpenAI error body, or no answer at all
        return str(body)[:200]


async def send_with_retries(session, connection, request, pacer=None):
    # One request to the end: its answer, or an error record once retrying cannot help.
    body = request_body(request, connection.model)
    attempt_number = 0
    while True:
        attempt_number += 1
        if pacer is not None:
            await pacer.admit(body)  # 5.4: wait for the rate limit (and any cooldown)
        status, headers, answer = await attempt(session, connection, request)
        if pacer is not None and pacer.learning:
            pacer.learn(headers)  # 5.4: adopt the server's x-ratelimit-* limits
        if status == 200:
            return {"id": request["id"], "attempts": attempt_number, "response": answer}
        retry_after_s = parse_retry_after_s(headers)
        if (
            (status is not None and not is_retryable_status(status))
            or attempt_number > POLICY.max_retries
            or POLICY.retry_after_too_long(retry_after_s)
        ):
            error = {"status": status, "message": error_message(answer)}
            return {"id": request["id"], "attempts": attempt_number, "error": error}
        wait_s = POLICY.delay_s(attempt_number, retry_after_s)  # Retry-After, else backoff
        if status == 429 and pacer is not None:
            pacer.cool_down(wait_s)  # 5.4: the account is over its limit: every worker waits
        await asyncio.sleep(wait_s)


def summarize(records):
    failed = sum("error" in record for record in records)
    return f"{len(records) - failed} of {len(records)} succeeded, {failed} failed"
