"""The bundled mock Paradigm API server, and the helpers that start it and read its counters.

Start one (a subprocess on a free loopback port)::

    from paradigm_kit.mock import running_mock, mock_stats
    with running_mock(latency_s=0.0, error_rate=0.2, seed=7) as base_url:
        ...  # PARADIGM_BASE_URL=base_url, any non-empty PARADIGM_API_KEY
        print(mock_stats(base_url)["requests_by_status"])

Modules, one concern each: ``config`` (settings and CLI flags), ``replies`` (reply text, token
estimate, payload shapes), ``faults`` (which attempt fails), ``stats`` (counters, log, report
card), ``app`` (``create_app`` and the handlers), ``server`` (the CLI's serve loop), ``launcher``
(the subprocess helpers). Importing this package starts nothing.
"""

from .app import create_app
from .config import MockConfig
from .launcher import (
    MockHandle,
    MockStartError,
    mock_log,
    mock_report,
    mock_root,
    mock_stats,
    reset_mock,
    running_mock,
    start_mock,
)

__all__ = [
    "MockConfig",
    "MockHandle",
    "MockStartError",
    "create_app",
    "mock_log",
    "mock_report",
    "mock_root",
    "mock_stats",
    "reset_mock",
    "running_mock",
    "start_mock",
]
