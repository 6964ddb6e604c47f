"""The notebooks' helpers: ``paradigm_kit.workshop.connect`` and the metadata of the notebooks.

``connect``: where a notebook's requests go, and that the key never shows. Each test that needs a
server starts the bundled mock itself (through ``connect`` or ``local_mock``: a subprocess on a
free loopback port) and stops it before it ends.

Metadata (``tools/notebooks.py normalise``): every committed notebook already stores what
JupyterLab writes when its kernel starts, so none opens as modified (a refresh that skipped the
normalisation is caught here, without a browser; tests/test_browser.py checks the real UI).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat
import pytest
import requests

from paradigm_kit.settings import DEFAULT_BASE_URL, DEFAULT_MODEL
from paradigm_kit.workshop import Connection, connect, local_mock, versions
from tools import notebooks as notebook_tool

ROOT = Path(__file__).resolve().parent.parent
COMMITTED_NOTEBOOKS = notebook_tool.every_notebook()

SECRET_KEY = "sk-test-0123456789abcdef-never-shown"
GREETING = {"role": "user", "content": "Say hello to Alice."}


def post_chat(connection: Connection, headers: dict[str, str] | None = None) -> requests.Response:
    payload = {"model": connection.model, "messages": [GREETING], "max_tokens": 20}
    return requests.post(
        connection.chat_url, headers=headers or connection.headers(), json=payload, timeout=10
    )


@pytest.fixture
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PARADIGM_API_KEY", raising=False)
    monkeypatch.delenv("PARADIGM_BASE_URL", raising=False)


@pytest.fixture
def real_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARADIGM_API_KEY", SECRET_KEY)
    monkeypatch.delenv("PARADIGM_BASE_URL", raising=False)


def test_connect_without_key_starts_a_mock_that_answers(no_key, capsys) -> None:
    """No PARADIGM_API_KEY: connect() starts the bundled mock, says so, and it answers chats."""
    connection = connect(latency_s=0)
    try:
        response = post_chat(connection)
    finally:
        connection.close()
    printed = capsys.readouterr().out
    assert connection.using_mock
    assert response.status_code == 200
    assert response.json()["object"] == "chat.completion"
    assert "bundled mock" in printed
    assert connection.base_url.split("//")[1].split("/")[0] not in printed  # no host:port


def test_connect_without_key_ignores_the_real_url(no_key, monkeypatch) -> None:
    """No key: a PARADIGM_BASE_URL or base_url parameter does not stop the mock from starting."""
    monkeypatch.setenv("PARADIGM_BASE_URL", DEFAULT_BASE_URL)
    connection = connect(base_url=DEFAULT_BASE_URL, latency_s=0)
    connection.close()
    assert connection.using_mock
    assert connection.base_url.startswith("http://127.0.0.1:")


def test_connect_close_stops_the_mock(no_key) -> None:
    """Connection.close() stops the mock subprocess connect() started."""
    connection = connect(latency_s=0)
    connection.close()
    with pytest.raises(requests.ConnectionError):
        post_chat(connection)


def test_connect_with_key_uses_the_real_api_by_default(real_key, capsys) -> None:
    """Key set, no URL: the real service's URL, no mock started, the key in the bearer header."""
    connection = connect(latency_s=0)
    assert connection.base_url == DEFAULT_BASE_URL
    assert connection.chat_url == f"{DEFAULT_BASE_URL}/chat/completions"
    assert connection.model == DEFAULT_MODEL
    assert not connection.using_mock
    assert connection.mock is None
    assert connection.headers()["Authorization"] == f"Bearer {SECRET_KEY}"
    assert SECRET_KEY not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("env_url", "parameter_url", "expected"),
    [
        pytest.param(
            "https://private.example/api/v2/", None, "https://private.example/api/v2", id="env-url"
        ),
        pytest.param(
            "https://private.example/api/v2",
            "https://other.example/api/v2",
            "https://other.example/api/v2",
            id="parameter-overrides-env",
        ),
        pytest.param(
            None,
            "https://other.example/api/v2/",
            "https://other.example/api/v2",
            id="parameter-only",
        ),
    ],
)
def test_connect_with_key_picks_the_url(
    real_key, monkeypatch, env_url, parameter_url, expected
) -> None:
    """Key set: the base_url parameter wins over PARADIGM_BASE_URL, which wins over the default."""
    if env_url:
        monkeypatch.setenv("PARADIGM_BASE_URL", env_url)
    assert connect(base_url=parameter_url).base_url == expected


def test_connect_prints_no_credentials_of_the_url(real_key, capsys) -> None:
    """The line connect() prints hides a user:password@ part of the URL, and never shows the key."""
    connect(base_url="https://user:hunter2-password@private.example/api/v2")
    printed = capsys.readouterr().out
    assert "hunter2-password" not in printed
    assert "private.example/api/v2" in printed
    assert SECRET_KEY not in printed


def test_connection_repr_hides_the_key(real_key) -> None:
    """repr() of a Connection (what a cell displays, what a traceback shows) never holds the key."""
    connection = connect()
    assert SECRET_KEY not in repr(connection)
    assert SECRET_KEY not in str(connection)
    assert "base_url=" in repr(connection)


def test_local_mock_starts_even_when_a_key_is_set(real_key) -> None:
    """local_mock() serves on loopback whatever the environment, and stops when the block ends."""
    with local_mock(latency_s=0) as connection:
        response = post_chat(connection)
    assert connection.using_mock
    assert connection.api_key != SECRET_KEY
    assert response.status_code == 200
    with pytest.raises(requests.ConnectionError):
        post_chat(connection)


def test_local_mock_with_api_key_accepts_only_that_key(no_key) -> None:
    """local_mock(api_key=K): the connection sends K (200), any other key gets an OpenAI-shaped 401."""
    with local_mock(latency_s=0, api_key="the-right-key") as connection:
        accepted = post_chat(connection)
        wrong_headers = dict(connection.headers(), Authorization="Bearer the-wrong-key")
        refused = post_chat(connection, headers=wrong_headers)
    assert accepted.status_code == 200
    assert refused.status_code == 401
    assert set(refused.json()["error"]) >= {"message", "type", "code"}


def test_versions_names_python_and_each_library() -> None:
    """versions() has one line each for Python and the lessons' libraries, and displays as text."""
    banner = versions()
    names = [line.split()[0] for line in banner.splitlines()]
    assert names == ["Python", "aiohttp", "requests", "tqdm", "matplotlib", "paradigm-kit"]
    assert repr(banner) == str(banner)


def stored_metadata(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))["metadata"]


@pytest.mark.parametrize("path", COMMITTED_NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_metadata_is_what_jupyterlab_writes(path: Path) -> None:
    """kernelspec and language_info as JupyterLab rewrites them on kernel start: not "modified"."""
    metadata = stored_metadata(path)
    stored_version = metadata.get("language_info", {}).get("version")
    assert metadata.get("kernelspec") == notebook_tool.KERNELSPEC, (
        "run tools/notebooks.py normalise"
    )
    assert metadata.get("language_info") == notebook_tool.language_info(stored_version), (
        "run tools/notebooks.py normalise"
    )


def test_notebook_metadata_has_one_python_version() -> None:
    """Every notebook stores the same kernel Python (a refresh on another Python is caught)."""
    versions_by_name = {
        path.name: stored_metadata(path)["language_info"]["version"] for path in COMMITTED_NOTEBOOKS
    }
    assert len(set(versions_by_name.values())) == 1, versions_by_name


def test_notebook_language_info_is_ipykernels() -> None:
    """The normalised language_info is exactly what this Python's ipykernel reports."""
    from ipykernel.ipkernel import IPythonKernel

    assert notebook_tool.language_info() == IPythonKernel.language_info


def test_notebook_kernelspec_is_the_one_make_installs() -> None:
    """KERNELSPEC's display name is the one `make venv` gives the kernel it installs."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    installed = re.search(r'ipykernel install .*--display-name "([^"]+)"', makefile)
    assert installed, "no `ipykernel install --display-name` line in the Makefile"
    assert notebook_tool.KERNELSPEC["display_name"] == installed.group(1)


def test_notebook_tool_normalise_rewrites_only_the_metadata(tmp_path: Path, capsys) -> None:
    """`normalise` fixes kernelspec/language_info, keeps cells and other metadata, runs nothing."""
    original = json.loads(COMMITTED_NOTEBOOKS[0].read_text(encoding="utf-8"))
    stale = json.loads(json.dumps(original))
    stale["metadata"]["kernelspec"]["display_name"] = "Python 3"
    stale["metadata"]["language_info"]["version"] = "3.0.0"
    stale["metadata"]["tags_kept"] = True
    path = tmp_path / "stale.ipynb"
    path.write_text(json.dumps(stale), encoding="utf-8")

    assert notebook_tool.main(["normalise", str(path)]) == 0
    again = notebook_tool.main(["normalise", str(path)])

    written = json.loads(path.read_text(encoding="utf-8"))
    assert again == 0
    assert written["cells"] == original["cells"]
    assert written["metadata"]["kernelspec"] == notebook_tool.KERNELSPEC
    assert written["metadata"]["language_info"]["version"] == sys.version.split()[0]
    assert written["metadata"]["tags_kept"] is True
    assert capsys.readouterr().out.splitlines()[-1].endswith("already normalised")


def test_notebook_tool_execute_in_place_writes_normalised_metadata(tmp_path: Path) -> None:
    """What `refresh` writes (one tiny notebook run in a real kernel) has normalised metadata."""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")])
    notebook.metadata["kernelspec"] = {
        "display_name": "Python 3",
        "language": "python",
        "name": "python3",
    }
    path = tmp_path / "tiny.ipynb"
    nbformat.write(notebook, path)

    notebook_tool.execute_in_place(path)

    written = nbformat.read(path, as_version=4)
    assert written.cells[0].outputs[0].text == "42\n"
    assert written.metadata.kernelspec == notebook_tool.KERNELSPEC
    assert written.metadata.language_info == notebook_tool.language_info()


def test_notebook_tool_refuses_a_path_that_is_not_a_notebook(tmp_path: Path, capsys) -> None:
    """A missing or non-.ipynb path: one line on stderr, exit 2, nothing written."""
    missing = tmp_path / "missing.ipynb"
    assert notebook_tool.main(["normalise", str(missing)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "not a notebook file" in error
    assert str(missing) in error


def test_lesson05_module_holds_notebook_05s_definitions_word_for_word():
    """paradigm_kit/workshop/lesson05.py, which 05b imports, is notebook 05's code, not a variant."""
    import ast

    module_path = ROOT / "paradigm_kit" / "workshop" / "lesson05.py"
    module_source = module_path.read_text(encoding="utf-8")
    notebook = nbformat.read(ROOT / "notebooks" / "05_production_batches.ipynb", as_version=4)
    notebook_code = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    definitions = [
        node
        for node in ast.parse(module_source).body
        if not isinstance(node, (ast.Import, ast.ImportFrom, ast.Expr))
    ]
    assert len(definitions) >= 10
    missing = [
        ast.get_source_segment(module_source, node).splitlines()[0]
        for node in definitions
        if ast.get_source_segment(module_source, node) not in notebook_code
    ]
    assert not missing, f"not in notebook 05 as written in lesson05.py: {missing}"


LESSONS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _headings(notebook) -> list[str]:
    return [
        line
        for cell in notebook.cells
        if cell.cell_type == "markdown"
        for line in cell.source.splitlines()
        if line.startswith("## ")
    ]


@pytest.mark.parametrize("index", range(len(LESSONS)), ids=[path.stem for path in LESSONS])
def test_every_lesson_has_the_same_skeleton(index):
    """Previous/Next under the title and at the end, N.0 Setup, the recap, then the exercises."""
    path = LESSONS[index]
    notebook = nbformat.read(path, as_version=4)
    nav = notebook.cells[0].source.splitlines()[2]
    if index > 0:
        assert nav.startswith(f"**Previous:** [{LESSONS[index - 1].stem[:3].rstrip('_')}"), nav
        assert f"]({LESSONS[index - 1].name})" in nav
    if index + 1 < len(LESSONS):
        assert "**Next:** [" in nav and f"]({LESSONS[index + 1].name})" in nav, nav
        assert notebook.cells[-1].source == nav[nav.index("**Next:**") :] + "."
    else:
        assert "**Next:** the [README" in nav and notebook.cells[-1].source.startswith(
            "**Back to**"
        )
    headings = _headings(notebook)
    number = path.stem.split("_")[0].lstrip("0")
    assert f"## {number}.0 Setup" in headings
    assert headings.count("## Exercises with self-checks") == 1
    assert headings.index("## Recap") < headings.index("## Exercises with self-checks")
    # one objective per exercise: each exercise is named by the objective it practises
    objectives = notebook.cells[0].source
    exercises = re.findall(
        r"^### Exercise (\w+\.[A-Z]) ", "\n".join(c.source for c in notebook.cells), re.M
    )
    assert exercises and all(f"exercise {name})" in objectives for name in exercises), exercises
    # its solutions notebook leads back to it, then on to the next lesson's exercises
    solutions = nbformat.read(path.parent / "solutions" / f"{path.stem}_solutions.ipynb", 4)
    last = solutions.cells[-1].source.split("\n\n")[-1]
    assert last.startswith(f"**Back to** [{path.name}](../{path.name}).") and "**Next:**" in last
