"""Which failures are worth another attempt, and how long to wait before it.

The whole retry policy of the kit lives here, as plain functions and one frozen dataclass, so the
batch runner, the notebooks and the tests share one answer to "retry this?" and "wait how long?".

Which failures retry (decided by the HTTP status or the exception type, never by the body text):

* 408 Request Timeout, 409 Conflict, 429 Too Many Requests and every 5xx but 501 Not
  Implemented and 505 HTTP Version Not Supported (the server says it will never handle this
  request): the same request may succeed later;
* except a 429 whose error ``code`` is ``insufficient_quota``: OpenAI-style APIs answer so when
  the account is out of credit, and no wait makes that succeed (``is_final_429``);
* a per-attempt timeout (``asyncio.TimeoutError``) and a dropped connection
  (``aiohttp.ServerDisconnectedError``, ``aiohttp.ClientConnectionError``,
  ``aiohttp.ClientPayloadError``): the request may never have reached the server, or its answer
  was lost on the way back;
* everything else is final at once: 400, 401, 403, 404, 422 and other 4xx cannot succeed by
  being sent again, and retrying them only burns quota.

How long to wait before retry number ``k`` (1 for the first retry):

* when the server said so, exactly that: ``retry-after-ms`` (milliseconds, sent by OpenAI-style
  servers) or ``Retry-After`` (seconds, or an HTTP date), plus at most 10% of jitter so that a crowd
  of clients told the same thing does not come back in the same millisecond;
* a ``Retry-After`` beyond ``max_retry_after_s`` (a server in maintenance saying "come back in an
  hour") fails the request with that reason rather than stalling a whole batch on it;
* otherwise exponential backoff, ``base_delay_s * 2 ** (k - 1)`` capped at ``max_delay_s``, with
  jitter: "equal" (the default) waits between half and all of it, so the gaps keep growing and
  never shrink to nothing; "full" waits anywhere between zero and all of it (AWS's advice for
  spreading a large crowd, at the price of an occasional near-immediate retry).

``max_retries`` bounds the retries after the first attempt, so a request is sent at most
``max_retries + 1`` times. There is one retry layer only: the runner never wraps a client that
retries by itself, or attempts multiply (users have seen 18 and 45 calls for one request).

Why not tenacity: it decides from exceptions and a callable's return value, while this policy
needs the response's headers (``Retry-After``), a run-wide cooldown shared by every worker when a
429 arrives, and one timeline record per attempt; wrapping all that in tenacity's callbacks would
be longer than the forty lines below and slower on the hot path.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

__all__ = [
    "NEVER_RETRIED_STATUSES",
    "RETRYABLE_EXCEPTIONS",
    "RetryPolicy",
    "is_final_429",
    "is_retryable_status",
    "parse_retry_after_s",
]

#: Statuses that are final at once (listed for documentation and tests; any 4xx other than
#: 408, 409 and 429 is final too).
NEVER_RETRIED_STATUSES = frozenset({400, 401, 403, 404, 422})

_RETRYABLE_4XX = frozenset({408, 409, 429})
_FINAL_5XX = frozenset({501, 505})

#: Exceptions of one attempt that are worth another one: a timeout, a dropped connection or a
#: truncated body. ``ServerDisconnectedError`` and ``ClientConnectorError`` are subclasses of
#: ``ClientConnectionError``; aiohttp's own timeouts are subclasses of ``asyncio.TimeoutError``.
RETRYABLE_EXCEPTIONS: tuple[type[BaseException], ...] = (
    asyncio.TimeoutError,
    aiohttp.ClientConnectionError,
    aiohttp.ClientPayloadError,
)


def is_retryable_status(status: int) -> bool:
    """True for 408, 409, 429 and 5xx but 501/505: the same request may succeed later."""
    return (status >= 500 and status not in _FINAL_5XX) or status in _RETRYABLE_4XX


def is_final_429(error: object) -> bool:
    """True for a 429 error body's ``error`` object saying the account is out of credit."""
    return isinstance(error, dict) and error.get("code") == "insufficient_quota"


def parse_retry_after_s(headers: Mapping[str, str], now_s: float | None = None) -> float | None:
    """Seconds the server asked us to wait, or ``None`` if it did not say.

    ``retry-after-ms`` wins (it is the more precise), then ``Retry-After`` as seconds or as an
    HTTP date (``now_s`` is the current Unix time, for tests). A date in the past means 0.
    ``headers`` must look names up case-insensitively, as aiohttp's ``CIMultiDictProxy`` does.
    """
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            value_s = float(milliseconds) / 1000.0
            if math.isfinite(value_s):
                return max(0.0, value_s)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        value_s = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, value_s) if math.isfinite(value_s) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    current_s = time.time() if now_s is None else now_s
    return max(0.0, when.timestamp() - current_s)


@dataclass(frozen=True)
class RetryPolicy:
    """How many retries, and how long to wait before each; see the module docstring."""

    max_retries: int = 6
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    jitter: str = "equal"  # "equal" or "full"
    max_retry_after_s: float = 120.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.jitter not in ("equal", "full"):
            raise ValueError(f"jitter must be 'equal' or 'full', got {self.jitter!r}")
        delays = (self.base_delay_s, self.max_delay_s, self.max_retry_after_s)
        if not all(math.isfinite(delay_s) and delay_s >= 0 for delay_s in delays):
            raise ValueError("backoff and Retry-After delays must be finite numbers >= 0")

    def backoff_s(self, retry_number: int, rng: random.Random | None = None) -> float:
        """Exponential backoff with jitter before retry ``retry_number`` (1-based)."""
        uniform = (rng or random).uniform
        ceiling_s = min(self.max_delay_s, self.base_delay_s * 2.0 ** (retry_number - 1))
        if self.jitter == "full":
            return uniform(0.0, ceiling_s)
        return ceiling_s / 2.0 + uniform(0.0, ceiling_s / 2.0)

    def delay_s(
        self,
        retry_number: int,
        retry_after_s: float | None,
        rng: random.Random | None = None,
    ) -> float:
        """The wait before retry ``retry_number``: the server's ``Retry-After`` (plus up to 10%
        jitter) when it gave one, else the backoff. Call ``retry_after_too_long`` first."""
        if retry_after_s is None:
            return self.backoff_s(retry_number, rng)
        return retry_after_s + (rng or random).uniform(0.0, min(1.0, 0.1 * retry_after_s))

    def retry_after_too_long(self, retry_after_s: float | None) -> bool:
        """True when the server asked for a longer wait than this policy accepts."""
        return retry_after_s is not None and retry_after_s > self.max_retry_after_s
