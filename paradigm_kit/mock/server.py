"""Serve the mock: bind, print the base URL line, run until SIGINT/SIGTERM, exit 0.

``main(argv)`` is the whole CLI (``python -m paradigm_kit.mock`` and ``scripts/mock_paradigm.py``
both call it). Its contract with whoever starts it:

* the first line on stdout is ``PARADIGM_BASE_URL=http://HOST:PORT/api/v2``, flushed, printed
  only once the port is bound (so a client may connect as soon as it reads it); with ``--port 0``
  the OS picks a free port;
* nothing else is ever written to stdout; when stdout is a pipe, it is pointed at ``os.devnull``
  right after that line, so a parent that reads only the first line can never block the server
  on a full pipe; warnings (``--host 0.0.0.0``) go to stderr;
* SIGINT and SIGTERM stop it cleanly (in-flight requests get ``SHUTDOWN_TIMEOUT_S`` to finish),
  exit code 0; with ``--stop-on-stdin-close`` it also stops when its stdin reaches end of file,
  which the launcher uses so that a parent killed with SIGKILL does not leak a server.

The server runs with no access log (speed) and ``handler_cancellation=True``: when a client hangs
up (a timeout), its handler is cancelled and the attempt is counted as 499, as the client saw it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys

from aiohttp import web

from .app import create_app
from .config import MockConfig, build_parser, config_from_args, parse_config_args

__all__ = ["main", "network_warning", "serve"]

LISTEN_BACKLOG = 2048
SHUTDOWN_TIMEOUT_S = 1.0
ALL_INTERFACES = ("0.0.0.0", "::", "")


class _StdinWatcher(asyncio.Protocol):
    """Sets ``closed`` when the parent's end of our stdin goes away."""

    def __init__(self, closed: asyncio.Event) -> None:
        self.closed = closed

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()


def _lan_address() -> str:
    """This machine's address on the local network, best effort (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            return probe.getsockname()[0]
        except OSError:
            return socket.gethostname()


def network_warning(host: str, port: int) -> str | None:
    """The stderr line for a mock reachable from the network (``--host 0.0.0.0``), else None."""
    if host not in ALL_INTERFACES:
        return None
    return (
        f"WARNING: the mock listens on all interfaces ({host or '*'}): anyone on this network can "
        f"reach it. Attendees set PARADIGM_BASE_URL=http://{_lan_address()}:{port}/api/v2"
    )


def _detach_stdout() -> None:
    sys.stdout.flush()
    if not sys.stdout.isatty():
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


async def serve(config: MockConfig, *, stop_on_stdin_close: bool = False) -> None:
    """Run the mock until a signal (or stdin's end of file) asks it to stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Windows has no add_signal_handler: there Ctrl-C raises KeyboardInterrupt (see main)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    if stop_on_stdin_close:
        try:
            await loop.connect_read_pipe(lambda: _StdinWatcher(stop), sys.stdin)
        except (NotImplementedError, OSError, ValueError) as error:  # e.g. stdin not a pipe
            print(
                f"mock_paradigm: not watching stdin ({error}); stop me with a signal",
                file=sys.stderr,
            )
    runner = web.AppRunner(
        create_app(config),
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
    )
    await runner.setup()
    try:
        # A listen queue deeper than aiohttp's 128: an unbounded burst of 1,000 connections would
        # overflow it, and the overflowed ones wait a whole second for TCP to retry.
        site = web.TCPSite(runner, config.host, config.port, backlog=LISTEN_BACKLOG)
        await site.start()
        port = runner.addresses[0][1]
        url_host = "127.0.0.1" if config.host in ALL_INTERFACES else config.host
        if ":" in url_host:
            url_host = f"[{url_host}]"
        print(f"PARADIGM_BASE_URL=http://{url_host}:{port}/api/v2", flush=True)
        _detach_stdout()
        warning = network_warning(config.host, port)
        if warning:
            print(warning, file=sys.stderr, flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.add_argument(
        "--stop-on-stdin-close",
        action="store_true",
        help="also stop when stdin reaches end of file (used by the launcher)",
    )
    args = parse_config_args(parser, argv)
    stop_on_stdin_close = args.pop("stop_on_stdin_close")
    config = config_from_args(parser, args)
    try:
        asyncio.run(serve(config, stop_on_stdin_close=stop_on_stdin_close))
    except KeyboardInterrupt:  # only where signal handlers are not available (Windows)
        pass
    except OSError as error:  # the port is taken, the host is not ours: one line, no traceback
        print(
            f"mock_paradigm: cannot serve on {config.host}:{config.port}: {error}", file=sys.stderr
        )
        return 2
    return 0
