"""Who may change a mock that the whole room can reach: the facilitator token.

A mock bound to loopback (the default, ``127.0.0.1``) is reachable only from its own machine, so
anyone who can reach it may reset it. A mock bound off loopback (``--host 0.0.0.0`` for a
workshop) is reachable by every attendee: there the endpoints that *change* the mock
(``POST /_mock/reset``, ``POST /_mock/config``) need the token printed on stderr at start, sent as
``X-Facilitator-Token``. The read-only views (``/_mock/stats``, ``/log``, ``/report``, ``/room``)
need nothing: they show hashes of keys, never a key.

The rule is about where the mock listens, not where a request comes from: behind a proxy on the
same machine every peer looks like loopback, so trusting the peer address would open the door.

Handlers call ``require_facilitator(request)`` first and return its refusal when there is one::

    if (refusal := require_facilitator(request)) is not None:
        return refusal
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets

from aiohttp import web

from .replies import error_payload

__all__ = [
    "FACILITATOR_TOKEN",
    "TOKEN_HEADER",
    "is_loopback",
    "new_facilitator_token",
    "require_facilitator",
]

TOKEN_HEADER = "X-Facilitator-Token"
TOKEN_BYTES = 16

# "" when the mock listens on loopback only: then no token is needed (nor printed)
FACILITATOR_TOKEN = web.AppKey("facilitator_token", str)


def is_loopback(host: str) -> bool:
    """True for ``localhost``, ``127.x.y.z`` and ``::1``; False for ``0.0.0.0``, a LAN address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost: it may resolve off loopback
        return False


def new_facilitator_token(host: str) -> str:
    """A fresh random token for a mock listening on ``host``; "" on loopback (none needed)."""
    return "" if is_loopback(host) else secrets.token_urlsafe(TOKEN_BYTES)


def require_facilitator(request: web.Request) -> web.Response | None:
    """None when the request may change the mock, else the 403 answer to send back."""
    token = request.app.get(FACILITATOR_TOKEN, "")
    if not token:
        return None
    sent = request.headers.get(TOKEN_HEADER, "")
    if hmac.compare_digest(sent.encode(), token.encode()):
        return None
    message = (
        f"This mock is reachable from the network: send the facilitator token printed on its "
        f"stderr at start as the {TOKEN_HEADER} header."
    )
    payload = error_payload(message, "permission_error", "facilitator_token_required", None)
    return web.Response(
        body=json.dumps(payload).encode(), status=403, content_type="application/json"
    )
