"""The preflight: ``GET {base}/models`` before a batch sends anything, retried like a request.

A flaky server must not make the runner refuse to start, so the preflight follows the retry
policy of the requests themselves (``paradigm_kit.retry``): a 429 or 5xx answer, a timeout or a
dropped connection is tried again, after ``Retry-After`` or a backoff, up to ``max_retries``
times. Only what cannot get better by waiting is a configuration error (``BatchConfigError``,
exit 2): a refused key (401/403), an unreachable host (connection refused, unknown name), a
redirect (no client of the kit follows one: it would carry the key to another origin) or an
answer that is not an OpenAI-style model list, summarised in one line. The waits go through the
run's ``sleep``, so Ctrl-C or SIGTERM ends them at once.

Which models the input names is the runner's business: ``preflight`` returns the models served.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable
from itertools import count

import aiohttp

from ..retry import RETRYABLE_EXCEPTIONS, RetryPolicy, is_retryable_status, parse_retry_after_s
from ..server_text import redact, summarise_body
from .checks import BatchConfigError

__all__ = ["PREFLIGHT_TIMEOUT_S", "preflight"]

PREFLIGHT_TIMEOUT_S = 15.0


async def _plain_sleep(seconds: float) -> bool:
    await asyncio.sleep(seconds)
    return True


async def preflight(
    session: aiohttp.ClientSession,
    base_url: str,
    models: Iterable[str] = (),
    pacer=None,
    *,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], Awaitable[bool]] = _plain_sleep,
    api_key: str = "",
) -> list[str] | None:
    """Return the models ``base_url`` serves, retrying transient failures; raise
    ``BatchConfigError`` if the server cannot work (and if it serves none of ``models``,
    for callers that name some). ``None`` if ``sleep`` was cut short by a stop."""
    policy = policy or RetryPolicy()
    url = f"{base_url}/models"
    for attempt in count(1):
        answer, retry_after_s = await _ask(session, url, pacer, api_key)
        if isinstance(answer, list):
            missing = [model for model in models if model not in answer]
            if missing:
                raise BatchConfigError(
                    f"model {missing[0]!r} is not served by {base_url} "
                    f"(available: {', '.join(answer) or 'none'})"
                )
            return answer
        if attempt > policy.max_retries or policy.retry_after_too_long(retry_after_s):
            raise BatchConfigError(
                f"{url} is not available ({answer}, {attempt} attempts): try again later"
            )
        if not await sleep(policy.delay_s(attempt, retry_after_s)):
            return None
    raise AssertionError("unreachable")


async def _ask(
    session: aiohttp.ClientSession, url: str, pacer, api_key: str
) -> tuple[list[str] | str, float | None]:
    """One GET: ``(models, None)``, or ``(why, retry_after_s)`` for a transient failure."""
    try:
        async with session.get(
            url,
            timeout=aiohttp.ClientTimeout(total=PREFLIGHT_TIMEOUT_S),
            allow_redirects=False,
        ) as response:
            status, headers = response.status, response.headers
            body = await response.read()
    except aiohttp.ClientConnectorError as error:  # refused, unknown host: waiting won't help
        reason = redact(str(error) or type(error).__name__, api_key)
        raise BatchConfigError(f"cannot reach {url}: {reason} (check PARADIGM_BASE_URL)") from None
    except RETRYABLE_EXCEPTIONS as error:
        return (f"no answer: {type(error).__name__}", None)
    except aiohttp.ClientError as error:
        reason = redact(f"{type(error).__name__}: {error}", api_key)
        raise BatchConfigError(f"cannot reach {url}: {reason} (check PARADIGM_BASE_URL)") from None
    if pacer is not None:
        pacer.learn(headers)
    if status in (401, 403):
        raise BatchConfigError(
            f"the API key was refused ({status}) by {url}: check PARADIGM_API_KEY"
        )
    if 300 <= status < 400:
        target = headers.get("Location", "?")
        raise BatchConfigError(
            f"{url} redirects ({status}) to {redact(target, api_key)}: set PARADIGM_BASE_URL "
            "to the final address (redirects are not followed, they could carry the key away)"
        )
    if is_retryable_status(status):
        return (f"status {status}", parse_retry_after_s(headers))
    if status != 200:
        raise BatchConfigError(
            f"{url} answered {status}: {summarise_body(body, api_key)} (check PARADIGM_BASE_URL)"
        )
    try:
        return [entry["id"] for entry in json.loads(body)["data"]], None
    except (ValueError, KeyError, TypeError):
        raise BatchConfigError(
            f"{url} did not answer an OpenAI-style model list ({summarise_body(body, api_key)}): "
            "check PARADIGM_BASE_URL"
        ) from None
