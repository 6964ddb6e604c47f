"""The request timeline: records in memory or streamed as JSONL, and the Gantt chart."""

from __future__ import annotations

import json
import subprocess
import sys

import matplotlib
import pytest

from paradigm_kit.timeline import (
    STATE_COLOURS,
    RequestRecord,
    TimelineRecorder,
    load_timeline,
    plot_timeline,
)

matplotlib.use("Agg")


def record_a_retry(recorder: TimelineRecorder) -> None:
    """Request "a": a 503 then a success; request 7: one attempt, failed for good."""
    t0 = recorder.t0
    recorder.record("a", 1, t0, t0 + 0.1, t0 + 0.2, t0 + 0.3, 503, "retry", 0.5)
    recorder.record("a", 2, t0 + 0.8, t0 + 0.8, t0 + 0.9, t0 + 1.0, 200, "ok")
    recorder.record(7, 1, t0, t0 + 0.2, None, t0 + 0.4, None, "failed")


def test_timeline_recorder_keeps_records_relative_to_its_start():
    """In memory, times become seconds since t0, one record per attempt."""
    recorder = TimelineRecorder(t0=100.0)
    record_a_retry(recorder)
    first = recorder.records[0]
    assert (first.id, first.attempt, first.t_started, first.t_end, first.status) == (
        "a",
        1,
        0.1,
        0.3,
        503,
    )
    assert [r.outcome for r in recorder.records] == ["retry", "ok", "failed"]


def test_timeline_recorder_streams_well_formed_jsonl(tmp_path):
    """Streamed to a file, each line is one JSON record with every field, readable back."""
    path = tmp_path / "timeline.jsonl"
    with TimelineRecorder(path, t0=50.0) as recorder:
        record_a_retry(recorder)
        assert recorder.records == []  # streamed, not kept
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    fields = set(RequestRecord.__dataclass_fields__)
    assert all(set(json.loads(line)) == fields for line in lines)
    loaded = load_timeline(path)
    in_memory = TimelineRecorder(t0=50.0)
    record_a_retry(in_memory)
    for streamed, kept in zip(loaded, in_memory.records, strict=True):
        assert streamed.id == kept.id and streamed.outcome == kept.outcome
        assert streamed.t_end == pytest.approx(kept.t_end)
        assert streamed.t_first_byte == (
            None if kept.t_first_byte is None else pytest.approx(kept.t_first_byte)
        )


def test_plot_timeline_draws_one_row_per_request_with_a_legend():
    """One row per request, the four states in the legend, the title kept, time in s on x."""
    recorder = TimelineRecorder(t0=0.0)
    record_a_retry(recorder)
    ax = plot_timeline(recorder.records, title="2 requests, concurrency 2")
    assert [label.get_text() for label in ax.get_yticklabels()] == ["a", "7"]
    assert [text.get_text() for text in ax.get_legend().get_texts()] == list(STATE_COLOURS)
    assert ax.get_title().startswith("2 requests, concurrency 2")
    assert "(s)" in ax.get_xlabel()


def test_timeline_module_does_not_import_matplotlib():
    """The runner's path stays light: importing the timeline (and the batch runner) loads no
    matplotlib until a chart is drawn."""
    code = (
        "import sys, paradigm_kit.timeline, paradigm_kit.batch; print('matplotlib' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "False", result.stderr
