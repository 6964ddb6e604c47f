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

__all__ = ["DEFAULT_MODELS", "MockConfig", "build_parser", "config_from_args"]

DEFAULT_MODELS = ("alfred-4.2", "alfred-4.2-mini", "llama-3.1-8b-instruct")
INJECTABLE_STATUSES = (429, 500, 502, 503, 504)


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
    # runs (X-Run-Id values) remembered; past this the oldest run is forgotten
    max_runs: int = 1000
    # an idle keep-alive connection is closed after this (longer than aiohttp's client pool
    # keeps one, 15 s, so a client never reuses a connection the mock is closing)
    keepalive_timeout_s: float = 30.0
    # chat requests admitted per API key, then 429 insufficient_quota; None = unlimited
    quota_requests: int | None = None

    def __post_init__(self) -> None:
        for name in (
            "latency_s",
            "per_token_latency_s",
            "jitter_s",
            "retry_after_s",
            "slow_seconds",
            "min_backoff_s",
            "keepalive_timeout_s",
        ):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be from 0 to 65535, got {self.port}")
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
            if value is not None and (not math.isfinite(value) or value <= 0):
                raise ValueError(f"{name} must be a finite positive number, got {value}")
        if not self.models:
            raise ValueError("at least one model is needed")
        if self.max_attempts < 1 or self.log_limit < 1 or self.max_runs < 1:
            raise ValueError("max_attempts, log_limit and max_runs must be >= 1")
        if self.quota_requests is not None and self.quota_requests < 0:
            raise ValueError(f"quota_requests must be >= 0, got {self.quota_requests}")

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
        "--max-runs",
        type=int,
        default=1000,
        help="runs (X-Run-Id) remembered; the oldest is forgotten past this (default 1000)",
    )
    add(
        "--keepalive-timeout",
        dest="keepalive_timeout_s",
        type=float,
        default=30.0,
        help="close a keep-alive connection idle this long (default 30)",
    )
    add(
        "--quota-requests",
        type=int,
        default=None,
        help="chat requests per API key, then 429 insufficient_quota (default: no quota)",
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
    """Build a ``MockConfig`` from parsed CLI arguments; a bad value exits 2 with one line."""
    try:
        return MockConfig(**args)
    except ValueError as error:
        parser.error(in_flag_terms(parser, str(error)))
        raise  # unreachable: parser.error exits
