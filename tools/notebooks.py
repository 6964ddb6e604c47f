"""Keep the committed notebooks honest: ``python tools/notebooks.py check|refresh|normalise``.

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
* ``normalise [NOTEBOOK...]``: rewrite only the metadata JupyterLab rewrites (below) of the given
  notebooks (default: every lesson and solution), executing nothing; cells are left as they are.

Every notebook this tool writes has its metadata normalised first: ``kernelspec`` set to the
kernel ``make venv`` installs and ``language_info`` to what that kernel reports. When a kernel
starts, JupyterLab replaces both keys with exactly those values, so a committed notebook holding
anything else ("Python 3" instead of "Python 3 (paradigm-kit)", another Python version) shows as
modified the moment an attendee opens it, before a cell has run. Run this tool with the kit's
``.venv`` Python (``make`` does): ``language_info.version`` is the running interpreter's.

Executions go through nbclient with ``record_timing=False``, so no per-cell timestamps end up in
the committed files; the execution counts come out 1..n because every kernel is fresh.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import nbformat

__all__ = [
    "KERNELSPEC",
    "WRITEFILE_LINE",
    "check_writefile_cell",
    "execute_in_place",
    "find_writefile_cell",
    "language_info",
    "normalise_metadata",
]

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = ROOT / "notebooks"
SCRIPT = ROOT / "scripts" / "speed_test.py"
WRITEFILE_LINE = "%%writefile ../scripts/speed_test.py"
SEED_SCRIPT = ROOT / "scripts" / "seed_speed_test.py"  # the seed's script, as published
SEED_WRITEFILE_LINE = "%%writefile ../scripts/seed_speed_test.py"
CELL_TIMEOUT_S = 600
# The kernelspec `make venv` installs (`ipykernel install --name python3 --display-name ...`), as
# JupyterLab copies it into a notebook's metadata when the kernel starts: these three keys only.
KERNELSPEC = {"display_name": "Python 3 (paradigm-kit)", "language": "python", "name": "python3"}


def language_info(python_version: str | None = None) -> dict:
    """What ipykernel reports as ``language_info`` (``IPythonKernel.language_info``) on a Python."""
    version = python_version or sys.version.split()[0]  # ipykernel's own expression
    return {
        "codemirror_mode": {"name": "ipython", "version": int(version.split(".")[0])},
        "file_extension": ".py",
        "mimetype": "text/x-python",
        "name": "python",
        "nbconvert_exporter": "python",
        "pygments_lexer": "ipython3",
        "version": version,
    }


def normalise_metadata(notebook: nbformat.NotebookNode, python_version: str | None = None) -> bool:
    """Set the metadata JupyterLab rewrites on kernel start to its values; True if any changed."""
    wanted = {"kernelspec": KERNELSPEC, "language_info": language_info(python_version)}
    changed = any(notebook.metadata.get(key) != value for key, value in wanted.items())
    for key, value in wanted.items():
        notebook.metadata[key] = nbformat.from_dict(value)
    return changed


def write_notebook(notebook: nbformat.NotebookNode, path: Path) -> None:
    """Every write of this tool: normalised metadata first, then nbformat's own layout."""
    normalise_metadata(notebook)
    nbformat.write(notebook, path)


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
    write_notebook(notebook, path)
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
    write_notebook(notebook, path)  # nbclient stored the kernel's language_info: same values


def every_notebook() -> list[Path]:
    """The lessons in name order, then their solutions."""
    return sorted(NOTEBOOKS_DIR.glob("*.ipynb")) + sorted(NOTEBOOKS_DIR.glob("solutions/*.ipynb"))


def normalise_in_place(paths: list[Path]) -> None:
    """Rewrite the metadata of each notebook that needs it; cells untouched, nothing executed."""
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        if normalise_metadata(notebook):
            nbformat.write(notebook, path)
            print(f"normalised {display(path)}")
        else:
            print(f"{display(path)}: already normalised")


def display(path: Path) -> str:
    """A path as the user reads it: relative to the repository when it is inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def check_scripts() -> int:
    """``check``: each %%writefile cell against its script; 1 if any differs."""
    problems = [
        check_writefile_cell(script=script, line=line)
        for script, line in ((SCRIPT, WRITEFILE_LINE), (SEED_SCRIPT, SEED_WRITEFILE_LINE))
    ]
    for problem, line in zip(problems, (WRITEFILE_LINE, SEED_WRITEFILE_LINE), strict=True):
        print(problem or f"{line}: the cell equals its script")
    return 1 if any(problems) else 0


def main(argv: list[str] | None = None) -> int:
    """Exit 0 on success, 1 when ``check`` finds a difference, 2 on a bad argument or notebook."""
    parser = argparse.ArgumentParser(prog="python tools/notebooks.py")
    parser.add_argument("command", choices=["check", "refresh", "normalise"])
    parser.add_argument(
        "notebooks", nargs="*", type=Path, help="refresh/normalise only these (default: all)"
    )
    args = parser.parse_args(argv)
    if args.command == "check":
        return check_scripts()
    paths = [path.resolve() for path in args.notebooks] or every_notebook()
    not_notebooks = [str(path) for path in paths if not path.is_file() or path.suffix != ".ipynb"]
    if not_notebooks:
        print(
            f"tools/notebooks.py: not a notebook file: {', '.join(not_notebooks)}", file=sys.stderr
        )
        return 2
    if args.command == "normalise":
        normalise_in_place(paths)
        return 0
    print(f"synced {display(sync_writefile_cell())} from {display(SCRIPT)}")
    for path in paths:
        print(f"executing {display(path)} ...", flush=True)
        execute_in_place(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
