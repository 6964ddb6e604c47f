"""The parent's side of one measurement: start a contender's process, wait, read its rusage.

``run_contender(spec, ...)`` starts ``python -m paradigm_kit.bench.child SPEC`` and waits for it
with ``os.wait4``, which returns, with the exit status, the resource usage of that one child:

* ``ru_utime + ru_stime``: its whole CPU time, start-up and warm-up included (reported beside the
  timed run's own CPU time, which the child measures with ``getrusage``);
* not its ``ru_maxrss``: on Linux the kernel carries the *parent's* high-water mark into a forked
  child across ``exec``, so that figure never drops below the benchmark process's own size. Peak
  memory is read once, by the child itself (``child.peak_rss_mb``: its own ``VmHWM``).

Waiting without polling: ``os.wait4(pid, 0)`` blocks until the child ends, and a
``threading.Timer`` kills it if it outlives its timeout (then the run is reported as failed). Its
stdout and stderr go to files, not pipes, so a chatty child can never block on a full pipe; the
last stdout line is the child's JSON, the stderr tail goes into the error if it fails.

Each timed run gets its own API key (``bench-<random>``): the mock files every request under a
short hash of its key, so ``mock_stats(base_url, run=...)`` and ``mock_log`` give the figures of
that run alone (statuses, peak concurrency, server-side latencies) without resetting the mock
between runs, and each run has its own rate-limit bucket. The keys are throwaway values for the
bundled mock; they go to the child in its environment, never on a command line or in the results.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass

from paradigm_kit.bench.child import KEY_ENV, WARMUP_KEY_ENV

__all__ = ["BenchRunError", "RunKeys", "new_run_keys", "run_contender"]


class BenchRunError(RuntimeError):
    """A contender's process failed, timed out, or printed no result."""


@dataclass(frozen=True)
class RunKeys:
    """The throwaway API keys of one timed run and of its warm-up."""

    api_key: str
    warmup_api_key: str

    def __repr__(self) -> str:  # keys stay out of logs and tracebacks, even throwaway ones
        return "RunKeys(<hidden>)"


def new_run_keys() -> RunKeys:
    return RunKeys(f"bench-{secrets.token_hex(8)}", f"bench-warmup-{secrets.token_hex(8)}")


def _warning_flags() -> list[str]:
    """The parent's ``-W`` options, passed on so that ``-W error`` also holds in the children."""
    return [f"-W{option}" for option in sys.warnoptions]


def run_contender(spec: dict, keys: RunKeys, *, timeout_s: float) -> dict:
    """Run one contender's warm-up + timed run in its own process; return its figures.

    The result is the child's JSON (``wall_s``, ``cpu_s``, ``statuses``, ``threads_peak``,
    ``latency``, ``peak_rss_mb``, ``peak_rss_before_mb``) plus ``process_cpu_s`` from the child's
    rusage.
    """
    with tempfile.TemporaryDirectory(prefix="bench-") as work_dir:
        command = [
            sys.executable,
            *_warning_flags(),
            "-m",
            "paradigm_kit.bench.child",
            json.dumps({**spec, "work_dir": work_dir}),
        ]
        env = dict(os.environ, **{KEY_ENV: keys.api_key, WARMUP_KEY_ENV: keys.warmup_api_key})
        env.pop("PARADIGM_API_KEY", None)  # a real key has no business in a benchmark child
        stdout_path = os.path.join(work_dir, "stdout")
        stderr_path = os.path.join(work_dir, "stderr")
        with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=env
            )
        killer = threading.Timer(timeout_s, _kill, args=(process.pid,))
        killer.start()
        try:
            _, wait_status, usage = os.wait4(process.pid, 0)
        finally:
            killer.cancel()
        process.returncode = os.waitstatus_to_exitcode(wait_status)  # reaped: Popen must not wait
        with open(stdout_path, encoding="utf-8", errors="replace") as file:
            lines = file.read().strip().splitlines()
        with open(stderr_path, encoding="utf-8", errors="replace") as file:
            stderr_tail = file.read()[-1500:]
    name = spec["contender"]
    if process.returncode != 0 or not lines:
        why = "timed out" if process.returncode == -signal.SIGKILL else f"exit {process.returncode}"
        raise BenchRunError(f"{name} ({why}); stderr tail:\n{stderr_tail}")
    result = json.loads(lines[-1])
    result["process_cpu_s"] = usage.ru_utime + usage.ru_stime
    return result


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it ended just as the timer fired
        os.kill(pid, signal.SIGKILL)
