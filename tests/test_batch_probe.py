"""The probe: its plan and knee rule exactly, a measured ladder on a small server, the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest
from aiohttp import web
from conftest import serving_app

from paradigm_kit.batch.probe import ProbeLevel, find_knee, level_size, plan_probe, probe_capacity

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "scripts", "paradigm_probe.py")


def _level(concurrency: int, requests_per_s: float, errors: int = 0) -> ProbeLevel:
    return ProbeLevel(
        concurrency, 8, 8 - errors, errors, 1.0, requests_per_s, 0.0, 1.0, 1.0, None, None
    )


@pytest.mark.parametrize(
    ("levels", "knee"),
    [
        pytest.param([(1, 1), (2, 2), (4, 4), (8, 8), (16, 8.1), (32, 8)], 8, id="plateau"),
        pytest.param([(1, 1), (2, 2), (4, 3.9), (8, 4)], 4, id="within-5-percent"),
        pytest.param([(1, 1), (2, 2), (4, 4)], 4, id="no-plateau-yet"),
        pytest.param([(1, 1), (2, 2), (4, 5, 3)], 2, id="errors-excluded"),
    ],
)
def test_knee_is_the_smallest_within_5_percent_of_the_best(levels, knee) -> None:
    """The knee rule, exactly."""
    assert find_knee([_level(*row) for row in levels]) == knee


def test_plan_fits_the_budget() -> None:
    """The ladder doubles and never plans more than max_requests."""
    assert plan_probe(200) == [(1, 4), (2, 4), (4, 8), (8, 16), (16, 32), (32, 64)]
    assert sum(n for _, n in plan_probe(50)) <= 50
    assert plan_probe(1000, max_concurrency=8)[-1] == (8, 16)


async def _slot_server(slots: int, work_s: float, test):
    """A server that runs ``slots`` requests at once (the rest wait), each ``work_s``, streamed."""
    semaphore = asyncio.Semaphore(slots)
    sent = {"n": 0}

    async def chat(request: web.Request) -> web.StreamResponse:
        sent["n"] += 1
        async with semaphore:
            await asyncio.sleep(work_s)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chunk = {
            "id": "x",
            "model": "alfred-4.2",
            "created": 1,
            "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}],
        }
        await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\ndata: [DONE]\n\n")
        return response

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "alfred-4.2"}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    async with serving_app(app) as root_url:
        return await test(f"{root_url}/v1"), sent["n"]


def test_probe_finds_the_knee_of_a_four_slot_server() -> None:
    """4 slots: throughput doubles up to 4 and stops; the knee lands at 4, or on a loaded machine
    (a level of two rounds measured a hiccup low) up to the ladder's next point, within budget."""

    async def test(url):
        return await probe_capacity(url, "k", max_requests=120)

    result, sent = asyncio.run(_slot_server(4, 0.2, test))
    assert 4 <= result.recommended <= 8
    assert sent == result.requests_sent <= 120
    assert result.recommendation_line().startswith(
        f"Recommended concurrency: {result.recommended} ("
    )


def _cli(*args: str, base_url: str, key: str = "k") -> subprocess.CompletedProcess:
    env = dict(os.environ, PARADIGM_API_KEY=key, PARADIGM_BASE_URL=base_url)
    return subprocess.run(
        [sys.executable, "-W", "error", SCRIPT, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "base_url", "key", "message"),
    [
        pytest.param(
            (),
            "https://paradigm.example.invalid/api/v2",
            "k",
            "--max-requests is required",
            id="real-host-needs-budget",
        ),
        pytest.param(
            ("--max-requests", "2"), "http://127.0.0.1:9/v1", "k", "must be >= 4", id="tiny-budget"
        ),
        pytest.param(
            ("--max-concurrency", "0"),
            "http://127.0.0.1:9/v1",
            "k",
            "--max-concurrency",
            id="zero-concurrency",
        ),
        pytest.param((), "http://127.0.0.1:9/v1", "", "PARADIGM_API_KEY", id="no-key"),
        pytest.param((), "http://127.0.0.1:9/v1", "k", "cannot reach", id="unreachable"),
        # the output paths are checked before anything is sent (port 9 is never reached)
        pytest.param(
            ("--json", "/nonexistent/x.json"),
            "http://127.0.0.1:9/v1",
            "k",
            "--json",
            id="json-in-a-missing-folder",
        ),
        pytest.param(
            ("--plot", "/nonexistent/p.png"),
            "http://127.0.0.1:9/v1",
            "k",
            "--plot",
            id="plot-in-a-missing-folder",
        ),
        pytest.param(
            ("--json", "/tmp"),
            "http://127.0.0.1:9/v1",
            "k",
            "is a directory",
            id="json-is-a-directory",
        ),
    ],
)
def test_probe_cli_bad_input_is_one_line_exit_2(args, base_url, key, message) -> None:
    """Bad values: one line on stderr naming the problem, exit 2, nothing sent."""
    done = _cli(*args, base_url=base_url, key=key)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr


def test_probe_cli_against_the_mock(start_mock_server, tmp_path) -> None:
    """Against a local mock: plan first, a table, JSON and plot written, the last line."""
    url = start_mock_server(latency_s=0.05)
    out, plot = tmp_path / "probe.json", tmp_path / "probe.png"
    done = _cli("--max-requests", "40", "--json", str(out), "--plot", str(plot), base_url=url)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[1].startswith("plan: at most 40 streamed requests")
    assert lines[-1].startswith("Recommended concurrency: ")
    data = json.loads(out.read_text())
    assert data["requests_sent"] <= 40 and plot.stat().st_size > 1000
    assert level_size(1) == 4


def test_probe_against_a_small_capacity_profile(start_mock_server) -> None:
    """The mock's --capacity 2 profile: the probe stays in budget and recommends a level it
    measured (how close to 2 is the benchmark's figure, not a test's)."""
    url = start_mock_server(latency_s=0.02, capacity=2)
    result = asyncio.run(probe_capacity(url, "k", max_requests=60))
    assert result.requests_sent <= 60
    assert result.recommended in {level.concurrency for level in result.levels}
