"""Notebook helpers: one call that says where the API is, and a banner of the versions in use.

Every notebook starts the same way::

    from paradigm_kit.workshop import connect, versions
    versions()                    # the banner: Python and the libraries the lesson depends on
    conn = connect(latency_s=0.5)   # the real API if PARADIGM_API_KEY is set, else the bundled mock

Design
------
* ``connect(base_url=None, model=..., **mock_flags) -> Connection``.
  With ``PARADIGM_API_KEY`` set, the connection points at ``base_url`` (a notebook parameter), else
  at ``PARADIGM_BASE_URL``, else at the real service; the mock flags are ignored.
  Without a key it starts the bundled mock with ``paradigm_kit.mock.start_mock(**mock_flags)``:
  a *subprocess* on a free loopback port (not a task in the kernel's loop, which ipykernel 7 would
  stop between cells), stopped when the kernel exits. It prints one line saying which of the two
  it uses; that line never contains the key (nor a ``user:password@`` part of the URL), and the
  mock's line has no port, so a stored notebook output is the same on every machine. Without a key,
  ``base_url`` and ``PARADIGM_BASE_URL`` are ignored: the key decides, not the URL.
* ``local_mock(**mock_flags)``: a context manager yielding a ``Connection`` to a mock of its own,
  stopped on exit. Demos of faults, timeouts and errors use it *even when a real key is set*: they
  need answers the real API does not give on demand, and they must not spend paid requests.
* ``Connection`` is a frozen dataclass: ``base_url``, ``api_key`` (left out of ``repr``, so that
  displaying the object in a cell or a traceback never shows it), ``model``, ``using_mock``,
  ``headers()`` and ``chat_url``.
* ``versions()`` returns the banner as a string whose ``repr`` is the text itself: the last line of
  a cell displays it readably, and ``print(versions())`` works too.
"""

from __future__ import annotations

import contextlib
import platform
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from ..settings import (
    ATTENDEE_HEADER,
    DEFAULT_MODEL,
    MOCK_PLACEHOLDER_KEY,
    api_settings,
    attendee_name,
)

__all__ = ["Connection", "connect", "local_mock", "versions"]

BANNER_PACKAGES = ("aiohttp", "requests", "tqdm", "matplotlib", "paradigm-kit")


@dataclass(frozen=True)
class Connection:
    """Where a notebook sends its requests. The key is kept out of ``repr``."""

    base_url: str
    api_key: str = field(repr=False)
    model: str = DEFAULT_MODEL
    using_mock: bool = False
    mock: Any = field(
        default=None, repr=False, compare=False
    )  # the MockHandle, when we started one

    @property
    def chat_url(self) -> str:
        """The chat-completions endpoint: ``{base_url}/chat/completions``."""
        return f"{self.base_url}/chat/completions"

    def headers(self) -> dict[str, str]:
        """The bearer key and the JSON content type; ``X-Attendee`` when PARADIGM_ATTENDEE is set."""
        headers = {"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"}
        attendee = attendee_name()  # read per call: an attendee may set it after connecting
        if attendee:
            headers[ATTENDEE_HEADER] = attendee
        return headers

    def close(self) -> None:
        """Stop the mock this connection started (a no-op for the real API)."""
        if self.mock is not None:
            self.mock.stop()


def connect(
    base_url: str | None = None, model: str = DEFAULT_MODEL, **mock_flags: Any
) -> Connection:
    """The real API when ``PARADIGM_API_KEY`` is set, else a freshly started bundled mock.

    ``base_url`` (a notebook parameter) overrides ``PARADIGM_BASE_URL`` when given. ``mock_flags``
    are the mock's CLI flags with underscores (``latency=0.5``, ``error_rate=0.2``, ``seed=7``);
    they only apply when the mock is started.
    """
    settings = api_settings(require_key=False, base_url=base_url)
    if settings.api_key:
        print(f"PARADIGM_API_KEY is set: requests go to {_printable(settings.base_url)}")
        return Connection(base_url=settings.base_url, api_key=settings.api_key, model=model)
    connection = _start_mock(model, mock_flags)
    print(
        "PARADIGM_API_KEY is not set: using the bundled mock server "
        "(a local subprocess, stopped when the kernel exits)."
    )
    return connection


def _printable(url: str) -> str:
    """The URL without a ``user:password@`` part, should a private instance's URL carry one."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


@contextlib.contextmanager
def local_mock(model: str = DEFAULT_MODEL, **mock_flags: Any) -> Iterator[Connection]:
    """A mock of our own for the length of a ``with`` block, whatever the environment says.

    If ``api_key=...`` is among the flags, the mock accepts only that key and the connection uses
    it; otherwise any non-empty key is accepted.
    """
    connection = _start_mock(model, mock_flags)
    try:
        yield connection
    finally:
        connection.close()


def _start_mock(model: str, mock_flags: dict[str, Any]) -> Connection:
    from ..mock import start_mock  # imported late: importing this module never starts anything

    handle = start_mock(**mock_flags)
    api_key = str(mock_flags.get("api_key") or MOCK_PLACEHOLDER_KEY)
    return Connection(
        base_url=handle.base_url.rstrip("/"),
        api_key=api_key,
        model=model,
        using_mock=True,
        mock=handle,
    )


class _Banner(str):
    """A string that displays as itself, so a cell ending in ``versions()`` shows plain lines."""

    def __repr__(self) -> str:
        return str(self)


def versions() -> str:
    """One line per dependency of the lessons: Python, aiohttp, requests, tqdm, matplotlib, kit."""
    lines = [f"Python       {platform.python_version()}"]
    for name in BANNER_PACKAGES:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "not installed"
        lines.append(f"{name:<12} {version}")
    return _Banner("\n".join(lines))
