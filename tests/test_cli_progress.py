"""The CLI reporter: bars on a terminal, plain lines otherwise, and the summary table."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from asyncsync.cli.progress import CliReporter, human_bytes, summary_table
from asyncsync.events import (
    AudienceOperation,
    ChunkHashed,
    Event,
    OperationWaiting,
    PartUploaded,
    PartWritten,
    RequestRetried,
    StageChanged,
    UploadProgress,
)

EVENTS: list[Event] = [
    StageChanged(stage="prepare", started=True),
    ChunkHashed(rows=1000, bytes_read=37_000, total_bytes=74_000),
    ChunkHashed(rows=1000, bytes_read=74_000, total_bytes=74_000),
    PartWritten(index=1, path="/s/part-00001.txt", rows=2000, bytes=130_000, md5="0" * 32),
    UploadProgress(path="/s/part-00001.txt", sent=65_000, total=130_000),
    RequestRetried(
        endpoint="dmp/custom_audience/file/upload/",
        attempt=1,
        delay=0.5,
        reason="dmp/custom_audience/file/upload/: HTTP 503",
    ),
    PartUploaded(path="/s/part-00001.txt", file_path="fp-1", bytes=130_000),
    AudienceOperation(audience_id="", action="create", file_paths=1, done=False),
    AudienceOperation(audience_id="42", action="create", file_paths=1, done=True),
    OperationWaiting(audience_id="42", waited_s=3.0, max_wait_s=900.0),
    StageChanged(stage="prepare", started=False),
]


def console(terminal: bool) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, width=120, color_system=None), out


def test_plain_lines_name_each_step_when_not_on_a_terminal() -> None:
    con, out = console(terminal=False)
    with CliReporter(con) as reporter:
        assert reporter.live is False
        for event in EVENTS:
            reporter(event)
    text = out.getvalue()
    for expected in (
        "asyncsync: prepare started",
        "part 1 written: 2,000 rows, 130.0 kB",
        "retry 1 of dmp/custom_audience/file/upload/ in 0.5s: HTTP 503",
        "part part-00001.txt uploaded (130.0 kB)",
        "create done: audience 42, 1 file path(s)",
        "audience 42 is busy: waited 3s of 900s",
    ):
        assert expected in text
    assert reporter.rows_hashed == 2000 and reporter.bytes_read == 74_000
    assert reporter.bytes_uploaded == 130_000


def test_bars_on_a_terminal_show_rows_parts_bytes_and_operations() -> None:
    con, out = console(terminal=True)
    with CliReporter(con) as reporter:
        assert reporter.live is True
        for event in EVENTS:
            reporter(event)
    text = out.getvalue()
    for label in ("rows hashed", "parts written", "bytes uploaded", "operations", "2,000"):
        assert label in text
    assert "retry 1 of" in text


@pytest.mark.parametrize("terminal", [True, False])
def test_odd_events_are_counted_sanely_and_reporting_goes_on(terminal: bool) -> None:
    con, out = console(terminal=terminal)
    with CliReporter(con) as reporter:
        reporter(Event())
        reporter(UploadProgress(path="x", sent=10, total=0))
        reporter(PartUploaded(path="never-written", file_path="f", bytes=-1, reused=True))
        assert (reporter.parts_uploaded, reporter.bytes_uploaded) == (1, 0)
        # The reporter still reports what follows.
        reporter(PartWritten(index=7, path="/s/part-00007.txt", rows=5, bytes=325, md5="0" * 32))
        assert reporter.parts_written == 1
    text = out.getvalue()
    assert ("parts written" if terminal else "part 7 written: 5 rows") in text


def test_summary_table_shows_counts_and_pause() -> None:
    con, out = console(terminal=False)
    con.print(
        summary_table(
            {
                "audience_id": "42",
                "rows_read": 1_234_567,
                "rejected": {"empty": 1, "malformed": 2, "zero_id": 0},
                "bytes_uploaded": 50_000_000,
                "elapsed_s": 1.25,
                "resumed": True,
                "paused": True,
                "pending": {"operations": 2},
            }
        )
    )
    text = out.getvalue()
    for expected in ("1,234,567", "malformed: 2", "50.0 MB", "1.2 s", "resumed", "operations: 2"):
        assert expected in text


def test_human_bytes_uses_decimal_units() -> None:
    assert [human_bytes(n) for n in (999, 1000, 50_000_000, 2.5e12)] == [
        "999 B",
        "1.0 kB",
        "50.0 MB",
        "2.5 TB",
    ]
