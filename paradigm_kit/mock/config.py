"""The mock's settings: one frozen dataclass, and the argparse parser that fills it.

``MockConfig`` is everything that shapes the server's behaviour, fixed for its lifetime (but for
the capacity, which ``POST /_mock/config`` may change); the mutable state (counters, buckets,
logs) lives elsewhere (``stats.py``, ``app.py``, ``capacity.py``). Each setting is declared once,
as a field that carries its CLI flag and help in its metadata; the parser, ``/_mock/stats``'s
``config``, the recorder's defaults and the launcher's keyword arguments derive from it, so
``running_mock(latency_s=0.2)``, ``--latency 0.2`` and ``MockConfig(latency_s=0.2)`` all mean the
same thing. Every default is one the CLI can express (``None`` = off).

``--profile NAME`` applies a named preset (``PROFILES``) under any explicit flag.

Units are in the names: every duration is in seconds (``latency_s``), every rate a probability
per attempt (``error_rate``), every limit per minute (``rpm``, ``tpm``).
"""

from __future__ import annotations

import argparse
import math
import os
import re
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = [
    "DEFAULT_MODELS",
    "PROFILES",
    "MockConfig",
    "build_parser",
    "config_from_args",
    "flag_of",
]

DEFAULT_MODELS = ("alfred-4.2", "alfred-4.2-mini", "llama-3.1-8b-instruct")
INJECTABLE_STATUSES = (429, 500, 502, 503, 504)
# The seed profile (fitted by simulation of the seed's run on capacity.py's scheduler: see the
# README's mock section): about 0.5 s per greeting, five or so served at full speed at once.
SEED_LATENCY_S = 0.08
SEED_PER_TOKEN_LATENCY_S = 0.025
SEED_CAPACITY = 5.5
SEED_CONNECT_LATENCY_S = 0.015


def _setting(default: Any, flag: str, help: str, **argparse_options: Any) -> Any:
    """A ``MockConfig`` field that also declares its CLI flag and help (the one declaration)."""
    return field(default=default, metadata={"flag": flag, "help": help, **argparse_options})


def _statuses(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"expected a comma list of statuses, got {text!r}"
        ) from error


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


@dataclass(frozen=True)
class MockConfig:
    """How the mock behaves. Validated on creation: a bad value is a ``ValueError`` at start-up.

    Each field declares its CLI flag and help here, once: ``build_parser``, the launcher's
    keyword arguments, ``/_mock/stats``'s ``config`` and the ``Recorder``'s defaults derive from
    these declarations. Adding a setting is one field (plus its check in ``__post_init__``).
    """

    host: str = _setting(
        "127.0.0.1", "--host", "interface to bind (0.0.0.0 serves a whole room; default 127.0.0.1)"
    )
    port: int = _setting(0, "--port", "port (0 = a free port, default)", type=int)
    # latency of a successful answer: latency_s + per_token_latency_s * completion tokens
    # + uniform(0, jitter_s), the jitter drawn from the seeded hash of the attempt
    latency_s: float = _setting(0.5, "--latency", "seconds per answer (default 0.5)", type=float)
    per_token_latency_s: float = _setting(
        0.0, "--per-token-latency", "extra seconds per completion token (default 0)", type=float
    )
    jitter_s: float = _setting(
        0.0, "--jitter", "extra uniform(0, JITTER) seconds, seeded (default 0)", type=float
    )
    # faults, each a probability per attempt, decided by hash(seed, identity, attempt)
    error_rate: float = _setting(
        0.0, "--error-rate", "probability an attempt gets an injected error", type=float
    )
    error_statuses: tuple[int, ...] = _setting(
        (429, 500, 503),
        "--error-statuses",
        "statuses injected errors use, comma list (default 429,500,503)",
        type=_statuses,
    )
    retry_after_s: float = _setting(
        1.0,
        "--retry-after",
        "Retry-After seconds sent with injected 429/503 (default 1)",
        type=float,
    )
    slow_rate: float = _setting(
        0.0, "--slow-rate", "probability an attempt answers after --slow-seconds", type=float
    )
    slow_seconds: float = _setting(
        30.0, "--slow-seconds", "how long a slow answer takes (default 30)", type=float
    )
    drop_rate: float = _setting(
        0.0, "--drop-rate", "probability an attempt's connection is dropped", type=float
    )
    seed: int = _setting(0, "--seed", "seed of the fault and jitter draws (default 0)", type=int)
    # rate limits (token buckets), per API key and for the whole server; None = no limit
    rpm: float | None = _setting(None, "--rpm", "requests per minute per API key", type=float)
    tpm: float | None = _setting(
        None, "--tpm", "tokens per minute per API key (prompt + max_tokens)", type=float
    )
    global_rpm: float | None = _setting(
        None, "--global-rpm", "requests per minute for the whole server", type=float
    )
    global_tpm: float | None = _setting(
        None, "--global-tpm", "tokens per minute for the whole server", type=float
    )
    rate_limit_headers: bool = _setting(
        True,
        "--no-rate-limit-headers",
        "send no x-ratelimit-* headers at all, as Paradigm documents none (the limits still "
        "apply; a 429 still carries Retry-After)",
        action="store_false",
    )
    # the capacity model (capacity.py), off by default: None = unlimited
    capacity: float | None = _setting(
        None,
        "--capacity",
        "processor sharing: with n requests in service each runs at min(1, K/n) of full speed "
        "(continuous batching on a GPU); K > 0, may be fractional (default: unlimited)",
        type=float,
        metavar="K",
    )
    max_running: int | None = _setting(
        None,
        "--max-running",
        "at most M requests in service; the others wait in FIFO order (default: unlimited)",
        type=int,
        metavar="M",
    )
    max_queue: int | None = _setting(
        None,
        "--max-queue",
        "with --max-running: a request arriving when Q already wait gets 503 + Retry-After "
        "(default: unbounded queue)",
        type=int,
        metavar="Q",
    )
    connect_latency_s: float = _setting(
        0.0,
        "--connect-latency",
        "the first request on each new connection waits this much more (a real network's TCP "
        "and TLS handshakes, which loopback lacks; default 0)",
        type=float,
    )
    # who may call: None accepts any non-empty key
    api_key: str | None = field(
        default=None,
        repr=False,
        metadata={
            "flag": "--api-key",
            "help": "the only key accepted (default: any non-empty key; or env "
            "PARADIGM_MOCK_API_KEY)",
            "env": "PARADIGM_MOCK_API_KEY",
            "public": False,
        },
    )
    facilitator_token: str | None = field(
        default=None,
        repr=False,
        metadata={
            "flag": "--facilitator-token",
            "help": "the token POST /_mock/reset and /_mock/config need, as X-Facilitator-Token "
            "(default: none on loopback; a random one, printed at start, beyond it)",
            "public": False,
        },
    )
    models: tuple[str, ...] = _setting(
        DEFAULT_MODELS,
        "--models",
        f"comma list of model ids served (default {','.join(DEFAULT_MODELS)})",
        type=_names,
    )
    # the report card: more attempts than this for one request is "too many"
    max_attempts: int = _setting(
        8,
        "--max-attempts",
        "report card: more attempts than this for one request is too many (default 8)",
        type=int,
    )
    # a retry after an error without Retry-After sooner than this is "no backoff"
    min_backoff_s: float = _setting(
        0.05,
        "--min-backoff",
        "report card: a retry sooner than this after an error is 'no backoff' (default 0.05)",
        type=float,
    )
    # per-run ring buffer of attempt records for /_mock/log
    log_limit: int = _setting(
        20_000, "--log-limit", "attempt records kept per run (default 20000)", type=int
    )
    max_runs: int = _setting(
        1000,
        "--max-runs",
        "runs (X-Run-Id values) remembered; past this the oldest run is forgotten (default 1000)",
        type=int,
    )
    # longer than aiohttp's client pool keeps one (15 s), so a client never reuses a
    # connection the mock is closing
    keepalive_timeout_s: float = _setting(
        30.0,
        "--keepalive-timeout",
        "an idle keep-alive connection is closed after this (default 30)",
        type=float,
    )
    quota_requests: int | None = _setting(
        None,
        "--quota-requests",
        "chat requests admitted per API key, then 429 insufficient_quota (default: unlimited)",
        type=int,
    )

    def __post_init__(self) -> None:
        for name in (
            "latency_s",
            "per_token_latency_s",
            "jitter_s",
            "retry_after_s",
            "slow_seconds",
            "min_backoff_s",
            "keepalive_timeout_s",
            "connect_latency_s",
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
        if self.capacity is not None and not (math.isfinite(self.capacity) and self.capacity > 0):
            raise ValueError(f"capacity must be a finite number > 0, got {self.capacity}")
        if self.max_running is not None and self.max_running < 1:
            raise ValueError(f"max_running must be >= 1, got {self.max_running}")
        if self.max_queue is not None:
            if self.max_running is None:
                raise ValueError("max_queue needs max_running (the queue is what waits for it)")
            if self.max_queue < 0:
                raise ValueError(f"max_queue must be >= 0, got {self.max_queue}")
        if not self.models:
            raise ValueError("at least one model is needed")
        if self.max_attempts < 1 or self.log_limit < 1 or self.max_runs < 1:
            raise ValueError("max_attempts, log_limit and max_runs must be >= 1")
        if self.quota_requests is not None and self.quota_requests < 0:
            raise ValueError(f"quota_requests must be >= 0, got {self.quota_requests}")

    @property
    def has_rate_limits(self) -> bool:
        return any(v is not None for v in (self.rpm, self.tpm, self.global_rpm, self.global_tpm))

    @property
    def has_capacity_model(self) -> bool:
        return self.capacity is not None or self.max_running is not None

    def public(self) -> dict[str, Any]:
        """The settings as JSON for ``/_mock/stats``: secrets only as whether one is set."""
        view: dict[str, Any] = {}
        for spec in fields(self):
            value = getattr(self, spec.name)
            if spec.metadata.get("public", True):
                view[spec.name] = list(value) if isinstance(value, tuple) else value
        view["api_key_required"] = self.api_key is not None
        return view


# Named presets for --profile: MockConfig field values, overridden by any flag given with them.
PROFILES: dict[str, tuple[str, dict[str, Any]]] = {
    "seed": (
        "a model consistent with the seed tutorial's published figures (20 greetings: async "
        "about 1.86 s, sync about 10.33 s, factor about 5.55), not a measurement of Paradigm, "
        "whose capacity is not documented",
        {
            "latency_s": SEED_LATENCY_S,
            "per_token_latency_s": SEED_PER_TOKEN_LATENCY_S,
            "capacity": SEED_CAPACITY,
            "connect_latency_s": SEED_CONNECT_LATENCY_S,
        },
    ),
}


def flag_of(name: str) -> str:
    """The CLI flag of a ``MockConfig`` field: ``latency_s`` -> ``--latency``."""
    return _FIELDS[name].metadata["flag"]


def build_parser() -> argparse.ArgumentParser:
    """The CLI, derived from ``MockConfig``'s fields (flag, help, type) plus ``--profile``."""
    parser = argparse.ArgumentParser(
        prog="mock_paradigm.py",
        description=(
            "A local mock of the Paradigm chat-completions API (OpenAI-compatible). Prints "
            "PARADIGM_BASE_URL=http://HOST:PORT/api/v2 as its first line, serves until Ctrl-C or "
            "SIGTERM, exits 0. Inspect it at /_mock/stats, /_mock/log, /_mock/report; "
            "POST /_mock/reset clears it; POST /_mock/config changes the capacity while it runs."
        ),
    )
    for spec in fields(MockConfig):
        options = {k: v for k, v in spec.metadata.items() if k not in ("flag", "env", "public")}
        default = spec.default
        if "env" in spec.metadata:
            default = os.environ.get(spec.metadata["env"], default)
        parser.add_argument(spec.metadata["flag"], dest=spec.name, default=default, **options)
    profiles = "; ".join(f"{name}: {text}" for name, (text, _) in PROFILES.items())
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default=None,
        help=f"a named preset; flags given with it override its values ({profiles})",
    )
    for action in parser._actions:  # say the unit in --help: SECONDS, not LATENCY_S
        if action.metavar or action.nargs == 0:
            continue
        if action.dest.endswith(("_s", "_seconds")):
            action.metavar = "SECONDS"
        elif action.dest.endswith("_rate"):
            action.metavar = "PROBABILITY"
        elif action.dest.endswith(("rpm", "tpm")):
            action.metavar = "PER_MINUTE"
    return parser


def parse_config_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> dict:
    """Parse ``argv``, applying ``--profile``'s values as defaults under the explicit flags."""
    known, _ = parser.parse_known_args(argv)
    if known.profile is not None:
        parser.set_defaults(**PROFILES[known.profile][1])
    args = vars(parser.parse_args(argv))
    args.pop("profile")
    return args


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


_FIELDS = {spec.name: spec for spec in fields(MockConfig)}
