"""The contenders: the same batch of chat completions sent by each client a user might pick.

Each contender is one function ``run_<name>(job) -> RunOutcome`` that sends ``job.n_requests``
requests to ``job.base_url`` with at most ``job.concurrency`` in flight (``None``: no bound), the
way a user of that client would write it, and reports what it saw:

* ``wall_s``: from the first request to the last answer, client creation included (a user's run
  creates its session too);
* ``latencies_s``: per request, from the moment it had its slot to its parsed answer (the time in
  flight, not the time queued behind the bound), so the percentiles compare clients, not queues;
* ``statuses``: answers by HTTP status, and exceptions by class name, so nothing fails silently;
* ``threads_peak``: threads alive just before the client is closed. Thread pools never shrink
  while they are open, and asyncio's default executor keeps its threads too, so the count there is
  the run's peak without sampling anything during the run.

The contenders, and what each stands for:

==================  ==============================================================================
``bare_aiohttp``    the floor: one ``ClientSession``, a ``Semaphore``, ``gather``, answers dropped
``naive_gather``    the seed's pattern at scale: the whole input read into a list, one task per
                    request up front, every answer kept (the memory comparison's baseline)
``runner``          the kit's ``run_batch`` with its defaults (JSONL in, JSONL out, retries on)
``openai_async``    ``openai.AsyncOpenAI`` (its own retries off), a ``Semaphore`` and ``gather``
``httpx_async``     ``httpx.AsyncClient`` with a connection limit, a ``Semaphore`` and ``gather``
``requests_plain``  ``requests.post`` in a loop: a new connection per request, as the seed did
``requests_session`` one ``requests.Session`` in a loop (what ``scripts/speed_test.py`` does)
``threads``         ``ThreadPoolExecutor(concurrency)`` with one ``requests.Session`` per thread
==================  ==============================================================================

Every client gets a connection pool as large as its concurrency bound, so they all have the same
number of connections open to the mock. The functions are plain code to read: this module is
imported only inside a contender's own subprocess (see ``child``), so one client's imports and
garbage never weigh on another's figures; each import happens inside the function that needs it.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ..seed import GREETING_PROMPT, seed_name
from ..settings import DEFAULT_MODEL

__all__ = [
    "CONTENDERS",
    "NEEDS_INPUT_FILE",
    "Job",
    "RunOutcome",
    "request_body",
    "write_input_file",
]

MODEL = DEFAULT_MODEL
REQUEST_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Job:
    """One timed run, as the parent describes it to the contender's subprocess."""

    base_url: str
    api_key: str
    n_requests: int
    concurrency: int | None  # None: no bound at all
    max_tokens: int | list[int] = 20  # one value, or one per request (cycled)
    work_dir: str = "."
    runner_options: dict = field(default_factory=dict)


@dataclass
class RunOutcome:
    """What one contender saw during one timed run (see the module docstring)."""

    wall_s: float
    latencies_s: list[float]
    statuses: dict[str, int]
    threads_peak: int


def request_body(index: int, max_tokens: int | list[int]) -> dict:
    """The ``index``-th request of a batch: the seed's greeting, names cycled with a suffix."""
    name = seed_name(index)
    if isinstance(max_tokens, list):
        max_tokens = max_tokens[index % len(max_tokens)]
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": GREETING_PROMPT.format(name=name)}],
        "temperature": 0.4,
        "max_tokens": max_tokens,
    }


def write_input_file(path: str, n_requests: int, max_tokens: int | list[int]) -> None:
    """The batch as a runner input: one JSON request a line, with an ``id``."""
    with open(path, "w", encoding="utf-8") as file:
        for i in range(n_requests):
            file.write(json.dumps({"id": f"r{i}", **request_body(i, max_tokens)}) + "\n")


def _headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def _slot_count(job: Job) -> int:
    """Connection pool size for clients that need a number: the bound, or one per request."""
    return job.concurrency or max(1, job.n_requests)


class _Tally:
    """Latencies in a compact array and statuses in a counter, filled by each request."""

    def __init__(self) -> None:
        self.latencies_s = array("d")
        self.statuses: Counter[str] = Counter()

    def record(self, started: float, status: int | str) -> None:
        self.latencies_s.append(time.monotonic() - started)
        self.statuses[str(status)] += 1

    def outcome(self, wall_s: float, threads_peak: int) -> RunOutcome:
        return RunOutcome(wall_s, list(self.latencies_s), dict(self.statuses), threads_peak)


async def _gather_bounded(job: Job, send_one: Callable[[int], object]) -> None:
    """Run ``send_one(i)`` for every request, at most ``job.concurrency`` at a time."""
    if job.concurrency is None:
        await asyncio.gather(*(send_one(i) for i in range(job.n_requests)))
        return
    slots = asyncio.Semaphore(job.concurrency)

    async def bounded(i: int) -> object:
        async with slots:
            return await send_one(i)

    await asyncio.gather(*(bounded(i) for i in range(job.n_requests)))


# --- asyncio contenders -------------------------------------------------------------------


async def _aiohttp_run(job: Job, bodies: list[dict] | None) -> RunOutcome:
    """``bodies`` given: the naive pattern, which also keeps every answer; else the bare loop."""
    import aiohttp

    tally = _Tally()
    url = f"{job.base_url}/chat/completions"
    keep_answers = bodies is not None
    answers: list[object] = []
    started_run = time.monotonic()
    connector = aiohttp.TCPConnector(limit=job.concurrency or 0)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(
        connector=connector, headers=_headers(job.api_key), timeout=timeout
    ) as session:

        async def send_one(i: int) -> None:
            body = bodies[i] if bodies is not None else request_body(i, job.max_tokens)
            started = time.monotonic()
            try:
                async with session.post(url, json=body) as response:
                    answer = await response.json()
                    status: int | str = response.status
            except aiohttp.ClientError as error:
                tally.record(started, type(error).__name__)
                return
            tally.record(started, status)
            if keep_answers:
                answers.append(answer)

        await _gather_bounded(job, send_one)
        threads = threading.active_count()
    return tally.outcome(time.monotonic() - started_run, threads)


def run_bare_aiohttp(job: Job) -> RunOutcome:
    return asyncio.run(_aiohttp_run(job, bodies=None))


def run_naive_gather(job: Job) -> RunOutcome:
    """The whole input read into a list first, as the naive pattern does (not timed)."""
    with open(os.path.join(job.work_dir, "input.jsonl"), encoding="utf-8") as file:
        bodies = [json.loads(line) for line in file]
    for body in bodies:
        del body["id"]
    return asyncio.run(_aiohttp_run(job, bodies=bodies))


async def _openai_run(job: Job) -> RunOutcome:
    import httpx
    import openai

    tally = _Tally()
    slots = _slot_count(job)
    http_client = openai.DefaultAsyncHttpxClient(
        limits=httpx.Limits(max_connections=slots, max_keepalive_connections=slots)
    )
    started_run = time.monotonic()
    async with openai.AsyncOpenAI(
        base_url=job.base_url,
        api_key=job.api_key,
        max_retries=0,
        timeout=REQUEST_TIMEOUT_S,
        http_client=http_client,
    ) as client:

        async def send_one(i: int) -> None:
            started = time.monotonic()
            try:
                await client.chat.completions.create(**request_body(i, job.max_tokens))
            except openai.APIStatusError as error:
                tally.record(started, error.status_code)
                return
            except openai.APIConnectionError as error:
                tally.record(started, type(error).__name__)
                return
            tally.record(started, 200)

        await _gather_bounded(job, send_one)
        threads = threading.active_count()
    return tally.outcome(time.monotonic() - started_run, threads)


def run_openai_async(job: Job) -> RunOutcome:
    return asyncio.run(_openai_run(job))


async def _httpx_run(job: Job) -> RunOutcome:
    import httpx

    tally = _Tally()
    slots = _slot_count(job)
    limits = httpx.Limits(max_connections=slots, max_keepalive_connections=slots)
    url = f"{job.base_url}/chat/completions"
    started_run = time.monotonic()
    async with httpx.AsyncClient(
        headers=_headers(job.api_key), limits=limits, timeout=REQUEST_TIMEOUT_S
    ) as client:

        async def send_one(i: int) -> None:
            started = time.monotonic()
            try:
                response = await client.post(url, json=request_body(i, job.max_tokens))
                response.json()
            except httpx.TransportError as error:
                tally.record(started, type(error).__name__)
                return
            tally.record(started, response.status_code)

        await _gather_bounded(job, send_one)
        threads = threading.active_count()
    return tally.outcome(time.monotonic() - started_run, threads)


def run_httpx_async(job: Job) -> RunOutcome:
    return asyncio.run(_httpx_run(job))


def run_runner(job: Job) -> RunOutcome:
    """The kit's ``run_batch`` on a JSONL file; latencies read back from its output lines."""
    from paradigm_kit.batch import run_batch

    input_path = os.path.join(job.work_dir, "input.jsonl")
    output_path = os.path.join(job.work_dir, f"output-{time.monotonic_ns()}.jsonl")

    async def run_and_count_threads() -> int:
        await run_batch(
            input_path,
            output_path,
            base_url=job.base_url,
            api_key=job.api_key,
            concurrency=_slot_count(job),
            **job.runner_options,
        )
        return threading.active_count()  # before asyncio.run shuts its default executor down

    started_run = time.monotonic()
    threads = asyncio.run(run_and_count_threads())
    wall_s = time.monotonic() - started_run
    latencies_s: list[float] = []
    statuses: Counter[str] = Counter()
    with open(output_path, encoding="utf-8") as file:
        for line in file:
            record = json.loads(line)
            if "latency_s" in record:
                latencies_s.append(float(record["latency_s"]))
            error = record.get("error")
            statuses[str(error.get("status", "error")) if error else "200"] += 1
    os.remove(output_path)
    return RunOutcome(wall_s, latencies_s, dict(statuses), threads)


# --- blocking contenders ------------------------------------------------------------------


def _requests_loop(job: Job, post: Callable[..., object]) -> tuple[_Tally, float]:
    import requests

    tally = _Tally()
    url = f"{job.base_url}/chat/completions"
    headers = _headers(job.api_key)
    started_run = time.monotonic()
    for i in range(job.n_requests):
        started = time.monotonic()
        try:
            response = post(
                url,
                json=request_body(i, job.max_tokens),
                headers=headers,
                timeout=REQUEST_TIMEOUT_S,
            )
            response.json()
        except requests.RequestException as error:
            tally.record(started, type(error).__name__)
            continue
        tally.record(started, response.status_code)
    return tally, time.monotonic() - started_run


def run_requests_plain(job: Job) -> RunOutcome:
    import requests

    tally, wall_s = _requests_loop(job, requests.post)
    return tally.outcome(wall_s, threading.active_count())


def run_requests_session(job: Job) -> RunOutcome:
    import requests

    started_run = time.monotonic()
    with requests.Session() as session:
        tally, _ = _requests_loop(job, session.post)
        threads = threading.active_count()
    return tally.outcome(time.monotonic() - started_run, threads)


def run_threads(job: Job) -> RunOutcome:
    """``ThreadPoolExecutor`` + ``requests``: a ``Session`` per thread (they are not shared)."""
    from concurrent.futures import ThreadPoolExecutor

    import requests

    tally = _Tally()
    lock = threading.Lock()  # guards the tally and the list of sessions, shared by the threads
    per_thread = threading.local()
    sessions: list[requests.Session] = []
    url = f"{job.base_url}/chat/completions"
    headers = _headers(job.api_key)

    def send_one(i: int) -> None:
        if not hasattr(per_thread, "session"):
            per_thread.session = requests.Session()
            with lock:
                sessions.append(per_thread.session)
        started = time.monotonic()
        status: int | str
        try:
            response = per_thread.session.post(
                url,
                json=request_body(i, job.max_tokens),
                headers=headers,
                timeout=REQUEST_TIMEOUT_S,
            )
            response.json()
            status = response.status_code
        except requests.RequestException as error:
            status = type(error).__name__
        with lock:
            tally.record(started, status)

    started_run = time.monotonic()
    with ThreadPoolExecutor(max_workers=_slot_count(job)) as pool:
        for future in [pool.submit(send_one, i) for i in range(job.n_requests)]:
            future.result()
        threads = threading.active_count()
    for session in sessions:
        session.close()
    return tally.outcome(time.monotonic() - started_run, threads)


CONTENDERS: dict[str, Callable[[Job], RunOutcome]] = {
    "bare_aiohttp": run_bare_aiohttp,
    "naive_gather": run_naive_gather,
    "runner": run_runner,
    "openai_async": run_openai_async,
    "httpx_async": run_httpx_async,
    "requests_plain": run_requests_plain,
    "requests_session": run_requests_session,
    "threads": run_threads,
}

NEEDS_INPUT_FILE = frozenset({"runner", "naive_gather"})
