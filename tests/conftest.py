"""Shared fixtures: mock servers, started as subprocesses on free loopback ports.

* ``mock_url``: one zero-latency mock (no faults, no limits) for the whole test session. Tests
  that share it must not depend on its global counters: send an ``X-Run-Id`` header (or a key of
  your own) and read ``mock_stats(mock_url, run=...)``, or use ``fresh_mock_url``.
* ``fresh_mock_url``: a zero-latency mock of its own for one test, stopped after it.
* ``start_mock_server``: a factory, ``start_mock_server(error_rate=0.2, seed=7) -> base_url``,
  with the CLI flags as keyword arguments (dashes as underscores; ``latency`` defaults to 0
  here, not 0.5); every mock it started is
  stopped when the test ends.
* an autouse module fixture stops the exercises' mocks (``exercise(...)``) after each module.
* ``api_key``: a dummy key; any non-empty key works unless a mock is started with ``api_key=``.
* ``run_python(*args, env=...)`` (``from conftest import run_python``): this interpreter run on
  ``args`` (``"-m", "paradigm_kit.doctor"``), output captured as text, with a timeout.
* ``serving_app(app)`` (``from conftest import serving_app``): ``async with`` it to serve a test's
  own ``aiohttp.web.Application`` on a free loopback port; it yields the root URL.
* ``FakeClock`` (``from conftest import FakeClock``) and the ``fake_clock`` fixture: a clock that
  moves only when told (``advance``) or when a fake ``sleep`` is awaited, for the mock's
  ``create_app(clock=...)``, ``TokenBucket`` and the runner's ``Pacer``: counted, never timed.

Base URLs look like ``http://127.0.0.1:PORT/api/v2``; ``paradigm_kit.mock.mock_stats``,
``mock_log``, ``mock_report`` and ``reset_mock`` read the mock's ``/_mock`` endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping

import pytest
from aiohttp import web

from paradigm_kit.mock import running_mock, start_mock
from paradigm_kit.workshop.exercises import stop_exercise_mocks

TEST_API_KEY = "test-key-not-a-secret"


@pytest.fixture(scope="module", autouse=True)
def _stop_exercise_mocks() -> Iterator[None]:
    """Stop the mocks the exercises start on first use (``exercise(...)``) once a module is done,
    so that one module's mocks do not outlive it; a module that started none costs nothing."""
    yield
    stop_exercise_mocks()


def run_python(
    *args: str, env: Mapping[str, str], timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` with this interpreter, as a user would run it; stdout/stderr captured."""
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout_s
    )


@contextlib.asynccontextmanager
async def serving_app(app: web.Application) -> AsyncIterator[str]:
    """``app`` (a test's own fake server) on a free loopback port: yields ``http://127.0.0.1:PORT``."""
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


class FakeClock:
    """A clock that moves only when told to: ``advance(s)``, or awaiting ``sleep(s)``."""

    def __init__(self, now_s: float = 1000.0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds

    async def sleep(self, seconds: float) -> bool:
        """A pacer's sleep: move the clock, let other tasks run, report "not stopped"."""
        self.now_s += seconds
        await asyncio.sleep(0)
        return True


@pytest.fixture
def fake_clock() -> FakeClock:
    """A fresh ``FakeClock`` at t = 1000 s."""
    return FakeClock()


@pytest.fixture(scope="session")
def api_key() -> str:
    """A dummy API key the mocks accept."""
    return TEST_API_KEY


@pytest.fixture(scope="session")
def mock_url() -> Iterator[str]:
    """One zero-latency mock shared by the session (isolate by run id, not by counters)."""
    with running_mock(latency_s=0.0) as base_url:
        yield base_url


@pytest.fixture
def fresh_mock_url() -> Iterator[str]:
    """A zero-latency mock for this test only."""
    with running_mock(latency_s=0.0) as base_url:
        yield base_url


@pytest.fixture
def start_mock_server() -> Iterator[Callable[..., str]]:
    """Factory: ``start_mock_server(**flags) -> base_url``; all stopped after the test."""
    handles = []

    def start(**flags: object) -> str:
        flags.setdefault("latency_s", 0.0)
        handle = start_mock(**flags)
        handles.append(handle)
        return handle.base_url

    yield start
    for handle in handles:
        handle.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the check of notebook 03's %%writefile cell first: it reads the committed files, before
    any notebook run (nbval re-executes the cell on a scratch copy, never on the tracked script)."""
    first = [item for item in items if "writefile_cell_equals" in item.name]
    items[:] = first + [item for item in items if item not in first]
