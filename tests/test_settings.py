"""Where the kit finds the API: the environment read in one place, blanks treated as unset, the
caller's URL winning over the environment's, and the key never shown."""

from __future__ import annotations

import pytest

from paradigm_kit.settings import (
    DEFAULT_BASE_URL,
    MISSING_KEY_HELP,
    MissingApiKey,
    api_settings,
)

SECRET = "sk-test-secret-value"


@pytest.fixture
def env(monkeypatch):
    """A clean PARADIGM_* environment; returns a setter."""
    monkeypatch.delenv("PARADIGM_API_KEY", raising=False)
    monkeypatch.delenv("PARADIGM_BASE_URL", raising=False)

    def set_env(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(f"PARADIGM_{name.upper()}", value)

    return set_env


def test_api_settings_requires_a_key_by_default(env):
    """No key: MissingApiKey, whose message says how to set one or start the mock."""
    with pytest.raises(MissingApiKey) as raised:
        api_settings()
    assert str(raised.value) == MISSING_KEY_HELP
    assert "mock_paradigm.py --port 0" in MISSING_KEY_HELP


@pytest.mark.parametrize(
    ("environment", "argument", "expected_url", "chosen"),
    [
        pytest.param({}, None, DEFAULT_BASE_URL, False, id="default"),
        pytest.param({"base_url": "  "}, None, DEFAULT_BASE_URL, False, id="blank-env-is-unset"),
        pytest.param(
            {"base_url": "http://h:1/api/v2/"}, None, "http://h:1/api/v2", True, id="env-slash"
        ),
        pytest.param(
            {"base_url": "http://env/api/v2"},
            "http://arg/api/v2",
            "http://arg/api/v2",
            True,
            id="argument-wins",
        ),
        pytest.param(
            {"base_url": "http://env/api/v2"}, "", "http://env/api/v2", True, id="blank-argument"
        ),
    ],
)
def test_api_settings_base_url(env, environment, argument, expected_url, chosen):
    """The caller's URL, else PARADIGM_BASE_URL, else the default; no trailing slash."""
    env(**environment)
    settings = api_settings(require_key=False, base_url=argument)
    assert settings.base_url == expected_url
    assert settings.base_url_set is chosen


def test_api_settings_strips_the_key_and_never_shows_it(env):
    """The key is stripped of blanks; repr says only whether one is set."""
    env(api_key=f"  {SECRET}\n")
    settings = api_settings()
    assert settings.api_key == SECRET
    assert SECRET not in repr(settings) and "<set>" in repr(settings)
    assert settings.headers["Authorization"] == f"Bearer {SECRET}"


def test_api_settings_blank_key_is_no_key(env):
    """A key of spaces counts as unset."""
    env(api_key="   ")
    assert api_settings(require_key=False).api_key == ""
    with pytest.raises(MissingApiKey):
        api_settings()
