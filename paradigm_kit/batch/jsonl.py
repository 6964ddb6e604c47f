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

Resume: ``scan_output`` first drops a torn last line (truncating the file after its last
newline), then collects the ids already present, and which of them are errors. Only those ids
are kept in memory (a set), never the responses. ``--retry-failed`` writes the new results to a
side file and ``merge_retried`` rewrites the output atomically (a temporary file, then
``os.replace``), so at any moment each id has at most one line. ``sort_output`` puts a finished
output in input order by each record's ``line``, keeping only (line, offset) pairs in memory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..lines import LineWriter as OutputWriter

__all__ = [
    "OutputState",
    "OutputWriter",
    "count_lines",
    "drop_torn_tail",
    "merge_retried",
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
        position = size
        while position > 0:
            start = max(0, position - 65536)
            data.seek(start)
            chunk = data.read(position - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            position = start
        else:
            keep = 0
        if keep < size:
            data.truncate(keep)
        return size - keep


@dataclass
class OutputState:
    """What an existing output already holds: ids done, ids that are errors, lines dropped."""

    done_ids: set = field(default_factory=set)
    failed_ids: set = field(default_factory=set)
    torn_bytes: int = 0
    corrupt_lines: int = 0

    @property
    def succeeded(self) -> int:
        return len(self.done_ids) - len(self.failed_ids)


def _id_and_error(line: bytes) -> tuple[Any, bool] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or "id" not in record:
        return None
    return record["id"], bool(record.get("error"))


def scan_output(path: str | os.PathLike[str], *, repair: bool = True) -> OutputState:
    """Ids already in an output file. With ``repair``, drop a torn last line and rewrite the
    file without any other unreadable line, so a rerun leaves no corrupt line behind."""
    state = OutputState()
    if not os.path.exists(path):
        return state
    if repair:
        state.torn_bytes = drop_torn_tail(path)
    with open(path, "rb") as lines:
        for line in lines:
            parsed = _id_and_error(line)
            if parsed is None:
                state.corrupt_lines += 1
                continue
            request_id, is_error = parsed
            state.done_ids.add(request_id)
            if is_error:
                state.failed_ids.add(request_id)
    if repair and state.corrupt_lines:
        _rewrite_filtered(path, keep=lambda line: _id_and_error(line) is not None)
    return state


def _rewrite_filtered(path: str | os.PathLike[str], keep: Any, extra_path: Any = None) -> None:
    """Atomically rewrite ``path`` with its lines for which ``keep(line)``, then the lines of
    ``extra_path`` (if any): a temporary file beside it, then ``os.replace``."""
    temporary = f"{os.fspath(path)}.tmp"
    with open(temporary, "wb") as out:
        if os.path.exists(path):
            with open(path, "rb") as lines:
                out.writelines(line for line in lines if keep(line))
        if extra_path is not None:
            with open(extra_path, "rb") as lines:
                out.writelines(lines)
    os.replace(temporary, path)


def side_path(output_path: str | os.PathLike[str]) -> str:
    """Where ``--retry-failed`` writes new results before merging them into the output."""
    return f"{os.fspath(output_path)}.retrying"


def merge_retried(output_path: str | os.PathLike[str]) -> int:
    """Merge a ``--retry-failed`` side file into the output: each id it holds replaces that id's
    old line. Atomic; the side file is removed. Returns how many lines were merged."""
    side = side_path(output_path)
    if not os.path.exists(side):
        return 0
    drop_torn_tail(side)
    redone: set = set()
    with open(side, "rb") as lines:
        for line in lines:
            parsed = _id_and_error(line)
            if parsed is not None:
                redone.add(parsed[0])

    def keep(line: bytes) -> bool:
        parsed = _id_and_error(line)
        return parsed is not None and parsed[0] not in redone

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
        temporary = f"{target}.tmp"
        with open(temporary, "wb") as out:
            for _, start in positions:
                data.seek(start)
                out.write(data.readline())
    os.replace(temporary, target)
