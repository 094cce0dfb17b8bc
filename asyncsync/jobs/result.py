"""What a sync did: :class:`SyncResult`, the keys of ``asyncsync sync --json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Final

__all__ = ["SUMMARY_KEYS", "SyncResult"]

SUMMARY_KEYS: Final = (
    "calculate_type",
    "parts",
    "rows_read",
    "rows_valid",
    "rows_invalid",
    "rejected",
    "duplicates",
    "rows_written",
)
"""The prepare counts a job journals once prepare finished, and reports in its result."""


@dataclass(frozen=True, kw_only=True)
class SyncResult:
    """What a sync did; the fields are the keys of ``asyncsync sync --json``.

    Row counts describe the job's whole input. ``bytes_uploaded``, ``api_calls`` and
    ``retries`` count this call's traffic only (a resumed job reports what it sent now).
    ``resumed`` is true when the call continued a journaled job, or found the same job (same
    command, same unchanged input) already finished and returned its earlier result without
    sending anything. ``paused`` and ``pending`` describe a job stopped by a quota or a running
    operation (the result of :class:`asyncsync.errors.Paused`); ``plan`` is set by a dry run;
    ``mirror`` by a mirror sync.
    """

    audience_id: str | None
    action: str
    calculate_type: str
    file_paths: tuple[str, ...]
    parts: int
    rows_read: int
    rows_valid: int
    rows_invalid: int
    rejected: dict[str, int]
    duplicates: int
    rows_written: int
    bytes_uploaded: int
    api_calls: int
    retries: int
    elapsed_s: float
    resumed: bool
    paused: bool = False
    pending: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] | None = None
    job_id: str | None = None
    mirror: dict[str, Any] | None = None
    """``action="mirror"`` only: how the audience was brought to the export (``mode``: create,
    diff, replace or nothing; ``reason``; ``added``, ``removed``, ``unchanged`` counts)."""

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` summary: a dict of JSON types."""
        out = asdict(self)
        out["file_paths"] = list(self.file_paths)
        out["rejected"] = dict(self.rejected)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any], **changes: Any) -> SyncResult:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["file_paths"] = tuple(fields.get("file_paths", ()))
        fields.update(changes)
        return cls(**fields)
