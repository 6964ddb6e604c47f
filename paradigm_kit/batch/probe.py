"""``probe_capacity()``: measure how much concurrency a server can use, within a request budget.

Load tools (vLLM's ``bench serve``, guidellm, llmperf) sweep a server's throughput against its
latency; the probe does the same in a few hundred requests and ends with the number to give the
runner (``--concurrency``). It is what ``--concurrency auto`` learns during a run, measured up
front and printed.

The ladder: concurrency 1, 2, 4, 8, ... Each level sends ``max(4, 2 x c)`` streamed requests
(the same prompt and ``max_tokens``, so every answer has about the same length and levels are
comparable) with exactly ``c`` in flight, and measures throughput (requests/s and completion
tokens/s, over the level's wall time), p50/p95 latency and time to first token, and errors. It
climbs until throughput stops growing (a level under 5% above the best one so far), any error
appears (a 429, 503 or timeout says the server is
past what it will take), the budget would be exceeded, or ``max_concurrency`` is reached.

The knee (the rule, stated as guidellm states its own): on a sharing server every level above
capacity has the same throughput, so "the best" is a plateau, not a point. The recommendation is
the **smallest concurrency whose throughput is within 5% of the highest measured** (levels with
errors excluded when any level had none). Between that ladder point and the one below it, the
probe bisects with the remaining budget (a level at the midpoint: inside the plateau, the knee
moves down; outside, the lower bound moves up) until the gap is one or the budget is spent.

Budget: at most ``max_requests`` requests in all, counted before sending; the plan (levels and
their sizes) and the estimated tokens (and cost, given a price) are returned by ``plan_probe``
and printed by the CLI before anything is sent.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

from ..settings import DEFAULT_MODEL
from .pacing import estimate_tokens
from .runner import BatchConfigError, preflight, proxy_from_env
from .streaming import StreamDeadlines, stream_attempt

__all__ = [
    "ProbeLevel",
    "ProbeResult",
    "estimate_probe_tokens",
    "find_knee",
    "plan_probe",
    "probe_capacity",
]

DEFAULT_PROMPT = "Write three sentences about the sea."
WITHIN = 0.05  # "within 5% of the highest throughput"


def level_size(concurrency: int) -> int:
    """Requests sent at one level: two per slot (so each slot's second answer starts with all
    the others in flight), at least four."""
    return max(4, 2 * concurrency)


@dataclass
class ProbeLevel:
    """One level of the ladder, measured."""

    concurrency: int
    requests: int
    ok: int
    errors: int
    wall_s: float
    requests_per_s: float
    tokens_per_s: float
    p50_latency_s: float | None
    p95_latency_s: float | None
    p50_ttft_s: float | None
    p95_ttft_s: float | None
    error_kinds: dict[str, int] = field(default_factory=dict)


@dataclass
class ProbeResult:
    """Every level measured (ladder and refinement, by concurrency) and the recommendation."""

    levels: list[ProbeLevel]
    recommended: int
    requests_sent: int
    max_requests: int
    stopped_because: str

    @property
    def knee(self) -> ProbeLevel:
        return next(level for level in self.levels if level.concurrency == self.recommended)

    def to_json(self) -> dict[str, Any]:
        return {
            "recommended_concurrency": self.recommended,
            "requests_per_s": self.knee.requests_per_s,
            "p50_latency_s": self.knee.p50_latency_s,
            "requests_sent": self.requests_sent,
            "max_requests": self.max_requests,
            "stopped_because": self.stopped_because,
            "levels": [asdict(level) for level in self.levels],
        }

    def table(self) -> str:
        rows = [
            "concurrency  requests  errors   req/s  tokens/s  p50 lat  p95 lat  p50 ttft  p95 ttft"
        ]
        for lv in sorted(self.levels, key=lambda level: level.concurrency):
            mark = "  <- knee" if lv.concurrency == self.recommended else ""
            rows.append(
                f"{lv.concurrency:>11}  {lv.requests:>8}  {lv.errors:>6}  {lv.requests_per_s:>6.2f}"
                f"  {lv.tokens_per_s:>8.1f}  {_s(lv.p50_latency_s)}  {_s(lv.p95_latency_s)}"
                f"  {_s(lv.p50_ttft_s, 8)}  {_s(lv.p95_ttft_s, 8)}{mark}"
            )
        return "\n".join(rows)

    def recommendation_line(self) -> str:
        knee = self.knee
        p50 = f"{knee.p50_latency_s:.2f}" if knee.p50_latency_s is not None else "n/a"
        return (
            f"Recommended concurrency: {self.recommended} "
            f"({knee.requests_per_s:.2f} req/s, p50 latency {p50} s)"
        )


def _s(value: float | None, width: int = 7) -> str:
    return f"{value:>{width}.3f}" if value is not None else " " * (width - 3) + "n/a"


def plan_probe(max_requests: int, max_concurrency: int = 256) -> list[tuple[int, int]]:
    """The ladder's levels that fit the budget: ``[(concurrency, requests), ...]`` (an upper
    bound: the probe usually stops earlier, and refinement uses what is left)."""
    plan, used, concurrency = [], 0, 1
    while concurrency <= max_concurrency and used + level_size(concurrency) <= max_requests:
        plan.append((concurrency, level_size(concurrency)))
        used += level_size(concurrency)
        concurrency *= 2
    return plan


def find_knee(levels: list[ProbeLevel]) -> int:
    """The smallest concurrency within 5% of the highest throughput (error-free levels first)."""
    clean = [level for level in levels if level.errors == 0 and level.ok > 0]
    pool = clean or [level for level in levels if level.ok > 0] or levels
    best = max(level.requests_per_s for level in pool)
    return min(lv.concurrency for lv in pool if lv.requests_per_s >= (1 - WITHIN) * best)


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


async def _level(
    session: aiohttp.ClientSession,
    url: str,
    body: dict,
    concurrency: int,
    deadlines: StreamDeadlines,
) -> ProbeLevel:
    """Send ``level_size(concurrency)`` streamed requests with ``concurrency`` in flight."""
    count = level_size(concurrency)
    queue = iter(range(count))
    latencies, ttfts, kinds = [], [], {}
    tokens = 0

    async def slot() -> None:
        nonlocal tokens
        for _ in queue:
            t_start = time.monotonic()
            result = await stream_attempt(session, url, body, {}, deadlines)
            if result.status == 200:
                latencies.append(time.monotonic() - t_start)
                if result.ttft_s is not None:
                    ttfts.append(result.ttft_s)
                tokens += result.response["usage"].get("completion_tokens") or 0
            else:
                kind = str(result.status) if result.status is not None else result.failure["type"]
                kinds[kind] = kinds.get(kind, 0) + 1

    t0 = time.monotonic()
    await asyncio.gather(*(slot() for _ in range(concurrency)))
    wall_s = time.monotonic() - t0
    ok = len(latencies)
    return ProbeLevel(
        concurrency=concurrency,
        requests=count,
        ok=ok,
        errors=count - ok,
        wall_s=round(wall_s, 4),
        requests_per_s=ok / wall_s if wall_s > 0 else 0.0,
        tokens_per_s=tokens / wall_s if wall_s > 0 else 0.0,
        p50_latency_s=_quantile(latencies, 0.5),
        p95_latency_s=_quantile(latencies, 0.95),
        p50_ttft_s=_quantile(ttfts, 0.5),
        p95_ttft_s=_quantile(ttfts, 0.95),
        error_kinds=kinds,
    )


async def probe_capacity(
    base_url: str,
    api_key: str,
    *,
    max_requests: int = 200,
    max_concurrency: int = 256,
    model: str = DEFAULT_MODEL,
    prompt: str = DEFAULT_PROMPT,
    max_tokens: int = 64,
    deadlines: StreamDeadlines | None = None,
    on_level: Any = None,
) -> ProbeResult:
    """Climb the ladder, refine the knee, and return every level and the recommendation.

    ``on_level(level)`` is called after each level (the CLI prints progress with it). Raises
    ``BatchConfigError`` when the server refuses the key, the URL or the model (the preflight).
    """
    if max_requests < level_size(1):
        raise BatchConfigError(f"max_requests must be at least {level_size(1)}, got {max_requests}")
    base_url = base_url.rstrip("/")
    deadlines = deadlines or StreamDeadlines()
    body = {"model": model, "messages": [{"role": "user", "content": prompt}]}
    body["max_tokens"] = max_tokens
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    proxy, proxy_auth = proxy_from_env(base_url)
    connector = aiohttp.TCPConnector(limit=max_concurrency)
    levels: dict[int, ProbeLevel] = {}
    sent = 0
    async with aiohttp.ClientSession(
        headers=headers, connector=connector, proxy=proxy, proxy_auth=proxy_auth
    ) as session:
        await preflight(session, base_url, [model])
        url = f"{base_url}/chat/completions"

        async def measure(concurrency: int) -> ProbeLevel:
            nonlocal sent
            level = await _level(session, url, body, concurrency, deadlines)
            sent += level.requests
            levels[concurrency] = level
            if on_level is not None:
                on_level(level)
            return level

        reason = f"reached max_concurrency {max_concurrency}"
        concurrency, best = 1, 0.0
        while concurrency <= max_concurrency:
            if sent + level_size(concurrency) > max_requests:
                reason = f"the next level would exceed max_requests {max_requests}"
                break
            level = await measure(concurrency)
            if level.errors:
                reason = f"errors at concurrency {concurrency}: {level.error_kinds}"
                break
            if best > 0 and level.requests_per_s < (1 + WITHIN) * best:
                reason = f"throughput stopped growing at concurrency {concurrency}"
                break
            best = max(best, level.requests_per_s)
            concurrency *= 2
        await _refine(levels, measure, lambda size: sent + size <= max_requests)
    return ProbeResult(
        levels=[levels[c] for c in sorted(levels)],
        recommended=find_knee(list(levels.values())),
        requests_sent=sent,
        max_requests=max_requests,
        stopped_because=reason,
    )


async def _refine(levels: dict[int, ProbeLevel], measure: Any, affordable: Any) -> None:
    """Bisect between the knee and the measured level below it while the budget allows."""
    while True:
        knee = find_knee(list(levels.values()))
        below = [c for c in levels if c < knee]
        if not below:
            return
        low = max(below)
        middle = (low + knee) // 2
        if knee - low <= 1 or middle in levels or not affordable(level_size(middle)):
            return
        await measure(middle)


def estimate_probe_tokens(max_requests: int, model: str, prompt: str, max_tokens: int) -> int:
    """Tokens the probe may use at most: ``max_requests`` x (prompt estimate + ``max_tokens``)."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
    }
    return max_requests * estimate_tokens(body)
