"""Keep the committed notebooks honest: ``python tools/notebooks.py check|refresh``.

Notebook 03 writes ``scripts/speed_test.py`` with a ``%%writefile ../scripts/speed_test.py`` cell,
so the script exists twice: as a file and as a cell body. They must stay identical to the byte.

* ``check``: exit 0 if the cell's body equals the committed script, else print which differs and
  exit 1 (the test suite runs the same comparison before any notebook runs).
* ``refresh`` (what ``make notebooks`` runs, before a commit): copy the script into the cell, then
  re-execute every ``notebooks/*.ipynb`` in place, in name order, each in a fresh kernel started
  in ``notebooks/`` with ``PARADIGM_*`` removed from the environment (so the stored outputs are the
  mock's, never a real key's) and this interpreter's ``bin/`` first on ``PATH`` (so a notebook's
  ``!python`` is the kit's Python, as under ``make lab``). A cell that raises stops the refresh
  and leaves that notebook unwritten.

Executions go through nbclient with ``record_timing=False``, so no per-cell timestamps end up in
the committed files; the execution counts come out 1..n because every kernel is fresh.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import nbformat

__all__ = ["WRITEFILE_LINE", "check_writefile_cell", "execute_in_place", "find_writefile_cell"]

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = ROOT / "notebooks"
SCRIPT = ROOT / "scripts" / "speed_test.py"
WRITEFILE_LINE = "%%writefile ../scripts/speed_test.py"
SEED_SCRIPT = ROOT / "scripts" / "seed_speed_test.py"  # the seed's script, as published
SEED_WRITEFILE_LINE = "%%writefile ../scripts/seed_speed_test.py"
CELL_TIMEOUT_S = 600


def find_writefile_cell(
    notebooks_dir: Path = NOTEBOOKS_DIR, line: str = WRITEFILE_LINE
) -> tuple[Path, int]:
    """The notebook and cell index of the one cell that writes the speed test (or ``line``'s)."""
    found = [
        (path, index)
        for path in sorted(notebooks_dir.glob("*.ipynb"))
        for index, cell in enumerate(nbformat.read(path, as_version=4).cells)
        if cell.cell_type == "code" and cell.source.split("\n", 1)[0].rstrip() == line
    ]
    if len(found) != 1:
        raise LookupError(f"expected one '{line}' cell in {notebooks_dir}, found {found}")
    return found[0]


def cell_body(source: str) -> str:
    """What ``%%writefile`` writes: everything after the magic's line."""
    return source.split("\n", 1)[1] if "\n" in source else ""


def check_writefile_cell(
    notebooks_dir: Path = NOTEBOOKS_DIR, script: Path = SCRIPT, line: str = WRITEFILE_LINE
) -> str | None:
    """None when the cell body equals the script; else a one-line description of the problem."""
    path, index = find_writefile_cell(notebooks_dir, line)
    body = cell_body(nbformat.read(path, as_version=4).cells[index].source)
    if body != script.read_text(encoding="utf-8"):
        return f"{path.name} cell {index}: %%writefile body differs from {script.name}"
    return None


def sync_writefile_cell() -> Path:
    """Copy ``scripts/speed_test.py`` into the ``%%writefile`` cell; return the notebook's path."""
    path, index = find_writefile_cell()
    notebook = nbformat.read(path, as_version=4)
    notebook.cells[index].source = WRITEFILE_LINE + "\n" + SCRIPT.read_text(encoding="utf-8")
    nbformat.write(notebook, path)
    return path


def kernel_environment() -> dict[str, str]:
    """The environment the notebooks are stored with: no PARADIGM_*, this venv first on PATH."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("PARADIGM_")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def execute_in_place(path: Path) -> None:
    """Run a notebook top to bottom in a fresh ``python3`` kernel and write it back."""
    from nbclient import NotebookClient  # imported here: `check` does not need it

    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute(env=kernel_environment())  # passed on to the kernel's launch
    nbformat.write(notebook, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/notebooks.py")
    parser.add_argument("command", choices=["check", "refresh"])
    parser.add_argument("notebooks", nargs="*", type=Path, help="refresh only these (default: all)")
    args = parser.parse_args(argv)
    command = args.command
    if command == "check":
        problems = [
            check_writefile_cell(script=script, line=line)
            for script, line in ((SCRIPT, WRITEFILE_LINE), (SEED_SCRIPT, SEED_WRITEFILE_LINE))
        ]
        for problem, line in zip(problems, (WRITEFILE_LINE, SEED_WRITEFILE_LINE), strict=True):
            print(problem or f"{line}: the cell equals its script")
        return 1 if any(problems) else 0
    print(f"synced {sync_writefile_cell().relative_to(ROOT)} from {SCRIPT.relative_to(ROOT)}")
    every = sorted(NOTEBOOKS_DIR.glob("*.ipynb")) + sorted(NOTEBOOKS_DIR.glob("solutions/*.ipynb"))
    for path in [p.resolve() for p in args.notebooks] or every:
        print(f"executing {path.relative_to(ROOT)} ...", flush=True)
        execute_in_place(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
