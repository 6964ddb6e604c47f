"""Fault draws: a pure function of (seed, identity, attempt) with the configured rates."""

from __future__ import annotations

import pytest

from paradigm_kit.mock.config import MockConfig
from paradigm_kit.mock.faults import DROP, ERROR, NO_FAULT, SLOW, draw, identity_of_body


def test_draw_is_deterministic_per_seed_identity_and_attempt():
    """The same (seed, identity, attempt) always gets the same draw; the attempt changes it."""
    config = MockConfig(error_rate=0.5, seed=11)
    first = [draw(config, f"id-{i}", 1) for i in range(200)]
    assert first == [draw(config, f"id-{i}", 1) for i in range(200)]
    assert first != [draw(config, f"id-{i}", 2) for i in range(200)]


def test_draw_rates_match_the_configuration():
    """Over many identities, errors, drops and slow answers come at their configured rates."""
    config = MockConfig(
        error_rate=0.2, drop_rate=0.1, slow_rate=0.05, error_statuses=(429, 500, 503), seed=5
    )
    draws = [draw(config, f"request-{i}", 1) for i in range(20_000)]
    share = {
        fault: sum(d.fault == fault for d in draws) / len(draws)
        for fault in (ERROR, DROP, SLOW, None)
    }
    assert share[ERROR] == pytest.approx(0.2, abs=0.015)
    assert share[DROP] == pytest.approx(0.1, abs=0.015)
    assert share[SLOW] == pytest.approx(0.05, abs=0.015)
    statuses = {d.error_status for d in draws if d.fault == ERROR}
    assert statuses == {429, 500, 503}


def test_draw_without_faults_or_jitter_skips_hashing():
    """With no fault and no jitter configured, every attempt gets the shared no-fault draw."""
    assert draw(MockConfig(), "anything", 1) is NO_FAULT


def test_body_identity_is_stable_and_distinguishes_bodies():
    """The body hash names a request the same way each time, and different bodies differently."""
    assert (
        identity_of_body(b'{"a":1}') == identity_of_body(b'{"a":1}') != identity_of_body(b'{"a":2}')
    )
