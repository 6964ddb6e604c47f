"""The mock's settings: one frozen dataclass, and the argparse parser that fills it.

``MockConfig`` is everything that shapes the server's behaviour, fixed for its lifetime; the
mutable state (counters, buckets, logs) lives elsewhere (``stats.py``, ``app.py``). The CLI
flags map one to one onto its fields, with dashes for underscores, and the launcher maps Python
keyword arguments onto the flags the same way, so ``running_mock(error_rate=0.2)``,
``--error-rate 0.2`` and ``MockConfig(error_rate=0.2)`` all mean the same thing.

Units are in the names: every duration is in seconds (``latency_s``), every rate a probability
per attempt (``error_rate``), every limit per minute (``rpm``, ``tpm``).
"""

from __future__ import annotations

import argparse
import math
import os
import re
from dataclasses import dataclass, field

__all__ = ["DEFAULT_MODELS", "PROFILES", "MockConfig", "build_parser", "config_from_args"]

DEFAULT_MODELS = ("alfred-4.2", "alfred-4.2-mini", "llama-3.1-8b-instruct")
INJECTABLE_STATUSES = (429, 500, 502, 503, 504)

# Named presets for --profile. "seed": chosen so that the seed tutorial's run (20 greetings, all
# at once with aiohttp, then one by one with requests) lands near its published figures (async
# 1.86 s, sync 10.33 s, "5.55x"): each answer takes about 0.5 s alone (a fixed part and a part per
# token, so lengths differ), the server runs about five requests' worth of work at once, and each
# new connection costs a handshake. A model consistent with those figures, not a measurement of
# Paradigm, whose capacity is not documented.
PROFILES: dict[str, dict[str, object]] = {
    "seed": {
        "latency_s": 0.3,
        "per_token_latency_s": 0.01,
        "capacity": 5.5,
        "connect_latency_s": 0.02,
    },
}


@dataclass(frozen=True)
class MockConfig:
    """How the mock behaves. Validated on creation: a bad value is a ``ValueError`` at start-up."""

    host: str = "127.0.0.1"
    port: int = 0
    # latency of a successful answer: latency_s + per_token_latency_s * completion tokens
    # + uniform(0, jitter_s), the jitter drawn from the seeded hash of the attempt
    latency_s: float = 0.5
    per_token_latency_s: float = 0.0
    jitter_s: float = 0.0
    # faults, each a probability per attempt, decided by hash(seed, identity, attempt)
    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = (429, 500, 503)
    retry_after_s: float = 1.0
    slow_rate: float = 0.0
    slow_seconds: float = 30.0
    drop_rate: float = 0.0
    seed: int = 0
    # rate limits (token buckets), per API key and for the whole server; None = no limit
    rpm: float | None = None
    tpm: float | None = None
    global_rpm: float | None = None
    global_tpm: float | None = None
    # who may call: None accepts any non-empty key
    api_key: str | None = field(default=None, repr=False)
    models: tuple[str, ...] = DEFAULT_MODELS
    # the report card: more attempts than this for one request is "too many"
    max_attempts: int = 8
    # a retry after an error without Retry-After sooner than this is "no backoff"
    min_backoff_s: float = 0.05
    # per-run ring buffer of attempt records for /_mock/log
    log_limit: int = 20_000
    # the capacity model (mock/capacity.py), off by default: processor sharing among the
    # requests in service, at most max_running in service (the rest wait, FIFO), at most
    # max_queue waiting (beyond: 503 at once); connect_latency_s: the first request on each
    # new connection waits this much more (the handshakes loopback does not have)
    capacity: float | None = None
    max_running: int | None = None
    max_queue: int | None = None
    connect_latency_s: float = 0.0
    # send no x-ratelimit-* headers at all (as Paradigm, which documents none); the limits
    # still apply and 429s still carry Retry-After
    rate_limit_headers: bool = True

    def __post_init__(self) -> None:
        for name in (
            "latency_s",
            "per_token_latency_s",
            "jitter_s",
            "retry_after_s",
            "slow_seconds",
            "connect_latency_s",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):  # nan compares False: refuse it too
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        self._check_capacity()
        rates = {
            "error_rate": self.error_rate,
            "slow_rate": self.slow_rate,
            "drop_rate": self.drop_rate,
        }
        for name, rate in rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {rate}")
        if sum(rates.values()) > 1.0 + 1e-9:
            raise ValueError(
                f"error_rate + slow_rate + drop_rate must be <= 1, got {sum(rates.values())}"
            )
        if self.error_rate > 0 and not self.error_statuses:
            raise ValueError("error_statuses is empty but error_rate > 0")
        for status in self.error_statuses:
            if status not in INJECTABLE_STATUSES:
                raise ValueError(
                    f"cannot inject status {status}: choose from {INJECTABLE_STATUSES}"
                )
        for name in ("rpm", "tpm", "global_rpm", "global_tpm"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if not self.models:
            raise ValueError("at least one model is needed")
        if self.max_attempts < 1 or self.log_limit < 1:
            raise ValueError("max_attempts and log_limit must be >= 1")

    def _check_capacity(self) -> None:
        if self.capacity is not None and not (math.isfinite(self.capacity) and self.capacity > 0):
            raise ValueError(f"capacity must be a finite number > 0, got {self.capacity}")
        if self.max_running is not None and self.max_running < 1:
            raise ValueError(f"max_running must be >= 1, got {self.max_running}")
        if self.max_queue is not None:
            if self.max_running is None:
                raise ValueError("max_queue needs max_running (the queue is what waits for it)")
            if self.max_queue < 0:
                raise ValueError(f"max_queue must be >= 0, got {self.max_queue}")

    @property
    def has_capacity_model(self) -> bool:
        return self.capacity is not None or self.max_running is not None

    @property
    def has_rate_limits(self) -> bool:
        return any(v is not None for v in (self.rpm, self.tpm, self.global_rpm, self.global_tpm))


def _statuses(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"expected a comma list of statuses, got {text!r}"
        ) from error


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mock_paradigm.py",
        description=(
            "A local mock of the Paradigm chat-completions API (OpenAI-compatible). Prints "
            "PARADIGM_BASE_URL=http://HOST:PORT/api/v2 as its first line, serves until Ctrl-C or "
            "SIGTERM, exits 0. Inspect it at /_mock/stats, /_mock/log, /_mock/report; "
            "POST /_mock/reset clears it."
        ),
    )
    add = parser.add_argument
    add(
        "--host",
        default="127.0.0.1",
        help="interface to bind (0.0.0.0 serves a whole room; default 127.0.0.1)",
    )
    add("--port", type=int, default=0, help="port (0 = a free port, default)")
    add(
        "--latency",
        dest="latency_s",
        type=float,
        default=0.5,
        help="seconds per answer (default 0.5)",
    )
    add(
        "--per-token-latency",
        dest="per_token_latency_s",
        type=float,
        default=0.0,
        help="extra seconds per completion token (default 0)",
    )
    add(
        "--jitter",
        dest="jitter_s",
        type=float,
        default=0.0,
        help="extra uniform(0, JITTER) seconds, seeded (default 0)",
    )
    add(
        "--error-rate",
        type=float,
        default=0.0,
        help="probability an attempt gets an injected error",
    )
    add(
        "--error-statuses",
        type=_statuses,
        default=(429, 500, 503),
        help="statuses injected errors use, comma list (default 429,500,503)",
    )
    add(
        "--retry-after",
        dest="retry_after_s",
        type=float,
        default=1.0,
        help="Retry-After seconds sent with injected 429/503 (default 1)",
    )
    add(
        "--slow-rate",
        type=float,
        default=0.0,
        help="probability an attempt answers after --slow-seconds",
    )
    add(
        "--slow-seconds", type=float, default=30.0, help="how long a slow answer takes (default 30)"
    )
    add(
        "--drop-rate",
        type=float,
        default=0.0,
        help="probability an attempt's connection is dropped",
    )
    add("--seed", type=int, default=0, help="seed of the fault and jitter draws (default 0)")
    add("--rpm", type=float, default=None, help="requests per minute per API key")
    add(
        "--tpm",
        type=float,
        default=None,
        help="tokens per minute per API key (prompt + max_tokens)",
    )
    add("--global-rpm", type=float, default=None, help="requests per minute for the whole server")
    add("--global-tpm", type=float, default=None, help="tokens per minute for the whole server")
    add(
        "--api-key",
        default=os.environ.get("PARADIGM_MOCK_API_KEY"),
        help="the only key accepted (default: any non-empty key; or env PARADIGM_MOCK_API_KEY)",
    )
    add(
        "--models",
        type=_names,
        default=DEFAULT_MODELS,
        help=f"comma list of model ids served (default {','.join(DEFAULT_MODELS)})",
    )
    add(
        "--max-attempts",
        type=int,
        default=8,
        help="report card: more attempts than this for one request is too many (default 8)",
    )
    add(
        "--min-backoff",
        dest="min_backoff_s",
        type=float,
        default=0.05,
        help="report card: a retry sooner than this after an error is 'no backoff' (default 0.05)",
    )
    add(
        "--log-limit", type=int, default=20_000, help="attempt records kept per run (default 20000)"
    )
    add(
        "--capacity",
        type=float,
        default=None,
        help="requests' worth of work served at full speed at once; n in service each run at "
        "min(1, K/n) of full speed, as continuous batching shares a GPU (default: unlimited)",
    )
    add(
        "--max-running",
        type=int,
        default=None,
        help="at most this many in service; the others wait in FIFO order (default: no cap)",
    )
    add(
        "--max-queue",
        type=int,
        default=None,
        help="with --max-running: refuse with 503 + Retry-After when this many already wait",
    )
    add(
        "--connect-latency",
        dest="connect_latency_s",
        type=float,
        default=0.0,
        help="extra seconds for the first request on each new connection (default 0)",
    )
    add(
        "--no-rate-limit-headers",
        dest="rate_limit_headers",
        action="store_false",
        help="send no x-ratelimit-* headers (as Paradigm, which documents none)",
    )
    add(
        "--profile",
        choices=sorted(PROFILES),
        default=None,
        help="named presets, overridden by explicit flags; 'seed': a server model consistent "
        "with the seed tutorial's figures (async 1.86 s, sync 10.33 s for 20 requests), not a "
        "measurement of Paradigm, whose capacity is not documented",
    )
    for action in parser._actions:  # say the unit in --help: SECONDS, not LATENCY_S
        if action.dest.endswith(("_s", "_seconds")):
            action.metavar = "SECONDS"
        elif action.dest.endswith("_rate"):
            action.metavar = "PROBABILITY"
        elif action.dest.endswith(("rpm", "tpm")):
            action.metavar = "PER_MINUTE"
    return parser


def in_flag_terms(parser: argparse.ArgumentParser, message: str) -> str:
    """Say ``--latency`` where a ``MockConfig`` error says ``latency_s``, for CLI users."""
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            message = re.sub(rf"\b{re.escape(action.dest)}\b", action.option_strings[0], message)
    return message


def config_from_args(parser: argparse.ArgumentParser, args: dict) -> MockConfig:
    """Build a ``MockConfig`` from parsed CLI arguments; a bad value exits 2 with one line.

    A ``--profile`` fills the settings it names unless the command line sets them itself."""
    args = dict(args)
    profile = args.pop("profile", None)
    if profile is not None:
        for name, value in PROFILES[profile].items():
            if args.get(name) == parser.get_default(name):
                args[name] = value
    try:
        return MockConfig(**args)
    except ValueError as error:
        parser.error(in_flag_terms(parser, str(error)))
        raise  # unreachable: parser.error exits
