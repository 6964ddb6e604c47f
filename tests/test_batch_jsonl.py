"""JSONL in and out: default ids, malformed lines, torn tails, resume state, merges, sorting."""

from __future__ import annotations

import asyncio
import json

import pytest

from paradigm_kit.batch.jsonl import (
    OutputFileError,
    OutputWriter,
    count_lines,
    drop_torn_tail,
    holds_no_whole_line,
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


def test_scan_output_collects_done_and_failed_ids_and_drops_only_a_torn_tail(tmp_path):
    """Done ids include errors; the torn last line a kill leaves is the one line dropped."""
    path = tmp_path / "out.jsonl"
    path.write_bytes(
        b'{"id": 1, "response": {}}\n{"id": "b", "error": {"status": 400}}\n{"id": 4, "resp'
    )
    state = scan_output(path)
    assert state.done_ids == {1, "b"}
    assert state.failed_ids == {"b"}
    assert state.torn_bytes > 0
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == [1, "b"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(b"name,score\nann,3\n", "first line is not one", id="a-csv-file"),
        pytest.param(b'{"id": 1, "messages": []}\n', "first line is not one", id="an-input-file"),
        pytest.param(
            b'{"id": 1, "response": {}}\ngarbage\n{"id": 2, "response": {}}\n',
            "line 2 of",
            id="a-bad-line-in-the-middle",
        ),
    ],
)
def test_scan_output_never_deletes_a_line_that_is_not_a_record(tmp_path, content, message):
    """Anything but a torn last line that is not a record stops the scan; the file is intact."""
    path = tmp_path / "out.jsonl"
    path.write_bytes(content)
    with pytest.raises(OutputFileError, match=message):
        scan_output(path)
    assert path.read_bytes() == content


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b'{"id": 1, "resp', id="only-a-torn-line"),
    ],
)
def test_an_output_without_a_whole_line_resumes(tmp_path, content):
    """An empty output, or one holding only what a kill in the first second leaves."""
    path = tmp_path / "out.jsonl"
    path.write_bytes(content)
    assert holds_no_whole_line(path)
    assert scan_output(path).done_ids == set()
    assert path.read_bytes() == b""


def test_scan_output_reads_a_leftover_side_file_as_merged(tmp_path):
    """A kill during --retry-failed leaves a side file: its lines win, before and after merge."""
    path = write_lines(
        tmp_path / "out.jsonl",
        [
            '{"id": 1, "response": {}}',
            '{"id": 2, "error": {"status": 500}}',
            '{"id": 3, "error": {}}',
        ],
    )
    side = tmp_path / "out.jsonl.retrying"
    side.write_bytes(b'{"id": 2, "response": {}}\n{"id": 3, "resp')
    read_only = scan_output(path, repair=False)
    assert (read_only.done_ids, read_only.failed_ids) == ({1, 2, 3}, {3})
    repaired = scan_output(path)
    assert (repaired.done_ids, repaired.failed_ids) == ({1, 2, 3}, {3})
    assert not side.exists()
    assert sorted(json.loads(line)["id"] for line in path.read_text().splitlines()) == [1, 2, 3]


def test_merge_retried_twice_is_harmless(tmp_path):
    """A kill between the atomic replace and the side file's removal: the next merge is a no-op."""
    path = write_lines(
        tmp_path / "out.jsonl", ['{"id": 1, "error": {}}', '{"id": 2, "response": {}}']
    )
    side = write_lines(tmp_path / "out.jsonl.retrying", ['{"id": 1, "response": {"n": 1}}'])
    kept = side.read_text()
    merge_retried(path)
    side.write_text(kept)  # as if the kill came before os.remove(side)
    merge_retried(path)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(r["id"] for r in records) == [1, 2]
    assert all("response" in r for r in records)


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
