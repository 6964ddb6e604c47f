"""``make demo``: the seed's speed comparison, against the real API or the bundled mock.

``python scripts/demo.py [speed_test flags]`` (or ``python -m paradigm_kit.demo``) runs ``scripts/speed_test.py`` and exits with
its status:

* ``PARADIGM_API_KEY`` set: the script runs against the real API (or ``PARADIGM_BASE_URL``), with
  the environment as it is.
* no key: the bundled mock is started as a subprocess on a free loopback port with 0.5 s of
  latency per request (``running_mock``), one line says so, the script runs against it with a
  placeholder key, and the mock is stopped whatever happens.

The script runs as a subprocess of its own, exactly as a user would run it (``asyncio.run`` in a
fresh interpreter), with its output streamed as it comes. Extra arguments are passed on to it
(``python scripts/demo.py --requests 5``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from paradigm_kit.settings import MOCK_PLACEHOLDER_KEY, api_settings

__all__ = ["SPEED_TEST", "main"]

SPEED_TEST = Path(__file__).resolve().parent / "speed_test.py"
MOCK_LATENCY_S = 0.5


TICK_S = 2.0  # how often the demo says it is still running, during the sync loop's silence
NEXT_STEP = (
    "Next: run it yourself with `python scripts/speed_test.py` (set PARADIGM_API_KEY for the real "
    "API), or `make lab` and open notebooks/01_session_setup.ipynb."
)


def say(message: str) -> None:
    # The demo's own words go to stderr: stdout stays the script's, line for line.
    print(message, file=sys.stderr, flush=True)


def run_speed_test(args: list[str], env: dict[str, str]) -> int:
    """Run the script with this interpreter, its output going straight to ours."""
    say(
        "The ideal: 20 requests of 0.5 s each, sent at once, take 0.5 s instead of 10 s: 20x. "
        "The async run comes first (about 0.5 s), then the sync loop (about 10 s, one by one)."
    )
    child = subprocess.Popen([sys.executable, str(SPEED_TEST), *args], env=env)
    waited_s = 0.0
    while True:
        try:
            status = child.wait(timeout=TICK_S)
            break
        except subprocess.TimeoutExpired:  # still running: the sync loop prints nothing until done
            waited_s += TICK_S
            say(f"  ... still running ({waited_s:.0f} s): the sync loop, one request at a time")
    if status == 0:
        say(NEXT_STEP)
    return status


def main(args: list[str]) -> int:
    if api_settings(require_key=False).api_key:
        return run_speed_test(args, dict(os.environ))

    from paradigm_kit.mock import (
        running_mock,  # imported here: the real-API path never needs the mock
    )

    with running_mock(latency_s=MOCK_LATENCY_S) as base_url:
        print(
            f"PARADIGM_API_KEY is not set: running against the bundled mock "
            f"({MOCK_LATENCY_S} s per request).",
            flush=True,  # before the script's own lines, which come from another process
        )
        env = dict(os.environ, PARADIGM_BASE_URL=base_url, PARADIGM_API_KEY=MOCK_PLACEHOLDER_KEY)
        return run_speed_test(args, env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
