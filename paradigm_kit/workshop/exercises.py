"""Exercises with instant self-checks: the mock's own request log is the referee.

Each tutorial notebook ends with two or three exercises. An exercise cell looks like this::

    from paradigm_kit.workshop.exercises import exercise, check_bounded
    ex = exercise("02-bound")        # a local mock for the exercises, and a run of your own
    ...                              # your attempt: send ex.payloads() to ex.chat_url, ex.headers()
    result = check_bounded(ex, replies, max_in_flight=5)

and the check prints one short verdict: ``[02-bound] solved: ...`` or ``[02-bound] not solved
yet: <what to fix>``. It never raises, so an unsolved exercise never fails a notebook run; it
returns a ``CheckResult`` (``solved``, ``message``) that tests and solution notebooks assert on.

Design
------
* **What really happened, not what the code claims.** A check reads the per-attempt records the
  mock kept for this exercise's run (``GET /_mock/log?run=...``: identity, attempt, start and end
  on the server's clock, status, the ``Retry-After`` it sent) and compares them with what the
  learner's code returns. Concurrency is the peak overlap of the server-side intervals: a client
  that releases its slot only after reading an answer can never show more overlap at the server
  than its bound. Retry timing is the gap between an answer and the next attempt of the same
  request, against the ``Retry-After`` that answer carried.
* **One run per attempt.** ``exercise(name)`` returns a fresh ``Exercise`` with its own API key and
  ``X-Run-Id``; the mock keeps a separate log per run (by that header, else by a hash of the key),
  so re-running a cell, or another exercise, never mixes records. Requests sent with the
  exercise's key but without the header (hand-written headers) are found too.
* **Always a local mock.** Exercises run against a bundled mock started on first use (one per set
  of mock settings, shared by the exercises of a kernel, stopped when the kernel exits), whatever
  ``PARADIGM_API_KEY`` says: a real server keeps no log to check against, and practice should not
  spend paid requests.
* **Results in any reasonable shape.** A reply may be the text, the whole JSON body (a dict) or an
  ``openai`` response object; a failure may be an exception, ``None`` or an ``{"error": ...}``
  dict. ``reply_text`` reads them all.

The checks, by notebook: 01 ``check_first_call``, ``check_401_reported``; 02
``check_input_order``, ``check_one_failure_contained``; 02b ``check_bounded``,
``check_deadline``; 03
``check_ideal_time``; 04 ``check_top_level_await``,
``check_subprocess_run``; 05 ``check_bounded`` (a pool of workers), ``check_retry_after``; 05b
``check_failures_recorded``, ``check_resumed``, ``check_batch_summary``.
Session reuse is not checked: the mock's log does not record which connection carried a request.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import secrets
import sys
import tempfile
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..seed import GREETING_PROMPT, SEED_NAMES
from ..settings import DEFAULT_MODEL

__all__ = [
    "SEED_NAMES",
    "CheckResult",
    "Exercise",
    "check_401_reported",
    "check_bounded",
    "check_deadline",
    "check_first_call",
    "check_ideal_time",
    "check_input_order",
    "check_one_failure_contained",
    "check_retry_after",
    "check_subprocess_run",
    "check_top_level_await",
    "exercise",
    "reply_text",
    "stop_exercise_mocks",
]

UNKNOWN_MODEL = "no-such-model"
#: The mock's status for an attempt whose client hung up first (``mock.stats.STATUS_CLIENT_CLOSED``,
#: not imported: importing the mock here would load its server at the notebook's first import).
CLIENT_CLOSED = 499
RETRY_AFTER_SLACK_S = 0.010  # the mock's own clock slack when it grades retries


@dataclass(frozen=True)
class ExerciseSpec:
    """What an exercise sends and against which mock settings."""

    n_requests: int = 20
    mock_flags: tuple[tuple[str, Any], ...] = (("latency_s", 0.2),)
    failing_index: int | None = None  # this payload asks for an unknown model (a 404)

    @property
    def latency_s(self) -> float:
        return float(dict(self.mock_flags).get("latency_s", 0.5))


#: 2b.B: each answer takes 0.3 s, except payload 12's first attempt (seed 5), which takes 3 s.
DEADLINE_MOCK = (("latency_s", 0.3), ("slow_rate", 0.05), ("slow_seconds", 3.0), ("seed", 5))
RETRY_MOCK = (("latency_s", 0.05), ("error_rate", 0.3), ("error_statuses", "429"), ("seed", 5))
EXERCISES = {
    "01-first-call": ExerciseSpec(n_requests=1),
    "01-401": ExerciseSpec(n_requests=1),
    "02-in-order": ExerciseSpec(),
    "02-one-failure": ExerciseSpec(failing_index=7),
    "02-bound": ExerciseSpec(),
    "03-ideal-time": ExerciseSpec(),
    "04-await": ExerciseSpec(n_requests=5),
    "04-subprocess": ExerciseSpec(n_requests=5),
    "05-workers": ExerciseSpec(),
    "05-retry-after": ExerciseSpec(mock_flags=RETRY_MOCK),
    "02b-deadline": ExerciseSpec(mock_flags=DEADLINE_MOCK),
}

_mocks: dict[tuple, Any] = {}  # mock settings -> MockHandle, one per kernel (stopped at exit)


@dataclass(frozen=True)
class Exercise:
    """One attempt at an exercise: where to send (``chat_url``), with which ``headers()``."""

    name: str
    base_url: str
    api_key: str = field(repr=False)
    run_id: str
    spec: ExerciseSpec = field(repr=False)
    model: str = DEFAULT_MODEL

    @property
    def chat_url(self) -> str:
        """``{base_url}/chat/completions`` of the exercises' local mock."""
        return f"{self.base_url}/chat/completions"

    @property
    def names(self) -> list[str]:
        """The names this exercise greets, in input order (the seed's, as many as it sends)."""
        return [SEED_NAMES[i % len(SEED_NAMES)] for i in range(self.spec.n_requests)]

    @property
    def latency_s(self) -> float:
        """How long the exercises' mock takes to answer one request."""
        return self.spec.latency_s

    def headers(self, *, with_key: bool = True) -> dict[str, str]:
        """The key (unless ``with_key=False``), the JSON content type, and this run's id."""
        headers = {"Content-Type": "application/json", "X-Run-Id": self.run_id}
        if with_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def payload(self, name: str) -> dict[str, Any]:
        """The seed's greeting request for ``name``."""
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": GREETING_PROMPT.format(name=name)}],
            "temperature": 0.4,
            "max_tokens": 150,
        }

    def payloads(self) -> list[dict[str, Any]]:
        """One request per name, in input order (one asks for an unknown model if the exercise says so)."""
        payloads = [self.payload(name) for name in self.names]
        if self.spec.failing_index is not None:
            payloads[self.spec.failing_index]["model"] = UNKNOWN_MODEL
        return payloads

    def env(self) -> dict[str, str]:
        """The environment for a script in a subprocess: this run's URL, key and run id."""
        return {
            **os.environ,
            "PARADIGM_BASE_URL": self.base_url,
            "PARADIGM_API_KEY": self.api_key,
            "PARADIGM_RUN_ID": self.run_id,
        }

    def write_script(self) -> Path:
        """Write exercise 04's script to a temporary folder and return its path."""
        folder = Path(tempfile.mkdtemp(prefix="paradigm-exercise-"))
        path = folder / "greet_five.py"
        path.write_text(SUBPROCESS_SCRIPT.format(n=self.spec.n_requests), encoding="utf-8")
        return path


def exercise(name: str) -> Exercise:
    """A fresh attempt at exercise ``name``: a new key and run id on the exercises' local mock."""
    if name not in EXERCISES:
        raise ValueError(f"unknown exercise {name!r}; known: {', '.join(EXERCISES)}")
    spec = EXERCISES[name]
    tag = secrets.token_hex(4)
    return Exercise(
        name=name,
        base_url=_mock_for(spec.mock_flags),
        api_key=f"exercise-{name}-{tag}",
        run_id=f"exercise-{name}-{tag}",
        spec=spec,
    )


def stop_exercise_mocks() -> None:
    """Stop the exercises' local mocks now (they stop by themselves when the kernel exits)."""
    while _mocks:
        _flags, handle = _mocks.popitem()
        handle.stop()


def _mock_for(flags: tuple[tuple[str, Any], ...]) -> str:
    """The base URL of the local mock with these settings, started on first use."""
    handle = _mocks.get(flags)
    if handle is None or not handle.running:
        from ..mock import start_mock  # imported late: importing this module starts nothing

        handle = _mocks[flags] = start_mock(**dict(flags))
    return handle.base_url


# --- results --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    """A check's verdict: ``solved`` and the ``message`` it printed."""

    exercise: str
    solved: bool
    message: str

    def __repr__(self) -> str:
        return f"CheckResult(exercise={self.exercise!r}, solved={self.solved})"


def reply_text(result: Any) -> str | None:
    """The reply's text from a str, a JSON body, or an SDK object; None for a failure."""
    if isinstance(result, str):
        return result
    if isinstance(result, dict):
        try:
            return result["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            return None
    choices = getattr(result, "choices", None)  # an openai ChatCompletion
    if choices:
        return getattr(getattr(choices[0], "message", None), "content", None)
    return None


def _is_failure(result: Any) -> bool:
    return isinstance(result, BaseException) or result is None or reply_text(result) is None


# --- what the mock saw ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """One attempt as the mock logged it (times in seconds on the mock's clock)."""

    identity: str
    attempt: int
    t_start: float
    t_end: float
    status: int
    retry_after_s: float | None


def _attempts(ex: Exercise) -> list[Attempt]:
    """This run's attempts: those with its ``X-Run-Id``, and those with its key but no header."""
    from ..mock import mock_log
    from ..mock.stats import key_hash

    records = []
    for run in (ex.run_id, key_hash(ex.api_key)):
        records += mock_log(ex.base_url, run=run)
    return sorted(
        (
            Attempt(
                r["identity"],
                r["attempt"],
                r["t_start"],
                r["t_end"],
                r["status"],
                r["retry_after_s"],
            )
            for r in records
        ),
        key=lambda a: a.t_start,
    )


def peak_in_flight(attempts: list[Attempt]) -> int:
    """The most attempts in flight at once, from their server-side start and end times."""
    events = sorted([(a.t_start, 1) for a in attempts] + [(a.t_end, -1) for a in attempts])
    peak = in_flight = 0
    for _time, change in events:  # at equal times an end (-1) sorts before a start (+1)
        in_flight += change
        peak = max(peak, in_flight)
    return peak


def _ok_count(attempts: list[Attempt]) -> int:
    return sum(a.status == 200 for a in attempts)


#: What to write first, per exercise, when none of its requests reached the mock yet (a hint that
#: names the exercise's own first step; the generic one covers exercises not listed).
NOT_STARTED_HINTS = {
    "01-first-call": "send ex.payload('Alice') as JSON to ex.chat_url, with headers=ex.headers()",
    "01-401": "send ex.payload('Alice') to ex.chat_url with headers=ex.headers(with_key=False)",
    "02-in-order": "gather the 20 requests of ex.payloads() to ex.chat_url, headers=ex.headers()",
    "02-one-failure": (
        "gather all 20 of ex.payloads() with return_exceptions=True, headers=ex.headers()"
    ),
    "02-bound": "send the 20 of ex.payloads() behind one asyncio.Semaphore(5), headers=ex.headers()",
    "02b-deadline": "gather the 20 of ex.payloads() behind the Semaphore(4), a deadline on each",
    "04-await": "await the coroutine at the top of the cell; it sends to ex.chat_url",
    "04-subprocess": "run the script with subprocess.run([sys.executable, ...], env=ex.env())",
    "05-workers": "start 4 workers sharing one iterator of (index, payload) pairs (5.2)",
    "05-retry-after": "send the 20 of ex.payloads(), retrying each 429 after its Retry-After",
}
NOT_STARTED_DEFAULT = (
    "write your attempt in the cell, sending to ex.chat_url with headers=ex.headers()"
)


def _judge(ex: Exercise, verdict: Callable[[list[Attempt]], tuple[bool, str]]) -> CheckResult:
    """Read the log, let ``verdict`` decide, print the verdict; never raise for a wrong attempt."""
    if not isinstance(ex, Exercise):
        return _report(
            str(ex),
            False,
            "pass the exercise object first: ex = exercise('...'), then check(ex, ...)",
        )
    try:
        attempts = _attempts(ex)
    except (urllib.error.URLError, OSError, ValueError) as error:
        return _report(
            ex.name,
            False,
            f"could not read the exercise mock's log ({error}); run `ex = exercise({ex.name!r})` again",
        )
    if not attempts:
        return _report(
            ex.name,
            False,
            "no request of this attempt reached the mock: "
            + NOT_STARTED_HINTS.get(ex.name, NOT_STARTED_DEFAULT),
        )
    try:
        solved, message = verdict(attempts)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as error:
        solved, message = False, f"your result could not be read ({type(error).__name__}: {error})"
    return _report(ex.name, solved, message)


def _report(name: str, solved: bool, message: str) -> CheckResult:
    print(f"[{name}] {'solved' if solved else 'not solved yet'}: {message}")
    return CheckResult(name, solved, message)


def _answers_problem(ex: Exercise, attempts: list[Attempt], replies: Any) -> str | None:
    """Why a greeting batch is not done: a request left unanswered, or the replies wrong."""
    if _ok_count(attempts) < len(ex.names):
        return f"the mock answered {_ok_count(attempts)} of {len(ex.names)} requests"
    return _replies_problem(ex, replies)


def _replies_problem(ex: Exercise, replies: Any) -> str | None:
    """What is wrong with a list of replies meant to greet ``ex.names`` in order, or None."""
    if not isinstance(replies, (list, tuple)):
        return f"expected a list of {len(ex.names)} replies, got {type(replies).__name__}"
    if len(replies) != len(ex.names):
        return f"expected {len(ex.names)} replies, got {len(replies)}"
    for index, (name, reply) in enumerate(zip(ex.names, replies, strict=True)):
        text = reply_text(reply)
        if text is None:
            return f"reply {index} ({name}) is not an answer: {type(reply).__name__}"
        if name not in text:
            return (
                f"reply {index} should greet {name} but reads {text[:60]!r}: keep the results in "
                "input order (asyncio.gather does; as_completed does not)"
            )
    return None


def _others_in_place(ex: Exercise, results: Any, failed_index: int) -> str | None:
    """What is wrong with the answers around the one failure at ``failed_index``, or None."""
    for index, (name, result) in enumerate(zip(ex.names, results, strict=True)):
        text = reply_text(result)
        if index != failed_index and (text is None or name not in text):
            return f"the result for {name} is missing or out of place: {result!r:.80}"
    return None


# --- 01 · session set-up ------------------------------------------------------------------------


def check_first_call(ex: Exercise, reply: Any) -> CheckResult:
    """One request answered 200, and ``reply`` is its text (not the whole JSON body)."""

    def verdict(attempts: list[Attempt]) -> tuple[bool, str]:
        if not _ok_count(attempts):
            statuses = sorted({a.status for a in attempts})
            return False, f"the mock answered {statuses}, not 200: read the error message it sent"
        if isinstance(reply, dict) and reply_text(reply) is not None:
            return False, (
                "you returned the whole JSON body: the text is in "
                "data['choices'][0]['message']['content']"
            )
        text = reply_text(reply)
        if not text:
            return False, f"the request was answered, but `reply` is {reply!r}: return the text"
        return True, "one request answered, and you read the reply's text."

    return _judge(ex, verdict)


def check_401_reported(ex: Exercise, status: Any, message: Any) -> CheckResult:
    """A request without a key got a 401, and the code reports its status and error message."""

    def verdict(attempts: list[Attempt]) -> tuple[bool, str]:
        if not any(a.status == 401 for a in attempts):
            return (
                False,
                "the mock saw no request without a key: send one with ex.headers(with_key=False)",
            )
        if status != 401:
            return False, f"`status` should be the HTTP status of that answer, 401; got {status!r}"
        if not isinstance(message, str) or not message.strip():
            return False, f"`message` should be the error's text; got {message!r}"
        if message.lstrip().startswith("{"):
            return False, "`message` is the whole JSON body: report body['error']['message']"
        if "API key" not in message:
            return False, f"`message` should be the server's error message; got {message[:80]!r}"
        return True, "401 caught, and reported with the server's own message."

    return _judge(ex, verdict)


# --- 02 · asyncio.gather --------------------------------------------------------------------------


def check_input_order(ex: Exercise, replies: Any) -> CheckResult:
    """All requests answered, and the replies come back in the order of the names."""

    def verdict(attempts: list[Attempt]) -> tuple[bool, str]:
        problem = _answers_problem(ex, attempts, replies)
        if problem:
            return False, problem
        return True, f"{len(ex.names)} replies, each in the place of its name."

    return _judge(ex, verdict)


def check_one_failure_contained(ex: Exercise, results: Any) -> CheckResult:
    """One request fails (unknown model), yet every other result is there, in input order."""
    failing = ex.spec.failing_index

    def verdict(attempts: list[Attempt]) -> tuple[bool, str]:
        n_good = len(ex.names) - 1
        if isinstance(results, BaseException):
            return False, (
                f"the whole batch raised {type(results).__name__}: gather(..., "
                "return_exceptions=True) keeps the other results"
            )
        if not isinstance(results, (list, tuple)) or len(results) != len(ex.names):
            size = len(results) if isinstance(results, (list, tuple)) else type(results).__name__
            return False, f"expected {len(ex.names)} results (one per payload), got {size}"
        if not any(a.status == 404 for a in attempts):
            return False, "the failing request was never sent: send all of ex.payloads()"
        if _ok_count(attempts) < n_good:
            return False, f"only {_ok_count(attempts)} of the {n_good} good requests were answered"
        if not _is_failure(results[failing]):
            return (
                False,
                f"result {failing} should be the failure (an exception or an error record)",
            )
        problem = _others_in_place(ex, results, failing)
        if problem:
            return False, problem
        return True, f"1 failure kept as a result at index {failing}, {n_good} replies in order."

    return _judge(ex, verdict)


def check_bounded(ex: Exercise, replies: Any, max_in_flight: int = 5) -> CheckResult:
    """Every request answered, never more than ``max_in_flight`` at once, and more than one."""

    def verdict(attempts: list[Attempt]) -> tuple[bool, str]:
        peak = peak_in_flight(attempts)
        if peak > max_in_flight:
            return False, (
                f"up to {peak} requests were in flight at once (bound: {max_in_flight}): wrap each "
                f"request in `async with asyncio.Semaphore({max_in_flight})` (one semaphore for all)"
            )
        if peak == 1:
            return False, f"one request at a time is sequential: let {max_in_flight} run together"
        problem = _answers_problem(ex, attempts, replies)
        if problem:
            return False, problem
        return True, f"{len(ex.names)} replies, never more than {max_in_flight} requests in flight."

    return _judge(ex, verdict)


def check_deadline(
    ex: Exercise, results: Any, max_in_flight: int, deadline_s: float
) -> CheckResult:
    """At most ``max_in_flight`` at once; the one slow request cut by a deadline that started with
    its slot, kept as a ``TimeoutError`` in its place; every other request answered, in order."""

    _wait_for_records(ex)  # a hang-up reaches the mock's log a moment after the client's

    def verdict(attempts: list[Attempt]) -> tuple[bool, str]:
        peak = peak_in_flight(attempts)
        if peak > max_in_flight:
            return False, f"up to {peak} requests were in flight: hold the semaphore around each"
        if any(a.attempt > 1 for a in attempts):
            return False, "a request was sent twice: here a timeout stays a result, no retry"
        ran_long = [a.t_end - a.t_start for a in attempts if a.t_end - a.t_start > 2 * deadline_s]
        if ran_long:
            return False, (
                f"a request ran {max(ran_long):.1f} s: no deadline cut it; wrap each request in "
                "asyncio.timeout(deadline) (or asyncio.wait_for) inside the semaphore"
            )
        n_sent = len({a.identity for a in attempts})
        if n_sent < len(ex.names):
            return False, (
                f"only {n_sent} of {len(ex.names)} requests reached "
                "the mock: the others ran out of time waiting for a slot; start the deadline "
                "inside `async with semaphore`, not around it"
            )
        cut = [a for a in attempts if a.status == CLIENT_CLOSED]
        cut_early = [a for a in cut if a.t_end - a.t_start < 0.8 * deadline_s]
        if cut_early:
            return False, (
                f"{len(cut_early)} request(s) were cut after less than {deadline_s} s with the "
                "server: the deadline counted their wait for a slot; start it inside the semaphore"
            )
        if not isinstance(results, (list, tuple)) or len(results) != len(ex.names):
            return False, f"expected {len(ex.names)} results, one per payload, in input order"
        timeouts = [i for i, r in enumerate(results) if isinstance(r, asyncio.TimeoutError)]
        if len(cut) != 1 or len(timeouts) != 1:
            return False, (
                f"the mock saw {len(cut)} request(s) cut, your results hold {len(timeouts)} "
                "TimeoutError(s): gather(..., return_exceptions=True) keeps it in its place"
            )
        problem = _others_in_place(ex, results, timeouts[0])
        if problem:
            return False, problem
        return True, (
            f"the slow request ({ex.names[timeouts[0]]}) cut at {deadline_s} s, kept as a "
            f"TimeoutError in its place; {len(results) - 1} answers, {peak} in flight at most."
        )

    return _judge(ex, verdict)


# --- 03 · the speed test --------------------------------------------------------------------------


def check_ideal_time(ex: Exercise, predicted_s: Any, max_in_flight: int) -> CheckResult:
    """The batch ran under the bound, and ``predicted_s`` is the ideal ceil(N / C) * latency."""
    n = len(ex.names)
    ideal_s = math.ceil(n / max_in_flight) * ex.latency_s

    def verdict(attempts: list[Attempt]) -> tuple[bool, str]:
        peak = peak_in_flight(attempts)
        if peak > max_in_flight:
            return False, f"up to {peak} requests were in flight, over the bound of {max_in_flight}"
        if _ok_count(attempts) < n:
            return False, f"the mock answered {_ok_count(attempts)} of {n} requests"
        if not isinstance(predicted_s, (int, float)):
            return False, f"`predicted_s` should be a number of seconds, got {predicted_s!r}"
        if math.isclose(predicted_s, n / max_in_flight * ex.latency_s, rel_tol=1e-3) and (
            n % max_in_flight
        ):
            return False, (
                f"close: {n} / {max_in_flight} is not a whole number of waves; the last, partial "
                "wave takes a full latency too (math.ceil)"
            )
        if not math.isclose(predicted_s, ideal_s, rel_tol=1e-3):
            return False, (
                f"predicted {predicted_s:g} s: count the waves of {max_in_flight} requests, "
                "each takes one latency"
            )
        return True, f"ideal = ceil({n} / {max_in_flight}) x {ex.latency_s:g} s = {ideal_s:g} s."

    return _judge(ex, verdict)


# --- 04 · Jupyter and the event loop --------------------------------------------------------------

SUBPROCESS_SCRIPT = '''\
"""Exercise 04: greet {n} users concurrently, from a script run in a subprocess."""

import asyncio
import os
import sys

import aiohttp

from paradigm_kit.workshop.exercises import GREETING_PROMPT, SEED_NAMES


async def main() -> int:
    headers = {{
        "Authorization": f"Bearer {{os.environ['PARADIGM_API_KEY']}}",
        "X-Run-Id": os.environ.get("PARADIGM_RUN_ID", ""),
    }}
    url = os.environ["PARADIGM_BASE_URL"] + "/chat/completions"

    async def greet(session: aiohttp.ClientSession, name: str) -> str:
        payload = {{
            "model": "alfred-4.2",
            "messages": [{{"role": "user", "content": GREETING_PROMPT.format(name=name)}}],
        }}
        async with session.post(url, json=payload, headers=headers) as response:
            response.raise_for_status()
            return (await response.json())["choices"][0]["message"]["content"]

    async with aiohttp.ClientSession() as session:
        replies = await asyncio.gather(*(greet(session, name) for name in SEED_NAMES[:{n}]))
    print(f"{{len(replies)}} replies")
    return 0


if __name__ == "__main__":
    print(f"python: {{sys.executable}}")
    sys.exit(asyncio.run(main()))
'''


def check_top_level_await(ex: Exercise, replies: Any) -> CheckResult:
    """The coroutine ran in the notebook (top-level ``await``) and returned every reply in order."""

    def verdict(attempts: list[Attempt]) -> tuple[bool, str]:
        problem = _answers_problem(ex, attempts, replies)
        if problem:
            hint = " (did you keep the result: replies = await main()?)" if not replies else ""
            return False, problem + hint
        return True, f"main() awaited in the notebook: {len(ex.names)} replies, no asyncio.run()."

    return _judge(ex, verdict)


def check_subprocess_run(ex: Exercise, exit_code: Any, output: Any) -> CheckResult:
    """The script ran on the kernel's own Python, succeeded, and its requests reached the mock."""

    def verdict(attempts: list[Attempt]) -> tuple[bool, str]:
        if exit_code != 0:
            return False, f"the script exited with {exit_code!r}, not 0: read its output"
        lines = str(output).splitlines()
        ran_on = next(
            (line.split(":", 1)[1].strip() for line in lines if line.startswith("python:")), ""
        )
        if not ran_on:
            return False, "pass the script's output (stdout) as `output`"
        if not _same_python(ran_on, sys.executable):
            return False, (
                f"the script ran on {ran_on}, not on this kernel's Python: run "
                "[sys.executable, script] rather than a bare 'python'"
            )
        if _ok_count(attempts) < len(ex.names):
            return False, (
                f"the mock answered {_ok_count(attempts)} of {len(ex.names)} requests: pass "
                "env=ex.env() so the script uses this exercise's URL and key"
            )
        return True, "the script ran on this kernel's Python, in its own process and event loop."

    return _judge(ex, verdict)


def _same_python(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a == b


# --- 05 · production batches ----------------------------------------------------------------------


def check_retry_after(ex: Exercise, results: Any) -> CheckResult:
    """Every request ends answered, and no retry came before the ``Retry-After`` it was given."""

    def verdict(attempts: list[Attempt]) -> tuple[bool, str]:
        by_identity = _by_identity(attempts)
        refused = sum(a.status == 429 for a in attempts)
        if not refused:
            return False, "no request was refused with a 429 this time: send all of ex.payloads()"
        too_early = []
        for tries in by_identity.values():
            tries.sort(key=lambda a: a.attempt)
            for previous, following in zip(tries, tries[1:], strict=False):
                waited_s = following.t_start - previous.t_end
                wanted_s = previous.retry_after_s
                if wanted_s is not None and waited_s < wanted_s - RETRY_AFTER_SLACK_S:
                    too_early.append((waited_s, wanted_s))
        if too_early:
            waited_s, wanted_s = too_early[0]
            return False, (
                f"{len(too_early)} retry(ies) came too early (one after {waited_s:.2f} s, asked "
                f"{wanted_s:g} s): sleep for the Retry-After header's seconds before retrying"
            )
        unanswered = sum(tries[-1].status != 200 for tries in by_identity.values())
        if unanswered:
            return False, (
                f"{unanswered} request(s) ended without an answer: retry a 429 until it succeeds"
            )
        problem = _replies_problem(ex, results)
        if problem:
            return False, problem
        return True, (
            f"{refused} 429(s), each retried after its Retry-After; all {len(ex.names)} answered."
        )

    return _judge(ex, verdict)


# --- 10 · tokens and cost, 11 · the official SDK ------------------------------------------------
# (appended as one block: the specs, prices and checks of these two lessons live here together)

#: Made-up prices for the exercises (currency units per million tokens): not Paradigm's prices.
EXERCISE_PRICE_PER_1M_INPUT = 0.50
EXERCISE_PRICE_PER_1M_OUTPUT = 1.50
#: The 10-admission mock's tokens-per-minute limit: its one-second burst of 1,200 tokens holds the
#: 20 greetings at once only if each reserves at most 60 (34 prompt + max_tokens <= 26), and the
#: longest greeting needs 19 completion tokens: max_tokens from 19 to 26 passes.
ADMISSION_TPM = 72_000
#: The 10-cap budget: a greeting uses ~0.00004 but reserves ~0.00024 (max_tokens 150), so a
#: capped sweep stops after about seven.
EXERCISE_CAP = 0.0005
RAW_HEADERS_RPM = 900  # the 11-raw-headers mock's limit, which only its headers reveal

EXERCISES.update(
    {
        "10-admission": ExerciseSpec(mock_flags=(("latency_s", 0.2), ("tpm", ADMISSION_TPM))),
        "10-cost": ExerciseSpec(n_requests=5, mock_flags=(("latency_s", 0.05),)),
        "10-cap": ExerciseSpec(mock_flags=(("latency_s", 0.05),)),
        "11-sdk-bound": ExerciseSpec(),
        "11-sdk-retries": ExerciseSpec(mock_flags=RETRY_MOCK),
        "11-raw-headers": ExerciseSpec(
            n_requests=1, mock_flags=(("latency_s", 0.05), ("rpm", RAW_HEADERS_RPM))
        ),
    }
)
NOT_STARTED_HINTS.update(
    {
        "10-admission": "gather all 20 of ex.payloads() at once, each with a max_tokens you chose",
        "10-cost": "send the 5 of ex.payloads() and keep their JSON bodies (their usage is priced)",
        "10-cap": "send ex.payloads() in order, 4 in flight, each once its worst case fits the cap",
    }
)
__all__ += [
    "EXERCISE_CAP",
    "EXERCISE_PRICE_PER_1M_INPUT",
    "EXERCISE_PRICE_PER_1M_OUTPUT",
    "check_admission",
    "check_cost",
    "check_raw_headers",
    "check_spending_cap",
    "price_of",
    "worst_case_price",
]


def _usage(result: Any) -> dict[str, int] | None:
    """``usage`` of a JSON body or an SDK object as a dict; None when there is none."""
    usage = result.get("usage") if isinstance(result, dict) else getattr(result, "usage", None)
    if usage is not None and not isinstance(usage, dict):
        usage = {
            name: getattr(usage, name, None) for name in ("prompt_tokens", "completion_tokens")
        }
    if not isinstance(usage, dict):
        return None
    if not all(isinstance(usage.get(n), int) for n in ("prompt_tokens", "completion_tokens")):
        return None
    return usage


def _finish_reason(result: Any) -> str | None:
    if isinstance(result, dict):
        try:
            return result["choices"][0]["finish_reason"]
        except (KeyError, IndexError, TypeError):
            return None
    choices = getattr(result, "choices", None)
    return getattr(choices[0], "finish_reason", None) if choices else None


def price_of(usage: dict[str, int]) -> float:
    """What one answer costs at the exercise prices: its *used* tokens, each side at its price."""
    return (
        usage["prompt_tokens"] * EXERCISE_PRICE_PER_1M_INPUT
        + usage["completion_tokens"] * EXERCISE_PRICE_PER_1M_OUTPUT
    ) / 1e6


def worst_case_price(payload: dict[str, Any]) -> float:
    """The most one request can cost before it is sent: the prompt estimate + all of max_tokens."""
    from ..tokens import estimate_prompt_tokens  # the count both the mock and the runner use

    max_tokens = payload.get("max_tokens") or 256
    return price_of(
        {
            "prompt_tokens": estimate_prompt_tokens(payload["messages"]),
            "completion_tokens": max_tokens,
        }
    )


def _bodies_problem(results: Any, expected: int) -> str | None:
    """What is wrong with a list meant to hold ``expected`` answers with their usage, or None."""
    if not isinstance(results, (list, tuple)):
        return f"expected a list of answers (JSON bodies), got {type(results).__name__}"
    if len(results) != expected:
        return f"expected {expected} answers, got {len(results)}"
    for index, result in enumerate(results):
        if _usage(result) is None:
            return (
                f"answer {index} has no usage: keep the whole JSON body (await response.json()), "
                "not only its text"
            )
    return None


def check_admission(ex: Exercise, results: Any) -> CheckResult:
    """All greetings sent at once under a tokens-per-minute limit: none refused, none cut."""

    def verdict(attempts: list[Attempt]) -> tuple[bool, str]:
        n = len(ex.names)
        refused = sum(a.status == 429 for a in attempts)
        peak = peak_in_flight(attempts)
        if refused:
            return False, (
                f"{refused} of {len(attempts)} attempts were refused with 429: each request "
                "reserves prompt + max_tokens tokens at admission; ask for fewer max_tokens"
            )
        if peak < n / 2:
            return False, (
                f"at most {peak} request(s) were in flight together: send all {n} at once "
                "(asyncio.gather), the point is to fit them in one burst"
            )
        problem = _bodies_problem(results, n)
        if problem:
            return False, problem
        cut = sum(_finish_reason(r) != "stop" for r in results)
        if cut:
            return False, (
                f"{cut} repl(ies) ended with finish_reason 'length': max_tokens is now too small "
                "for a one-sentence greeting"
            )
        return (
            True,
            f"{n} greetings admitted in one burst, none cut: max_tokens sized to the answer.",
        )

    return _judge(ex, verdict)


def check_cost(ex: Exercise, results: Any, cost: Any) -> CheckResult:
    """``cost`` is what the answers used, priced per side: prompt and completion tokens apart."""

    def verdict(attempts: list[Attempt]) -> tuple[bool, str]:
        n = len(ex.names)
        if _ok_count(attempts) < n:
            return False, f"the mock answered {_ok_count(attempts)} of {n} requests"
        problem = _bodies_problem(results, n)
        if problem:
            return False, problem
        if not isinstance(cost, (int, float)):
            return False, f"`cost` should be a number (currency units), got {cost!r}"
        usages = [_usage(r) for r in results]
        expected = sum(price_of(u) for u in usages)
        if math.isclose(cost, expected, rel_tol=1e-6):
            return True, f"{n} answers cost {expected:.8f}: used tokens, each side at its price."
        reserved = sum(worst_case_price(p) for p in ex.payloads())
        total_tokens = sum(u["prompt_tokens"] + u["completion_tokens"] for u in usages)
        if math.isclose(cost, reserved, rel_tol=1e-3):
            return False, "you priced max_tokens: price the usage the answers report"
        if math.isclose(cost, total_tokens * EXERCISE_PRICE_PER_1M_INPUT / 1e6, rel_tol=1e-6):
            return False, "completion tokens have their own price: price the two sides apart"
        if math.isclose(cost, expected * 1e6, rel_tol=1e-6):
            return False, "prices are per million tokens: divide by 1e6"
        return False, f"cost {cost!r}, expected about {expected:.8f}: sum usage x price per side"

    return _judge(ex, verdict)


def check_spending_cap(
    ex: Exercise, results: Any, spent: Any, cap: float = EXERCISE_CAP
) -> CheckResult:
    """The sweep never went over ``cap``, stopped only when the next worst case no longer fit,
    and ``spent`` is what its answers really cost."""

    def verdict(attempts: list[Attempt]) -> tuple[bool, str]:
        answered = _ok_count(attempts)
        if not isinstance(results, (list, tuple)):
            return False, f"expected the list of answers you got, got {type(results).__name__}"
        problem = _bodies_problem(results, answered)
        if problem:
            return False, problem + f" (the mock answered {answered} requests)"
        real_spent = sum(price_of(_usage(r)) for r in results)
        if real_spent > cap * (1 + 1e-9):
            return False, (
                f"the answers cost {real_spent:.8f}, over the cap of {cap:g}: reserve each "
                "request's worst case (prompt + max_tokens) before sending it"
            )
        if not isinstance(spent, (int, float)) or not math.isclose(spent, real_spent, rel_tol=1e-6):
            return (
                False,
                f"`spent` is {spent!r}, but the answers cost {real_spent:.8f} (usage x price)",
            )
        payloads = ex.payloads()
        if answered < len(payloads):
            next_worst = worst_case_price(payloads[answered])
            if cap - real_spent >= next_worst:
                return False, (
                    f"stopped with {cap - real_spent:.8f} left, enough for the next request's worst "
                    f"case ({next_worst:.8f}): settle each answer with its usage and go on"
                )
        return True, (
            f"{answered} requests for {real_spent:.8f} of a {cap:g} cap; the next worst case "
            "did not fit."
        )

    return _judge(ex, verdict)


def check_raw_headers(ex: Exercise, reply: Any, limit_requests: Any) -> CheckResult:
    """One answer read through ``with_raw_response``: its text, and the limit its headers gave."""

    def verdict(attempts: list[Attempt]) -> tuple[bool, str]:
        if not _ok_count(attempts):
            statuses = sorted({a.status for a in attempts})
            return False, f"the mock answered {statuses}, not 200"
        text = reply_text(reply)
        if not text:
            return False, f"`reply` is {type(reply).__name__}: parse the raw response (raw.parse())"
        try:
            limit = float(limit_requests)
        except (TypeError, ValueError):
            return False, (
                f"`limit_requests` is {limit_requests!r}: read raw.headers"
                "['x-ratelimit-limit-requests']"
            )
        if limit != RAW_HEADERS_RPM:
            return False, f"`limit_requests` is {limit_requests!r}, not the header's value"
        return (
            True,
            f"the reply, and the mock's requests limit ({RAW_HEADERS_RPM:g}/min) from its headers.",
        )

    return _judge(ex, verdict)


# --- 08 · streaming many answers at once ----------------------------------------------------------

#: The 08 exercises' mock streams one token every 20 ms after a 0.2 s first-token latency, on a
#: capacity model of 4 (processor sharing), so time to first token and the whole stream differ.
STREAM_MOCK = (("latency_s", 0.2), ("per_token_latency_s", 0.04), ("capacity", 4))

EXERCISES.update(
    {
        "08-read-stream": ExerciseSpec(n_requests=1, mock_flags=STREAM_MOCK),
        "08-ttft": ExerciseSpec(n_requests=1, mock_flags=STREAM_MOCK),
        "08-cancel": ExerciseSpec(n_requests=1, mock_flags=STREAM_MOCK),
    }
)
__all__ += ["check_cancelled_stream", "check_stream_read", "check_ttft"]


def _stream_records(ex: Exercise) -> list[dict[str, Any]]:
    """This run's raw log records (with the capacity fields ``t_first_token``...), by start."""
    from ..mock import mock_log

    return sorted(mock_log(ex.base_url, run=ex.run_id), key=lambda r: r["t_start"])


def _wait_for_records(ex: Exercise, wait_s: float = 5.0) -> None:
    """Let the mock finish the attempts still in flight for this run: it logs a hung-up attempt
    once it notices the close. Nothing in flight (no attempt yet): no wait.

    A bound on a wait, not a timing test: on a loaded machine the mock may take a moment.
    """
    import time

    from ..mock.launcher import mock_stats

    if not isinstance(ex, Exercise):
        return
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            if not mock_stats(ex.base_url, run=ex.run_id)["in_flight"]:
                return
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            return  # _judge reports an unreadable log
        time.sleep(0.05)


def check_stream_read(ex: Exercise, text: Any, n_events: Any) -> CheckResult:
    """One greeting streamed: ``text`` joined from the deltas, ``n_events`` the chunks decoded."""

    def verdict(attempts: list[Attempt]) -> tuple[bool, str]:
        if not _ok_count(attempts):
            return False, f"the mock answered {sorted({a.status for a in attempts})}, not 200"
        if not isinstance(text, str) or ex.names[0] not in text:
            return False, (
                f"`text` is {str(text)[:60]!r}: join every chunk's choices[0]['delta'].get('content')"
            )
        if not isinstance(n_events, int) or n_events < 3:
            return False, (
                f"`n_events` is {n_events!r}: count the events SSEDecoder.feed returned (a stream "
                "has a role chunk, content chunks and [DONE])"
            )
        return True, f"{n_events} events decoded, the greeting reads {text[:40]!r}..."

    return _judge(ex, verdict)


def check_ttft(ex: Exercise, ttft_s: Any, total_s: Any) -> CheckResult:
    """``ttft_s`` (to the first content chunk) and ``total_s`` (to the end) against the mock's log."""

    def verdict(attempts: list[Attempt]) -> tuple[bool, str]:
        records = [r for r in _stream_records(ex) if r["status"] == 200]
        if not records or records[-1].get("t_first_token") is None:
            return False, "no streamed answer in the log: send the payload with 'stream': True"
        record = records[-1]
        server_ttft_s = record["t_first_token"] - record["t_start"]
        server_total_s = record["t_end"] - record["t_start"]
        if not isinstance(ttft_s, (int, float)) or not isinstance(total_s, (int, float)):
            return False, f"`ttft_s` and `total_s` should be seconds, got {ttft_s!r}, {total_s!r}"
        # The client's clock includes the network and the kernel, so it may only read *later*. A
        # ttft past the middle of the stream measured the answer, not its first token (the mock
        # logs its end a moment after the client has read it: the end itself is no bound).
        midpoint_s = (server_ttft_s + server_total_s) / 2
        if ttft_s < 0.9 * server_ttft_s or ttft_s > midpoint_s:
            return False, (
                f"ttft_s is {ttft_s:.3f}; the mock sent its first token {server_ttft_s:.3f} s in "
                f"and ended at {server_total_s:.3f} s: stop the clock at the first content chunk"
            )
        if total_s < 0.9 * server_total_s:
            return False, (
                f"total_s is {total_s:.3f} but the stream lasted {server_total_s:.3f} s at the mock: "
                "read it to [DONE]"
            )
        return True, f"first token after {ttft_s:.3f} s, the whole stream {total_s:.3f} s."

    return _judge(ex, verdict)


def check_cancelled_stream(ex: Exercise, text: Any) -> CheckResult:
    """A stream closed after its first content token: the mock logged the attempt ended 499."""
    _wait_for_records(ex)

    def verdict(attempts: list[Attempt]) -> tuple[bool, str]:
        if any(a.status == 200 for a in attempts):
            return False, (
                "the mock finished a stream (200): stop reading after the first content chunk "
                "and leave the `async with` (or call response.close())"
            )
        if not any(a.status == CLIENT_CLOSED for a in attempts):
            return False, f"the mock logged {sorted({a.status for a in attempts})}, not 499"
        if not isinstance(text, str) or not text:
            return False, f"`text` is {text!r}: keep the content received before closing"
        return True, f"closed after {text!r}; the mock logged the attempt as 499 (client closed)."

    return _judge(ex, verdict)


# === 09 · choosing concurrency (helper J's block: specs and checks of lesson 09) ================

#: The 09 exercises' mock shares a capacity of 4 (processor sharing, notebook 09): any concurrency
#: from 4 up gives the same throughput, and latency grows as n / 4 beyond it.
CONCURRENCY_EXERCISE_CAPACITY = 4
#: 9.C's request budget, as a probe against a paid API would be given one (``--max-requests``).
PROBE_EXERCISE_BUDGET = 30
_CAPACITY_MOCK = (("latency_s", 0.2), ("capacity", CONCURRENCY_EXERCISE_CAPACITY))

EXERCISES.update(
    {
        "09-littles-law": ExerciseSpec(mock_flags=_CAPACITY_MOCK),
        "09-knee": ExerciseSpec(n_requests=30, mock_flags=_CAPACITY_MOCK),
        "09-capped-probe": ExerciseSpec(mock_flags=_CAPACITY_MOCK),
    }
)
NOT_STARTED_HINTS.update(
    {
        "09-littles-law": "send the 20 of ex.payloads() behind one asyncio.Semaphore(10)",
        "09-knee": "measure levels 1, 2, 4, 8: at each, 2 x c requests with exactly c in flight",
        "09-capped-probe": "await probe_capacity(ex.base_url, ex.api_key, max_requests=30)",
    }
)
__all__ += [
    "CONCURRENCY_EXERCISE_CAPACITY",
    "PROBE_EXERCISE_BUDGET",
    "check_capped_probe",
    "check_knee",
    "check_littles_law",
]


def mean_in_flight(attempts: list[Attempt]) -> float:
    """Requests in flight on average over the run, from the mock's log: the sum of the attempts'
    durations over the time from the first start to the last end (Little's law's left side)."""
    span_s = max(a.t_end for a in attempts) - min(a.t_start for a in attempts)
    busy_s = sum(a.t_end - a.t_start for a in attempts)
    return busy_s / span_s if span_s > 0 else 0.0


def check_littles_law(ex: Exercise, in_flight: Any) -> CheckResult:
    """``in_flight`` = measured throughput x mean latency, close to the log's mean in flight."""

    def verdict(attempts: list[Attempt]) -> tuple[bool, str]:
        n = len(ex.names)
        if _ok_count(attempts) < n:
            return False, f"the mock answered {_ok_count(attempts)} of {n} requests"
        peak = peak_in_flight(attempts)
        if peak > 10:
            return False, f"{peak} requests were in flight at once: bound them at 10"
        try:
            estimate = float(in_flight)
        except (TypeError, ValueError):
            return False, f"`in_flight` is {in_flight!r}: throughput (answers/s) x mean latency (s)"
        measured = mean_in_flight(attempts)
        if abs(estimate - measured) > 0.25 * measured:
            return False, (
                f"`in_flight` is {estimate:.2f}, but the mock's log shows {measured:.2f} in flight "
                "on average: throughput is answers / wall time, latency the mean per request"
            )
        return True, (
            f"throughput x latency = {estimate:.2f}, the log's mean in flight {measured:.2f}: "
            "Little's law holds."
        )

    return _judge(ex, verdict)


def check_knee(ex: Exercise, throughput_per_s: Any, knee: Any) -> CheckResult:
    """Levels 1, 2, 4, 8 measured (``throughput_per_s``: concurrency -> answers/s), and ``knee``
    named by the rule: the smallest concurrency within 5% of the highest throughput."""

    def verdict(attempts: list[Attempt]) -> tuple[bool, str]:
        peak = peak_in_flight(attempts)
        if peak < 8:
            return False, (
                f"at most {peak} request(s) were in flight together: measure the levels 1, 2, 4 "
                "and 8, each with exactly that many in flight"
            )
        if not isinstance(throughput_per_s, dict) or set(throughput_per_s) != {1, 2, 4, 8}:
            return False, "`throughput_per_s` must map each of 1, 2, 4, 8 to its answers/s"
        best = max(throughput_per_s.values())
        expected = min(c for c, rate in throughput_per_s.items() if rate >= 0.95 * best)
        if knee != expected:
            return False, (
                f"`knee` is {knee!r}: the smallest concurrency whose throughput is within 5% of "
                f"the highest you measured ({best:.1f}/s) is {expected}"
            )
        return True, (
            f"the knee of your sweep is {knee} (this mock's capacity is "
            f"{CONCURRENCY_EXERCISE_CAPACITY}): above it throughput stays flat, latency grows."
        )

    return _judge(ex, verdict)


def check_capped_probe(ex: Exercise, probe: Any) -> CheckResult:
    """A probe (``probe_capacity``) within ``PROBE_EXERCISE_BUDGET`` requests, and its answer."""

    def verdict(attempts: list[Attempt]) -> tuple[bool, str]:
        sent = len(attempts)
        if sent > PROBE_EXERCISE_BUDGET:
            return False, (
                f"{sent} requests reached the mock, over the budget of {PROBE_EXERCISE_BUDGET}: "
                "pass max_requests"
            )
        recommended = getattr(probe, "recommended", None)
        if not isinstance(recommended, int):
            return (
                False,
                f"`probe` is {type(probe).__name__}: the ProbeResult probe_capacity returns",
            )
        return True, (
            f"{sent} requests (budget {PROBE_EXERCISE_BUDGET}), recommended concurrency "
            f"{recommended} ({probe.stopped_because})."
        )

    return _judge(ex, verdict)


# === 05b · nothing lost, and the runner (helper N's block: specs and checks of lesson 05b) ======

#: 5b.A's mock refuses about a fifth of the attempts with a 503 (and a short Retry-After), so a
#: batch that does not retry loses answers; its payload 7 asks for an unknown model (a 404).
_FLAKY_503_MOCK = (
    ("latency_s", 0.05),
    ("error_rate", 0.2),
    ("error_statuses", "503"),
    ("retry_after_s", 0.1),
    ("seed", 2),
)
#: 5b.B: the first run wrote a whole line for this many requests, then tore the next one.
RESUME_DONE = 12
RESUME_TORN_LINE = '{"id": "q013", "attempts": 1, "resp'  # no closing brace, no newline

EXERCISES.update(
    {
        "05b-failures": ExerciseSpec(failing_index=7, mock_flags=_FLAKY_503_MOCK),
        "05b-resume": ExerciseSpec(mock_flags=(("latency_s", 0.05),)),
        "05b-run-batch": ExerciseSpec(mock_flags=_FLAKY_503_MOCK),
    }
)
NOT_STARTED_HINTS.update(
    {
        "05b-failures": "send the 20 of ex.payloads(), retrying a 503, recording a 4xx at once",
        "05b-resume": "send only the requests of input_path without a whole line in output_path",
        "05b-run-batch": "await run_batch(ex.payloads(), output_path, base_url=ex.base_url, ...)",
    }
)
__all__ += [
    "RESUME_DONE",
    "check_batch_summary",
    "check_failures_recorded",
    "check_resumed",
    "request_id",
    "write_resume_files",
]


def request_id(index: int) -> str:
    """The id of request ``index`` (0-based) in 5b's files: ``q001``, ``q002``, ..."""
    return f"q{index + 1:03d}"


def _record_text(record: Any) -> str | None:
    """The reply's text of a result: a reply (any shape ``reply_text`` reads), or a runner-style
    record ``{"id": ..., "response": body}``; None for an error record or a failure."""
    if isinstance(record, dict) and "response" in record:
        return reply_text(record["response"])
    return reply_text(record)


def _error_status(record: Any) -> Any:
    """The ``status`` of an error record ``{"error": {"status": ..., ...}}``, else None."""
    error = record.get("error") if isinstance(record, dict) else None
    return error.get("status") if isinstance(error, dict) else None


def _by_identity(attempts: list[Attempt]) -> dict[str, list[Attempt]]:
    """Each request's attempts (the mock's identity: an Idempotency-Key, else the body's hash)."""
    tries: dict[str, list[Attempt]] = {}
    for attempt in attempts:
        tries.setdefault(attempt.identity, []).append(attempt)
    return tries


def check_failures_recorded(ex: Exercise, results: Any) -> CheckResult:
    """Every good request ends answered (503s retried), the bad one (a 404) is sent once and
    kept as an error record ``{"error": {"status": 404, "message": ...}}`` in its place."""

    def verdict(attempts: list[Attempt]) -> tuple[bool, str]:
        bad = ex.spec.failing_index
        sent_404 = sum(a.status == 404 for a in attempts)
        if sent_404 > 1:
            return False, (
                f"the request with the unknown model was sent {sent_404} times: a 404 cannot "
                "succeed, record it after its first answer"
            )
        answered = sum(tries[-1].status == 200 for tries in _by_identity(attempts).values())
        good = len(ex.names) - 1
        if answered < good:
            return False, (
                f"{answered} of the {good} good requests ended answered: retry a 503 "
                "(after its Retry-After) until it succeeds"
            )
        if not isinstance(results, (list, tuple)) or len(results) != len(ex.names):
            return False, f"`results`: a list of {len(ex.names)} results, in input order"
        if isinstance(results[bad], BaseException):
            return False, (
                f"results[{bad}] is an exception ({type(results[bad]).__name__}): keep a record "
                "instead, {'error': {'status': 404, 'message': ...}}"
            )
        if _error_status(results[bad]) != 404:
            return False, (
                f"results[{bad}] is {str(results[bad])[:60]!r}: the error record "
                "{'error': {'status': 404, 'message': <the server's message>}}"
            )
        for index, (name, record) in enumerate(zip(ex.names, results, strict=True)):
            text = _record_text(record)
            if index != bad and (text is None or name not in text):
                return False, (
                    f"results[{index}] should greet {name}: keep the results in input order"
                )
        return True, (
            f"{good} answers and one error record (404, sent once) in place {bad}: "
            "the batch survived its bad request."
        )

    return _judge(ex, verdict)


def write_resume_files(ex: Exercise, folder: str | os.PathLike[str]) -> tuple[Path, Path]:
    """5b.B's files in ``folder``: the input (one request a line, ids ``q001``...) and the output
    an interrupted first run left (``RESUME_DONE`` whole lines, then a torn one)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    input_path, output_path = folder / "requests.jsonl", folder / "results.jsonl"
    with open(input_path, "w", encoding="utf-8") as lines:
        for index, payload in enumerate(ex.payloads()):
            lines.write(json.dumps({"id": request_id(index), **payload}) + "\n")
    with open(output_path, "w", encoding="utf-8") as lines:
        for index, name in enumerate(ex.names[:RESUME_DONE]):
            body = {"choices": [{"message": {"content": f"Bonjour {name} ! (first run)"}}]}
            lines.write(json.dumps({"id": request_id(index), "response": body}) + "\n")
        lines.write(RESUME_TORN_LINE)
    return input_path, output_path


def _output_problem(ex: Exercise, output_path: Any) -> str | None:
    """What is wrong with 5b.B's output file after the resume, or None."""
    try:
        lines = Path(output_path).read_text(encoding="utf-8").splitlines()
    except (OSError, TypeError) as error:
        return f"could not read `output_path` ({error}): the results file of write_resume_files"
    ids = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except ValueError:
            return (
                f"line {number} of the output is not JSON ({line[:40]!r}): drop the torn last "
                "line before appending (scan_output(path) does)"
            )
        ids.append(record.get("id") if isinstance(record, dict) else None)
        index = next((i for i, name in enumerate(ex.names) if request_id(i) == ids[-1]), None)
        text = _record_text(record)
        if index is not None and (text is None or ex.names[index] not in text):
            return f"the line of {ids[-1]} should greet {ex.names[index]}, reads {text!r:.60}"
    expected = [request_id(i) for i in range(len(ex.names))]
    if sorted(map(str, ids)) != expected:
        doubled = sorted({i for i in ids if ids.count(i) > 1})
        missing = sorted(set(expected) - set(ids))
        return f"every id exactly once, but doubled {doubled[:3]}, missing {missing[:3]}"
    return None


def check_resumed(ex: Exercise, output_path: Any) -> CheckResult:
    """Only the requests without a whole line were sent, and the output ends with one line per id."""

    def verdict(attempts: list[Attempt]) -> tuple[bool, str]:
        to_send = len(ex.names) - RESUME_DONE
        tries = _by_identity(attempts)
        if len(tries) > to_send:
            return False, (
                f"{len(tries)} different requests reached the mock, but only {to_send} had no "
                f"whole line: skip the ids already in the output (the torn line is not one)"
            )
        answered = sum(t[-1].status == 200 for t in tries.values())
        if answered < to_send:
            return False, f"the mock answered {answered} of the {to_send} requests left to do"
        problem = _output_problem(ex, output_path)
        if problem:
            return False, problem
        return True, (
            f"{to_send} sent, {RESUME_DONE} skipped, the torn line dropped: every id exactly once."
        )

    return _judge(ex, verdict)


def check_batch_summary(ex: Exercise, summary: Any, requests_retried: Any) -> CheckResult:
    """A ``run_batch`` summary with every request answered, and ``requests_retried`` (how many
    requests needed more than one attempt) as the mock's log counts them."""

    def verdict(attempts: list[Attempt]) -> tuple[bool, str]:
        if not hasattr(summary, "requests_retried"):
            return (
                False,
                f"`summary` is {type(summary).__name__}: what `await run_batch(...)` returns",
            )
        tries = _by_identity(attempts)
        retried = sum(len(t) > 1 for t in tries.values())
        retries = sum(len(t) - 1 for t in tries.values())
        if summary.succeeded != len(ex.names):
            return False, f"the summary says {summary.succeeded} of {len(ex.names)} succeeded"
        if requests_retried != retried:
            hint = "read it from the summary"
            if requests_retried == retries and retries != retried:
                hint = "that is the number of retries; how many *requests* were retried?"
            return False, f"`requests_retried` is {requests_retried!r}: {hint}"
        return True, (
            f"{retried} requests needed more than one attempt ({retries} retries), as the mock's "
            f"log shows; all {len(ex.names)} answered."
        )

    return _judge(ex, verdict)
