"""What a sync did: :class:`SyncResult`, the keys of ``asyncsync sync --json``, and the typed
parts of it: what is pending (:class:`Pending`), a dry run's plan (:class:`PlanSummary`), a
mirror's report (:class:`MirrorSummary`). Each ``to_json`` gives the ``--json`` keys; each
``from_json`` reads them back (a finished job's result is journaled as JSON)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Self

__all__ = [
    "MirrorCounts",
    "MirrorSummary",
    "OperationSummary",
    "Pending",
    "PlanSummary",
    "QuotaSummary",
    "SyncResult",
]


@dataclass(frozen=True, kw_only=True)
class OperationSummary:
    """One audience operation as a plan or a pause lists it: ``action`` is ``create`` or
    TikTok's ``APPEND``, ``REMOVE``, ``REPLACE``; ``file_paths`` how many it sends."""

    batch: int
    action: str
    file_paths: int

    def to_json(self) -> dict[str, Any]:
        return {"batch": self.batch, "action": self.action, "file_paths": self.file_paths}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            batch=int(data["batch"]), action=str(data["action"]), file_paths=int(data["file_paths"])
        )


@dataclass(frozen=True, kw_only=True)
class Pending:
    """What a paused job has left (``SyncResult.pending``): why it paused (``daily quota`` or
    ``operation running``), on which audience, the operations left, and for a quota the UTC
    time after which the same command resumes it."""

    reason: str
    audience_id: str | None
    operations: tuple[OperationSummary, ...]
    resume_after: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "reason": self.reason,
            "audience_id": self.audience_id,
            "operations": [op.to_json() for op in self.operations],
        }
        if self.resume_after is not None:
            out["resume_after"] = self.resume_after
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            reason=str(data["reason"]),
            audience_id=data.get("audience_id"),
            operations=tuple(OperationSummary.from_json(op) for op in data.get("operations", ())),
            resume_after=data.get("resume_after"),
        )


@dataclass(frozen=True, kw_only=True)
class MirrorCounts:
    """How a mirror brings the audience to the export: ``mode`` (create, diff, replace or
    nothing), ``reason``, and the counts of the diff against the last delivery."""

    mode: str
    reason: str
    added: int
    removed: int
    unchanged: int
    export_rows: int
    snapshot_rows: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


@dataclass(frozen=True, kw_only=True)
class MirrorSummary(MirrorCounts):
    """``SyncResult.mirror``: the mirror's counts, what became of the snapshot (``pending``,
    ``recorded``, ``kept``, ``discarded``; ``unchanged`` in a dry run), and the unfinished job
    this run's export superseded, if any."""

    snapshot: str
    superseded_job: int | None = None

    @classmethod
    def of(cls, counts: MirrorCounts, *, snapshot: str, superseded_job: int | None = None) -> Self:
        return cls(**asdict(counts), snapshot=snapshot, superseded_job=superseded_job)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        if self.superseded_job is None:
            del out["superseded_job"]
        return out


@dataclass(frozen=True, kw_only=True)
class QuotaSummary:
    """An audience's daily quotas on the plan's UTC ``day``: used, remaining, and whether the
    plan's ``operations_needed`` fit."""

    day: str
    operations_used: int
    operations_remaining: int
    replaces_used: int
    replaces_remaining: int
    operations_needed: int
    fits_today: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(**{f.name: data[f.name] for f in fields(cls)})


@dataclass(frozen=True, kw_only=True)
class PlanSummary:
    """A dry run's plan (``SyncResult.plan``): the parts and bytes a real run would prepare,
    its uploads (``uploads_reused``: already uploaded by the job it continues), API ``calls``
    by kind, the ``operations``, the job it ``resumes_job``, the daily ``quota``, and the
    ``problems`` the real run would stop on. ``already_done``: the same job already finished
    (nothing would be sent). A mirror's plan adds its :class:`MirrorCounts` and the audience's
    ``cover_num``, as keys of the plan itself in JSON."""

    already_done: bool
    audience_id: str | None
    parts: int
    bytes: int
    uploads: int
    uploads_reused: int
    calls: dict[str, int]
    operations: tuple[OperationSummary, ...]
    resumes_job: str | None
    quota: QuotaSummary
    problems: tuple[str, ...]
    mirror: MirrorCounts | None = None
    cover_num: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.mirror is not None:
            out.update(self.mirror.to_json(), cover_num=self.cover_num)
        out.update(
            already_done=self.already_done,
            audience_id=self.audience_id,
            parts=self.parts,
            bytes=self.bytes,
            uploads=self.uploads,
            uploads_reused=self.uploads_reused,
            calls=dict(self.calls),
            operations=[op.to_json() for op in self.operations],
            resumes_job=self.resumes_job,
            quota=self.quota.to_json(),
            problems=list(self.problems),
        )
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            already_done=bool(data["already_done"]),
            audience_id=data.get("audience_id"),
            parts=int(data["parts"]),
            bytes=int(data["bytes"]),
            uploads=int(data["uploads"]),
            uploads_reused=int(data["uploads_reused"]),
            calls={str(k): int(v) for k, v in data["calls"].items()},
            operations=tuple(OperationSummary.from_json(op) for op in data["operations"]),
            resumes_job=data.get("resumes_job"),
            quota=QuotaSummary.from_json(data["quota"]),
            problems=tuple(str(p) for p in data["problems"]),
            mirror=MirrorCounts.from_json(data) if "mode" in data else None,
            cover_num=data.get("cover_num"),
        )


@dataclass(frozen=True, kw_only=True)
class SyncResult:
    """What a sync did; the fields are the keys of ``asyncsync sync --json``.

    Row counts describe the job's whole input (``docs/normalization.md``). ``bytes_uploaded``,
    ``api_calls`` and ``retries`` count this call's traffic only (a resumed job reports what it
    sent now). ``resumed`` is true when the call continued a journaled job, or found the same
    job (same command, same unchanged input) already finished and returned its earlier result
    without sending anything. ``paused`` and ``pending`` describe a job stopped by a quota or a
    running operation (the result of :class:`asyncsync.errors.Paused`; ``pending`` is ``{}``
    in JSON when None); ``plan`` is set by a dry run; ``mirror`` by a mirror sync.
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
    national_phones: int | None = None
    """Phone lines among the malformed ones that are national numbers (a single leading 0):
    ``--default-country`` would have read them. None: not known (a result journaled before
    this count was kept)."""
    bytes_uploaded: int
    api_calls: int
    retries: int
    elapsed_s: float
    resumed: bool
    paused: bool = False
    pending: Pending | None = None
    plan: PlanSummary | None = None
    job_id: str | None = None
    mirror: MirrorSummary | None = None
    """``action="mirror"`` only: how the audience was brought to the export."""

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` summary: a dict of JSON types."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["file_paths"] = list(self.file_paths)
        out["rejected"] = dict(self.rejected)
        out["pending"] = {} if self.pending is None else self.pending.to_json()
        out["plan"] = None if self.plan is None else self.plan.to_json()
        out["mirror"] = None if self.mirror is None else self.mirror.to_json()
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any], **changes: Any) -> SyncResult:
        """The result as :meth:`to_json` wrote it (a journaled result); ``changes`` replace
        fields."""
        values = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        values["file_paths"] = tuple(values.get("file_paths", ()))
        values["rejected"] = {str(k): int(v) for k, v in values.get("rejected", {}).items()}
        pending, plan, mirror = values.get("pending"), values.get("plan"), values.get("mirror")
        values["pending"] = Pending.from_json(pending) if pending else None
        values["plan"] = PlanSummary.from_json(plan) if plan else None
        values["mirror"] = MirrorSummary.from_json(mirror) if mirror else None
        values.update(changes)
        return cls(**values)
