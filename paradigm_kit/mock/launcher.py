"""Start the bundled mock as a subprocess, and talk to its ``/_mock`` endpoints.

Why a subprocess: a task on the caller's event loop would be blocked by a notebook's ``!python``
cell (and ipykernel 7 stops background tasks), and a thread would share the GIL with the very
client being measured. So ``start_mock`` runs ``python -m paradigm_kit.mock --port 0 ...`` with
the caller's interpreter and waits for the one line the server prints first on stdout,
``PARADIGM_BASE_URL=http://127.0.0.1:PORT/api/v2``. Port 0 lets the OS pick a free port, so two
mocks (two tests, two notebooks) never collide.

How the launcher avoids the classic subprocess traps:

* the first line is read by a short-lived reader thread joined with a timeout, so a child that
  hangs at start-up cannot hang the caller (this works on Windows too, where ``select`` does not
  take pipes); a child that dies is reported with the tail of its stderr;
* the child's stderr goes to a temporary file, never to a pipe nobody reads, and the child points
  its own stdout at ``os.devnull`` right after the URL line when stdout is not a terminal, so it
  can never block on a full pipe;
* ``stop()`` sends SIGTERM (the server exits cleanly with code 0), then kills it after a timeout;
  ``atexit`` calls it too, so a notebook kernel that is shut down never leaks a server; and the
  child watches its stdin, a pipe from us (``--stop-on-stdin-close``): if the parent dies even
  without running ``atexit`` (SIGKILL, a crashed kernel), the pipe closes and the server stops.

Keyword arguments are exactly ``MockConfig``'s field names (plus ``profile``), turned into the
flags those fields declare: ``running_mock(latency_s=0.2, error_rate=0.2, seed=7)`` runs
``--latency 0.2 --error-rate 0.2 --seed 7``; ``None`` omits a setting, lists become comma lists
(``error_statuses=[429, 503]``), and a switch is given as the field's value
(``rate_limit_headers=False`` runs ``--no-rate-limit-headers``). The older spellings
(``latency=``, ``per_token_latency=``, ``jitter=``, ``retry_after=``, ``min_backoff=``,
``connect_latency=``) still work, with a ``DeprecationWarning``; an unknown name is a
``TypeError``.

``mock_stats``, ``mock_log``, ``mock_report`` and ``reset_mock`` are plain standard-library HTTP
calls (no event loop needed), usable from a test, a script or a notebook cell alike.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from .config import MockConfig

__all__ = [
    "MockHandle",
    "MockStartError",
    "mock_log",
    "mock_report",
    "mock_root",
    "mock_stats",
    "reset_mock",
    "running_mock",
    "start_mock",
]

URL_LINE_PREFIX = "PARADIGM_BASE_URL="
DEFAULT_STARTUP_TIMEOUT_S = 20.0
DEFAULT_STOP_TIMEOUT_S = 5.0
HTTP_TIMEOUT_S = 10.0


class MockStartError(RuntimeError):
    """The mock subprocess did not print its URL (it died, or took too long)."""


@dataclass
class MockHandle:
    """A running mock subprocess: its ``base_url`` (``.../api/v2``), ``pid`` and ``stop()``."""

    base_url: str
    process: subprocess.Popen = field(repr=False)
    stderr_file: Any = field(repr=False, default=None)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> int | None:
        """Stop the server (SIGTERM, then kill after ``timeout_s``); return its exit code."""
        atexit.unregister(self.stop)
        _terminate(self.process, timeout_s)
        if self.stderr_file is not None:
            self.stderr_file.close()
            self.stderr_file = None
        return self.process.returncode

    def stderr_text(self) -> str:
        """What the server wrote on stderr so far (warnings, a crash)."""
        if self.stderr_file is None:
            return ""
        return _read_all(self.stderr_file)

    def __enter__(self) -> MockHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


_SETTINGS = {spec.name: spec for spec in fields(MockConfig)}
DEPRECATED_ALIASES = {  # today's keyword spellings -> the MockConfig name they mean
    "latency": "latency_s",
    "per_token_latency": "per_token_latency_s",
    "jitter": "jitter_s",
    "retry_after": "retry_after_s",
    "min_backoff": "min_backoff_s",
    "connect_latency": "connect_latency_s",
}


def _canonical(flags: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments under their ``MockConfig`` names (old spellings warned about)."""
    settings: dict[str, Any] = {}
    for name, value in flags.items():
        if name in DEPRECATED_ALIASES:
            new_name = DEPRECATED_ALIASES[name]
            warnings.warn(
                f"running_mock/start_mock: {name}= is deprecated, say {new_name}= "
                "(the MockConfig field name)",
                DeprecationWarning,
                stacklevel=4,
            )
            name = new_name
        if name not in _SETTINGS and name != "profile":
            raise TypeError(
                f"unknown mock setting {name!r}: use a MockConfig field name "
                f"({', '.join(sorted(_SETTINGS))}) or profile"
            )
        settings[name] = value
    return settings


def _cli_args(flags: dict[str, Any]) -> list[str]:
    """``{"error_rate": 0.2, "error_statuses": [429, 503]}`` -> ``--error-rate 0.2 ...``."""
    args: list[str] = []
    for name, value in _canonical(flags).items():
        if value is None:
            continue
        if name == "profile":
            args += ["--profile", str(value)]
            continue
        spec = _SETTINGS[name]
        flag = spec.metadata["flag"]
        action = spec.metadata.get("action")
        if action in ("store_true", "store_false"):  # a switch: given when it leaves the default
            if value != spec.default and spec.default is not MISSING:
                args.append(flag)
        elif isinstance(value, (list, tuple)):
            args += [flag, ",".join(str(item) for item in value)]
        else:
            args += [flag, str(value)]
    return args


def _read_all(file: Any) -> str:
    file.flush()
    file.seek(0)
    return file.read().decode("utf-8", errors="replace")


def _terminate(process: subprocess.Popen, timeout_s: float) -> None:
    if process.poll() is None:
        if sys.platform == "win32":
            process.terminate()
        else:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            pipe.close()


def _read_first_line(process: subprocess.Popen, timeout_s: float) -> str | None:
    """The child's first stdout line, or None if it did not come within ``timeout_s``."""
    lines: list[bytes] = []
    reader = threading.Thread(
        target=lambda: lines.append(process.stdout.readline()),
        name="mock-url-reader",
        daemon=True,
    )
    reader.start()
    reader.join(timeout_s)
    if reader.is_alive():
        return None
    return lines[0].decode("utf-8", errors="replace").strip()


def start_mock(*, startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S, **flags: Any) -> MockHandle:
    """Start ``python -m paradigm_kit.mock --port 0 <flags>``; return once it serves.

    Raises ``MockStartError`` with the child's stderr if it exits or stays silent for
    ``startup_timeout_s``. The handle is stopped at interpreter exit if you forget to.
    """
    flags.setdefault("port", 0)
    command = [
        sys.executable,
        "-m",
        "paradigm_kit.mock",
        "--stop-on-stdin-close",
        *_cli_args(flags),
    ]
    stderr_file = tempfile.TemporaryFile()  # noqa: SIM115 (owned by the handle, closed by stop())
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr_file, env=env
    )
    line = _read_first_line(process, startup_timeout_s)
    if not line or not line.startswith(URL_LINE_PREFIX):
        _terminate(process, DEFAULT_STOP_TIMEOUT_S)
        stderr_text = _read_all(stderr_file).strip()
        stderr_file.close()
        what = "timed out" if line is None else f"exited with code {process.returncode}"
        if line:
            what = f"printed {line!r} instead of {URL_LINE_PREFIX}..."
        raise MockStartError(
            f"mock server {what} ({' '.join(command[1:])}); stderr:\n{stderr_text[-2000:]}"
        )
    handle = MockHandle(line[len(URL_LINE_PREFIX) :], process, stderr_file)
    atexit.register(handle.stop)
    return handle


@contextlib.contextmanager
def running_mock(**flags: Any) -> Iterator[str]:
    """``with running_mock(latency_s=0) as base_url:`` a mock subprocess for the block's duration."""
    handle = start_mock(**flags)
    try:
        yield handle.base_url
    finally:
        handle.stop()


# --- the /_mock endpoints, over plain urllib ------------------------------------------------


def mock_root(base_url: str) -> str:
    """``http://127.0.0.1:PORT/api/v2`` -> ``http://127.0.0.1:PORT`` (where ``/_mock`` lives)."""
    parts = urllib.parse.urlsplit(base_url.rstrip("/"))
    path = parts.path
    if path.endswith("/api/v2"):
        path = path[: -len("/api/v2")]
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _opener_for(url: str) -> urllib.request.OpenerDirector:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host in ("127.0.0.1", "localhost", "::1"):  # a loopback mock never goes through a proxy
        return urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener()


def _mock_call(base_url: str, path: str, *, run: str | None = None, method: str = "GET") -> Any:
    url = mock_root(base_url) + path
    if run is not None:
        url += "?" + urllib.parse.urlencode({"run": run})
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with _opener_for(url).open(request, timeout=HTTP_TIMEOUT_S) as response:
        return json.loads(response.read())


def mock_stats(base_url: str, run: str | None = None) -> dict:
    """``GET /_mock/stats``: counts by status, peak concurrency, attempts per identity, per key."""
    return _mock_call(base_url, "/_mock/stats", run=run)


def mock_log(base_url: str, run: str | None = None) -> list[dict]:
    """``GET /_mock/log``: the per-attempt records (of one run, or of every run)."""
    return _mock_call(base_url, "/_mock/log", run=run)["records"]


def mock_report(base_url: str, run: str | None = None) -> dict:
    """``GET /_mock/report``: the report card, what a client did wrong, with examples."""
    return _mock_call(base_url, "/_mock/report", run=run)


def reset_mock(base_url: str) -> dict:
    """``POST /_mock/reset``: forget every count, log, attempt and rate-limit bucket."""
    return _mock_call(base_url, "/_mock/reset", method="POST")
