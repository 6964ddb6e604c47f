"""JSONL in and out: default ids, malformed lines, torn tails, resume state, merges, sorting."""

from __future__ import annotations

import asyncio
import json

from paradigm_kit.batch.jsonl import (
    OutputWriter,
    count_lines,
    drop_torn_tail,
    merge_retried,
    read_requests,
    scan_output,
    side_path,
    sort_output,
)


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_read_requests_defaults_id_to_line_number_and_fills_the_model(tmp_path):
    """Without an id a request is its 1-based line number (blank lines count); model defaults."""
    path = write_lines(
        tmp_path / "in.jsonl",
        [
            json.dumps({"messages": [], "model": "m1"}),
            "",
            json.dumps({"id": "custom", "messages": []}),
        ],
    )
    items = list(read_requests(path, default_model="alfred-4.2"))
    assert [(line, request_id) for line, request_id, _, _ in items] == [(1, 1), (3, "custom")]
    assert items[0][2] == {"messages": [], "model": "m1"}
    assert items[1][2] == {"messages": [], "model": "alfred-4.2"}  # the id is not sent


def test_read_requests_reports_a_malformed_line_and_goes_on(tmp_path):
    """A line that is not a JSON object becomes a problem with its line number; the rest reads."""
    path = write_lines(
        tmp_path / "in.jsonl", ['{"messages": []}', "{not json", "[1, 2]", '{"messages": []}']
    )
    items = list(read_requests(path, default_model="m"))
    problems = {line: problem for line, _, _, problem in items if problem}
    assert set(problems) == {2, 3}
    assert problems[2].startswith("line 2:")
    assert [line for line, _, body, _ in items if body is not None] == [1, 4]


def test_read_requests_skips_done_ids_and_keeps_only_asked_ones(tmp_path):
    """skip_ids drops requests already done; only_ids keeps just the ones to retry."""
    path = write_lines(
        tmp_path / "in.jsonl", [json.dumps({"id": i, "messages": []}) for i in range(5)]
    )
    assert [i for _, i, _, _ in read_requests(path, default_model="m", skip_ids={1, 3})] == [
        0,
        2,
        4,
    ]
    assert [i for _, i, _, _ in read_requests(path, default_model="m", only_ids={3})] == [3]


def test_read_requests_accepts_an_iterable_without_mutating_it():
    """Notebooks pass dicts: ids default to their 1-based position; the caller's dicts stay intact."""
    requests = [{"id": "a", "messages": []}, {"messages": []}]
    items = list(read_requests(requests, default_model="m"))
    assert [request_id for _, request_id, _, _ in items] == ["a", 2]
    assert requests[0] == {"id": "a", "messages": []}


def test_drop_torn_tail_truncates_after_the_last_newline(tmp_path):
    """A kill mid-write leaves a partial last line: it is dropped, whole lines are kept."""
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"id": 1}\n{"id": 2}\n{"id": 3, "resp')
    assert drop_torn_tail(path) == len(b'{"id": 3, "resp')
    assert path.read_bytes() == b'{"id": 1}\n{"id": 2}\n'
    assert drop_torn_tail(path) == 0


def test_scan_output_collects_done_and_failed_ids_and_repairs(tmp_path):
    """Done ids include errors; a corrupt line is dropped so a rerun leaves none behind."""
    path = tmp_path / "out.jsonl"
    path.write_bytes(
        b'{"id": 1, "response": {}}\n{"id": "b", "error": {"status": 400}}\ngarbage\n{"id": 4, "resp'
    )
    state = scan_output(path)
    assert state.done_ids == {1, "b"}
    assert state.failed_ids == {"b"}
    assert state.corrupt_lines == 1 and state.torn_bytes > 0
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == [1, "b"]


def test_merge_retried_replaces_each_retried_line_atomically(tmp_path):
    """--retry-failed results replace the old error lines: still one line per id."""
    path = write_lines(
        tmp_path / "out.jsonl",
        [
            '{"id": 1, "response": {}}',
            '{"id": 2, "error": {"status": 500}}',
            '{"id": 3, "error": {}}',
        ],
    )
    write_lines(
        tmp_path / side_path(path).rsplit("/", 1)[1], ['{"id": 2, "response": {"ok": true}}']
    )
    assert merge_retried(path) == 1
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(r["id"] for r in records) == [1, 2, 3]
    assert next(r for r in records if r["id"] == 2)["response"] == {"ok": True}
    assert not (tmp_path / "out.jsonl.retrying").exists()


def test_sort_output_puts_lines_in_input_order(tmp_path):
    """Completion order in, input order (by "line") out."""
    path = write_lines(
        tmp_path / "out.jsonl", [json.dumps({"id": f"r{n}", "line": n}) for n in (3, 1, 2)]
    )
    sort_output(path)
    assert [json.loads(line)["line"] for line in path.read_text().splitlines()] == [1, 2, 3]


def test_output_writer_writes_whole_lines_in_batches(tmp_path):
    """Lines are buffered and written whole; close() writes the rest."""
    path = tmp_path / "out.jsonl"

    async def write() -> None:
        writer = OutputWriter(path, flush_lines=3, flush_interval_s=60)
        for n in range(4):
            writer.write(b'{"id": %d}\n' % n)
        assert count_lines(path) == 3  # the first batch is out, the fourth line still buffered
        writer.close()

    asyncio.run(write())
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == [0, 1, 2, 3]


def test_output_writer_flushes_on_a_timer(tmp_path):
    """A lone line does not wait for more lines: the timer writes it within its interval."""
    path = tmp_path / "out.jsonl"

    async def write() -> int:
        writer = OutputWriter(path, flush_lines=1000, flush_interval_s=0.01)
        writer.write(b'{"id": 1}\n')
        await asyncio.sleep(0.2)
        lines = count_lines(path)
        writer.close()
        return lines

    assert asyncio.run(write()) == 1
