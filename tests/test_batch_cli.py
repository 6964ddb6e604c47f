"""scripts/paradigm_batch.py as a user runs it: a subprocess with -W error and a timeout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from paradigm_kit.batch.runner import idempotency_key
from paradigm_kit.mock import mock_stats

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "paradigm_batch.py"
KEY = "test-key-not-a-secret"


def write_input(path: Path, n: int) -> Path:
    with open(path, "w", encoding="utf-8") as out:
        for i in range(n):
            out.write(
                json.dumps(
                    {
                        "id": f"r{i}",
                        "max_tokens": 20,
                        "messages": [{"role": "user", "content": f"Say hello to user {i}"}],
                    }
                )
                + "\n"
            )
    return path


def environment(base_url: str | None, key: str | None = KEY) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARADIGM_")}
    if base_url is not None:
        env["PARADIGM_BASE_URL"] = base_url
    if key is not None:
        env["PARADIGM_API_KEY"] = key
    return env


def command(*args: object) -> list[str]:
    return [sys.executable, "-W", "error", str(SCRIPT), *map(str, args)]


def cli(*args: object, base_url: str | None, key: str | None = KEY, timeout_s: float = 120):
    return subprocess.run(
        command(*args),
        env=environment(base_url, key),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def ids_in(path: Path) -> list:
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line)["id"] for line in lines]  # json.loads fails on a corrupt line


def test_cli_runs_a_batch_and_prints_a_summary(fresh_mock_url, tmp_path):
    """A clean run exits 0 with one line per request and the summary on stdout."""
    source, output = write_input(tmp_path / "in.jsonl", 50), tmp_path / "out.jsonl"
    result = cli(
        source, output, "--concurrency", 10, "--price-per-1k-tokens", 0.5, base_url=fresh_mock_url
    )
    assert result.returncode == 0, result.stderr
    assert sorted(ids_in(output)) == sorted(f"r{i}" for i in range(50))
    assert "succeeded    50" in result.stdout and "cost" in result.stdout
    assert KEY not in result.stdout + result.stderr


def test_cli_exits_1_when_some_requests_failed(fresh_mock_url, tmp_path):
    """A malformed line is reported in the output and the exit code is 1; the rest succeeded."""
    source = write_input(tmp_path / "in.jsonl", 5)
    with open(source, "a", encoding="utf-8") as out:
        out.write("{broken\n")
    result = cli(source, tmp_path / "out.jsonl", base_url=fresh_mock_url)
    assert result.returncode == 1, result.stderr
    assert sorted(map(str, ids_in(tmp_path / "out.jsonl"))) == sorted(
        [*(f"r{i}" for i in range(5)), "6"]
    )


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        pytest.param("missing-key", "PARADIGM_API_KEY", id="missing-key"),
        pytest.param("unreachable", "cannot reach", id="unreachable-url"),
        pytest.param("unknown-model", "not served", id="unknown-model"),
        pytest.param("refused-key", "refused (401)", id="refused-key"),
    ],
)
def test_cli_preflight_error_exits_2_with_one_line(start_mock_server, tmp_path, case, expected):
    """Missing key, unreachable URL, unknown model, refused key: exit 2, one stderr line,
    nothing sent and no output file."""
    base_url = start_mock_server(api_key="the-right-key")
    source, output = write_input(tmp_path / "in.jsonl", 3), tmp_path / "out.jsonl"
    options: list[object] = []
    key: str | None = "the-right-key"
    target = base_url
    if case == "missing-key":
        key = None
    elif case == "unreachable":
        target = "http://127.0.0.1:9/api/v2"
    elif case == "unknown-model":
        options = ["--model", "no-such-model"]
        source.write_text(
            source.read_text().replace('"max_tokens"', '"temperature": 0.5, "max_tokens"')
        )
    elif case == "refused-key":
        key = "a-wrong-key"
    result = cli(source, output, *options, base_url=target, key=key, timeout_s=60)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and expected in result.stderr
    assert not output.exists()
    assert mock_stats(base_url)["total"] == 0


def test_cli_dry_run_sends_nothing(fresh_mock_url, tmp_path):
    """--dry-run prints the count and the estimate; the mock sees no request."""
    source = write_input(tmp_path / "in.jsonl", 12)
    result = cli(source, tmp_path / "out.jsonl", "--dry-run", base_url=fresh_mock_url, key=None)
    assert result.returncode == 0, result.stderr
    assert "12 requests" in result.stdout
    assert mock_stats(fresh_mock_url)["total"] == 0
    assert not (tmp_path / "out.jsonl").exists()


def test_cli_help_documents_the_exit_codes():
    """--help lists 0, 1, 2 and 130."""
    result = subprocess.run(command("--help"), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for code in ("0 ", "1 ", "2 ", "130"):
        assert f"\n  {code}" in result.stdout


def identity(request: dict) -> str:
    """The Idempotency-Key the runner sends for ``request``: the mock counts attempts by it."""
    body = {k: v for k, v in request.items() if k != "id"}
    body.setdefault("model", "alfred-4.2")
    return idempotency_key(request["id"], json.dumps(body).encode())


def start_runner(source: Path, output: Path, base_url: str, *options: object) -> subprocess.Popen:
    return subprocess.Popen(
        command(source, output, "--concurrency", 20, "--no-progress", *options),
        env=environment(base_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_lines(output: Path, at_least: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if output.exists() and output.read_bytes().count(b"\n") >= at_least:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {at_least} lines in {output} after {timeout_s} s")


def runner_signalled(
    tmp_path: Path, base_url: str, n_lines: int, after_lines: int, signum: int
) -> tuple[Path, Path, subprocess.Popen]:
    """A CLI run over ``n_lines`` sent ``signum`` once ``after_lines`` are written: its input,
    its output and the process (still to be waited for)."""
    source, output = write_input(tmp_path / "in.jsonl", n_lines), tmp_path / "out.jsonl"
    runner = start_runner(source, output, base_url)
    wait_for_lines(output, after_lines)
    runner.send_signal(signum)
    return source, output, runner


def test_cli_resume_after_kill_9_finishes_without_duplicates(start_mock_server, tmp_path):
    """kill -9 mid-run, rerun: every id once, no corrupt line, no finished request sent again."""
    base_url = start_mock_server(latency_s=0.05)
    source, output, runner = runner_signalled(tmp_path, base_url, 600, 100, signal.SIGKILL)
    runner.wait(timeout=30)
    with open(output, "rb") as data:  # whole lines only: a torn tail is dropped by the rerun
        finished = [json.loads(line)["id"] for line in data if line.endswith(b"\n")]
    assert 0 < len(finished) < 600
    result = cli(source, output, "--concurrency", 20, base_url=base_url)
    assert result.returncode == 0, result.stderr
    assert sorted(ids_in(output)) == sorted(f"r{i}" for i in range(600))
    # the mock saw each request written before the kill exactly once, over both runs
    attempts = mock_stats(base_url)["attempts_by_identity"]
    bodies = {
        request["id"]: request for request in map(json.loads, source.read_text().splitlines())
    }
    assert [attempts[identity(bodies[request_id])] for request_id in finished] == [1] * len(
        finished
    )


def test_cli_sigint_stops_gracefully_with_130(start_mock_server, tmp_path):
    """SIGINT: in-flight requests finish and are written, exit 130; a rerun completes the rest."""
    base_url = start_mock_server(latency_s=0.1)
    source, output, runner = runner_signalled(tmp_path, base_url, 400, 40, signal.SIGINT)
    _, stderr = runner.communicate(timeout=60)
    assert runner.returncode == 130, stderr
    done = ids_in(output)
    assert len(done) == len(set(done)) < 400
    assert mock_stats(base_url)["total"] == len(done)  # every request sent was finished and written
    result = cli(source, output, base_url=base_url)
    assert result.returncode == 0, result.stderr
    assert sorted(ids_in(output)) == sorted(f"r{i}" for i in range(400))


def test_cli_timeline_streams_one_record_per_attempt(fresh_mock_url, tmp_path):
    """--timeline FILE gets one well-formed JSON record per attempt."""
    source, output, timeline = (
        write_input(tmp_path / "in.jsonl", 30),
        tmp_path / "out.jsonl",
        tmp_path / "t.jsonl",
    )
    result = cli(source, output, "--timeline", timeline, base_url=fresh_mock_url)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in timeline.read_text().splitlines()]
    assert sorted(r["id"] for r in records) == sorted(f"r{i}" for i in range(30))
    assert {r["outcome"] for r in records} == {"ok"}
