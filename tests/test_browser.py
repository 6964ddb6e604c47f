"""Notebooks 01 and 08 in JupyterLab, in a real (headless) browser, the way an attendee runs them.

nbval and papermill run notebooks through a kernel, never through JupyterLab: they cannot see a
frontend that fails to load, a notebook that renders but whose "Run All Cells" stops on an error,
outputs that never reach the page, or a notebook that shows as modified the moment it is opened.
This module does what an attendee does on the day, with one JupyterLab and one Chromium for all
its tests (each start costs seconds on a loaded machine):

1. copies ``notebooks/`` and ``scripts/`` to a scratch folder (a run saves the notebook there,
   never over the committed one; each test first copies the committed notebook back) and starts
   JupyterLab on it: a free loopback port, token auth, throwaway config/settings/workspace folders,
   the news/announcements plugin disabled (its toast would cover the screenshot), every cell
   attached to the page (windowing mode ``none``), the app exposed as ``window.jupyterapp`` (so the
   test can wait for the kernel's info to be applied), and ``PARADIGM_*`` unset so each notebook
   starts its own bundled mock;
2. opens each notebook once for both its tests (a fresh page, workspace reset) in headless
   Chromium (Debian's ``/usr/bin/chromium``, driven by the PyPI ``playwright`` package; as root it
   needs ``--no-sandbox``, and the ``--disable-*`` flags stop it from trying to reach Google's
   servers) and waits until its kernel is idle;
3. "opens unmodified", first: once the kernel's info and spec have been copied into the
   notebook's metadata (JupyterLab replaces ``kernelspec`` and ``language_info`` on kernel start),
   the document is not dirty: no ``jp-mod-dirty`` tab, ``model.dirty`` false. A committed notebook
   whose metadata differs fails here (fix: ``python tools/notebooks.py normalise``);
4. "runs clean", on the same page: runs every cell through the UI (command palette, Ctrl+Shift+C,
   "Run All Cells", Enter), waits until every code cell shows an execution count and the kernel is
   idle, saves the notebook through the UI, and asserts: outputs are on the page, none shows a
   traceback, and the saved notebook (read back through JupyterLab's contents API) has a count on
   every code cell and no ``error`` output; saves a full-page screenshot under pytest's
   ``tmp_path`` and prints its path;
5. closes the page and shuts the notebook's kernel down before the next notebook opens.

``KIT_BROWSER_NOTEBOOK=NAME.ipynb`` runs the tests on that one notebook instead. With ``CI=true``
a missing browser or playwright is a failure (CI must run this test); elsewhere it is a skip that
says how to install them. Marked ``browser`` (``pytest -m browser`` runs only this module).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

# One worker runs the whole module under pytest-xdist (`--dist loadgroup`): one JupyterLab, one
# Chromium, and each notebook checked unmodified before it is run.
pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = (
    [os.environ["KIT_BROWSER_NOTEBOOK"]]
    if os.environ.get("KIT_BROWSER_NOTEBOOK")
    else ["01_session_setup.ipynb", "08_streaming.ipynb"]
)
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
INSTALL_HINT = (
    "install the browser and its driver: `apt-get install -y chromium` and "
    "`pip install playwright==1.65.2` (already pinned in requirements.txt); "
    "no `playwright install` needed"
)
LAB_START_TIMEOUT_S = 60
RUN_ALL_TIMEOUT_S = 240
TOKEN = "kit-browser-test-token"


def _missing(reason: str) -> None:
    """Fail under CI (the test must run there), skip elsewhere; both say how to install."""
    message = f"{reason}: {INSTALL_HINT}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """One headless Chromium for the module, or a skip/failure saying how to install it."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the `playwright` package is not installed")
    if not Path(CHROMIUM).exists():
        _missing(f"no Chromium at {CHROMIUM}")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _lab_env(scratch: Path) -> dict[str, str]:
    """The server's environment: the kit's venv first on PATH, throwaway Jupyter folders, no key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARADIGM_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for variable, folder in [
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("JUPYTERLAB_SETTINGS_DIR", "settings"),
        ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"),
    ]:
        env[variable] = str(scratch / folder)
        (scratch / folder).mkdir(parents=True, exist_ok=True)
    env.pop("VIRTUAL_ENV", None)
    return env


def _write_lab_config(scratch: Path) -> None:
    """Disable the news toast (announcements plugin) and attach every cell to the page."""
    page_config = scratch / "config" / "labconfig" / "page_config.json"
    page_config.parent.mkdir(parents=True)
    page_config.write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
    )
    settings = scratch / "settings" / "@jupyterlab"
    for plugin, values in [
        ("notebook-extension/tracker", {"windowingMode": "none"}),
        ("apputils-extension/notification", {"fetchNews": "false", "checkForUpdates": False}),
    ]:
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


def _api(base: str, path: str, method: str = "GET") -> object:
    request = urllib.request.Request(
        f"{base}{path}", method=method, headers={"Authorization": f"token {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return json.loads(body) if body else None


def _wait_for_lab(base: str, server: subprocess.Popen, log: Path) -> None:
    """Wait (bounded) until the server answers /api/status; fail with its log if it dies."""
    deadline = time.monotonic() + LAB_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"JupyterLab exited ({server.returncode}):\n{log.read_text()[-2000:]}")
        try:
            _api(base, "/api/status")
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.25)  # the server is still starting: nothing to wait on but the port
    pytest.fail(f"JupyterLab did not answer in {LAB_START_TIMEOUT_S} s:\n{log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """One JupyterLab on a scratch copy of notebooks/ + scripts/; yields (base URL, root dir)."""
    tmp_path = tmp_path_factory.mktemp("jupyterlab")
    root = tmp_path / "kit"
    for folder in ("notebooks", "scripts"):
        shutil.copytree(
            REPO_ROOT / folder,
            root / folder,
            ignore=shutil.ignore_patterns(".ipynb_checkpoints", "*.jsonl", "output"),
        )
    missing = [name for name in NOTEBOOKS if not (root / "notebooks" / name).exists()]
    if missing:
        pytest.fail(f"no such notebook in notebooks/: {', '.join(missing)}")
    jupyter_dirs = tmp_path / "jupyter"
    env = _lab_env(jupyter_dirs)
    _write_lab_config(jupyter_dirs)
    port = _free_port()
    log = tmp_path / "jupyterlab.log"
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        "--allow-root",
        f"--IdentityProvider.token={TOKEN}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp, for KERNEL_APPLIED_JS
    ]
    base = f"http://127.0.0.1:{port}"
    with log.open("w") as log_file:
        server = subprocess.Popen(
            command, env=env, cwd=root, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        _wait_for_lab(base, server, log)
        yield base, root
    finally:
        _stop_lab(base, server)


def _stop_lab(base: str, server: subprocess.Popen) -> None:
    """Shut the server down through its API (kernels included), then make sure it is gone."""
    with contextlib.suppress(urllib.error.URLError, OSError):  # gone already: terminate below
        _api(base, "/api/shutdown", method="POST")
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# Page-side conditions, evaluated by the browser on each animation frame (not polled from here).
# A code cell's prompt reads "[ ]:" (not run), "[*]:" (queued or running) or "[7]:" (ran).
# "Run All Cells" queues every cell at once, so the run is over when no prompt shows "[*]" and at
# least one shows a count; it stops early at a cell that raises, which the assertions then report.
PROMPTS_JS = "[...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]"
NO_COUNTS_JS = f"() => {PROMPTS_JS}.every(p => !/\\[\\d+\\]/.test(p.textContent))"
RUN_FINISHED_JS = f"""
() => {{
  const prompts = {PROMPTS_JS};
  return !prompts.some(p => p.textContent.includes('[*]'))
    && prompts.some(p => /\\[\\d+\\]/.test(p.textContent));
}}
"""
# Ready to run: the notebook is rendered (not the loading spinner) and the status bar shows its
# kernel connected and idle ("Python 3 (ipykernel) | Idle", not "No Kernel | Initializing").
KERNEL_READY_JS = """
() => {
  const cell = document.querySelector('.jp-Notebook .jp-Cell .jp-InputPrompt');
  const items = [...document.querySelectorAll('.jp-StatusBar-Item')];
  return cell !== null && cell.offsetParent !== null
    && items.some(item => /\\|\\s*Idle/.test(item.textContent))
    && !items.some(item => /No Kernel/.test(item.textContent));
}
"""


# Kernel idle is not yet "metadata rewritten": JupyterLab copies language_info into the notebook
# when the kernel's info promise resolves and kernelspec when its spec does, each in a callback it
# registered when the kernel started. Awaiting the same promises here runs after those callbacks;
# a frame and a task later the tab has repainted. Returns what "modified" looks like, both ways.
KERNEL_APPLIED_JS = """
async (path) => {
  const panel = [...window.jupyterapp.shell.widgets('main')].find(w => w.context?.path === path);
  const kernel = panel.sessionContext.session.kernel;
  await kernel.info;
  await kernel.spec;
  await new Promise(resolve => requestAnimationFrame(() => setTimeout(resolve)));
  return {
    modelDirty: panel.context.model.dirty,
    dirtyTab: panel.title.className.includes('jp-mod-dirty')
      || document.querySelector('.lm-TabBar-tab.jp-mod-dirty') !== null,
    metadata: {
      kernelspec: panel.context.model.getMetadata('kernelspec'),
      language_info: panel.context.model.getMetadata('language_info'),
    },
  };
}
"""


# Module scope: each notebook is opened once (page + kernel start: seconds) for both tests, which
# pytest runs one notebook at a time in file order: first "opens unmodified", then "runs clean".
@pytest.fixture(scope="module", params=NOTEBOOKS)
def opened(browser, jupyterlab, request) -> Iterator[tuple[object, str, str]]:
    """The committed notebook, opened in a fresh page with its kernel idle: (page, base URL, name)."""
    base, root = jupyterlab
    notebook = request.param
    # The committed file, not what an earlier test saved over the scratch copy.
    shutil.copy2(REPO_ROOT / "notebooks" / notebook, root / "notebooks" / notebook)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        # ?reset: an empty workspace, so the previous test's tab does not come back with it
        page.goto(f"{base}/lab/tree/notebooks/{notebook}?reset&token={TOKEN}")
        page.wait_for_function(KERNEL_READY_JS, timeout=LAB_START_TIMEOUT_S * 1000)
        yield page, base, notebook
    finally:
        page.close()
        _shut_down_kernels(base, f"notebooks/{notebook}")


def _shut_down_kernels(base: str, path: str) -> None:
    """End the sessions (and kernels, and the mock each started) of one notebook."""
    for session in _api(base, "/api/sessions"):
        if session["path"] == path:
            _api(base, f"/api/sessions/{session['id']}", method="DELETE")


def test_browser_notebook_opens_unmodified(opened):
    """A committed notebook, opened and not yet run, is not marked modified once its kernel is up."""
    page, _base, notebook = opened
    state = page.evaluate(KERNEL_APPLIED_JS, f"notebooks/{notebook}")
    committed = json.loads((REPO_ROOT / "notebooks" / notebook).read_text(encoding="utf-8"))
    rewritten = {
        key: {"committed": committed["metadata"].get(key), "jupyterlab": value}
        for key, value in state["metadata"].items()
        if committed["metadata"].get(key) != value
    }
    problem = (
        f"{notebook} opens as modified (tab marker: {state['dirtyTab']}, model dirty: "
        f"{state['modelDirty']}); metadata JupyterLab rewrote: {rewritten}; "
        "run `python tools/notebooks.py normalise` with the kit's Python"
    )
    assert not state["dirtyTab"], problem
    assert not state["modelDirty"], problem


def test_browser_notebook_runs_clean_in_jupyterlab(opened, tmp_path):
    """The notebook, run with "Run All Cells" in JupyterLab in Chromium, shows outputs, no error."""
    page, base, notebook = opened
    screenshot = tmp_path / f"{Path(notebook).stem}.png"
    started_s = time.monotonic()
    page.click(".jp-Notebook .jp-Cell .jp-InputPrompt")  # focus: command mode, cell 1
    # The committed notebook shows its stored counts: clear them, so that a count on the page
    # can only come from this run.
    _palette(page, "Clear Outputs of All Cells")
    page.wait_for_function(NO_COUNTS_JS, timeout=30_000)
    _palette(page, "Run All Cells")
    page.wait_for_function(RUN_FINISHED_JS, timeout=RUN_ALL_TIMEOUT_S * 1000)
    output_texts = page.locator(".jp-OutputArea-output").all_inner_texts()
    page.keyboard.press("Control+s")
    page.wait_for_selector(".jp-mod-dirty", state="detached", timeout=30_000)
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"\nscreenshot: {screenshot}")
    print(f"Run All Cells and save for {notebook}: {time.monotonic() - started_s:.1f} s")

    assert output_texts, "Run All Cells produced no output on the page"
    with_traceback = [text[:300] for text in output_texts if "Traceback" in text]
    assert not with_traceback, f"outputs with a traceback: {with_traceback}"
    saved = _api(base, f"/api/contents/notebooks/{notebook}?content=1")
    code_cells = [cell for cell in saved["content"]["cells"] if cell["cell_type"] == "code"]
    not_run = [i for i, cell in enumerate(code_cells) if cell["execution_count"] is None]
    assert not not_run, f"code cells not run (indices among code cells): {not_run}"
    errors = [
        f"{output['ename']}: {output['evalue']}"
        for cell in code_cells
        for output in cell["outputs"]
        if output["output_type"] == "error"
    ]
    assert not errors, f"error outputs in the saved notebook: {errors}"


def _palette(page, command: str) -> None:
    """Run a command by name through JupyterLab's command palette, as a user would."""
    page.keyboard.press("Control+Shift+c")
    palette_input = page.locator(".lm-CommandPalette-input")
    palette_input.wait_for(state="visible")
    palette_input.fill(command)
    page.locator(".lm-CommandPalette-item.lm-mod-active").wait_for(state="visible")
    palette_input.press("Enter")
    palette_input.wait_for(state="hidden")
