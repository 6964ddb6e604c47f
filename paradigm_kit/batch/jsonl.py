"""JSON lines in and out: reading requests, writing results whole, resuming, sorting.

Input: one chat request per line (``messages``, ``model`` and any other request fields) with an
optional ``id``; the default id is the 1-based line number (blank lines count as lines, and are
skipped). ``read_requests`` yields plain tuples ``(line, id, body, problem)`` one at a time, so
the input is never held in memory; a line that is not a JSON object becomes a tuple with a
``problem`` instead of a body, and the runner writes it as an error line: one bad line never
stops a batch.

Output: one line per request, ``{"id", "line", "attempts", "latency_s", "response"}`` or the
same with ``"error": {"status", "message", ...}``. ``OutputWriter`` (``lines.LineWriter``, the
kit's one buffered writer) appends lines in batches: a line is buffered, and the buffer is written (no fsync) when it holds ``flush_lines`` lines or
``flush_interval_s`` after its first line, by a timer on the event loop rather than a polling
task. Each line is written whole with its newline; a kill can only tear the very last line.

Resume: ``scan_output`` collects the ids already present, and which of them are errors, reading
a leftover ``--retry-failed`` side file as if it were merged (so what to retry is chosen from
what a merge would leave). Only those ids are kept in memory (a set), never the responses. A
record is a JSON object with an ``id`` and a ``response`` or ``error`` (``parse_record``); the
only line a repair ever drops is a torn *last* line (no newline: what a kill leaves). Any other
line that is not a record raises ``OutputFileError`` (with its number) before anything is
changed, so a file that is not an output is never rewritten. ``--retry-failed`` writes the new
results to a side file and ``merge_retried`` rewrites the output atomically (a temporary file
beside it, then ``os.replace``; repeating a merge is harmless), so at any moment each id has at
most one line. ``sort_output`` puts a finished output in input order by each record's ``line``,
keeping only (line, offset) pairs in memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..lines import LineWriter as OutputWriter

__all__ = [
    "OutputFileError",
    "OutputState",
    "OutputWriter",
    "count_lines",
    "drop_torn_tail",
    "empty_output",
    "holds_no_whole_line",
    "merge_retried",
    "parse_record",
    "read_requests",
    "scan_output",
    "side_path",
    "sort_output",
]

RequestTuple = tuple[int, Any, "dict | None", "str | None"]


def _checked(line_number: int, record: Any, default_model: str) -> RequestTuple:
    """One parsed input record -> (line, id, body, problem)."""
    if not isinstance(record, dict):
        return line_number, line_number, None, f"line {line_number}: expected a JSON object"
    request_id = record.pop("id", line_number)
    if not isinstance(request_id, (str, int)) or isinstance(request_id, bool):
        return (
            line_number,
            line_number,
            None,
            f"line {line_number}: id must be a string or an integer, got {request_id!r}",
        )
    if "model" not in record:
        record["model"] = default_model
    return line_number, request_id, record, None


def read_requests(
    source: str | os.PathLike[str] | Iterable[Mapping[str, Any]],
    *,
    default_model: str,
    skip_ids: set | frozenset = frozenset(),
    only_ids: set | None = None,
) -> Iterator[RequestTuple]:
    """Yield ``(line, id, body, problem)`` for each request of a JSONL path or an iterable of
    dicts, skipping ids in ``skip_ids`` (and, if given, ids not in ``only_ids``)."""
    if isinstance(source, (str, os.PathLike)):
        records = _parse_lines(source)
    else:
        records = (
            (n, dict(r) if isinstance(r, Mapping) else r, None) for n, r in enumerate(source, 1)
        )
    for line_number, record, problem in records:
        if problem is not None:
            item: RequestTuple = (line_number, line_number, None, problem)
        else:
            item = _checked(line_number, record, default_model)
        request_id = item[1]
        if request_id in skip_ids or (only_ids is not None and request_id not in only_ids):
            continue
        yield item


def _parse_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, Any, str | None]]:
    with open(path, "rb") as lines:
        for line_number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                yield line_number, json.loads(line), None
            except ValueError as error:  # json.JSONDecodeError and UnicodeDecodeError
                yield line_number, None, f"line {line_number}: not valid JSON ({error})"


def count_lines(path: str | os.PathLike[str]) -> int:
    """Number of lines in a file, counted in 1 MiB chunks (for the progress bar's total)."""
    count, last = 0, b"\n"
    with open(path, "rb") as data:
        while chunk := data.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


def drop_torn_tail(path: str | os.PathLike[str]) -> int:
    """Truncate ``path`` after its last newline; return how many bytes were dropped."""
    with open(path, "r+b") as data:
        size = data.seek(0, os.SEEK_END)
        keep = _end_of_last_newline(data, size)
        if keep < size:
            data.truncate(keep)
        return size - keep


def _end_of_last_newline(data: Any, size: int) -> int:
    """The offset just after the last newline of an open binary file (0 if it has none)."""
    position = size
    while position > 0:
        start = max(0, position - 65536)
        data.seek(start)
        newline = data.read(position - start).rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        position = start
    return 0


class OutputFileError(ValueError):
    """An output (or side) file holds a line that is not a runner record: the message says
    which, and what to do. Nothing was changed."""


def parse_record(line: bytes) -> tuple[Any, bool] | None:
    """``(id, is_error)`` if ``line`` is a runner record, else ``None``.

    A record is a JSON object with an ``id`` and a ``response`` or an ``error``: an input line
    (``id`` + ``messages``) or a CSV row is not one, so such a file is never taken for an output.
    """
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or "id" not in record:
        return None
    if "response" not in record and "error" not in record:
        return None
    return record["id"], record.get("error") is not None


def _records(path: str | os.PathLike[str]) -> Iterator[tuple[Any, bool]]:
    """``(id, is_error)`` for each whole line of ``path``; a torn last line (no newline) is
    ignored, any other line that is not a record raises ``OutputFileError`` with its number."""
    with open(path, "rb") as lines:
        for number, line in enumerate(lines, 1):
            if not line.endswith(b"\n"):
                return  # the torn last line a kill leaves: dropped on repair, never read
            parsed = parse_record(line)
            if parsed is None:
                if number == 1:
                    raise OutputFileError(
                        f"{os.fspath(path)} exists and does not hold runner records (its first "
                        "line is not one): choose another output file, or pass --overwrite"
                    )
                raise OutputFileError(
                    f"line {number} of {os.fspath(path)} is not a runner record: remove or fix "
                    "that line (nothing was changed), then run again"
                )
            yield parsed


@dataclass
class OutputState:
    """What an existing output already holds (with a leftover ``--retry-failed`` side file
    counted as merged): ids done, ids whose line is an error, bytes of a torn last line."""

    done_ids: set = field(default_factory=set)
    failed_ids: set = field(default_factory=set)
    torn_bytes: int = 0

    @property
    def succeeded(self) -> int:
        return len(self.done_ids) - len(self.failed_ids)


def scan_output(path: str | os.PathLike[str], *, repair: bool = True) -> OutputState:
    """Ids already in an output file, read as if a leftover side file were merged (so what to
    retry is chosen from the same view a merge would leave). Raises ``OutputFileError`` on a
    line that is not a record. With ``repair``, merge the side file and drop a torn last line:
    the only lines a repair ever removes."""
    state = OutputState()
    if repair and os.path.exists(side_path(path)):
        merge_retried(path)
    if not os.path.exists(path):
        return state
    for request_id, is_error in _records(path):
        state.done_ids.add(request_id)
        if is_error:
            state.failed_ids.add(request_id)
    side = side_path(path)
    if os.path.exists(side):  # read-only scan of an unmerged side file: its lines win
        for request_id, is_error in _records(side):
            state.done_ids.add(request_id)
            (state.failed_ids.add if is_error else state.failed_ids.discard)(request_id)
    if repair:
        state.torn_bytes = drop_torn_tail(path)
    return state


def holds_no_whole_line(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` is missing, empty, or holds only a torn line (a kill in the first
    second): such an output resumes like an empty one."""
    if not os.path.exists(path):
        return True
    with open(path, "rb") as data:
        return _end_of_last_newline(data, data.seek(0, os.SEEK_END)) == 0


def _rewrite_filtered(path: str | os.PathLike[str], keep: Any, extra_path: Any = None) -> None:
    """Atomically rewrite ``path`` with its lines for which ``keep(line)``, then the lines of
    ``extra_path`` (if any): a temporary file beside it, then ``os.replace``."""
    temporary = _temporary_beside(path)
    try:
        with open(temporary, "wb") as out:
            if os.path.exists(path):
                with open(path, "rb") as lines:
                    out.writelines(line for line in lines if keep(line))
            if extra_path is not None:
                with open(extra_path, "rb") as lines:
                    out.writelines(line for line in lines if line.endswith(b"\n"))
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise


def _temporary_beside(path: str | os.PathLike[str]) -> str:
    """A new, unique file name in ``path``'s directory (so ``os.replace`` stays atomic and
    never clobbers another file, such as an input named like ``out.jsonl.tmp``)."""
    directory, name = os.path.split(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    os.close(handle)
    # mkstemp makes it private (0600): give it the mode the file it replaces had
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    os.chmod(temporary, mode)
    return temporary


def empty_output(path: str | os.PathLike[str]) -> None:
    """``--overwrite``: replace ``path`` by an empty file atomically, forget any side file."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(side_path(path))
    os.replace(_temporary_beside(path), path)


def side_path(output_path: str | os.PathLike[str]) -> str:
    """Where ``--retry-failed`` writes new results before merging them into the output."""
    return f"{os.fspath(output_path)}.retrying"


def merge_retried(output_path: str | os.PathLike[str]) -> int:
    """Merge a ``--retry-failed`` side file into the output: each id it holds replaces that id's
    old line. Atomic, and safe to repeat: a kill between the replace and the side file's removal
    only makes the next merge do the same again. Returns how many lines were merged."""
    side = side_path(output_path)
    if not os.path.exists(side):
        return 0
    redone = {request_id for request_id, _ in _records(side)}

    def keep(line: bytes) -> bool:
        parsed = parse_record(line) if line.endswith(b"\n") else None  # never a torn tail
        return parsed is not None and parsed[0] not in redone

    if os.path.exists(output_path):
        list(_records(output_path))  # refuse before rewriting if a line is not a record
    _rewrite_filtered(output_path, keep=keep, extra_path=side)
    os.remove(side)
    return len(redone)


def sort_output(
    path: str | os.PathLike[str], destination: str | os.PathLike[str] | None = None
) -> None:
    """Write ``path``'s lines in input order (by each record's ``line``) to ``destination``
    (default: ``path`` itself, replaced atomically). Memory: one (line, offset) pair per line."""
    positions: list[tuple[int, int]] = []
    with open(path, "rb") as data:
        offset = 0
        for line in data:
            try:
                order = json.loads(line).get("line", 0)
            except (ValueError, AttributeError):
                order = 0
            positions.append((order if isinstance(order, int) else 0, offset))
            offset += len(line)
        positions.sort()
        target = os.fspath(destination or path)
        temporary = _temporary_beside(target)
        with open(temporary, "wb") as out:
            for _, start in positions:
                data.seek(start)
                out.write(data.readline())
    os.replace(temporary, target)
