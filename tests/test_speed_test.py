"""scripts/speed_test.py: the seed's comparison, end to end against the bundled mock and imported.

The script runs as a subprocess (``-W error``, so a stray warning fails it) against a mock this
module starts on a free loopback port; the importable functions are checked against the same
mock. Nothing here judges a duration: the mock's counters say what was sent.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from paradigm_kit.mock import mock_stats, reset_mock, running_mock

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "speed_test.py"
LINE_PATTERNS = [
    r"Async run: (\d+) requests in (\d+\.\d\d) s",
    r"Sync run: (\d+) requests in (\d+\.\d\d) s",
    r"Improvement factor: (\d+\.\d\d)",
]


def load_speed_test():
    """The script as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("speed_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


speed_test = load_speed_test()


def clean_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARADIGM_")}
    env.update(overrides)
    return env


def run_script(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-W", "error", str(SCRIPT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def speed_mock_url():
    """A mock of this module's own, 0.2 s per answer, so that the two runs differ in time."""
    with running_mock(latency_s=0.2) as base_url:
        yield base_url


@pytest.fixture
def fresh_speed_mock(speed_mock_url):
    """That mock with its counters reset, for tests that read mock_stats()."""
    reset_mock(speed_mock_url)
    return speed_mock_url


def test_speed_test_prints_three_lines_ending_with_the_factor(fresh_speed_mock):
    """A run prints exactly three lines, the last `Improvement factor: X.XX` = sync / async."""
    result = run_script(
        "--requests", "8", env=clean_env(PARADIGM_BASE_URL=fresh_speed_mock, PARADIGM_API_KEY="k")
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3, result.stdout
    matches = [
        re.fullmatch(pattern, line) for pattern, line in zip(LINE_PATTERNS, lines, strict=True)
    ]
    assert all(matches), result.stdout
    (n_async, async_s), (n_sync, sync_s), (factor,) = (m.groups() for m in matches)
    assert n_async == n_sync == "8"
    # the factor is computed from the unrounded times: it matches the rounded ones to rounding
    assert float(factor) == pytest.approx(float(sync_s) / float(async_s), abs=0.05 * float(factor))
    assert result.stderr == ""


def test_speed_test_sends_each_request_once_per_run(fresh_speed_mock):
    """The async run and the sync run each send the batch once: 2 x N successful requests."""
    result = run_script(
        "--requests", "5", env=clean_env(PARADIGM_BASE_URL=fresh_speed_mock, PARADIGM_API_KEY="k")
    )
    assert result.returncode == 0, result.stderr
    assert mock_stats(fresh_speed_mock)["requests_by_status"] == {"200": 10}


def test_speed_test_json_file_holds_the_printed_timings(fresh_speed_mock, tmp_path):
    """--json FILE writes the timings the three lines show, for a notebook to read back."""
    out = tmp_path / "timings.json"
    env = clean_env(PARADIGM_BASE_URL=fresh_speed_mock, PARADIGM_API_KEY="k")
    result = run_script("--requests", "4", "--concurrency", "2", "--json", str(out), env=env)
    assert result.returncode == 0, result.stderr
    timings = json.loads(out.read_text())
    assert (timings["requests"], timings["concurrency"]) == (4, 2)
    assert f"Async run: 4 requests in {timings['async_s']:.2f} s" in result.stdout
    assert f"Sync run: 4 requests in {timings['sync_s']:.2f} s" in result.stdout
    assert f"Improvement factor: {timings['improvement_factor']:.2f}" in result.stdout


def test_speed_test_without_key_exits_2_with_one_line():
    """No PARADIGM_API_KEY: exit status 2, one line on stderr saying what to do, no traceback."""
    result = run_script(env=clean_env())
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "PARADIGM_API_KEY" in result.stderr and "mock" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("missing-folder/x.json", id="json-in-a-missing-folder"),
        pytest.param(".", id="json-is-a-directory"),
    ],
)
def test_speed_test_checks_json_before_sending_anything(fresh_speed_mock, tmp_path, target):
    """A --json that cannot be written is refused up front: exit 2, one line, nothing sent."""
    result = run_script(
        "--json",
        str(tmp_path / target),
        env=clean_env(PARADIGM_BASE_URL=fresh_speed_mock, PARADIGM_API_KEY="k"),
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1 and "--json" in result.stderr
    assert mock_stats(fresh_speed_mock)["total"] == 0


def test_speed_test_failed_request_reports_status_and_message():
    """A request the API refuses (wrong key) ends the run with its status and message, exit 1."""
    with running_mock(latency_s=0, api_key="the-right-key") as base_url:
        refused = requests.post(
            f"{base_url}/chat/completions",
            json=speed_test.build_payload("Alice"),
            headers=speed_test.build_headers("a-wrong-key"),
            timeout=10,
        )
        message = refused.json()["error"]["message"]
        env = clean_env(PARADIGM_BASE_URL=base_url, PARADIGM_API_KEY="a-wrong-key")
        result = run_script(env=env)
    assert refused.status_code == 401
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"speed_test.py: request failed: HTTP 401: {message}"]
    assert "a-wrong-key" not in result.stderr + result.stdout


def test_speed_test_batch_names_cycle_the_seed_names_with_a_suffix():
    """Beyond 20 requests the seed's names repeat with a round number, so every request differs."""
    names = speed_test.batch_names(45)
    assert names[:20] == speed_test.NAMES
    assert names[20] == f"{speed_test.NAMES[0]} 2" and names[40] == f"{speed_test.NAMES[0]} 3"
    assert len(set(names)) == 45


def test_speed_test_reply_text_turns_a_non_json_error_into_api_error():
    """A proxy's HTML error page becomes ApiError with its status, not a KeyError or JSON error."""
    with pytest.raises(speed_test.ApiError, match=r"HTTP 502: <html>bad gateway</html>") as info:
        speed_test.reply_text(502, speed_test.parse_body("<html>bad gateway</html>"))
    assert info.value.status == 502


def test_speed_test_run_sync_returns_replies_in_input_order(fresh_speed_mock):
    """run_sync() answers every name, in the order given, over one session."""
    names = speed_test.batch_names(4)
    duration_s, replies = speed_test.run_sync(names, fresh_speed_mock, "k")
    assert duration_s > 0
    for name, reply in zip(names, replies, strict=True):
        assert name in reply
    assert mock_stats(fresh_speed_mock)["requests_by_status"] == {"200": 4}


def test_speed_test_run_async_returns_replies_in_input_order(fresh_speed_mock):
    """run_async() answers every name in input order, whatever order the answers arrive in."""
    names = speed_test.batch_names(6)
    _, replies = asyncio.run(speed_test.run_async(names, fresh_speed_mock, "k"))
    for name, reply in zip(names, replies, strict=True):
        assert name in reply


def test_speed_test_run_async_concurrency_bounds_requests_in_flight(fresh_speed_mock):
    """With concurrency=2 the server never sees more than 2 requests at once."""
    names = speed_test.batch_names(6)
    asyncio.run(speed_test.run_async(names, fresh_speed_mock, "k", concurrency=2))
    stats = mock_stats(fresh_speed_mock)
    assert stats["requests_by_status"] == {"200": 6}
    assert stats["peak_concurrency"] <= 2
