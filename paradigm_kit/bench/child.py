"""The contender's side of one measurement: ``python -m paradigm_kit.bench.child SPEC_JSON``.

The parent (``measure.run_contender``) starts this module once per timed run, in a fresh
interpreter, so that the CPU time and peak memory that ``os.wait4`` reports for the process belong
to that contender alone. Here:

1. the input files are written, if the contender reads one (not timed);
2. a warm-up run of ``warmup_requests`` requests with the same client code, under a different API
   key (so the mock files its requests under another run and another rate-limit bucket): imports
   done, code paths hot, before anything is timed;
3. ``gc.collect()``, then the timed run between two ``getrusage(RUSAGE_SELF)`` readings, which
   give the CPU time of the timed run alone (user + system, every thread of the process);
4. one JSON line on stdout with the figures (latency percentiles computed here, so that 100k
   floats never cross the pipe), and the process's peak RSS before and after the timed run
   (``peak_rss_mb``, the kit's one reading of memory, says why it is read here rather than from
   the parent's ``os.wait4``).

The API keys arrive in the environment (``BENCH_API_KEY``, ``BENCH_WARMUP_API_KEY``), never on
the command line where ``ps`` would show them, and are never printed.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys

from paradigm_kit.bench.contenders import CONTENDERS, NEEDS_INPUT_FILE, Job, write_input_file
from paradigm_kit.bench.machine import proc_field
from paradigm_kit.bench.stats import latency_percentiles

KEY_ENV = "BENCH_API_KEY"
WARMUP_KEY_ENV = "BENCH_WARMUP_API_KEY"


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB: ``VmHWM`` on Linux, else ``ru_maxrss``.

    Not ``ru_maxrss`` on Linux: the kernel carries a process's high-water mark across
    ``fork`` + ``exec``, so a child's ``ru_maxrss`` is never below its parent's memory at the
    time of the fork (a 300 MB parent gives every child "300 MB"). ``VmHWM`` belongs to the
    address space the child got from ``exec``: its own figure.
    """
    high_water_mark = proc_field("/proc/self/status", "VmHWM:")  # "41236 kB"
    if high_water_mark:
        return int(high_water_mark.split()[0]) / 1024
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / (1024 * 1024) if sys.platform == "darwin" else maxrss / 1024


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _job(spec: dict, api_key: str, n_requests: int, folder: str) -> Job:
    os.makedirs(folder, exist_ok=True)
    if spec["contender"] in NEEDS_INPUT_FILE:
        write_input_file(os.path.join(folder, "input.jsonl"), n_requests, spec["max_tokens"])
    return Job(
        base_url=spec["base_url"],
        api_key=api_key,
        n_requests=n_requests,
        concurrency=spec["concurrency"],
        max_tokens=spec["max_tokens"],
        work_dir=folder,
        runner_options=spec.get("runner_options", {}),
    )


def measure(spec: dict) -> dict:
    """Warm up, then time one run of ``spec["contender"]``; return its figures."""
    run = CONTENDERS[spec["contender"]]
    timed_job = _job(
        spec, os.environ[KEY_ENV], spec["n_requests"], os.path.join(spec["work_dir"], "timed")
    )
    if spec["warmup_requests"] > 0:
        warmup_job = _job(
            spec,
            os.environ[WARMUP_KEY_ENV],
            spec["warmup_requests"],
            os.path.join(spec["work_dir"], "warmup"),
        )
        run(warmup_job)
    gc.collect()
    peak_rss_before_mb = peak_rss_mb()  # the peak so far: start-up, imports and warm-up
    cpu_before_s = _cpu_s()
    outcome = run(timed_job)
    cpu_s = _cpu_s() - cpu_before_s
    return {
        "wall_s": outcome.wall_s,
        "cpu_s": cpu_s,
        "statuses": outcome.statuses,
        "threads_peak": outcome.threads_peak,
        "latency": latency_percentiles(outcome.latencies_s),
        "peak_rss_mb": peak_rss_mb(),
        "peak_rss_before_mb": peak_rss_before_mb,
    }


def main(argv: list[str]) -> None:
    spec = json.loads(argv[0])
    print(json.dumps(measure(spec)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
