"""The mock as a process: its CLI contract, its shutdown, the launcher, and client hang-ups.

These start real subprocesses (``scripts/mock_paradigm.py`` or the launcher), since what they
check only exists there: the first stdout line, exit codes on signals, handler cancellation when
a client times out, and the launcher's error reporting and clean-up.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from paradigm_kit.mock import (
    MockStartError,
    mock_log,
    mock_report,
    mock_root,
    mock_stats,
    reset_mock,
    running_mock,
    start_mock,
)
from paradigm_kit.mock.launcher import _cli_args

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "mock_paradigm.py"
URL_LINE = re.compile(r"^PARADIGM_BASE_URL=http://127\.0\.0\.1:(\d+)/api/v2$")
AUTH = {"Authorization": "Bearer process-test-key"}


def get_models(base_url: str) -> int:
    request = urllib.request.Request(base_url + "/models", headers=AUTH)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


def chat_request(base_url: str, content: str = "hi", headers: dict | None = None) -> dict:
    body = json.dumps(
        {"model": "alfred-4.2", "messages": [{"role": "user", "content": content}]}
    ).encode()
    request = urllib.request.Request(
        base_url + "/chat/completions",
        data=body,
        headers={**AUTH, "Content-Type": "application/json", **(headers or {})},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


async def stats_once_settled(base_url: str) -> dict:
    """The mock's stats once nothing is in flight: a hang-up reaches it asynchronously (<= 5 s)."""
    for _ in range(100):
        if mock_stats(base_url)["in_flight"] == 0:
            break
        await asyncio.sleep(0.05)
    return mock_stats(base_url)


def stream_body(content: str) -> dict:
    return {
        "model": "alfred-4.2",
        "stream": True,
        "messages": [{"role": "user", "content": content}],
    }


@pytest.mark.parametrize(
    "signum", [pytest.param(signal.SIGTERM, id="SIGTERM"), pytest.param(signal.SIGINT, id="SIGINT")]
)
def test_cli_prints_base_url_first_and_exits_0_on_signal(signum):
    """The CLI prints PARADIGM_BASE_URL=... first, serves, and exits 0 on SIGTERM or SIGINT."""
    process = subprocess.Popen(
        [sys.executable, "-W", "error", str(SCRIPT), "--port", "0", "--latency", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first_line = process.stdout.readline().strip()
        assert URL_LINE.match(first_line), first_line
        assert get_models(first_line.split("=", 1)[1]) == 200
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=15)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        pytest.param(
            ["--error-rate", "1.5"], "--error-rate must be between 0 and 1", id="rate-above-1"
        ),
        pytest.param(
            ["--error-rate", "0.6", "--drop-rate", "0.6"], "must be <= 1", id="rates-sum-above-1"
        ),
        pytest.param(
            ["--error-statuses", "418"], "cannot inject status 418", id="status-not-injectable"
        ),
        pytest.param(["--latency", "-1"], "--latency must be a finite", id="negative-latency"),
        pytest.param(["--latency", "nan"], "--latency must be a finite", id="nan-latency"),
        pytest.param(["--latency", "inf"], "--latency must be a finite", id="inf-latency"),
        pytest.param(
            ["--retry-after", "nan"], "--retry-after must be a finite", id="nan-retry-after"
        ),
        pytest.param(["--rpm", "0"], "--rpm must be a finite positive", id="zero-rpm"),
        pytest.param(["--rpm", "nan"], "--rpm must be a finite positive", id="nan-rpm"),
        pytest.param(["--port", "-1"], "--port must be from 0 to 65535", id="negative-port"),
        pytest.param(["--port", "99999"], "--port must be from 0 to 65535", id="port-too-big"),
        pytest.param(
            ["--keepalive-timeout", "nan"], "--keepalive-timeout must be", id="nan-keepalive"
        ),
        pytest.param(["--latency", "soon"], "invalid float value", id="not-a-number"),
    ],
)
def test_cli_rejects_bad_flags_with_exit_2(flags, message):
    """A bad flag value exits 2 with argparse's one-line message, no traceback."""
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--port", "0", *flags],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_cli_port_in_use_exits_2_with_one_line():
    """A port already taken is one clear line on stderr and exit 2."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, str(SCRIPT), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert f"127.0.0.1:{port}" in result.stderr


def test_cli_help_lists_every_flag():
    """--help documents the flags the issue asks for."""
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30
    )
    for flag in (
        "--host",
        "--port",
        "--latency",
        "--per-token-latency",
        "--jitter",
        "--error-rate",
        "--error-statuses",
        "--retry-after",
        "--slow-rate",
        "--slow-seconds",
        "--drop-rate",
        "--rpm",
        "--tpm",
        "--global-rpm",
        "--global-tpm",
        "--seed",
        "--api-key",
        "--models",
    ):
        assert flag in result.stdout


@pytest.mark.parametrize(
    ("flags", "args"),
    [
        pytest.param({"error_rate": 0.2}, ["--error-rate", "0.2"], id="underscore-to-dash"),
        pytest.param(
            {"error_statuses": [429, 503]}, ["--error-statuses", "429,503"], id="list-to-comma-list"
        ),
        pytest.param(
            {"rate_limit_headers": False, "rpm": None},
            ["--no-rate-limit-headers"],
            id="switch-and-none",
        ),
        pytest.param({"rate_limit_headers": True}, [], id="switch-at-default"),
        pytest.param({"latency_s": 0.2}, ["--latency", "0.2"], id="field-name-to-its-flag"),
        pytest.param({"profile": "seed"}, ["--profile", "seed"], id="profile"),
    ],
)
def test_launcher_maps_keyword_arguments_to_cli_flags(flags, args):
    """running_mock(**flags) passes each MockConfig field name as the flag it declares."""
    assert _cli_args(flags) == args


def test_launcher_old_spellings_warn_and_unknown_names_are_refused():
    """latency= still works (deprecated); a name MockConfig does not have is a TypeError."""
    with pytest.warns(DeprecationWarning, match="latency_s="):
        assert _cli_args({"latency": 0}) == ["--latency", "0"]
    with pytest.raises(TypeError, match="unknown mock setting 'x'"):
        _cli_args({"x": 1})


def test_every_mock_config_default_is_expressible_on_the_cli():
    """The parser derived from MockConfig gives back MockConfig's defaults, field for field."""
    from paradigm_kit.mock.config import MockConfig, build_parser, parse_config_args

    args = parse_config_args(build_parser(), [])
    args.pop("api_key")  # its CLI default reads PARADIGM_MOCK_API_KEY
    assert MockConfig(**args) == MockConfig()


def test_launcher_start_failure_raises_with_the_servers_stderr():
    """A mock that cannot start raises MockStartError quoting the server's own message."""
    with pytest.raises(MockStartError, match="--error-rate must be between 0 and 1"):
        start_mock(error_rate=5)


def test_launcher_stop_exits_0_and_frees_the_port():
    """stop() ends the server with exit code 0; the URL no longer answers."""
    handle = start_mock(latency_s=0)
    assert get_models(handle.base_url) == 200
    assert handle.stop() == 0
    assert not handle.running
    with pytest.raises(urllib.error.URLError):
        get_models(handle.base_url)


def test_launcher_server_stops_when_parent_pipe_closes():
    """If the parent dies without cleaning up, the closed stdin pipe stops the server (exit 0)."""
    handle = start_mock(latency_s=0)
    handle.process.stdin.close()  # what the OS does when the parent is killed
    assert handle.process.wait(timeout=15) == 0
    handle.stop()


def test_running_mock_and_helpers_read_and_reset_the_mock():
    """running_mock yields a base URL; mock_stats/mock_log/mock_report/reset_mock read and clear it."""
    with running_mock(latency_s=0, seed=1) as base_url:
        assert mock_root(base_url) + "/api/v2" == base_url
        chat_request(base_url, "one", {"X-Run-Id": "helpers"})
        chat_request(base_url, "two", {"X-Run-Id": "helpers"})
        assert mock_stats(base_url, run="helpers")["requests_by_status"] == {"200": 2}
        assert [record["attempt"] for record in mock_log(base_url, run="helpers")] == [1, 1]
        assert mock_report(base_url, run="helpers")["verdict"].startswith("No mistakes seen")
        reset_mock(base_url)
        assert mock_stats(base_url)["total"] == 0


def test_slow_fault_outlasts_a_client_timeout_and_counts_499():
    """A slow answer makes a client time out; the mock sees the hang-up and counts a 499."""
    with running_mock(latency_s=0, slow_rate=1.0, slow_seconds=30) as base_url:

        async def scenario():
            timeout = aiohttp.ClientTimeout(total=0.5)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                payload = {"model": "alfred-4.2", "messages": [{"role": "user", "content": "slow"}]}
                with pytest.raises(asyncio.TimeoutError):
                    async with session.post(
                        base_url + "/chat/completions", json=payload, headers=AUTH
                    ) as response:
                        await response.read()
            return await stats_once_settled(base_url)

        stats = asyncio.run(scenario())
    assert stats["requests_by_status"] == {"499": 1}
    assert stats["in_flight"] == 0


def test_slow_fault_answers_after_slow_seconds():
    """Without a client timeout, a slow attempt is still answered, with a normal completion."""
    with running_mock(latency_s=0, slow_rate=1.0, slow_seconds=0.3) as base_url:
        assert chat_request(base_url)["object"] == "chat.completion"


def test_drop_fault_reaches_a_sync_client_as_a_connection_error():
    """A dropped connection is an error for a plain HTTP client too, not an empty 200."""
    with running_mock(latency_s=0, drop_rate=1.0) as base_url:
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            chat_request(base_url)
        assert mock_stats(base_url)["requests_by_status"] == {"444": 1}


def test_streaming_latency_is_spread_over_chunks():
    """With --per-token-latency, a stream's chunks arrive one by one, not all at once."""
    with running_mock(latency_s=0, per_token_latency_s=0.02) as base_url:

        async def scenario():
            async with aiohttp.ClientSession() as session:
                payload = stream_body("stream")
                reads = 0
                async with session.post(
                    base_url + "/chat/completions", json=payload, headers=AUTH
                ) as response:
                    async for _ in response.content.iter_any():
                        reads += 1
                return reads

        assert asyncio.run(scenario()) >= 3


def test_sigterm_with_requests_in_flight_still_exits_0():
    """Stopping the mock while a slow answer is pending exits 0; the client sees a disconnection."""
    handle = start_mock(latency_s=0, slow_rate=1.0, slow_seconds=30)

    async def scenario():
        async with aiohttp.ClientSession() as session:
            payload = {"model": "alfred-4.2", "messages": [{"role": "user", "content": "pending"}]}
            pending = asyncio.ensure_future(
                session.post(handle.base_url + "/chat/completions", json=payload, headers=AUTH)
            )
            for _ in range(100):  # wait (up to 5 s) until the mock has the request in flight
                if mock_stats(handle.base_url)["in_flight"] == 1:
                    break
                await asyncio.sleep(0.05)
            exit_code = await asyncio.to_thread(handle.stop)
            with pytest.raises(aiohttp.ClientConnectionError):
                await pending
            return exit_code

    assert asyncio.run(scenario()) == 0


def _resolved(host: str) -> list[str]:
    """The addresses a server asked to bind ``host`` ends up on (resolved as asyncio does,
    AI_PASSIVE), without binding anything."""
    import socket

    infos = socket.getaddrinfo(host or None, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    return [info[4][0] for info in infos]


@pytest.mark.parametrize(
    ("host", "warns"),
    [
        pytest.param("0.0.0.0", True, id="all-ipv4"),
        pytest.param("::", True, id="all-ipv6"),
        pytest.param("0", True, id="zero"),
        pytest.param("::0", True, id="ipv6-zero"),
        pytest.param("0x0", True, id="hex-zero"),
        pytest.param("00.0.0.0", True, id="octal-zero"),
        pytest.param("", True, id="empty-host"),
        pytest.param("127.0.0.1", False, id="loopback"),
        pytest.param("::1", False, id="ipv6-loopback"),
        pytest.param("127.1.2.3", False, id="loopback-range"),
    ],
)
def test_network_warning_whenever_a_bound_address_is_not_loopback(host, warns):
    """Judged on the addresses the spelling resolves to, never on the string."""
    from paradigm_kit.mock.server import network_warning, url_host

    try:
        addresses = _resolved(host)
    except OSError:
        pytest.skip(f"{host!r} does not resolve on this system")
    warning = network_warning(addresses, 8123)
    assert (warning is not None) == warns
    if warns:
        assert warning.startswith("WARNING:") and ":8123/api/v2" in warning
        assert url_host(addresses) in ("127.0.0.1", "[::1]")


def test_network_warning_for_a_lan_address():
    from paradigm_kit.mock.server import network_warning, url_host

    assert network_warning(["192.168.1.20"], 8123).startswith("WARNING:")
    assert url_host(["192.168.1.20"]) == "192.168.1.20"


def test_client_leaving_mid_stream_counts_499_and_mock_keeps_serving():
    """A client that hangs up during a stream is counted as 499; the next request is served."""
    with running_mock(latency_s=0, per_token_latency_s=0.2) as base_url:

        async def scenario():
            async with aiohttp.ClientSession() as session:
                payload = stream_body("long")
                response = await session.post(
                    base_url + "/chat/completions", json=payload, headers=AUTH
                )
                await response.content.readany()  # the first chunk, then leave
                response.close()
            return await stats_once_settled(base_url)

        stats = asyncio.run(scenario())
        assert stats["requests_by_status"] == {"499": 1}
        assert chat_request(base_url)["object"] == "chat.completion"


def test_running_out_of_file_descriptors_is_reported_once_a_minute_in_one_line():
    """asyncio logs a traceback per failed accept(); the mock lets one line through per minute."""
    import logging

    from paradigm_kit.mock.server import _OnceAMinute

    once = _OnceAMinute()

    def record() -> logging.LogRecord:
        try:
            raise OSError(24, "Too many open files")
        except OSError:
            exc_info = sys.exc_info()
        return logging.LogRecord(
            "asyncio",
            logging.ERROR,
            __file__,
            1,
            "socket.accept() out of system resource",
            (),
            exc_info,
        )

    passed = [r for r in (record() for _ in range(100)) if once.filter(r)]
    assert len(passed) == 1
    assert passed[0].exc_info is None and "file descriptors" in passed[0].getMessage()
    other = logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "something else", (), None)
    assert once.filter(other)
    try:  # the resume-accepting timer after shutdown closed the socket (Python 3.13)
        raise ValueError("Invalid file descriptor: -1")
    except ValueError:
        late = logging.LogRecord(
            "asyncio",
            logging.ERROR,
            __file__,
            1,
            "Exception in callback BaseSelectorEventLoop._start_serving()",
            (),
            sys.exc_info(),
        )
    assert not once.filter(late)


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_NOFILE is POSIX")
def test_out_of_file_descriptors_for_real_one_line_then_service_resumes():
    """Under ``ulimit -n 64``, 80 idle keep-alive connections exhaust the mock's descriptors: its
    stderr says so in one line (no traceback), and once the idle ones time out it serves again."""
    import resource

    def low_open_files_limit() -> None:  # in the child, before exec: a macOS shell's kind of limit
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--port", "0", "--latency", "0", "--keepalive-timeout", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=low_open_files_limit,
    )
    idle: list[socket.socket] = []
    try:
        port = int(URL_LINE.match(process.stdout.readline().strip()).group(1))
        for _ in range(80):  # each connects and stays idle: the kernel queues what is not accepted
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        # Once the idle connections have timed out (1 s) the mock accepts and answers again.
        base_url = f"http://127.0.0.1:{port}/api/v2"
        assert chat_request(base_url)["object"] == "chat.completion"
        for connection in idle:
            connection.close()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
    finally:
        for connection in idle:
            connection.close()
        process.kill()
        process.wait()
    reports = [line for line in stderr.splitlines() if "out of file descriptors" in line]
    assert len(reports) == 1, stderr[-2000:]
    assert "Traceback" not in stderr
