"""The checks of lessons 10 (tokens and cost) and 11 (the official SDK): each passes a correct
attempt and explains the usual wrong one.

As in ``test_exercises.py``, every attempt really sends its requests to the exercises' local mock
(started on first use, stopped at the end of this module), so each check judges the mock's log.
"""

from __future__ import annotations

import asyncio

import aiohttp
import openai

from paradigm_kit.workshop.exercises import (
    EXERCISE_CAP,
    check_admission,
    check_bounded,
    check_cost,
    check_raw_headers,
    check_retry_after,
    check_spending_cap,
    exercise,
    price_of,
    worst_case_price,
)


async def post_body(session, ex, payload):
    """One request's JSON body (an error body too: the checks must judge those)."""
    async with session.post(ex.chat_url, json=payload, headers=ex.headers()) as response:
        return await response.json()


async def all_at_once(ex, payloads):
    async with aiohttp.ClientSession() as session:
        return await asyncio.gather(*(post_body(session, ex, p) for p in payloads))


def sdk_client(ex, **options):
    return openai.AsyncOpenAI(
        base_url=ex.base_url,
        api_key=ex.api_key,
        default_headers={"X-Run-Id": ex.run_id},
        **options,
    )


# --- 10 · tokens and cost -----------------------------------------------------------------------


def test_check_admission_passes_max_tokens_sized_to_the_answer():
    """max_tokens 24: the 20 greetings fit the tokens bucket's burst together, none cut."""
    ex = exercise("10-admission")
    results = asyncio.run(all_at_once(ex, [{**p, "max_tokens": 24} for p in ex.payloads()]))
    assert check_admission(ex, results).solved


def test_check_admission_explains_the_seeds_max_tokens():
    """The seed's max_tokens 150 reserves ~184 tokens each: some are refused, and it says why."""
    ex = exercise("10-admission")
    results = asyncio.run(all_at_once(ex, ex.payloads()))
    result = check_admission(ex, results)
    assert not result.solved
    assert "max_tokens" in result.message and "429" in result.message


def test_check_admission_explains_a_max_tokens_too_small():
    """max_tokens 5 is admitted but cuts every reply: finish_reason 'length'."""
    ex = exercise("10-admission")
    results = asyncio.run(all_at_once(ex, [{**p, "max_tokens": 5} for p in ex.payloads()]))
    result = check_admission(ex, results)
    assert not result.solved and "length" in result.message


def test_check_cost_passes_usage_priced_per_side():
    """The cost is the answers' usage, prompt and completion tokens each at their price."""
    ex = exercise("10-cost")
    results = asyncio.run(all_at_once(ex, ex.payloads()))
    assert check_cost(ex, results, sum(price_of(r["usage"]) for r in results)).solved


def test_check_cost_explains_pricing_max_tokens():
    """Pricing what max_tokens reserved, instead of the usage, is named as such."""
    ex = exercise("10-cost")
    results = asyncio.run(all_at_once(ex, ex.payloads()))
    reserved = sum(worst_case_price(p) for p in ex.payloads())
    result = check_cost(ex, results, reserved)
    assert not result.solved and "max_tokens" in result.message


def capped_sweep(ex, cap, *, reserve):
    """Send ex.payloads() in order, 4 at a time; admit one only if its worst case fits (reserve)."""

    async def sweep():
        results, spent, reserved = [], 0.0, 0.0
        pending = list(ex.payloads())
        in_flight: set[asyncio.Task] = set()
        async with aiohttp.ClientSession() as session:
            while pending or in_flight:
                worst = worst_case_price(pending[0]) if pending else 0.0
                fits = spent + reserved + (worst if reserve else 0.0) <= cap
                if pending and fits and len(in_flight) < 4:
                    payload = pending.pop(0)
                    task = asyncio.create_task(post_body(session, ex, payload))
                    task.worst = worst
                    reserved += worst
                    in_flight.add(task)
                    continue
                if not in_flight:
                    break
                done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    reserved -= task.worst
                    body = task.result()
                    results.append(body)
                    spent += price_of(body["usage"])
        return results, spent

    return asyncio.run(sweep())


def test_check_spending_cap_passes_a_sweep_that_reserves_the_worst_case():
    """Reserve prompt + max_tokens before sending, settle with usage: under the cap, nothing left."""
    ex = exercise("10-cap")
    results, spent = capped_sweep(ex, EXERCISE_CAP, reserve=True)
    result = check_spending_cap(ex, results, spent)
    assert result.solved, result.message


def test_check_spending_cap_explains_a_sweep_that_stops_too_early():
    """A sweep that stops with room for the next worst case is told to go on."""
    ex = exercise("10-cap")
    results, spent = capped_sweep(ex, EXERCISE_CAP / 2, reserve=True)
    result = check_spending_cap(ex, results, spent)
    assert not result.solved and "left" in result.message


def test_check_spending_cap_explains_a_sweep_that_checks_only_what_was_spent():
    """Checking only money already spent lets in-flight requests carry the sweep over the cap."""
    ex = exercise("10-cap")
    results, spent = capped_sweep(ex, EXERCISE_CAP * 12, reserve=False)  # sends everything
    result = check_spending_cap(ex, results, spent)
    assert not result.solved and "over the cap" in result.message


# --- 11 · the official SDK ----------------------------------------------------------------------


async def sdk_bounded(ex, max_in_flight):
    semaphore = asyncio.Semaphore(max_in_flight)
    async with sdk_client(ex) as client:

        async def one(payload):
            async with semaphore:
                return await client.chat.completions.create(**payload)

        return await asyncio.gather(*(one(p) for p in ex.payloads()))


def test_check_bounded_accepts_sdk_objects():
    """check_bounded reads the SDK's ChatCompletion objects as replies."""
    ex = exercise("11-sdk-bound")
    assert check_bounded(ex, asyncio.run(sdk_bounded(ex, 5)), max_in_flight=5).solved


async def sdk_with_retries(ex, max_retries):
    async with sdk_client(ex, max_retries=max_retries) as client:
        return await asyncio.gather(
            *(client.chat.completions.create(**p) for p in ex.payloads()), return_exceptions=True
        )


def test_check_retry_after_passes_the_sdks_own_retries():
    """The SDK's retries honour the mock's retry-after-ms: enough of them deliver every reply."""
    ex = exercise("11-sdk-retries")
    assert check_retry_after(ex, asyncio.run(sdk_with_retries(ex, max_retries=6))).solved


async def raw_limit(ex):
    async with sdk_client(ex) as client:
        raw = await client.chat.completions.with_raw_response.create(**ex.payload("Alice"))
        return raw.parse(), raw.headers.get("x-ratelimit-limit-requests")


def test_check_raw_headers_passes_the_parsed_reply_and_the_header():
    """with_raw_response: raw.parse() is the reply, raw.headers the mock's limit."""
    ex = exercise("11-raw-headers")
    reply, limit = asyncio.run(raw_limit(ex))
    assert check_raw_headers(ex, reply, limit).solved


def test_check_raw_headers_explains_a_missing_limit():
    """A reply without the header's value is told where to read it."""
    ex = exercise("11-raw-headers")
    reply, _limit = asyncio.run(raw_limit(ex))
    result = check_raw_headers(ex, reply, None)
    assert not result.solved and "x-ratelimit-limit-requests" in result.message
