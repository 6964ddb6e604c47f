"""Serve the mock: bind, print the base URL line, run until SIGINT/SIGTERM, exit 0.

``main(argv)`` is the whole CLI (``python -m paradigm_kit.mock`` and ``scripts/mock_paradigm.py``
both call it). Its contract with whoever starts it:

* the first line on stdout is ``PARADIGM_BASE_URL=http://HOST:PORT/api/v2``, flushed, printed
  only once the port is bound (so a client may connect as soon as it reads it); with ``--port 0``
  the OS picks a free port;
* nothing else is ever written to stdout; when stdout is a pipe, it is pointed at ``os.devnull``
  right after that line, so a parent that reads only the first line can never block the server
  on a full pipe; warnings go to stderr: a line starting ``WARNING:`` whenever a bound socket is
  not loopback, judged on the socket (``0``, ``::0``, ``0x0``, ``""``, a LAN address), not on
  the ``--host`` string; the printed URL uses loopback when every interface is bound;
* idle keep-alive connections are closed after ``--keepalive-timeout``; running out of file
  descriptors is reported once a minute in one line, not as a traceback per accept();
* a request aiohttp cannot parse (a header too long) gets an OpenAI-shaped JSON 4xx;
* SIGINT and SIGTERM stop it cleanly (in-flight requests get ``SHUTDOWN_TIMEOUT_S`` to finish),
  exit code 0; with ``--stop-on-stdin-close`` it also stops when its stdin reaches end of file,
  which the launcher uses so that a parent killed with SIGKILL does not leak a server.

The server runs with no access log (speed) and ``handler_cancellation=True``: when a client hangs
up (a timeout), its handler is cancelled and the attempt is counted as 499, as the client saw it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import signal
import socket
import sys
import time
from http import HTTPStatus

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from .app import create_app
from .auth import FACILITATOR_TOKEN, TOKEN_HEADER
from .config import MockConfig, build_parser, config_from_args, parse_config_args

__all__ = ["main", "network_warning", "serve"]

LISTEN_BACKLOG = 2048
SHUTDOWN_TIMEOUT_S = 1.0


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


def _bound_addresses(runner: web.AppRunner) -> list[str]:
    """The addresses the listening sockets are bound to (not how ``--host`` was spelled)."""
    return [str(address[0]) for address in runner.addresses]


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


def network_warning(addresses: list[str], port: int) -> str | None:
    """The stderr line for a mock reachable beyond this machine, else None: judged on the
    bound sockets, so ``0``, ``::0``, ``0x0``, ``00.0.0.0``, ``""`` or a LAN address all warn."""
    exposed = [address for address in addresses if not _is_loopback(address)]
    if not exposed:
        return None
    return (
        f"WARNING: the mock listens beyond this machine ({', '.join(sorted(set(exposed)))}): "
        f"anyone on this network can reach it. Attendees set "
        f"PARADIGM_BASE_URL=http://{_lan_address()}:{port}/api/v2"
    )


def url_host(addresses: list[str]) -> str:
    """A host for the printed URL that works from this machine: loopback when the mock listens
    on every interface, else the address it is bound to (IPv6 in brackets)."""
    first = addresses[0]
    if any(address in ("0.0.0.0", "::") for address in addresses):
        if "0.0.0.0" in addresses or any(":" not in address for address in addresses):
            return "127.0.0.1"
        return "[::1]"
    return f"[{first}]" if ":" in first else first


class _JsonErrorHandler(RequestHandler):
    """aiohttp's connection handler, but a request it cannot parse (a header over its limit, a
    bad request line) gets an OpenAI-shaped JSON error, as every other refusal of the mock."""

    def handle_error(self, request, status=500, exc=None, message=None):  # noqa: ANN001
        if status >= 500 or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        text = (message or HTTPStatus(status).phrase).splitlines()[0][:200]
        body = {
            "error": {
                "message": f"The HTTP request could not be read: {text}",
                "type": "invalid_request_error",
                "param": None,
                "code": "bad_http_request",
            }
        }
        response = web.Response(
            status=status, body=json.dumps(body).encode(), content_type="application/json"
        )
        response.force_close()
        return response


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class _Runner(web.AppRunner):
    """An ``AppRunner`` whose connections are ``_JsonErrorHandler``s."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorServer  # same state, one method more specific
        return server


class _OnceAMinute(logging.Filter):
    """Lets one "out of file descriptors" report through per minute, as one line: asyncio logs
    a traceback for every failed accept(), a flood under a low ``ulimit -n``. asyncio itself
    pauses accepting for a second and resumes; idle connections time out and free descriptors."""

    def __init__(self) -> None:
        super().__init__()
        self._last_s = -1e9
        self._suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "_start_serving" in message and record.exc_info and record.exc_info[0] is ValueError:
            # asyncio's resume-accepting timer firing after shutdown closed the listening socket
            # ("Invalid file descriptor: -1", seen on 3.13): nothing left to resume
            return False
        if "out of system resource" not in message:
            return True
        now_s = time.monotonic()
        if now_s - self._last_s < 60.0:
            self._suppressed += 1
            return False
        self._last_s = now_s
        record.msg = (
            "mock_paradigm: out of file descriptors (ulimit -n): new connections wait; "
            f"idle ones close after --keepalive-timeout ({self._suppressed} more reports hidden)"
        )
        record.args, record.exc_info, record.exc_text = (), None, None
        self._suppressed = 0
        return True


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
    logging.getLogger("asyncio").addFilter(_OnceAMinute())
    app = create_app(config)
    runner = _Runner(
        app,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        keepalive_timeout=config.keepalive_timeout_s,
    )
    await runner.setup()
    try:
        # A listen queue deeper than aiohttp's 128: an unbounded burst of 1,000 connections would
        # overflow it, and the overflowed ones wait a whole second for TCP to retry.
        site = web.TCPSite(runner, config.host, config.port, backlog=LISTEN_BACKLOG)
        await site.start()
        port = runner.addresses[0][1]
        addresses = _bound_addresses(runner)
        print(f"PARADIGM_BASE_URL=http://{url_host(addresses)}:{port}/api/v2", flush=True)
        _detach_stdout()
        warning = network_warning(addresses, port)
        if warning:
            print(warning, file=sys.stderr, flush=True)
        if app[FACILITATOR_TOKEN]:  # off loopback: /_mock/reset and /_mock/config need it
            print(
                f"Room view: http://{_lan_address()}:{port}/_mock/room ; facilitator token "
                f"(send as {TOKEN_HEADER} to /_mock/reset, /_mock/config): {app[FACILITATOR_TOKEN]}",
                file=sys.stderr,
                flush=True,
            )
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
    except (OSError, OverflowError) as error:  # port taken, host not ours: one line, no traceback
        print(
            f"mock_paradigm: cannot serve on {config.host}:{config.port}: {error}", file=sys.stderr
        )
        return 2
    return 0
