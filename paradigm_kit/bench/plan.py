"""How big each scenario is, in each mode: ``full`` (``make bench``), ``quick``, ``tiny``.

One frozen dataclass per mode, so that what a run measured is recorded with its results
(``results.json`` holds the plan it ran) and the three modes differ only in sizes, never in code:

* ``full``: the figures the README quotes; about 12 minutes on a quiet 2-core machine;
* ``quick``: the same scenarios, smaller, one repetition each (no spread: a preview, not figures
  to quote); under 2 minutes on a quiet machine;
* ``tiny``: a few requests each, one repetition; seconds; what the test suite runs to check that
  the benchmark itself works (its figures mean nothing).

Latencies are the mock's fixed answer time in seconds; ``concurrency`` the bound on requests in
flight; ``repetitions`` how many timed runs of each contender the medians are taken over.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["PLANS", "Plan"]


@dataclass(frozen=True)
class Plan:
    mode: str
    repetitions: int
    # warm-up run before each timed run: at zero latency (it costs little), and where a latency
    # makes each warm-up request cost that latency (a few requests load the code paths as well)
    warmup_requests: int
    latency_warmup_requests: int = 3
    # seed: N requests at a fixed latency, sync vs async (the ideal factor is N)
    seed_requests: int = 20
    seed_latency_s: float = 0.5
    # scaling: async wall time against ceil(N / C) * latency; sync only for the small sizes
    scaling_latency_s: float = 0.5
    scaling_sizes: tuple[int, ...] = (1, 10, 100, 200, 500, 1000)
    scaling_sync_sizes: tuple[int, ...] = (1, 10)  # sizes among scaling_sizes
    scaling_concurrency: int = 100
    scaling_repetitions: int = 3
    # variable latency: latency_s + per_token_latency_s * tokens, max_tokens varied per request
    variable_requests: int = 20
    variable_latency_s: float = 0.05
    variable_per_token_latency_s: float = 0.03
    # client cost at zero latency; the slow clients (a few hundred requests/s) send fewer requests,
    # the figures being per request
    cost_requests: int = 5000
    cost_slow_requests: int = 500
    cost_concurrency: int = 100
    # memory: peak RSS at each size, runner vs a naive gather
    memory_sizes: tuple[int, ...] = (10_000, 100_000)
    memory_repetitions: int = 2
    # rate limits: the mock limited to rate_rpm per minute (per key)
    rate_rpm: int = 1800
    rate_requests: int = 600
    rate_repetitions: int = 2
    # threads vs asyncio: N requests at one bound and latency
    threads_requests: int = 1000
    threads_concurrency: int = 100
    threads_latency_s: float = 0.5
    threads_repetitions: int = 3

    def as_dict(self) -> dict:
        return asdict(self)


PLANS: dict[str, Plan] = {
    "full": Plan(mode="full", repetitions=5, warmup_requests=100),
    "quick": Plan(
        mode="quick",
        repetitions=1,
        warmup_requests=50,
        latency_warmup_requests=2,
        seed_latency_s=0.25,
        scaling_latency_s=0.2,
        scaling_sizes=(1, 100, 1000),
        scaling_sync_sizes=(1,),
        scaling_repetitions=1,
        variable_latency_s=0.02,
        variable_per_token_latency_s=0.01,
        cost_requests=1000,
        cost_slow_requests=200,
        memory_sizes=(1_000, 5_000),
        memory_repetitions=1,
        rate_rpm=3000,
        rate_requests=300,
        rate_repetitions=1,
        threads_requests=500,
        threads_latency_s=0.2,
        threads_repetitions=1,
    ),
    "tiny": Plan(
        mode="tiny",
        repetitions=1,
        warmup_requests=2,
        latency_warmup_requests=1,
        seed_requests=4,
        seed_latency_s=0.05,
        scaling_latency_s=0.05,
        scaling_sizes=(1, 8),
        scaling_sync_sizes=(1,),
        scaling_concurrency=4,
        scaling_repetitions=1,
        variable_requests=4,
        variable_latency_s=0.01,
        variable_per_token_latency_s=0.005,
        cost_requests=40,
        cost_slow_requests=10,
        cost_concurrency=8,
        memory_sizes=(50, 200),
        memory_repetitions=1,
        rate_rpm=600,
        rate_requests=14,
        rate_repetitions=1,
        threads_requests=20,
        threads_concurrency=5,
        threads_latency_s=0.05,
        threads_repetitions=1,
    ),
}
