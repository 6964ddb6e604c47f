"""The runner's promises under careless or hostile use, each written as a rule.

* every configuration mistake is one line on stderr and exit 2, never a traceback, and no file
  is changed (the input, an unrelated file given as the output, an output with a bad line);
* ``--retry-failed`` after a kill loses no success and re-sends none, and sends lines never sent;
* the preflight retries what a request would retry; lines naming an unknown model get an error
  line wherever they are; the key never leaves (masked in output lines, no redirect followed);
* a signal during the preflight ends the run with 130 (SIGINT) or 143 (SIGTERM).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from aiohttp import web

from paradigm_kit.batch import run_batch
from paradigm_kit.mock import mock_stats

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "paradigm_batch.py"
KEY = "test-key-not-a-secret"
DEAD_URL = "http://127.0.0.1:9/api/v2"  # refusals come before any connection


def request_line(i: int, **extra: object) -> str:
    body = {"id": f"r{i}", "max_tokens": 5, "messages": [{"role": "user", "content": f"hi {i}"}]}
    return json.dumps({**body, **extra}) + "\n"


def write_input(path: Path, n: int) -> Path:
    path.write_text("".join(request_line(i) for i in range(n)), encoding="utf-8")
    return path


def cli(*args: object, base_url: str = DEAD_URL, key: str = KEY, timeout_s: float = 120):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARADIGM_")}
    env.update(PARADIGM_BASE_URL=base_url, PARADIGM_API_KEY=key)
    return subprocess.run(
        [sys.executable, "-W", "error", str(SCRIPT), *map(str, args), "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


# --- refusals: one line, exit 2, nothing changed ------------------------------------------


def _setup(case: str, tmp: Path) -> tuple[list[object], dict[str, str]]:
    """Files for one refusal case -> (CLI arguments, environment overrides)."""
    source = write_input(tmp / "in.jsonl", 3)
    output = tmp / "out.jsonl"
    env: dict[str, str] = {}
    args: list[object] = [source, output]
    if case == "output-is-input":
        args = [source, source]
    elif case == "output-is-input-spelled-otherwise":
        (tmp / "sub").mkdir()
        args = [source, tmp / "sub" / ".." / "." / "in.jsonl"]
    elif case == "output-is-a-hard-link-to-input":
        os.link(source, tmp / "linked.jsonl")
        args = [source, tmp / "linked.jsonl"]
    elif case == "output-is-a-symlink-to-input":
        os.symlink(source, tmp / "alias.jsonl")
        args = [source, tmp / "alias.jsonl"]
    elif case == "output-is-an-unrelated-file":
        (tmp / "notes.csv").write_text("name,score\nann,3\n")
        args = [source, tmp / "notes.csv"]
    elif case == "output-is-another-input":
        write_input(tmp / "other.jsonl", 2)
        args = [source, tmp / "other.jsonl"]
    elif case == "output-has-a-bad-line-in-the-middle":
        output.write_text('{"id": "r0", "response": {}}\nnot json\n{"id": "r1", "response": {}}\n')
    elif case == "output-is-a-directory":
        output.mkdir()
    elif case == "output-directory-missing":
        args = [source, tmp / "missing" / "out.jsonl"]
    elif case == "timeline-directory-missing":
        args += ["--timeline", tmp / "missing" / "t.jsonl"]
    elif case == "timeline-is-the-output":
        args += ["--timeline", output]
    elif case == "duplicate-ids":
        source.write_text(request_line(1) + request_line(2) + request_line(1))
    elif case == "explicit-id-equals-a-default-id":
        line = json.loads(request_line(0))
        del line["id"]
        source.write_text(json.dumps(line) + "\n" + request_line(0, id=1))
    elif case == "request-bigger-than-the-token-budget":
        args += ["--max-tokens-per-minute", 3]
    elif case.startswith("flag "):
        flag, value = case.split()[1:]
        args += [flag, value]
    elif case.startswith("url "):
        env["PARADIGM_BASE_URL"] = case[4:]
    elif case == "key-with-a-newline":
        env["PARADIGM_API_KEY"] = "sk-secret\nX-Injected: 1"
    return args, env


REFUSALS = [
    pytest.param(name, expected, id=name.replace(" ", ""))
    for name, expected in [
        ("output-is-input", "is the input"),
        ("output-is-input-spelled-otherwise", "is the input"),
        ("output-is-a-hard-link-to-input", "is the input"),
        ("output-is-a-symlink-to-input", "is the input"),
        ("output-is-an-unrelated-file", "--overwrite"),
        ("output-is-another-input", "--overwrite"),
        ("output-has-a-bad-line-in-the-middle", "line 2 of"),
        ("output-is-a-directory", "is a directory"),
        ("output-directory-missing", "does not exist"),
        ("timeline-directory-missing", "does not exist"),
        ("timeline-is-the-output", "file of its own"),
        ("duplicate-ids", "lines 1 and 3"),
        ("explicit-id-equals-a-default-id", "lines 1 and 2"),
        ("request-bigger-than-the-token-budget", "could never be sent"),
        ("flag --timeout 0", "--timeout"),
        ("flag --timeout -1", "--timeout"),
        ("flag --timeout nan", "--timeout"),
        ("flag --max-requests-per-minute 0", "--max-requests-per-minute"),
        ("flag --max-requests-per-minute -5", "--max-requests-per-minute"),
        ("flag --max-tokens-per-minute inf", "--max-tokens-per-minute"),
        ("flag --price-per-1k-tokens -1", "--price-per-1k-tokens"),
        ("flag --concurrency 0", "--concurrency"),
        ("flag --max-retries -1", "--max-retries"),
        ("flag --backoff-base nan", "--backoff-base"),
        ("url http://127.0.0.1:99999/api/v2", "not a usable URL"),
        ("url http://127.0.0.1:abc/api/v2", "not a usable URL"),
        ("url http://[::1", "not a usable URL"),
        ("url http://local host/api/v2", "not a usable URL"),
        ("url localhost:8000", "not a usable URL"),
        ("key-with-a-newline", "control character"),
    ]
]


@pytest.mark.parametrize(("case", "expected"), REFUSALS)
def test_a_configuration_mistake_is_one_line_exit_2_and_changes_nothing(tmp_path, case, expected):
    args, env = _setup(case, tmp_path)
    before = snapshot(tmp_path)
    result = cli(
        *args,
        **{
            "base_url": env.get("PARADIGM_BASE_URL", DEAD_URL),
            "key": env.get("PARADIGM_API_KEY", KEY),
        },
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and expected in result.stderr
    assert "secret" not in result.stderr and KEY not in result.stderr
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="empty-output"),
        pytest.param(b'{"id": "r0", "resp', id="only-a-torn-line"),
    ],
)
def test_an_output_without_a_whole_line_resumes(fresh_mock_url, tmp_path, content):
    source, output = write_input(tmp_path / "in.jsonl", 3), tmp_path / "out.jsonl"
    output.write_bytes(content)
    result = cli(source, output, base_url=fresh_mock_url)
    assert result.returncode == 0, result.stderr
    assert sorted(json.loads(line)["id"] for line in output.read_text().splitlines()) == [
        "r0",
        "r1",
        "r2",
    ]


def test_overwrite_empties_an_unrelated_output_but_never_the_input(fresh_mock_url, tmp_path):
    source, notes = write_input(tmp_path / "in.jsonl", 2), tmp_path / "notes.csv"
    notes.write_text("name,score\n")
    assert cli(source, notes, "--overwrite", base_url=fresh_mock_url).returncode == 0
    assert [json.loads(line)["id"] for line in notes.read_text().splitlines()].count("r0") == 1
    kept = source.read_bytes()
    assert cli(source, source, "--overwrite", base_url=fresh_mock_url).returncode == 2
    assert source.read_bytes() == kept


# --- retry-failed after a kill ------------------------------------------------------------


def run(requests, output, base_url, **options):
    options.setdefault("progress", False)
    return asyncio.run(run_batch(requests, output, base_url=base_url, api_key=KEY, **options))


def test_retry_failed_after_a_kill_resends_no_success_and_loses_none(fresh_mock_url, tmp_path):
    """The output has r0 ok and r1, r2 failed; a killed --retry-failed fixed r1 in the side file
    (and tore its next line); r3 was never sent. The rerun sends exactly r2 and r3."""
    source, output = write_input(tmp_path / "in.jsonl", 4), tmp_path / "out.jsonl"
    output.write_text(
        '{"id": "r0", "line": 1, "response": {"old": 0}}\n'
        '{"id": "r1", "line": 2, "error": {"status": 500}}\n'
        '{"id": "r2", "line": 3, "error": {"status": 429}}\n'
    )
    (tmp_path / "out.jsonl.retrying").write_text(
        '{"id": "r1", "line": 2, "response": {"fixed": 1}}\n{"id": "r2", "li'
    )
    summary = run(source, output, fresh_mock_url, retry_failed=True)
    assert (summary.requests, summary.succeeded, summary.exit_code) == (2, 2, 0)
    assert mock_stats(fresh_mock_url)["total"] == 2
    records = {r["id"]: r for r in map(json.loads, output.read_text().splitlines())}
    assert sorted(records) == ["r0", "r1", "r2", "r3"]
    assert records["r0"]["response"] == {"old": 0} and records["r1"]["response"] == {"fixed": 1}
    assert not (tmp_path / "out.jsonl.retrying").exists()


def test_a_plain_rerun_after_a_killed_retry_failed_keeps_the_side_files_successes(
    fresh_mock_url, tmp_path
):
    source, output = write_input(tmp_path / "in.jsonl", 2), tmp_path / "out.jsonl"
    output.write_text('{"id": "r0", "error": {}}\n{"id": "r1", "response": {}}\n')
    (tmp_path / "out.jsonl.retrying").write_text('{"id": "r0", "response": {"fixed": 1}}\n')
    summary = run(source, output, fresh_mock_url)
    assert summary.requests == 0 and summary.exit_code == 0
    assert mock_stats(fresh_mock_url)["total"] == 0
    assert '"fixed": 1' in output.read_text()


# --- a server of our own, for what the mock does not do ---------------------------------


@contextmanager
def serving(routes: Callable[[web.Application], None]) -> Iterator[str]:
    """Run an aiohttp app in a thread on a free loopback port; yield its base URL."""
    loop = asyncio.new_event_loop()
    app = web.Application()
    routes(app)
    runner = web.AppRunner(app, shutdown_timeout=0.5)  # do not wait for a hanging handler
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(120)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


MODELS = {"object": "list", "data": [{"id": "alfred-4.2", "object": "model"}]}


def run_one_line(tmp_path: Path, base_url: str) -> dict:
    """A one-line batch sent to ``base_url`` with no preflight; its output record."""
    output = tmp_path / "out.jsonl"
    run(write_input(tmp_path / "in.jsonl", 1), output, base_url, check_first=False)
    return json.loads(output.read_text())


def chat_ok(request_body: dict) -> dict:
    return {"choices": [{"message": {"role": "assistant", "content": "hi"}}], "usage": {}}


@pytest.mark.parametrize(
    "transient",
    [
        pytest.param((429, {"Retry-After": "0"}), id="429-with-retry-after"),
        pytest.param((503, {}), id="503"),
        pytest.param((500, {}), id="500"),
    ],
)
def test_the_preflight_retries_what_a_request_would_retry(tmp_path, transient):
    status, headers = transient
    calls = {"models": 0}

    def routes(app: web.Application) -> None:
        async def models(request: web.Request) -> web.Response:
            calls["models"] += 1
            if calls["models"] <= 2:
                return web.json_response(
                    {"error": {"message": "busy"}}, status=status, headers=headers
                )
            return web.json_response(MODELS)

        async def chat(request: web.Request) -> web.Response:
            return web.json_response(chat_ok(await request.json()))

        app.router.add_get("/v1/models", models)
        app.router.add_post("/v1/chat/completions", chat)

    source = write_input(tmp_path / "in.jsonl", 2)
    with serving(routes) as base_url:
        summary = run(source, tmp_path / "out.jsonl", base_url, retry_policy=_fast_policy())
    assert calls["models"] == 3 and summary.succeeded == 2


def _fast_policy():
    from paradigm_kit.retry import RetryPolicy

    return RetryPolicy(max_retries=3, base_delay_s=0.01, max_delay_s=0.02)


@pytest.mark.parametrize(
    "position", [pytest.param(1, id="first-line"), pytest.param(21, id="line-21")]
)
def test_an_unknown_model_is_a_per_line_error_wherever_it_is(fresh_mock_url, tmp_path, position):
    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(
            request_line(i, model="no-such-model") if i + 1 == position else request_line(i)
            for i in range(25)
        )
    )
    summary = run(source, tmp_path / "out.jsonl", fresh_mock_url)
    records = {
        r["line"]: r for r in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())
    }
    assert records[position]["error"]["type"] == "model_not_found"
    assert sum("response" in r for r in records.values()) == 24
    assert (summary.unknown_model, summary.exit_code) == (1, 1)
    assert mock_stats(fresh_mock_url)["total"] == 24  # the unknown model's line was never sent


def test_retry_failed_is_not_abandoned_because_one_failed_line_names_an_unknown_model(
    fresh_mock_url, tmp_path
):
    source = tmp_path / "in.jsonl"
    source.write_text(request_line(0, model="no-such-model") + request_line(1))
    output = tmp_path / "out.jsonl"
    output.write_text(
        '{"id": "r0", "error": {"status": 404}}\n{"id": "r1", "error": {"status": 500}}\n'
    )
    summary = run(source, output, fresh_mock_url, retry_failed=True)
    assert summary.succeeded == 1 and summary.unknown_model == 1


@pytest.mark.parametrize("status", [pytest.param(501, id="501"), pytest.param(505, id="505")])
def test_not_implemented_is_not_retried(tmp_path, status):
    seen = []

    def routes(app: web.Application) -> None:
        async def chat(request: web.Request) -> web.Response:
            seen.append(1)
            return web.Response(
                status=status,
                text="<html><body><h1>Not here</h1></body></html>",
                content_type="text/html",
            )

        app.router.add_post("/v1/chat/completions", chat)

    with serving(routes) as base_url:
        error = run_one_line(tmp_path, base_url)["error"]
    assert len(seen) == 1 and error["status"] == status
    assert error["message"] == "Not here"  # a non-API page summarised, tags stripped


def test_insufficient_quota_is_recorded_at_once_and_said_in_the_summary(tmp_path):
    seen = []

    def routes(app: web.Application) -> None:
        async def chat(request: web.Request) -> web.Response:
            seen.append(1)
            error = {
                "message": "out of credit",
                "type": "insufficient_quota",
                "code": "insufficient_quota",
            }
            return web.json_response({"error": error}, status=429)

        app.router.add_post("/v1/chat/completions", chat)

    with serving(routes) as base_url:
        summary = run(
            write_input(tmp_path / "in.jsonl", 3),
            tmp_path / "out.jsonl",
            base_url,
            check_first=False,
        )
    assert len(seen) == 3 and summary.out_of_quota == 3 and summary.retried == 0
    assert "insufficient_quota" in str(summary)


def test_the_key_echoed_by_a_server_is_masked_in_every_output_line(tmp_path):
    def routes(app: web.Application) -> None:
        async def chat(request: web.Request) -> web.Response:
            echoed = request.headers["Authorization"]
            if (await request.json())["messages"][0]["content"] == "hi 0":
                return web.json_response({"error": {"message": f"bad header {echoed}"}}, status=400)
            return web.json_response({**chat_ok({}), "echo": echoed})

        app.router.add_post("/v1/chat/completions", chat)

    output = tmp_path / "out.jsonl"
    with serving(routes) as base_url:
        run(write_input(tmp_path / "in.jsonl", 2), output, base_url, check_first=False)
    text = output.read_text()
    assert KEY not in text and text.count("***") == 2


def test_no_redirect_is_followed_so_the_key_never_reaches_another_origin(tmp_path):
    reached = []

    def other(app: web.Application) -> None:
        async def anything(request: web.Request) -> web.Response:
            reached.append(request.headers.get("Authorization"))
            return web.json_response(chat_ok({}))

        app.router.add_route("*", "/{tail:.*}", anything)

    with serving(other) as elsewhere:

        def routes(app: web.Application) -> None:
            async def moved(request: web.Request) -> web.Response:
                raise web.HTTPTemporaryRedirect(f"{elsewhere}/chat/completions")

            app.router.add_post("/v1/chat/completions", moved)

        with serving(routes) as base_url:
            run_one_line(tmp_path, base_url)
    assert reached == []
    assert json.loads((tmp_path / "out.jsonl").read_text())["error"]["status"] == 307


# --- signals during the preflight ---------------------------------------------------------


@pytest.mark.parametrize(
    ("signum", "code"),
    [
        pytest.param(signal.SIGINT, 130, id="sigint-130"),
        pytest.param(signal.SIGTERM, 143, id="sigterm-143"),
    ],
)
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_signal_during_the_preflight_ends_the_run_with_its_code(tmp_path, signum, code):
    """The preflight hangs (no answer for its 15 s timeout): the signal, not the timeout, ends
    the run, with 130 or 143 (a timeout would give 2), and nothing is written."""
    asked = threading.Event()

    def routes(app: web.Application) -> None:
        async def models(request: web.Request) -> web.Response:
            asked.set()
            await asyncio.sleep(3600)
            return web.json_response(MODELS)

        app.router.add_get("/v1/models", models)

    source, output = write_input(tmp_path / "in.jsonl", 2), tmp_path / "out.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARADIGM_")}
    with serving(routes) as base_url:
        env.update(PARADIGM_BASE_URL=base_url, PARADIGM_API_KEY=KEY)
        process = subprocess.Popen(
            [sys.executable, str(SCRIPT), str(source), str(output), "--no-progress"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert asked.wait(60)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    assert "Traceback" not in stderr and not output.exists()


@pytest.mark.parametrize(
    ("signals", "code"),
    [
        pytest.param([signal.SIGTERM], 143, id="sigterm-in-flight-143"),
        pytest.param([signal.SIGTERM, signal.SIGTERM], 143, id="second-sigterm-cancels-143"),
        pytest.param([signal.SIGINT, signal.SIGINT], 130, id="second-sigint-cancels-130"),
    ],
)
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_signal_with_requests_in_flight_keeps_every_written_line_whole(
    start_mock_server, tmp_path, signals, code
):
    """Stopped mid-run: the exit code names the signal, every line is a whole record, and the
    rerun finishes the rest with each id once."""
    base_url = start_mock_server(latency_s=0.5)
    source, output = write_input(tmp_path / "in.jsonl", 40), tmp_path / "out.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARADIGM_")}
    env.update(PARADIGM_BASE_URL=base_url, PARADIGM_API_KEY=KEY)
    process = subprocess.Popen(
        [
            sys.executable,
            str(SCRIPT),
            str(source),
            str(output),
            "--no-progress",
            "--concurrency",
            "4",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for _ in range(600):  # wait (at most a minute) until requests are in flight
        if mock_stats(base_url)["in_flight"] > 0:
            break
        threading.Event().wait(0.1)
    for signum in signals:
        process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr
    assert "Traceback" not in stderr
    ids = [json.loads(line)["id"] for line in output.read_text().splitlines()]
    assert len(ids) < 40 and len(ids) == len(set(ids))
    assert cli(source, output, base_url=base_url).returncode == 0
    ids = [json.loads(line)["id"] for line in output.read_text().splitlines()]
    assert sorted(ids) == sorted(f"r{i}" for i in range(40))


def test_on_resume_the_progress_bar_counts_the_whole_input(fresh_mock_url, tmp_path, capsys):
    source, output = write_input(tmp_path / "in.jsonl", 10), tmp_path / "out.jsonl"
    output.write_text("".join(f'{{"id": "r{i}", "response": {{}}}}\n' for i in range(4)))
    run(source, output, fresh_mock_url, progress=True)
    assert "10/10" in capsys.readouterr().err
