"""Which attempts fail, and how: a pure function of (seed, request identity, attempt number).

A random generator shared by all requests would make faults depend on arrival order, which
changes with every run under concurrency. Hashing instead gives each attempt its own fixed
draw, so:

* a rerun (same seed) sees the same faults for the same requests, whatever the interleaving;
* two mocks with the same seed agree;
* a retry is a new attempt number, hence a new draw: with a 20% error rate a retried request
  fails twice in a row 4% of the time, and eventually succeeds, as with a real flaky server.

The *identity* of a request is its ``Idempotency-Key`` header when the client sends one, else a
hash of its body (so a client that retries the same body is recognised without a header, but two
different requests with identical bodies count as one). The *attempt number* is how many times
the mock has seen that identity before, plus one (``stats.py`` counts them, per run).

One blake2b digest gives three independent uniforms in [0, 1): the first picks the fault (error,
drop, slow, or none, by stacking the three rates on [0, 1)), the second the status of an error,
the third the latency jitter.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

from .config import MockConfig

__all__ = ["DROP", "ERROR", "NO_FAULT", "SLOW", "Draw", "draw", "identity_of_body"]

ERROR = "error"
DROP = "drop"
SLOW = "slow"
_UNIT = float(1 << 64)


def identity_of_body(body: bytes) -> str:
    """A short hash standing for a request without an ``Idempotency-Key``."""
    return "body:" + hashlib.blake2b(body, digest_size=8).hexdigest()


class Draw(NamedTuple):
    """The fate of one attempt: ``fault`` None means a normal answer."""

    fault: str | None
    error_status: int
    jitter_fraction: float


NO_FAULT = Draw(None, 0, 0.0)


def _uniforms(seed: int, identity: str, attempt: int) -> tuple[float, float, float]:
    digest = hashlib.blake2b(f"{seed}\x00{identity}\x00{attempt}".encode(), digest_size=24).digest()
    return (
        int.from_bytes(digest[0:8], "big") / _UNIT,
        int.from_bytes(digest[8:16], "big") / _UNIT,
        int.from_bytes(digest[16:24], "big") / _UNIT,
    )


def draw(config: MockConfig, identity: str, attempt: int) -> Draw:
    """``(fault, error_status, jitter_fraction)`` for this attempt; ``fault`` None = answer."""
    if not (config.error_rate or config.drop_rate or config.slow_rate or config.jitter_s):
        return NO_FAULT  # the zero-fault hot path: no hashing at all
    u_fault, u_status, u_jitter = _uniforms(config.seed, identity, attempt)
    status = (
        config.error_statuses[int(u_status * len(config.error_statuses))]
        if config.error_statuses
        else 0
    )
    if u_fault < config.error_rate:
        return Draw(ERROR, status, u_jitter)
    if u_fault < config.error_rate + config.drop_rate:
        return Draw(DROP, 0, u_jitter)
    if u_fault < config.error_rate + config.drop_rate + config.slow_rate:
        return Draw(SLOW, 0, u_jitter)
    return Draw(None, 0, u_jitter)
