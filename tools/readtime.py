"""Read-time estimates of the lessons, as the README's notebook table gives them.

The rule: prose at 150 words a minute, code at 100, plus 5 minutes an exercise (a heading
``### Exercise N.X``). Outputs are not counted. Run ``python tools/readtime.py`` to print each
lesson's estimate; ``tests/test_readtime.py`` checks the README's table against it.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
PROSE_WORDS_PER_MIN = 150
CODE_WORDS_PER_MIN = 100
MIN_PER_EXERCISE = 5
EXERCISE_HEADING = re.compile(r"^#+\s*Exercise\s+\w+\.[A-Z]\b", re.MULTILINE)


@dataclass(frozen=True)
class ReadTime:
    prose_words: int
    code_words: int
    exercises: int

    @property
    def minutes(self) -> float:
        return (
            self.prose_words / PROSE_WORDS_PER_MIN
            + self.code_words / CODE_WORDS_PER_MIN
            + self.exercises * MIN_PER_EXERCISE
        )


def read_time(path: Path) -> ReadTime:
    notebook = nbformat.read(path, as_version=4)
    prose = [cell.source for cell in notebook.cells if cell.cell_type == "markdown"]
    code = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    return ReadTime(
        prose_words=sum(len(text.split()) for text in prose),
        code_words=sum(len(text.split()) for text in code),
        exercises=sum(len(EXERCISE_HEADING.findall(text)) for text in prose),
    )


def lessons() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("*.ipynb"))


def main() -> int:
    for path in lessons():
        estimate = read_time(path)
        print(
            f"{path.stem:<36} {estimate.minutes:4.0f} min  (prose {estimate.prose_words} words, "
            f"code {estimate.code_words}, {estimate.exercises} exercises)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
