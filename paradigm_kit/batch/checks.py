"""What ``run_batch`` refuses before it sends or writes anything, each as one line for the user.

Every check here raises ``BatchConfigError`` (the CLI prints its message and exits 2) and
changes nothing on disk. They run before the preflight, in the order a user would fix them:

* numbers: every limit and timeout positive and finite (``--timeout 0`` or
  ``--max-requests-per-minute 0`` would silently mean "none"; "no limit" is the flag left out);
* the key and the URL: a key with a control character (a pasted newline) is refused without
  echoing any of it; the URL must be ``http(s)://host[:port]`` with a valid port;
* the files: the output is compared with the input as *files* (``os.path.samefile``: another
  spelling, a hard link or a symlink is the same file), and is refused when it is the input
  (no flag overrides that), a directory, in a missing or read-only directory, or an existing
  file that does not hold runner records (unless ``overwrite``). The timeline gets the same
  checks against both;
* the input (``survey``): one pass that refuses duplicate ids (an explicit id equal to another
  line's default id, its line number, is a duplicate too) and a request bigger than a whole
  minute's token budget (it could never be admitted), and collects what the preflight and the
  progress bar need: the models named, by line, and how many lines are left to send. Only a
  hash per id is kept during the pass, so memory stays small at 100k lines; the rare repeated
  hash is checked exactly in a second pass that collects the two line numbers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import yarl

from .jsonl import OutputFileError, holds_no_whole_line, scan_output
from .pacing import estimate_tokens

__all__ = [
    "BatchConfigError",
    "InputSurvey",
    "check_api_key",
    "check_base_url",
    "check_number",
    "check_paths",
    "survey",
]

#: At most this many line numbers are named per unknown model in a message.
LINES_NAMED = 5


class BatchConfigError(Exception):
    """The run cannot start (key, URL, model, input, files): the message is one line for the
    user, and nothing was sent or written."""


def check_number(name: str, value: float | None, *, minimum: float = 0.0, strict: bool = True):
    """Refuse ``value`` unless it is finite and above ``minimum`` (``>=`` when not ``strict``);
    ``None`` (the flag left out) passes."""
    if value is None:
        return
    try:
        finite = math.isfinite(value)
    except TypeError:
        raise BatchConfigError(f"{name} must be a number, got {value!r}") from None
    if not finite or value < minimum or (strict and value == minimum):
        relation = ">" if strict else ">="
        raise BatchConfigError(
            f"{name} must be a finite number {relation} {minimum:g}, got {value!r}"
            + (" (leave the option out for no limit)" if "minute" in name else "")
        )


def check_api_key(api_key: str) -> None:
    """Refuse a key holding a control character, without echoing any part of it."""
    if any(ord(character) < 32 or ord(character) == 127 for character in api_key):
        raise BatchConfigError(
            "PARADIGM_API_KEY contains a control character (a pasted newline?): set it again "
            "without it (the key is not shown)"
        )


def check_base_url(base_url: str) -> None:
    """Refuse a URL that aiohttp would choke on later with a traceback."""
    problem = None
    try:
        url = yarl.URL(base_url)
        _ = url.port  # an out-of-range or non-numeric port raises here
    except ValueError as error:
        problem = str(error)
    else:
        if url.scheme not in ("http", "https"):
            problem = "it must start with http:// or https://"
        elif not url.host or any(c.isspace() for c in base_url):
            problem = "it has no valid host"
        elif url.port == 0:
            problem = "port 0 is not a port a server listens on"
    if problem:
        raise BatchConfigError(
            f"PARADIGM_BASE_URL {base_url!r} is not a usable URL ({problem}): set it like "
            "http://127.0.0.1:8000/api/v2"
        )


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist: not the same file
        return False


def _check_writable(label: str, path: str) -> None:
    if os.path.isdir(path):
        raise BatchConfigError(f"the {label} {path} is a directory: give a file name")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise BatchConfigError(f"the {label}'s directory {directory} does not exist: create it")
    if not os.access(directory, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise BatchConfigError(f"cannot write the {label} {path}: choose a writable place")


def check_paths(
    input_path: str | None, output_path: str, timeline_path: str | None, *, overwrite: bool
) -> None:
    """Refuse an output or timeline that is the input, each other, or unwritable; refuse an
    existing output that holds something else than runner records unless ``overwrite``."""
    _check_writable("output file", output_path)
    if input_path is not None and _same_file(input_path, output_path):
        raise BatchConfigError(
            f"the output {output_path} is the input file {input_path}: give another output file"
        )
    if timeline_path is not None:
        _check_writable("timeline file", timeline_path)
        for other in (input_path, output_path):
            if other is not None and (_same_file(other, timeline_path) or other == timeline_path):
                raise BatchConfigError(
                    f"the timeline {timeline_path} is also {other}: give it a file of its own"
                )
    if not overwrite and not holds_no_whole_line(output_path):
        try:
            scan_output(output_path, repair=False)
        except OutputFileError as error:
            raise BatchConfigError(str(error)) from None


@dataclass
class InputSurvey:
    """What the input holds, from one pass: lines to send and the models they name."""

    to_send: int = 0
    already_done: int = 0  # lines whose id is already done in the output
    lines_by_model: dict[str, list[int]] = field(default_factory=dict)  # first LINES_NAMED each
    count_by_model: dict[str, int] = field(default_factory=dict)

    def lines_naming(self, models: Iterable[str]) -> str:
        """``'x' (lines 1, 21)``-style text for the given models."""
        parts = []
        for model in models:
            lines = ", ".join(map(str, self.lines_by_model[model]))
            more = self.count_by_model[model] - len(self.lines_by_model[model])
            parts.append(
                f"{model!r} (line{'s' if lines.count(',') or more else ''} {lines}"
                + (f" and {more} more" if more else "")
                + ")"
            )
        return "; ".join(parts)


def survey(
    records: Iterable[tuple], again: Any, *, skip_ids: set, max_tokens_per_minute: float | None
) -> InputSurvey:
    """One pass over ``records`` (``read_requests`` tuples of the whole input, nothing
    skipped); ``again()`` gives a fresh pass, used only if two ids may be equal."""
    result = InputSurvey()
    hashes: set[int] = set()
    repeated: set[int] = set()
    for line_number, request_id, body, _ in records:
        key = hash((type(request_id), request_id))
        if key in hashes:
            repeated.add(key)
        hashes.add(key)
        if request_id in skip_ids:
            result.already_done += 1
            continue
        result.to_send += 1
        if body is None:  # an invalid line: written as an error line, never sent
            continue
        model = body.get("model")
        if isinstance(model, str):
            result.count_by_model[model] = result.count_by_model.get(model, 0) + 1
            lines = result.lines_by_model.setdefault(model, [])
            if len(lines) < LINES_NAMED:
                lines.append(line_number)
        if max_tokens_per_minute is not None:
            tokens = estimate_tokens(body)
            if tokens > max_tokens_per_minute:
                raise BatchConfigError(
                    f"line {line_number} needs about {tokens} tokens, more than the whole "
                    f"--max-tokens-per-minute budget ({max_tokens_per_minute:g}): it could never "
                    "be sent; raise the limit or shorten the request"
                )
    if repeated:
        _refuse_duplicates(again(), repeated)
    return result


def _refuse_duplicates(records: Iterator[tuple], repeated: set[int]) -> None:
    first_line: dict[tuple, int] = {}
    for line_number, request_id, _, _ in records:
        key = (type(request_id), request_id)
        if hash(key) not in repeated:
            continue
        if key in first_line:
            raise BatchConfigError(
                f"id {request_id!r} appears twice, on lines {first_line[key]} and {line_number} "
                "(a line without an id has its line number as id): make the ids unique"
            )
        first_line[key] = line_number
