"""The CLI's reporter: rich progress bars on a terminal, plain log lines otherwise.

Both forms write to stderr (``console``), so ``--json`` keeps stdout for the summary. The reporter
runs on the event loop: every method is cheap and never raises.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from asyncsync.events import (
    AudienceOperation,
    ChunkHashed,
    Event,
    JobNotice,
    OperationWaiting,
    PartUploaded,
    PartWritten,
    RequestRetried,
    StageChanged,
    UploadProgress,
)

__all__ = ["CliReporter", "human_bytes", "summary_table"]


def human_bytes(n: float) -> str:
    """``1234567`` → ``"1.2 MB"`` (decimal units, as TikTok states its limits)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < (1000 if unit == "B" else 999.95) or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


class CliReporter:
    """Turns progress events into bars (``live=True``) or log lines (``live=False``).

    ``live`` defaults to whether ``console`` is a terminal. Use as a context manager so that the
    bars are drawn while the job runs and removed cleanly at the end. ``log_interval`` bounds how
    often the plain form reports hashing progress (seconds).
    """

    def __init__(
        self,
        console: Console,
        *,
        live: bool | None = None,
        log_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console
        self.live = console.is_terminal if live is None else live
        self.log_interval = log_interval
        self.clock = clock
        self.rows_hashed = 0
        self.bytes_read = 0
        self.total_bytes: int | None = None
        self.parts_written = 0
        self.bytes_written = 0
        self.parts_uploaded = 0
        self.bytes_uploaded = 0
        self.operations_done = 0
        self.retries = 0
        self._sent: dict[str, int] = {}
        self._last_log = clock()
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}

    # -- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> CliReporter:
        if self.live:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description:<16}"),
                BarColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
                refresh_per_second=8,
            )
            p = self._progress
            self._tasks["hash"] = p.add_task("rows hashed", total=None, info="")
            self._tasks["parts"] = p.add_task("parts written", total=None, info="")
            self._tasks["upload"] = p.add_task("bytes uploaded", total=None, info="")
            self._tasks["ops"] = p.add_task("operations", total=None, info="")
            p.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop drawing (idempotent); later events are logged as plain lines."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    # -- events --------------------------------------------------------------------------------
    def __call__(self, event: Event, /) -> None:
        with contextlib.suppress(Exception):  # a reporter must never break the job
            self._handle(event)

    def _handle(self, event: Event) -> None:
        if isinstance(event, ChunkHashed):
            self.rows_hashed += event.rows
            # rows is per chunk; bytes_read is the running total of input bytes hashed.
            self.bytes_read = max(self.bytes_read, event.bytes_read)
            if event.total_bytes:
                self.total_bytes = event.total_bytes
            self._update_hash()
        elif isinstance(event, PartWritten):
            self.parts_written += 1
            self.bytes_written += event.bytes
            if self._bars():
                self._set("parts", info=f"{self.parts_written} ({human_bytes(self.bytes_written)})")
                self._update_upload()
            else:
                self._log(
                    f"part {event.index} written: {event.rows:,} rows, {human_bytes(event.bytes)}"
                )
        elif isinstance(event, UploadProgress):
            self._sent[event.path] = event.sent
            self._update_upload()
        elif isinstance(event, PartUploaded):
            self.parts_uploaded += 1
            self._sent.pop(event.path, None)
            self.bytes_uploaded += 0 if event.reused else event.bytes
            if self._bars():
                self._update_upload()
            else:
                how = "already uploaded" if event.reused else "uploaded"
                self._log(f"part {_basename(event.path)} {how} ({human_bytes(event.bytes)})")
        elif isinstance(event, AudienceOperation):
            if event.done:
                self.operations_done += 1
            verb = "done" if event.done else "sent"
            text = (
                f"{event.action.lower()} {verb}: audience {event.audience_id or '(new)'}, "
                f"{event.file_paths} file path(s)"
            )
            if self._bars():
                self._set("ops", info=f"{self.operations_done} — {text}")
            else:
                self._log(text)
        elif isinstance(event, OperationWaiting):
            text = (
                f"audience {event.audience_id} is busy: waited {event.waited_s:.0f}s "
                f"of {event.max_wait_s:.0f}s"
            )
            if self._bars():
                self._set("ops", info=f"{self.operations_done} — {text}")
            else:
                self._log(text)
        elif isinstance(event, RequestRetried):
            self.retries += 1
            reason = event.reason.removeprefix(f"{event.endpoint}: ")
            text = f"retry {event.attempt} of {event.endpoint} in {event.delay:.1f}s: {reason}"
            if self._progress is not None:
                self._progress.console.print(f"[yellow]{text}[/]")
            else:
                self._log(text)
        elif isinstance(event, JobNotice):
            if self._progress is not None:
                self._progress.console.print(f"[yellow]{event.message}[/]")
            else:
                self._log(event.message)
        elif isinstance(event, StageChanged):
            if self._bars() and not event.started:
                self._finish_stage(event.stage)
            if not self._bars():
                state = "started" if event.started else "done"
                detail = f" ({event.detail})" if event.detail else ""
                self._log(f"{event.stage} {state}{detail}")

    # -- drawing -------------------------------------------------------------------------------
    def _bars(self) -> bool:
        return self._progress is not None

    def _set(self, key: str, **fields: Any) -> None:
        assert self._progress is not None
        completed = fields.pop("completed", None)
        total = fields.pop("total", None)
        kwargs: dict[str, Any] = {}
        if completed is not None:
            kwargs["completed"] = completed
        if total is not None:
            kwargs["total"] = total
        self._progress.update(self._tasks[key], **kwargs, **fields)

    def _finish_stage(self, stage: str) -> None:
        """Turn the pulsing bars of a finished stage into full ones."""
        done = {
            "prepare": (
                ("hash", self.bytes_read or self.rows_hashed),
                ("parts", self.parts_written),
            ),
            "upload": (("upload", self.bytes_uploaded),),
            "operations": (("ops", self.operations_done),),
        }.get(stage, ())
        for key, value in done:
            self._set(key, completed=value, total=value or 1)

    def _update_hash(self) -> None:
        if self._bars():
            info = f"{self.rows_hashed:,}"
            if self.total_bytes:
                info += f" ({human_bytes(self.bytes_read)} of {human_bytes(self.total_bytes)})"
                self._set(
                    "hash",
                    completed=min(self.bytes_read, self.total_bytes),
                    total=self.total_bytes,
                    info=info,
                )
            else:
                self._set("hash", info=info)
            return
        now = self.clock()
        if now - self._last_log >= self.log_interval:
            self._log(f"{self.rows_hashed:,} rows hashed ({human_bytes(self.bytes_read)} read)")

    def _update_upload(self) -> None:
        if not self._bars():
            return
        in_flight = sum(self._sent.values())
        done = self.bytes_uploaded + in_flight
        total = max(self.bytes_written, done) or None
        self._set(
            "upload",
            completed=done,
            total=total,
            info=f"{human_bytes(done)} ({self.parts_uploaded} parts)",
        )

    def _log(self, text: str) -> None:
        self._last_log = self.clock()
        self.console.print(f"asyncsync: {text}", markup=False, highlight=False)


def _basename(path: str) -> str:
    return path.rsplit("/", 1)[-1] or path


_SUMMARY_ROWS: tuple[tuple[str, str], ...] = (
    ("audience_id", "audience"),
    ("action", "action"),
    ("calculate_type", "calculate_type"),
    ("rows_read", "rows read"),
    ("rows_valid", "rows valid"),
    ("rows_invalid", "rows invalid"),
    ("duplicates", "duplicates"),
    ("rows_written", "rows written"),
    ("parts", "parts"),
    ("bytes_uploaded", "bytes uploaded"),
    ("api_calls", "API calls"),
    ("retries", "retries"),
    ("elapsed_s", "elapsed"),
    ("resumed", "resumed"),
)


def _format(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key == "bytes_uploaded" and isinstance(value, int | float):
        return human_bytes(value)
    if key == "elapsed_s" and isinstance(value, int | float):
        return f"{value:.1f} s"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {_format(k, v)}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        return "; ".join(_format(key, v) for v in value) or "-"
    if value is None or value == "":
        return "-"
    return str(value)


def summary_table(summary: Mapping[str, Any], *, title: str = "sync") -> Table:
    """A two-column table of the ``--json`` summary's main keys, for humans."""
    table = Table(title=title, show_header=False, title_justify="left", box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, label in _SUMMARY_ROWS:
        if key in summary:
            table.add_row(label, _format(key, summary[key]))
    rejected = summary.get("rejected")
    if isinstance(rejected, Mapping) and any(rejected.values()):
        table.add_row("rejected", _format("rejected", rejected))
    for key in ("paused", "pending"):
        if summary.get(key):
            table.add_row(key, _format(key, summary[key]))
    return table
