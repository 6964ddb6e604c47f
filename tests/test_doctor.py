"""The attendee's preflight: each problem is found, and comes with its fix; the key is never shown.

The local checks are driven with their inputs (a Python version, a limit, a prefix) so that every
branch runs on this machine; the server checks run against a real mock on a free loopback port.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import socket
import sys
import threading
from pathlib import Path

import pytest
from conftest import run_python

from paradigm_kit.mock import running_mock
from paradigm_kit.workshop.doctor import (
    check_endpoint,
    check_interpreter,
    check_open_files,
    check_packages,
    check_python,
    check_python_on_path,
    check_server,
    format_report,
    pinned_versions,
    run_doctor,
)

SECRET = "sk-doctor-test-secret-4242"


@pytest.fixture(scope="module")
def keyed_mock():
    """A mock that accepts only SECRET."""
    with running_mock(latency_s=0.0, api_key=SECRET) as base_url:
        yield base_url


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/api/v2"


@pytest.mark.parametrize(
    ("version", "status"),
    [
        pytest.param((3, 9, 18), "fail", id="3.9-too-old"),
        pytest.param((3, 10, 0), "ok", id="3.10-floor"),
        pytest.param((3, 13, 0), "ok", id="3.13"),
    ],
)
def test_doctor_python_needs_3_10(version, status):
    """Python 3.10 or newer passes; older fails with an install fix."""
    check = check_python(version)
    assert check.status == status
    assert (check.fix != "") is (status == "fail")


@pytest.mark.parametrize(
    ("soft_limit", "status"),
    [
        pytest.param(256, "warn", id="macos-default-256"),
        pytest.param(1024, "ok", id="1024"),
        pytest.param(-1, "ok", id="unlimited"),
    ],
)
def test_doctor_open_files_warns_under_1024(soft_limit, status):
    """An open-files limit under 1024 is a warning whose fix is `ulimit -n 4096`."""
    check = check_open_files(soft_limit)
    assert check.status == status
    if status == "warn":
        assert "ulimit -n 4096" in check.fix


def test_doctor_packages_missing_is_a_failure_with_pip_fix():
    """A required package that is not installed fails, and the fix is a pip install."""
    check = check_packages(required=("aiohttp", "no-such-package-kit"), optional=(), pins={})
    assert check.status == "fail"
    assert "no-such-package-kit" in check.detail and "pip install -r requirements.txt" in check.fix


def test_doctor_packages_off_pin_is_a_warning():
    """An installed version other than the pinned one is a warning naming both versions."""
    check = check_packages(required=("aiohttp",), optional=(), pins={"aiohttp": "0.0.1"})
    assert check.status == "warn" and "pinned 0.0.1" in check.detail


def test_doctor_pins_follow_environment_markers(tmp_path):
    """A pin whose marker does not hold for this Python is ignored; the one that holds is used."""
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(
        'matplotlib==9.9.9; python_version < "3.0"  # never here\n'
        'matplotlib==1.2.3; python_version >= "3.0"\n'
        "aiohttp==3.14.5  # a comment\n"
        "-e .\n"
    )
    assert pinned_versions(requirements) == {"matplotlib": "1.2.3", "aiohttp": "3.14.5"}


def test_doctor_interpreter_outside_the_kit_venv_warns(tmp_path):
    """A kernel on another Python than the kit's .venv is flagged with `make lab` as the fix."""
    kit_venv = tmp_path / ".venv"
    kit_venv.mkdir()
    assert check_interpreter(prefix=str(kit_venv), kit_venv=kit_venv).status == "ok"
    other = check_interpreter(prefix=str(tmp_path / "elsewhere"), kit_venv=kit_venv)
    assert other.status == "warn" and "make lab" in other.fix


def test_doctor_python_on_path_must_be_this_interpreter(tmp_path):
    """A `python` on PATH that is not this interpreter is flagged with `!{sys.executable}`."""
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    check = check_python_on_path(path=str(tmp_path))
    assert check.status == "warn" and "!{sys.executable}" in check.fix
    here = check_python_on_path(path=str(Path(sys.executable).parent))
    assert here.status == "ok"


def test_doctor_server_accepts_the_right_key(keyed_mock):
    """The server answers and the key is accepted: two ok checks."""
    checks = check_server(keyed_mock, SECRET)
    assert [(c.name, c.status) for c in checks] == [("server", "ok"), ("key", "ok")]


def test_doctor_server_refused_key_is_a_failure_with_fix(keyed_mock):
    """A 401 means the key, not the network: the server is ok, the key fails with a fix."""
    server, key = check_server(keyed_mock, "a-wrong-key")
    assert server.status == "ok"
    assert key.status == "fail" and "401" in key.detail and "PARADIGM_API_KEY" in key.fix


def test_doctor_server_unreachable_is_a_failure_with_fix():
    """No answer at all (nothing listens) fails the server check, with network advice."""
    (check,) = check_server(_closed_port_url(), SECRET, timeout_s=2)
    assert check.status == "fail" and "PARADIGM_BASE_URL" in check.fix


def test_doctor_without_key_checks_the_bundled_mock(monkeypatch):
    """No key set: the notebooks will use the bundled mock, so the doctor checks that it starts."""
    monkeypatch.delenv("PARADIGM_API_KEY", raising=False)
    monkeypatch.delenv("PARADIGM_BASE_URL", raising=False)
    checks = check_endpoint(None, None)
    assert [(c.name, c.status) for c in checks] == [("key", "ok"), ("bundled mock", "ok")]


def test_doctor_url_without_key_warns(monkeypatch):
    """A room's URL set without a key is a warning: the notebooks would ignore the URL."""
    monkeypatch.delenv("PARADIGM_API_KEY", raising=False)
    monkeypatch.setenv("PARADIGM_BASE_URL", "http://10.0.0.5:8765/api/v2")
    note = check_endpoint(None, None)[0]
    assert note.status == "warn" and "PARADIGM_API_KEY" in note.fix


def test_doctor_report_prints_each_problem_with_its_fix():
    """The report shows a FAIL line followed by its fix, and the verdict counts the problems."""
    report = format_report([check_python((3, 8, 0)), check_open_files(256)])
    lines = report.splitlines()
    fail_at = next(i for i, line in enumerate(lines) if "FAIL" in line)
    assert lines[fail_at + 1].strip().startswith("fix:")
    assert "1 problem(s) to fix" in lines[-1]


def test_doctor_run_returns_checks_and_never_prints_the_key(keyed_mock, capsys):
    """run_doctor (the notebook's first cell) returns the checks; the key is not in its output."""
    checks = run_doctor(base_url=keyed_mock, api_key=SECRET)
    out = capsys.readouterr().out
    assert {c.name for c in checks} >= {"python", "packages", "open files", "server", "key"}
    assert SECRET not in out and "paradigm-kit doctor" in out


@pytest.mark.parametrize(
    ("key", "exit_code"),
    [pytest.param(SECRET, 0, id="accepted"), pytest.param("wrong-" + SECRET, 1, id="refused")],
)
def test_doctor_cli_exit_code_and_no_key_in_output(keyed_mock, key, exit_code):
    """`python -m paradigm_kit.doctor` exits 0 when ready, 1 on a failure; never prints the key."""
    env = dict(os.environ, PARADIGM_API_KEY=key, PARADIGM_BASE_URL=keyed_mock)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    done = run_python("-W", "error", "-m", "paradigm_kit.doctor", env=env)
    assert done.returncode == exit_code, done.stdout + done.stderr
    assert key not in done.stdout + done.stderr


# --- the key never leaves ----------------------------------------------------------------------


@contextlib.contextmanager
def _server(handler_class):
    """A plain HTTP server in a thread on a free loopback port; yields its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/v2"
    finally:
        server.shutdown()
        server.server_close()


class _Quiet(http.server.BaseHTTPRequestHandler):
    seen: list = []

    def log_message(self, *args):  # no access log on stderr
        pass


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(f"{SECRET}\nX-Injected: 1", id="key-with-a-newline"),
        pytest.param(f"{SECRET}\rX", id="key-with-a-carriage-return-inside"),
        pytest.param(f"sk-\x00{SECRET}", id="key-with-a-nul"),
    ],
)
def test_doctor_refuses_a_key_with_a_control_character_without_showing_it(key, capsys):
    checks = check_endpoint("http://127.0.0.1:9/api/v2", key)
    report = format_report(checks)
    assert checks[0].status == "fail" and "control character" in report
    assert SECRET not in report and "sk-" not in report


def test_doctor_does_not_follow_a_redirect_to_another_origin():
    """A 307 to another server: the doctor reports it and the other server never sees the key."""

    class Elsewhere(_Quiet):
        seen: list = []

        def do_GET(self):
            Elsewhere.seen.append(self.headers.get("Authorization"))
            self.send_response(200)
            self.end_headers()

    with _server(Elsewhere) as other:

        class Moved(_Quiet):
            def do_GET(self):
                self.send_response(307)
                self.send_header("Location", f"{other}/models")
                self.end_headers()

        with _server(Moved) as base_url:
            report = format_report(check_server(base_url, SECRET, timeout_s=10))
    assert Elsewhere.seen == []
    assert "307" in report and SECRET not in report


def test_doctor_masks_a_key_that_the_server_echoes():
    class Echo(_Quiet):
        def do_GET(self):
            body = f"<html><h1>Denied</h1><p>{self.headers['Authorization']}</p></html>".encode()
            self.send_response(500)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with _server(Echo) as base_url:
        report = format_report(check_server(base_url, SECRET, timeout_s=10))
    assert SECRET not in report and "***" in report and "<h1>" not in report
