"""Where the kit finds the API: ``PARADIGM_API_KEY`` and ``PARADIGM_BASE_URL``.

The only module that reads them, so that scripts, notebooks, the doctor and the runner agree on
the names, the default URL, how blanks and a trailing ``/`` are treated, and the error a user sees
when the key is missing. (``scripts/speed_test.py`` reads them itself: it is self-contained by
design.) The key is returned, never printed: ``ApiSettings``'s ``repr`` shows only whether one is
set.

``MOCK_PLACEHOLDER_KEY`` is the key the kit sends to a bundled mock it started itself (the mock
accepts any non-empty key); it says what it is if it ever shows up in a log.

``PARADIGM_ATTENDEE`` (optional) names you in a workshop's room view: sent as ``X-Attendee``,
it is what the facilitator's page shows instead of your key's hash.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "MOCK_PLACEHOLDER_KEY",
    "ApiSettings",
    "MissingApiKey",
    "api_settings",
]

DEFAULT_BASE_URL = "https://paradigm.lighton.ai/api/v2"
DEFAULT_MODEL = "alfred-4.2"
MOCK_PLACEHOLDER_KEY = "mock-key-not-a-secret"
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
    """The API's base URL (no trailing ``/``) and key (``""`` when unset).

    ``base_url_set`` says whether the URL was chosen (by the caller or ``PARADIGM_BASE_URL``)
    rather than defaulted: the doctor warns about a URL set without a key.
    """

    base_url: str
    api_key: str = ""
    base_url_set: bool = False
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


def api_settings(require_key: bool = True, base_url: str | None = None) -> ApiSettings:
    """Read the environment; raise ``MissingApiKey`` (one clear line) if the key is required.

    ``base_url``, when given (a notebook parameter, a ``--base-url`` flag), wins over
    ``PARADIGM_BASE_URL``; blank values count as unset.
    """
    key = os.environ.get("PARADIGM_API_KEY", "").strip()
    if require_key and not key:
        raise MissingApiKey()
    chosen = (base_url or "").strip() or os.environ.get("PARADIGM_BASE_URL", "").strip()
    return ApiSettings(
        base_url=(chosen or DEFAULT_BASE_URL).rstrip("/"),
        api_key=key,
        base_url_set=bool(chosen),
        attendee=attendee_name(),
    )
