"""Progress events and the reporter protocol.

The pipeline, the client and the sync job report progress as small frozen events to a
``Reporter`` (any callable taking one event). Only the CLI turns them into progress bars; library
users may log them, forward them to metrics, or ignore them (the default reporter does nothing).
A reporter must be cheap and must not raise: it runs on the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "AudienceOperation",
    "ChunkHashed",
    "Event",
    "JobNotice",
    "OperationWaiting",
    "PartUploaded",
    "PartWritten",
    "Reporter",
    "RequestRetried",
    "StageChanged",
    "UploadProgress",
    "null_reporter",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base class of every progress event."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StageChanged(Event):
    """A stage began (``prepare``, ``merge``, ``upload``, ``operations``) or ended."""

    stage: str
    started: bool
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class JobNotice(Event):
    """Something the user should know about the job's plan (a create that cannot finish
    within today's quota, for one)."""

    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ChunkHashed(Event):
    """A chunk of input lines was normalized and hashed."""

    rows: int
    bytes_read: int
    total_bytes: int | None = None  # total input size when known (None for stdin/compressed)


@dataclass(frozen=True, slots=True, kw_only=True)
class PartWritten(Event):
    """A part file is complete (renamed to its final name)."""

    index: int
    path: str
    rows: int
    bytes: int
    md5: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadProgress(Event):
    """Bytes of a part were sent."""

    path: str
    sent: int
    total: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PartUploaded(Event):
    """TikTok accepted a part and returned its ``file_path``."""

    path: str
    file_path: str
    bytes: int
    reused: bool = False  # True when the journal already held its file_path


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestRetried(Event):
    """A request failed in a retryable way and will be tried again after ``delay`` seconds."""

    endpoint: str
    attempt: int
    delay: float
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AudienceOperation(Event):
    """An audience operation was sent (``create``, ``APPEND``, ``REMOVE``, ``REPLACE``)."""

    audience_id: str
    action: str
    file_paths: int
    done: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class OperationWaiting(Event):
    """The audience is busy with a running operation; the job is polling until it ends."""

    audience_id: str
    waited_s: float
    max_wait_s: float


class Reporter(Protocol):
    def __call__(self, event: Event, /) -> None: ...


def null_reporter(event: Event, /) -> None:
    """The default reporter: ignores every event."""
