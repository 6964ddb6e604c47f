"""The attendee's preflight: is this machine ready for the workshop? Each problem comes with its fix.

Run it the week before the day, from the kit's folder::

    make doctor                      # = .venv/bin/python -m paradigm_kit.doctor
    python -m paradigm_kit.doctor    # exit code 0: ready; 1: something to fix (printed above)

or as the first cell of notebook 01, where it checks the *kernel* the notebook really runs on::

    from paradigm_kit.workshop.doctor import run_doctor
    checks = run_doctor()

What it checks, in order, and why each one bites in a room:

1. **Python** is 3.10 or newer (the kit's floor).
2. **Packages** the lessons import are there, with their versions; a version that differs from the
   pin in ``requirements.txt`` is a warning (the lessons were recorded with the pinned ones).
3. **The interpreter is the kit's venv** (``sys.prefix`` vs the repository's ``.venv``), and the
   first ``python`` on ``PATH`` is this interpreter (or a notebook's ``!python`` runs another one).
   A kernel on the wrong Python is the most common "it works on my machine" of a workshop.
4. **The open-files limit** (``resource.getrlimit``): every concurrent connection is a file
   descriptor; macOS starts shells at 256, which a batch of a few hundred requests exhausts
   ("Too many open files"). Under 1024 is a warning with the fix ``ulimit -n 4096``.
5. **The server answers** ``GET {base}/models`` within a few seconds, and **the key is accepted**
   (401/403 mean the key, not the network). With no key set, the notebooks use the bundled mock:
   the doctor then checks that the mock starts on this machine and answers.

Design
------
* Each check is a small function returning a ``Check`` (name, status ``ok``/``warn``/``fail``, what
  was found, the fix). ``run_doctor`` runs them all, prints a short report and returns the list;
  it never raises for a problem it can diagnose, so a notebook's first cell never fails on it.
* Only the standard library (``urllib``, ``importlib.metadata``): the doctor must still work, and
  say what is missing, on a machine where ``pip install`` half failed. ``urllib`` honours
  ``HTTPS_PROXY`` and ``NO_PROXY`` as ``requests`` and ``aiohttp(trust_env=True)`` do.
* The key is sent, never printed: the report says only whether one is set.
* Warnings do not change the exit code; failures do (the CLI exits 1).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from ..server_text import redact, summarise_body
from ..settings import DEFAULT_MODEL, api_settings

__all__ = ["Check", "run_doctor", "main"]

MIN_PYTHON = (3, 10)
MIN_OPEN_FILES = 1024
SERVER_TIMEOUT_S = 5.0
# What the lessons import (distribution names, as in requirements.txt), and what is only nice to have.
REQUIRED_PACKAGES = ("aiohttp", "requests", "tqdm", "matplotlib", "ipykernel")
OPTIONAL_PACKAGES = ("jupyterlab", "nest-asyncio", "openai")
REPO_ROOT = Path(__file__).resolve().parents[2]
KIT_VENV = REPO_ROOT / ".venv"


@dataclass(frozen=True)
class Check:
    """One line of the report: ``status`` is ``"ok"``, ``"warn"`` or ``"fail"``; ``fix`` says what to do."""

    name: str
    status: str
    detail: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        """True unless the check failed (a warning is not a failure)."""
        return self.status != "fail"


# --- 1. Python -----------------------------------------------------------------------------------


def check_python(version_info: tuple[int, ...] = tuple(sys.version_info[:3])) -> Check:
    """The running Python is at least 3.10."""
    shown = ".".join(str(part) for part in version_info)
    if tuple(version_info[:2]) >= MIN_PYTHON:
        return Check("python", "ok", f"Python {shown} (3.10 or newer needed)")
    return Check(
        "python",
        "fail",
        f"Python {shown} is too old: the kit needs 3.10 or newer",
        "install Python 3.10+ (python.org, pyenv or your package manager), then "
        "`rm -rf .venv && make venv PYTHON=python3.12`",
    )


# --- 2. Packages ---------------------------------------------------------------------------------


def pinned_versions(requirements: Path = REPO_ROOT / "requirements.txt") -> dict[str, str]:
    """``{name: version}`` for every ``name==version`` line of requirements.txt (empty if absent)."""
    if not requirements.is_file():
        return {}
    pins = {}
    for line in requirements.read_text(encoding="utf-8").splitlines():
        spec, _, marker = line.split("#", 1)[0].partition(";")
        if "==" in spec and _applies_here(marker.strip()):
            name, version = spec.split("==", 1)
            pins[_normalise(name)] = version.strip()
    return pins


def _applies_here(marker: str) -> bool:
    """Whether an environment marker (``python_version < "3.11"``) holds for this interpreter."""
    if not marker:
        return True
    try:
        from packaging.markers import InvalidMarker, Marker
    except ImportError:  # no packaging: skip marked pins rather than guess
        return False
    try:
        return Marker(marker).evaluate()
    except InvalidMarker:
        return False


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def check_packages(
    required: tuple[str, ...] = REQUIRED_PACKAGES,
    optional: tuple[str, ...] = OPTIONAL_PACKAGES,
    pins: dict[str, str] | None = None,
) -> Check:
    """Every required package is installed; versions that differ from the pins are a warning."""
    pins = pinned_versions() if pins is None else pins
    found, missing, off_pin = [], [], []
    for name in (*required, *optional):
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name in required:
                missing.append(name)
            continue
        found.append(f"{name} {version}")
        pinned = pins.get(_normalise(name))
        if pinned and pinned != version:
            off_pin.append(f"{name} {version} (pinned {pinned})")
    install = f"{_short_python()} -m pip install -r requirements.txt"
    if missing:
        return Check("packages", "fail", f"missing: {', '.join(missing)}", f"run `{install}`")
    if off_pin:
        return Check(
            "packages",
            "warn",
            f"versions differ from requirements.txt: {', '.join(off_pin)}",
            f"run `{install}` (the lessons were recorded with the pinned versions)",
        )
    return Check("packages", "ok", ", ".join(found))


# --- 3. Interpreter ------------------------------------------------------------------------------


def check_interpreter(prefix: str = sys.prefix, kit_venv: Path = KIT_VENV) -> Check:
    """The running interpreter is the kit's ``.venv`` (where ``make venv`` installed everything)."""
    here = Path(prefix).resolve()
    if kit_venv.exists() and here == kit_venv.resolve():
        return Check("interpreter", "ok", f"the kit's venv ({_short_path(here)})")
    fix = (
        "start JupyterLab with `make lab` (or `.venv/bin/jupyter lab notebooks/`), or pick the "
        "kernel 'Python 3 (paradigm-kit)' in Kernel > Change Kernel"
    )
    if not kit_venv.exists():
        return Check(
            "interpreter",
            "warn",
            f"no .venv in {_short_path(REPO_ROOT)}: running on {sys.executable}",
            "run `make venv` (or `python3 -m venv .venv && .venv/bin/pip install -r requirements.txt`)",
        )
    return Check(
        "interpreter",
        "warn",
        f"not the kit's venv: running on {sys.executable}",
        fix,
    )


def check_python_on_path(executable: str = sys.executable, path: str | None = None) -> Check:
    """The first ``python`` on PATH is this interpreter, so a notebook's ``!python`` runs it too."""
    first = shutil.which("python", path=path) or shutil.which("python3", path=path)
    if first and _same_file(first, executable):
        return Check("python on PATH", "ok", "`!python` in a notebook runs this interpreter")
    shown = first or "no `python` at all"
    return Check(
        "python on PATH",
        "warn",
        f"the first python on PATH is {shown}, not {executable}",
        "start JupyterLab with `make lab` (it puts .venv/bin first on PATH), "
        "or write `!{sys.executable}` instead of `!python` in a notebook",
    )


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


# --- 4. Open files -------------------------------------------------------------------------------


def check_open_files(soft_limit: int | None = None) -> Check:
    """The open-files (soft) limit is at least 1024: each concurrent connection uses one."""
    if soft_limit is None:
        try:
            import resource
        except ImportError:  # Windows: no such limit to raise
            return Check("open files", "ok", "no per-process open-files limit on this system")
        soft_limit, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft_limit == -1 or soft_limit >= MIN_OPEN_FILES:  # -1 is RLIM_INFINITY
        shown = "unlimited" if soft_limit == -1 else str(soft_limit)
        return Check("open files", "ok", f"limit {shown} (1024 or more)")
    return Check(
        "open files",
        "warn",
        f"limit {soft_limit}: a few hundred concurrent requests fail with 'Too many open files'",
        "run `ulimit -n 4096` in the terminal, then start JupyterLab (`make lab`) from that terminal",
    )


# --- 5. Server and key ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Answer:
    status: int  # 0 when no HTTP answer came back
    body: str
    error: str = ""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are not followed: the next request would carry the key to another origin."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ARG002
        return None  # urllib then raises HTTPError with the 3xx status


_OPENER = urllib.request.build_opener(_NoRedirect)


def _get_models(base_url: str, api_key: str, timeout_s: float) -> _Answer:
    """``GET /models`` with the key; every text that came back has the key masked."""
    request = urllib.request.Request(
        f"{base_url.rstrip('/')}/models", headers={"Authorization": f"Bearer {api_key}"}
    )
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            body = response.read(100_000).decode("utf-8", "replace")
            return _Answer(response.status, redact(body, api_key))
    except urllib.error.HTTPError as error:
        if 300 <= error.code < 400:
            target = redact(error.headers.get("Location", "?"), api_key)
            return _Answer(error.code, f"a redirect to {target}")
        return _Answer(error.code, summarise_body(error.read(2_000), api_key))
    except (urllib.error.URLError, OSError, ValueError) as error:  # refused, DNS, timeout, bad URL
        return _Answer(0, "", redact(str(getattr(error, "reason", error)), api_key))


def check_server(base_url: str, api_key: str, timeout_s: float = SERVER_TIMEOUT_S) -> list[Check]:
    """``GET {base}/models`` answers (the server is reachable), and not with 401/403 (key accepted)."""
    answer = _get_models(base_url, api_key, timeout_s)
    if answer.status == 0:
        return [
            Check(
                "server",
                "fail",
                f"no answer from {base_url} within {timeout_s:g} s: {answer.error}",
                "check PARADIGM_BASE_URL (it ends in /api/v2), your network (a workshop's shared "
                "Wi-Fi may block the port: ask the facilitator), and the proxy settings "
                "(HTTPS_PROXY; NO_PROXY=127.0.0.1,localhost for a local mock)",
            )
        ]
    reachable = Check("server", "ok", f"{base_url} answers (HTTP {answer.status})")
    return [reachable, _key_verdict(answer)]


def _key_verdict(answer: _Answer) -> Check:
    if answer.status == 401:
        return Check(
            "key",
            "fail",
            "the server refused the key (401)",
            "check PARADIGM_API_KEY (no quotes, no spaces; a fresh key from your Paradigm account "
            "or the one the facilitator gave you)",
        )
    if answer.status == 403:
        return Check(
            "key",
            "fail",
            "the key is valid but has no permission here (403)",
            "ask your Paradigm admin for API access",
        )
    if 300 <= answer.status < 400:
        return Check(
            "key",
            "fail",
            f"GET /models answered {answer.status}, {answer.body} (not followed: it would carry "
            "the key to another address)",
            "set PARADIGM_BASE_URL to the final address (…/api/v2)",
        )
    if answer.status != 200:
        return Check(
            "key",
            "fail",
            f"GET /models answered {answer.status}: {answer.body}",
            "is PARADIGM_BASE_URL the API's base (…/api/v2)? Try again; if it persists, ask the "
            "facilitator",
        )
    models = _model_ids(answer.body)
    if models and DEFAULT_MODEL not in models:
        return Check(
            "key",
            "warn",
            f"key accepted, but model {DEFAULT_MODEL} is not offered (found: {', '.join(models[:5])})",
            f"ask your admin to enable {DEFAULT_MODEL}, or set the notebooks' MODEL parameter",
        )
    return Check("key", "ok", "key accepted (set, not shown)")


def _model_ids(body: str) -> list[str]:
    try:
        data = json.loads(body).get("data", [])
        return [str(item.get("id")) for item in data if isinstance(item, dict)]
    except (ValueError, AttributeError):
        return []


def check_bundled_mock(timeout_s: float = SERVER_TIMEOUT_S) -> list[Check]:
    """With no key set, the notebooks start the bundled mock: it must start and answer here."""
    try:
        from ..mock import running_mock
    except ImportError as error:  # aiohttp missing: the packages check says how to install it
        return [
            Check(
                "bundled mock",
                "fail",
                f"cannot import the mock: {error}",
                f"run `{_short_python()} -m pip install -r requirements.txt`",
            )
        ]
    try:
        with running_mock(latency_s=0.0) as mock_url:
            answer = _get_models(mock_url, "doctor-check", timeout_s)
    except (OSError, RuntimeError, TimeoutError) as error:
        return [
            Check(
                "bundled mock",
                "fail",
                f"the bundled mock did not start: {error}",
                "run `python scripts/mock_paradigm.py --port 0` in a terminal to see why",
            )
        ]
    if answer.status != 200:
        return [
            Check(
                "bundled mock",
                "fail",
                f"the bundled mock started but GET /models gave {answer.status or answer.error}",
                "check NO_PROXY=127.0.0.1,localhost (a proxy must not intercept loopback)",
            )
        ]
    return [Check("bundled mock", "ok", "starts and answers on 127.0.0.1")]


def check_endpoint(base_url: str | None, api_key: str | None) -> list[Check]:
    """The server and key checks, or the bundled mock's when no key is set (as the notebooks do)."""
    settings = api_settings(require_key=False, base_url=base_url)
    key = (api_key if api_key is not None else settings.api_key).strip()
    url = settings.base_url
    if any(ord(character) < 32 or ord(character) == 127 for character in key):
        return [
            Check(
                "key",
                "fail",
                "PARADIGM_API_KEY contains a control character (a pasted newline?); not shown",
                "set it again, on one line, without quotes",
            )
        ]
    if key:
        return check_server(url, key)
    note = Check(
        "key",
        "ok",
        "PARADIGM_API_KEY is not set: the notebooks will use the bundled mock (no network needed)",
    )
    if settings.base_url_set:
        note = Check(
            "key",
            "warn",
            f"PARADIGM_BASE_URL is {url} but PARADIGM_API_KEY is not set: the notebooks ignore the "
            "URL and start their own mock",
            "set PARADIGM_API_KEY too (for a room's mock, any non-empty key, ideally your own name)",
        )
    return [note, *check_bundled_mock()]


# --- The report ----------------------------------------------------------------------------------

MARKS = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


def format_report(checks: list[Check]) -> str:
    """The report as text: one line per check, its fix indented below, a verdict at the end."""
    lines = ["paradigm-kit doctor"]
    for check in checks:
        lines.append(f"  {MARKS[check.status]}  {check.name}: {check.detail}")
        if check.fix and check.status != "ok":
            lines.append(f"        fix: {check.fix}")
    failures = sum(not check.ok for check in checks)
    warnings = sum(check.status == "warn" for check in checks)
    if failures:
        lines.append(f"{failures} problem(s) to fix before the workshop (see 'fix:' above).")
    elif warnings:
        lines.append(f"Ready, with {warnings} warning(s) worth fixing (see 'fix:' above).")
    else:
        lines.append("All checks passed: ready for the workshop.")
    return "\n".join(lines)


def run_doctor(
    base_url: str | None = None, api_key: str | None = None, *, verbose: bool = True
) -> list[Check]:
    """Run every check, print the report (unless ``verbose=False``) and return the checks."""
    checks = [
        check_python(),
        check_packages(),
        check_interpreter(),
        check_python_on_path(),
        check_open_files(),
        *check_endpoint(base_url, api_key),
    ]
    if verbose:
        print(format_report(checks))
    return checks


def _short_python() -> str:
    return _short_path(Path(sys.executable))


def _short_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m paradigm_kit.doctor [--base-url URL]``; exit 0 if ready, 1 if not."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m paradigm_kit.doctor",
        description="Check that this machine is ready for the workshop. Reads PARADIGM_API_KEY "
        "and PARADIGM_BASE_URL; never prints the key. Exit code 0: ready; 1: something to fix.",
    )
    parser.add_argument("--base-url", help="the API to check (default: PARADIGM_BASE_URL)")
    args = parser.parse_args(argv)
    checks = run_doctor(base_url=args.base_url)
    return 0 if all(check.ok for check in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
