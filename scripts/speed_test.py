"""Speed test: the seed's 20 greetings sent one after another, then all at once.

Sync: a loop over one ``requests.Session`` (the seed opened a connection per request; one session
means the factor measures concurrency only). Async: one ``aiohttp.ClientSession`` and
``asyncio.gather``; ``--concurrency C`` adds an ``asyncio.Semaphore(C)``. Every answer is checked.

    export PARADIGM_API_KEY=...   # any value for the bundled mock; PARADIGM_BASE_URL optional
    python scripts/speed_test.py [--requests 100] [--concurrency 10] [--json timings.json]

Prints three lines, the last ``Improvement factor: X.XX`` (sync / async). Exit status: 2 for a
missing key or a bad argument, 1 for a failed request. Self-contained (notebook 03 writes it with
``%%writefile``); importing it runs nothing.
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
    "speed_test.py: PARADIGM_API_KEY is not set. Export your key, or start the bundled mock "
    "(python scripts/mock_paradigm.py --port 0) and export the PARADIGM_BASE_URL it prints "
    "with any non-empty PARADIGM_API_KEY."
)


class ApiError(RuntimeError):
    """An error answer: its HTTP status and the server's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def batch_names(n_requests: int) -> list[str]:
    """The seed's names, cycled with a suffix beyond 20 ("Alice 2") so every request differs."""
    return [
        NAMES[i % 20] if i < 20 else f"{NAMES[i % 20]} {i // 20 + 1}" for i in range(n_requests)
    ]


def build_payload(name: str) -> dict:
    content = PROMPT.format(name=name)
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "temperature": TEMPERATURE,
        "max_tokens": MAX_TOKENS,
    }


def build_headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}


def parse_body(text: str) -> object:
    """JSON, or the raw text when it is not (a proxy's HTML error page)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def reply_text(status: int, body: object) -> str:
    """The reply's text, or ``ApiError`` with the server's message."""
    if status == 200 and isinstance(body, dict) and body.get("choices"):
        return body["choices"][0]["message"]["content"]
    error = body.get("error") if isinstance(body, dict) else None  # OpenAI: {"error": {...}}
    message = error.get("message") if isinstance(error, dict) else (error or str(body)[:200])
    raise ApiError(status, str(message))


def sync_send_message(session: requests.Session, base_url: str, name: str) -> str:
    response = session.post(
        f"{base_url}/chat/completions", json=build_payload(name), timeout=REQUEST_TIMEOUT_S
    )
    return reply_text(response.status_code, parse_body(response.text))


async def async_send_message(
    session: aiohttp.ClientSession, base_url: str, name: str, slot: asyncio.Semaphore | None = None
) -> str:
    """One request; with a semaphore, once a slot is free (the timeout starts then)."""
    if slot is not None:
        async with slot:
            return await async_send_message(session, base_url, name)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with session.post(
        f"{base_url}/chat/completions", json=build_payload(name), timeout=timeout
    ) as response:
        return reply_text(response.status, parse_body(await response.text()))


def run_sync(names: list[str], base_url: str, api_key: str) -> tuple[float, list[str]]:
    """(seconds, replies in order) for one request after another."""
    start_s = time.monotonic()
    with requests.Session() as session:
        session.headers.update(build_headers(api_key))
        replies = [sync_send_message(session, base_url, name) for name in names]
    return time.monotonic() - start_s, replies


async def run_async(
    names: list[str], base_url: str, api_key: str, concurrency: int | None = None
) -> tuple[float, list[str]]:
    """(seconds, replies in input order) for all at once, or ``concurrency`` at a time."""
    slot = asyncio.Semaphore(concurrency) if concurrency else None
    # aiohttp's pool opens 100 connections at most: one per request, so the bound is the slot's.
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
    parser.add_argument("--requests", type=int, default=len(NAMES), help="batch size (20)")
    parser.add_argument("--concurrency", type=int, help="at most C at once (default: all)")
    parser.add_argument("--json", metavar="FILE", help="also write the timings to FILE")
    args = parser.parse_args(argv)
    if args.requests < 1 or (args.concurrency is not None and args.concurrency < 1):
        parser.error("--requests and --concurrency must be at least 1")
    folder = os.path.dirname(os.path.abspath(args.json or "."))
    if args.json and (os.path.isdir(args.json) or not os.access(folder, os.W_OK)):
        message = f"--json {args.json}: not a file in an existing, writable folder"
        parser.exit(2, f"speed_test.py: error: {message}\n")  # one line: no usage text
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    api_key = os.environ.get("PARADIGM_API_KEY", "").strip()
    base_url = (os.environ.get("PARADIGM_BASE_URL", "").strip() or DEFAULT_BASE_URL).rstrip("/")
    if not api_key:
        print(MISSING_KEY_HELP, file=sys.stderr)
        return 2
    names = batch_names(args.requests)
    try:  # async first, as in the seed; each run with fresh connections
        async_s, _ = asyncio.run(run_async(names, base_url, api_key, args.concurrency))
        print(f"Async run: {len(names)} requests in {async_s:.2f} s", flush=True)
        sync_s, _ = run_sync(names, base_url, api_key)
        print(f"Sync run: {len(names)} requests in {sync_s:.2f} s", flush=True)
    except (ApiError, aiohttp.ClientError, requests.RequestException, asyncio.TimeoutError) as exc:
        print(f"speed_test.py: request failed: {exc}", file=sys.stderr)
        return 1
    print(f"Improvement factor: {sync_s / async_s:.2f}")
    if args.json:
        timings = {
            "requests": len(names),
            "concurrency": args.concurrency,
            "async_s": async_s,
            "sync_s": sync_s,
            "improvement_factor": sync_s / async_s,
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
