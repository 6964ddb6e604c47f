"""Where the kit finds the API: ``PARADIGM_API_KEY`` and ``PARADIGM_BASE_URL``.

``PARADIGM_ATTENDEE`` (optional) names you in a workshop's room view: sent as ``X-Attendee``,
it is what the facilitator's page shows instead of your key's hash.

One place so that scripts, notebooks and the runner agree on the names, the default URL and the
error a user sees when the key is missing. The key is returned, never printed: ``describe`` shows
only whether one is set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_MODEL", "ApiSettings", "MissingApiKey", "api_settings"]

DEFAULT_BASE_URL = "https://paradigm.lighton.ai/api/v2"
DEFAULT_MODEL = "alfred-4.2"
ATTENDEE_HEADER = "X-Attendee"

MISSING_KEY_HELP = (
    "PARADIGM_API_KEY is not set: export PARADIGM_API_KEY=<your key> for the real API, "
    "or start the bundled mock (python scripts/mock_paradigm.py --port 0) and export the "
    "PARADIGM_BASE_URL it prints with any PARADIGM_API_KEY."
)


class MissingApiKey(RuntimeError):
    """No API key in the environment; the message says how to set one or start the mock."""

    def __init__(self) -> None:
        super().__init__(MISSING_KEY_HELP)


@dataclass(frozen=True)
class ApiSettings:
    base_url: str
    api_key: str = ""
    attendee: str = ""  # PARADIGM_ATTENDEE: your name in a workshop's room view

    def __repr__(self) -> str:  # never show the key, even in a traceback or a notebook output
        return f"ApiSettings(base_url={self.base_url!r}, api_key={'<set>' if self.api_key else '<unset>'})"

    @property
    def headers(self) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"}
        if self.attendee:
            headers[ATTENDEE_HEADER] = self.attendee
        return headers


def attendee_name() -> str:
    """``PARADIGM_ATTENDEE``, trimmed ("" when unset): your name in the mock's room view."""
    return os.environ.get("PARADIGM_ATTENDEE", "").strip()


def api_settings(require_key: bool = True) -> ApiSettings:
    """Read the environment; raise ``MissingApiKey`` (one clear line) if the key is required."""
    key = os.environ.get("PARADIGM_API_KEY", "").strip()
    base = os.environ.get("PARADIGM_BASE_URL", "").strip() or DEFAULT_BASE_URL
    if require_key and not key:
        raise MissingApiKey()
    return ApiSettings(base_url=base.rstrip("/"), api_key=key, attendee=attendee_name())
