"""The README's notebook table gives each lesson's read time as ``tools/readtime.py`` computes it."""

from __future__ import annotations

import re

from tools import readtime

ROW = re.compile(
    r"^\| \[(?P<stem>\w+)\]\(notebooks/\w+\.ipynb\) \|.*\| (?P<read>\d+) min / \d+ s \|"
)


def readme_read_times() -> dict[str, int]:
    text = (readtime.ROOT / "README.md").read_text(encoding="utf-8")
    return {m["stem"]: int(m["read"]) for m in map(ROW.match, text.splitlines()) if m}


def test_readme_table_lists_every_lesson_with_its_computed_read_time():
    computed = {path.stem: round(readtime.read_time(path).minutes) for path in readtime.lessons()}
    assert readme_read_times() == computed


def test_read_time_counts_prose_code_and_exercises(tmp_path):
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_markdown_cell("one two three\n\n### Exercise 9.A · a title"),
        nbformat.v4.new_code_cell("x = 1\nprint(x)"),
    ]
    path = tmp_path / "lesson.ipynb"
    nbformat.write(notebook, path)
    estimate = readtime.read_time(path)
    assert (estimate.prose_words, estimate.code_words, estimate.exercises) == (9, 4, 1)
    assert estimate.minutes == 9 / 150 + 4 / 100 + 5
