"""`make demo` (python -m paradigm_kit.demo): the speed test against the bundled mock, no key needed."""

from __future__ import annotations

import os
import re

from conftest import run_python


def test_demo_without_key_runs_the_speed_test_against_the_mock():
    """With PARADIGM_* unset the demo starts the mock, says so, and prints the three lines."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARADIGM_")}
    result = run_python("-W", "error", "-m", "paradigm_kit.demo", "--requests", "6", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4, result.stdout
    assert "bundled mock" in lines[0]
    assert re.fullmatch(r"Async run: 6 requests in \d+\.\d\d s", lines[1])
    assert re.fullmatch(r"Sync run: 6 requests in \d+\.\d\d s", lines[2])
    assert re.fullmatch(r"Improvement factor: \d+\.\d\d", lines[3])


def test_demo_passes_the_script_exit_status_through():
    """A bad flag makes the speed test exit 2 (argparse), and the demo exits with the same code."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARADIGM_")}
    result = run_python("-m", "paradigm_kit.demo", "--requests", "0", env=env)
    assert result.returncode == 2
    assert "--requests" in result.stderr
