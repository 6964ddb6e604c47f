"""--concurrency auto and --stream end to end: the runner against the mock, and the CLI's flags."""

from __future__ import annotations

import asyncio
import json

import pytest

from paradigm_kit.batch import BatchConfigError, run_batch
from paradigm_kit.mock import mock_stats
from tests.test_batch_cli import cli, write_input


def run_auto(url: str, api_key: str, out, n_requests: int, **options):
    """``run_batch(concurrency="auto")`` over ``n_requests`` of varied lengths; its summary."""
    return asyncio.run(
        run_batch(
            _requests(n_requests),
            out,
            base_url=url,
            api_key=api_key,
            progress=False,
            concurrency="auto",
            **options,
        )
    )


def _requests(n: int) -> list[dict]:
    return [
        {"id": i, "max_tokens": 5 + i % 30, "messages": [{"role": "user", "content": f"item {i}"}]}
        for i in range(n)
    ]


def test_auto_sends_everything_and_reports_its_concurrency(start_mock_server, tmp_path, api_key):
    """``concurrency="auto"``: every request answered once, the limit's history in the summary,
    never above max_concurrency in flight (the mock's own peak)."""
    url = start_mock_server(latency_s=0.01)
    out = tmp_path / "out.jsonl"
    summary = run_auto(url, api_key, out, 120, max_concurrency=16)
    assert summary.succeeded == 120 and summary.failed == 0
    assert len(out.read_text().splitlines()) == 120
    assert summary.concurrency_history[0][2] == "start"
    assert [step[2] for step in summary.concurrency_history[:2]] == ["start", "calibrated"]
    assert all(1 <= limit <= 16 for _, limit, _ in summary.concurrency_history)
    assert mock_stats(url)["peak_concurrency"] <= 16
    assert "auto: peak" in str(summary)


def test_auto_streamed_lines_carry_ttft(start_mock_server, tmp_path, api_key):
    """auto and stream together: streamed lines with ttft_s and tokens_per_s."""
    url = start_mock_server(latency_s=0.01)
    out = tmp_path / "out.jsonl"
    summary = run_auto(url, api_key, out, 30, stream=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary.succeeded == 30
    assert all(row["response"]["object"] == "chat.completion" and "ttft_s" in row for row in rows)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"concurrency": "fast"}, "concurrency", id="not-auto"),
        pytest.param({"concurrency": 0}, "concurrency", id="zero"),
        pytest.param(
            {"concurrency": "auto", "max_concurrency": 0}, "max_concurrency", id="zero-max"
        ),
    ],
)
def test_run_batch_bad_concurrency_is_refused(tmp_path, kwargs, message):
    """Bad values: BatchConfigError before anything is sent or written."""
    with pytest.raises(BatchConfigError, match=message):
        asyncio.run(
            run_batch(
                [], tmp_path / "o.jsonl", base_url="http://127.0.0.1:9", api_key="k", **kwargs
            )
        )
    assert not (tmp_path / "o.jsonl").exists()


def test_cli_auto_and_stream(start_mock_server, tmp_path):
    """``--concurrency auto --stream`` runs; the summary shows the current concurrency."""
    url = start_mock_server(latency_s=0.01)
    source = write_input(tmp_path / "in.jsonl", 20)
    done = cli(
        source,
        tmp_path / "out.jsonl",
        "--concurrency",
        "auto",
        "--stream",
        "--no-progress",
        base_url=url,
    )
    assert done.returncode == 0, done.stderr
    assert "auto: peak" in done.stdout


@pytest.mark.parametrize(
    "flags",
    [
        pytest.param(("--concurrency", "fast"), id="concurrency-word"),
        pytest.param(("--concurrency", "0"), id="concurrency-zero"),
        pytest.param(("--max-concurrency", "0"), id="max-concurrency-zero"),
        pytest.param(("--idle-timeout", "0"), id="idle-zero"),
        pytest.param(("--first-token-timeout", "nan"), id="first-token-nan"),
        pytest.param(("--stream-timeout", "-1"), id="total-negative"),
    ],
)
def test_cli_bad_values_exit_2(tmp_path, flags):
    """A bad value: one line on stderr, exit 2, no output file."""
    source = write_input(tmp_path / "in.jsonl", 2)
    done = cli(source, tmp_path / "out.jsonl", *flags, base_url="http://127.0.0.1:9")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and not (tmp_path / "out.jsonl").exists()


def test_auto_against_a_sharing_profile(start_mock_server, tmp_path, api_key):
    """On the mock's --capacity profile: every request answered, no error, the limit within its
    floor and ceiling (where it settles is the benchmark's business, not a test's)."""
    url = start_mock_server(latency_s=0.02, capacity=4)
    out = tmp_path / "out.jsonl"
    summary = run_auto(url, api_key, out, 80, max_concurrency=32)
    assert summary.succeeded == 80 and summary.failed == 0
    assert all(1 <= limit <= 32 for _, limit, _ in summary.concurrency_history)


def test_auto_against_a_shedding_profile(start_mock_server, tmp_path, api_key):
    """On --max-running 2 --max-queue 2 (503 beyond): everything still ends answered."""
    url = start_mock_server(latency_s=0.02, max_running=2, max_queue=2)
    out = tmp_path / "out.jsonl"
    summary = run_auto(url, api_key, out, 60, max_retries=20)
    assert summary.succeeded == 60
