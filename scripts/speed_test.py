"""Speed test: the same batch of chat completions sent one after another, then all at once.

The seed tutorial's comparison, done so that it measures concurrency and nothing else:

* The batch: one short greeting per name (the seed's 20 names and its French prompt), model
  alfred-4.2, temperature 0.4, max_tokens 150.
* Async run: one ``aiohttp.ClientSession`` for the whole batch and ``asyncio.gather`` over one
  coroutine per request. ``--concurrency C`` puts an ``asyncio.Semaphore(C)`` in front of them.
* Sync run: a plain loop over the same requests with one ``requests.Session``. The seed called
  ``requests.post`` directly (a new connection per request); reusing one session here means the
  factor measures concurrency, not connection reuse.
* Both sides send the same requests, with an explicit timeout, and check every answer: a failed
  request raises ``ApiError`` with its HTTP status and the server's message, not a ``KeyError``.
* Both sessions read proxy settings from the environment (``trust_env=True`` for aiohttp, the
  default for requests), so the script works behind the same proxies on both sides.

Usage::

    export PARADIGM_API_KEY=...                 # required (any value for the bundled mock)
    export PARADIGM_BASE_URL=...                # optional, default the real Paradigm API
    python scripts/speed_test.py                # the seed's run: 20 requests, all at once
    python scripts/speed_test.py --requests 100 --concurrency 10 --json timings.json

It prints exactly three lines, the last one ``Improvement factor: X.XX`` (sync time / async time).
A missing key is a one-line error on stderr and exit status 2; a failed request, exit status 1.

This file is self-contained (no import from the kit): notebook 03 writes it with ``%%writefile``.
``run_sync``, ``run_async`` and the two send functions can be imported; ``asyncio.run`` is only
called under ``__main__``, so importing the module from a notebook or a test is safe.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

import aiohttp
import requests

DEFAULT_BASE_URL = "https://paradigm.lighton.ai/api/v2"
MODEL = "alfred-4.2"
TEMPERATURE = 0.4
MAX_TOKENS = 150
REQUEST_TIMEOUT_S = 60.0

NAMES = [
    "Alice", "Bob", "Charlie", "David", "Emma", "Frank", "Grace", "Hannah", "Ian", "Jessica",
    "Kevin", "Linda", "Michael", "Nancy", "Olivia", "Peter", "Quincy", "Rachel", "Samuel",
    "Tiffany",
]  # fmt: skip
PROMPT = (
    "Dis bonjour au nouvel utilisateur sur Paradigm ! "
    "Donne un accueil court d'une phrase hautement personnalisé à : {name}"
)
MISSING_KEY_HELP = (
    "speed_test.py: PARADIGM_API_KEY is not set. Export your key (export PARADIGM_API_KEY=...) "
    "or start the bundled mock (python scripts/mock_paradigm.py --port 0) and export the "
    "PARADIGM_BASE_URL it prints with any non-empty PARADIGM_API_KEY."
)


class ApiError(RuntimeError):
    """A request the API answered with an error: its HTTP status and the server's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def batch_names(n_requests: int) -> list[str]:
    """The seed's names, cycled with a suffix beyond 20 ("Alice 2") so every request differs."""
    names = []
    for i in range(n_requests):
        name, round_number = NAMES[i % len(NAMES)], i // len(NAMES) + 1
        names.append(name if round_number == 1 else f"{name} {round_number}")
    return names


def build_payload(name: str) -> dict:
    """The chat-completions body for one greeting."""
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": PROMPT.format(name=name)}],
        "temperature": TEMPERATURE,
        "max_tokens": MAX_TOKENS,
    }


def build_headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}


def parse_body(text: str) -> object:
    """The answer as JSON, or its raw text when it is not JSON (a proxy's HTML error page)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def reply_text(status: int, body: object) -> str:
    """The reply's text, or ``ApiError`` carrying the status and the server's message."""
    if status == 200 and isinstance(body, dict) and body.get("choices"):
        return body["choices"][0]["message"]["content"]
    # OpenAI-shaped errors are {"error": {"message": ...}}; anything else is shown as it came.
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else (error or str(body)[:200])
    raise ApiError(status, str(message))


def sync_send_message(session: requests.Session, base_url: str, name: str) -> str:
    """Send one greeting request and wait for its answer (the session carries the headers)."""
    response = session.post(
        f"{base_url}/chat/completions", json=build_payload(name), timeout=REQUEST_TIMEOUT_S
    )
    return reply_text(response.status_code, parse_body(response.text))


async def async_send_message(
    session: aiohttp.ClientSession, base_url: str, name: str, slot: asyncio.Semaphore | None = None
) -> str:
    """Send one greeting request; with a semaphore, wait for a free slot first."""
    if slot is not None:
        async with slot:
            return await async_send_message(session, base_url, name)
    # The timeout is per request and starts here, once the request has its slot.
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with session.post(
        f"{base_url}/chat/completions", json=build_payload(name), timeout=timeout
    ) as response:
        return reply_text(response.status, parse_body(await response.text()))


def run_sync(names: list[str], base_url: str, api_key: str) -> tuple[float, list[str]]:
    """One request after another over one session: (duration in seconds, replies in order)."""
    start_s = time.monotonic()
    with requests.Session() as session:
        session.headers.update(build_headers(api_key))
        replies = [sync_send_message(session, base_url, name) for name in names]
    return time.monotonic() - start_s, replies


async def run_async(
    names: list[str], base_url: str, api_key: str, concurrency: int | None = None
) -> tuple[float, list[str]]:
    """All requests at once (or ``concurrency`` at a time): (duration in seconds, replies in order).

    ``gather`` returns the replies in input order, whatever order they finish in. The first
    failure raises at once: the comparison is meaningless without every answer.
    """
    slot = asyncio.Semaphore(concurrency) if concurrency else None
    # aiohttp opens at most 100 connections by default: allow one per request we mean to run at
    # once, so that "all at once" really is, and a bound is set by the semaphore alone.
    connector = aiohttp.TCPConnector(limit=concurrency or max(len(names), 1))
    start_s = time.monotonic()
    async with aiohttp.ClientSession(
        headers=build_headers(api_key), connector=connector, trust_env=True
    ) as session:
        replies = await asyncio.gather(
            *(async_send_message(session, base_url, name, slot) for name in names)
        )
    return time.monotonic() - start_s, list(replies)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=len(NAMES), help="batch size (default 20)")
    parser.add_argument(
        "--concurrency", type=int, default=None, help="at most C requests at once (default: all)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the timings to FILE as JSON")
    args = parser.parse_args(argv)
    if args.requests < 1 or (args.concurrency is not None and args.concurrency < 1):
        parser.error("--requests and --concurrency must be at least 1")
    if args.json:  # checked now, not after the whole run
        folder = os.path.dirname(os.path.abspath(args.json))
        if os.path.isdir(args.json) or not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            message = f"--json {args.json}: not a file in an existing, writable folder"
            parser.exit(2, f"speed_test.py: error: {message}\n")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    api_key = os.environ.get("PARADIGM_API_KEY", "").strip()
    base_url = (os.environ.get("PARADIGM_BASE_URL", "").strip() or DEFAULT_BASE_URL).rstrip("/")
    if not api_key:
        print(MISSING_KEY_HELP, file=sys.stderr)
        return 2
    names = batch_names(args.requests)
    try:
        # Async first, as in the seed; each run gets a fresh event loop and fresh connections.
        async_s, _ = asyncio.run(run_async(names, base_url, api_key, args.concurrency))
        print(f"Async run: {len(names)} requests in {async_s:.2f} s", flush=True)
        sync_s, _ = run_sync(names, base_url, api_key)
        print(f"Sync run: {len(names)} requests in {sync_s:.2f} s", flush=True)
    except (ApiError, aiohttp.ClientError, requests.RequestException, asyncio.TimeoutError) as exc:
        print(f"speed_test.py: request failed: {exc}", file=sys.stderr)
        return 1
    factor = sync_s / async_s
    print(f"Improvement factor: {factor:.2f}")
    if args.json:
        timings = {
            "requests": len(names),
            "concurrency": args.concurrency,
            "async_s": async_s,
            "sync_s": sync_s,
            "improvement_factor": factor,
        }
        try:
            with open(args.json, "w", encoding="utf-8") as out:
                json.dump(timings, out, indent=2)
        except OSError as error:
            print(f"speed_test.py: cannot write {args.json}: {error.strerror}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
