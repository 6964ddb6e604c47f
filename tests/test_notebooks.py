"""The committed notebooks: the %%writefile cell, then every notebook run both ways.

1. The ``%%writefile ../scripts/speed_test.py`` cell of notebook 03 equals the committed script,
   checked on the committed files before any notebook runs (first in this module).
2. nbval (strict, with ``tests/nbval_sanitize.cfg``): each notebook re-executed with ``PARADIGM_*``
   unset must reproduce its stored outputs, i.e. it starts the bundled mock itself.
3. papermill: each notebook executed with a dummy ``PARADIGM_API_KEY`` and ``PARADIGM_BASE_URL``
   pointing at a mock this test starts (the path a real key takes), with smaller parameters
   where the notebook has them; any error output fails the run.

Both runs happen on a scratch copy (``notebooks/``, ``scripts/`` and the sanitize file copied into
``tmp_path``), so the %%writefile cell and the notebooks' own files never touch tracked files. They
run as subprocesses with this interpreter's ``bin/`` first on ``PATH``, as under ``make``: pytest
fixtures never reach nbval's cells, and a kernel inherits the environment it is started with.
One test per notebook and per way, parametrized over ``notebooks/*.ipynb``, so a notebook added
later is covered without editing this file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from paradigm_kit.mock import running_mock
from tools.notebooks import (
    SEED_SCRIPT,
    SEED_WRITEFILE_LINE,
    WRITEFILE_LINE,
    check_writefile_cell,
    find_writefile_cell,
)

ROOT = Path(__file__).resolve().parent.parent
# The lessons, then their solutions (notebooks/solutions/, apart so that JupyterLab shows them apart)
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted(
    (ROOT / "notebooks" / "solutions").glob("*.ipynb")
)
SANITIZE = ROOT / "tests" / "nbval_sanitize.cfg"
# On 3.10 notebook 02b's TaskGroup and asyncio.timeout cells say "needs 3.11+" instead of their 3.11 results.
SANITIZE_PY310 = ROOT / "tests" / "nbval_sanitize_py310.cfg"
RUN_TIMEOUT_S = 300

# papermill's non-default parameters, by notebook: smaller sweeps, fewer paid requests.
# A notebook not listed runs with its own defaults.
PAPERMILL_PARAMETERS = {
    "01_session_setup.ipynb": {"N_SESSION_CALLS": 10},
    "02_asyncio_gather.ipynb": {
        "BATCH_SIZE": 8,
        "N_LOSE_REQUESTS": 4,
        "N_SCALE_REQUESTS": 200,
        "N_SEQUENTIAL_REQUESTS": 50,
    },
    "02b_bounds_timeouts_taskgroup.ipynb": {
        "BATCH_SIZE": 8,
        "MAX_CONCURRENCY": 4,
        "N_BOUND_REQUESTS": 40,
    },
    "03_the_speed_test.ipynb": {
        "N_REQUESTS": 10,
        "MAX_PAID_REQUESTS": 150,
        "CONCURRENCY_BOUNDS": [1, 5, 20],
    },
    "04_jupyter_and_the_event_loop.ipynb": {"N_REQUESTS": 3},
    "08_streaming.ipynb": {"N_STREAMS": 12, "MAX_PAID_REQUESTS": 3},
    "09_choosing_concurrency.ipynb": {"AUTO_REQUESTS": 200, "MAX_PAID_REQUESTS": 40},
    "10_tokens_and_cost.ipynb": {"N_COST_REQUESTS": 10, "MAX_PAID_REQUESTS": 20},
    "11_the_official_sdk.ipynb": {"N_REQUESTS": 8, "N_CPU_REQUESTS": 30, "MAX_PAID_REQUESTS": 10},
    "05_production_batches.ipynb": {"N_REQUESTS": 30},
    "05b_jsonl_resume_run_batch.ipynb": {
        "N_REQUESTS": 30,
        "TIMELINE_REQUESTS": 20,
        "API_BATCH_SIZE": 5,
        "MAX_PAID_REQUESTS": 5,
    },
}


def notebook_param(path: Path):
    return pytest.param(path, id=path.stem)


def scratch_copy(tmp_path: Path) -> Path:
    """notebooks/, scripts/ and the sanitize file copied to tmp_path: the runs write only there."""
    for folder in ("notebooks", "scripts"):
        shutil.copytree(
            ROOT / folder,
            tmp_path / folder,
            ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", "*.jsonl"),
        )
    rules = SANITIZE.read_text(encoding="utf-8")
    if sys.version_info < (3, 11):
        rules += "\n" + SANITIZE_PY310.read_text(encoding="utf-8")
    (tmp_path / SANITIZE.name).write_text(rules, encoding="utf-8")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # keep pytest from looking further up
    return tmp_path


def run_environment(**paradigm: str) -> dict[str, str]:
    """This environment without PARADIGM_* (plus the given ones), the venv first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARADIGM_")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.pop("VIRTUAL_ENV", None)
    env.update(paradigm)
    return env


def run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )


def test_notebooks_writefile_cell_equals_the_committed_script():
    """The %%writefile cell's body is scripts/speed_test.py to the byte (committed files)."""
    assert check_writefile_cell() is None


def test_notebooks_seed_cell_equals_the_seed_script_and_comes_after_speed_test():
    """Notebook 03's seed cell is scripts/seed_speed_test.py; speed_test.py's cell stays first."""
    assert check_writefile_cell(script=SEED_SCRIPT, line=SEED_WRITEFILE_LINE) is None
    path, speed_test_index = find_writefile_cell(line=WRITEFILE_LINE)
    seed_path, seed_index = find_writefile_cell(line=SEED_WRITEFILE_LINE)
    assert seed_path == path and speed_test_index < seed_index


@pytest.mark.notebooks
@pytest.mark.parametrize("notebook", [notebook_param(path) for path in NOTEBOOKS])
def test_notebooks_nbval_reproduces_stored_outputs_without_key(notebook: Path, tmp_path: Path):
    """With PARADIGM_* unset, re-running the notebook gives its stored outputs (nbval, strict)."""
    scratch = scratch_copy(tmp_path)
    command = [
        sys.executable,
        "-m",
        "pytest",
        "--nbval",
        "--nbval-current-env",  # the kernel runs this interpreter, whatever kernelspecs exist
        "-p",
        "no:cacheprovider",
        "--nbval-sanitize-with",
        SANITIZE.name,
        notebook.relative_to(ROOT).as_posix(),
    ]
    result = run(command, cwd=scratch, env=run_environment())
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]


@pytest.mark.notebooks
@pytest.mark.parametrize("notebook", [notebook_param(path) for path in NOTEBOOKS])
def test_notebooks_papermill_runs_with_a_key_and_small_parameters(notebook: Path, tmp_path: Path):
    """With a key and PARADIGM_BASE_URL set (the real-API path), the notebook runs without error."""
    scratch = scratch_copy(tmp_path)
    parameters = PAPERMILL_PARAMETERS.get(notebook.name, {})
    executed = tmp_path / f"executed-{notebook.name}"
    with running_mock(latency_s=0.2) as base_url:
        env = run_environment(PARADIGM_API_KEY="papermill-dummy-key", PARADIGM_BASE_URL=base_url)
        command = [
            sys.executable,
            "-m",
            "papermill",
            notebook.name,
            str(executed),
            "--cwd",
            ".",  # the notebook's own folder, as JupyterLab runs it
            "-k",
            "python3",
            "-y",
            json.dumps(parameters),
        ]
        result = run(command, cwd=scratch / notebook.parent.relative_to(ROOT), env=env)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-8000:]
    outputs = json.dumps(
        [cell.get("outputs", []) for cell in json.loads(executed.read_text())["cells"]]
    )
    assert "papermill-dummy-key" not in outputs
