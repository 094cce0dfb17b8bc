"""Planning arithmetic shared by the real run and the dry run: the operations of a job, TikTok's
1,000-member floor, the daily quotas, and the plan a dry run reports. Pure, except
:func:`quota_use`, which reads the journal.
"""

from __future__ import annotations

import calendar
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from asyncsync.errors import UsageError
from asyncsync.jobs.result import MirrorCounts, OperationSummary, PlanSummary, QuotaSummary
from asyncsync.jobs.spec import JobAction
from asyncsync.rules.limits import (
    DAILY_FILE_OPERATIONS_PER_AUDIENCE,
    DAILY_REPLACES_PER_AUDIENCE,
    MAX_FILE_PATHS_PER_CALL,
    MIN_AUDIENCE_MEMBERS,
    Action,
)
from asyncsync.store.journal import Journal, OperationKind

__all__ = [
    "DAY",
    "PlanReport",
    "QuotaUse",
    "Step",
    "build_steps",
    "epoch_of",
    "floor_problem",
    "iso_utc",
    "quota_use",
    "utc_day_bounds",
]

DAY: Final = 86_400.0


@dataclass(frozen=True, slots=True)
class Step:
    """One audience operation of the plan."""

    index: int
    kind: OperationKind
    parts: tuple[int, ...]
    """Indices of the parts whose file_paths the operation sends."""

    @property
    def is_update(self) -> bool:
        return self.kind is not OperationKind.CREATE

    @property
    def action(self) -> Action:
        """The update's TikTok action (an update step only)."""
        return Action(self.kind.value)

    def summary(self) -> OperationSummary:
        """The step as a plan or a pause lists it."""
        return OperationSummary(
            batch=self.index, action=self.kind.value, file_paths=len(self.parts)
        )

    def describe(self) -> dict[str, Any]:
        """The step as the JSON summary lists it."""
        return self.summary().to_json()


_KINDS: Final = {
    # action: (first batch, later batches)
    JobAction.CREATE: (OperationKind.CREATE, OperationKind.APPEND),
    JobAction.REPLACE: (OperationKind.REPLACE, OperationKind.APPEND),
    JobAction.APPEND: (OperationKind.APPEND, OperationKind.APPEND),
    JobAction.REMOVE: (OperationKind.REMOVE, OperationKind.REMOVE),
}


def build_steps(
    action: JobAction | str, part_indices: Sequence[int], paths_per_call: int, *, first: int = 0
) -> list[Step]:
    """The operations of a job: batches of at most ``paths_per_call`` parts, in index order,
    numbered from ``first``.

    create: create with the first batch, APPEND the rest; replace: REPLACE then APPEND;
    append and remove: one operation of that kind per batch.
    """
    if not 1 <= paths_per_call <= MAX_FILE_PATHS_PER_CALL:
        raise UsageError(f"paths_per_call must be in [1, {MAX_FILE_PATHS_PER_CALL}]")
    try:
        head, rest = _KINDS[JobAction(action)]
    except (KeyError, ValueError):
        raise UsageError(f"unknown action {action!r}") from None
    ordered = sorted(part_indices)
    batches = [
        tuple(ordered[i : i + paths_per_call]) for i in range(0, len(ordered), paths_per_call)
    ]
    return [Step(first + i, head if i == 0 else rest, batch) for i, batch in enumerate(batches)]


def floor_problem(
    action: JobAction | str,
    steps: Sequence[Step],
    rows_of: Mapping[int, int],
    cover_num: int | None,
    *,
    floor: int = MIN_AUDIENCE_MEMBERS,
) -> str | None:
    """Why the plan would break TikTok's 1,000-member floor, when that can be told beforehand.

    - replace: the REPLACE keeps only its own batch's IDs (parts are deduplicated, so their row
      counts add up exactly);
    - create with several batches: after the first APPEND the audience holds at most the first
      two batches;
    - append: at most ``cover_num`` plus every input ID;
    - remove: at worst every input ID is a member, leaving ``cover_num - rows``. A removal that
      is refused halfway would leave the audience partly updated, so the worst case is refused.
    """
    if not steps:
        return None

    def rows(step: Step) -> int:
        return sum(rows_of.get(i, 0) for i in step.parts)

    total = sum(rows(s) for s in steps)
    if action == JobAction.REPLACE and rows(steps[0]) < floor:
        return (
            f"REPLACE would leave the audience with {rows(steps[0])} IDs, fewer than TikTok's "
            f"floor of {floor:,} members"
        )
    if action == JobAction.CREATE and len(steps) > 1 and rows(steps[0]) + rows(steps[1]) < floor:
        return (
            f"the first APPEND after create would leave {rows(steps[0]) + rows(steps[1])} IDs, "
            f"fewer than TikTok's floor of {floor:,} members (use a larger --paths-per-call)"
        )
    if cover_num is None:
        return None
    if action == JobAction.APPEND and cover_num + total < floor:
        return (
            f"APPEND would leave the audience with at most {cover_num + total} members, fewer "
            f"than TikTok's floor of {floor:,}"
        )
    if action == JobAction.REMOVE and cover_num - total < floor:
        return (
            f"REMOVE of up to {total} IDs from an audience of {cover_num} members could leave "
            f"fewer than TikTok's floor of {floor:,} members"
        )
    return None


# -- daily quotas --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QuotaUse:
    """An audience's file operations and REPLACEs journaled in one UTC day (any job's; those
    TikTok applied or may have applied)."""

    day_start: float
    operations: int
    replaces: int

    @property
    def day_end(self) -> float:
        return self.day_start + DAY

    @property
    def operations_left(self) -> int:
        return max(0, DAILY_FILE_OPERATIONS_PER_AUDIENCE - self.operations)

    @property
    def replaces_left(self) -> int:
        return max(0, DAILY_REPLACES_PER_AUDIENCE - self.replaces)

    def blocks(self, kind: OperationKind) -> str | None:
        """The daily limit an operation of ``kind`` would exceed now, if any."""
        if self.operations >= DAILY_FILE_OPERATIONS_PER_AUDIENCE:
            return f"{DAILY_FILE_OPERATIONS_PER_AUDIENCE} file operations"
        if kind is OperationKind.REPLACE and self.replaces >= DAILY_REPLACES_PER_AUDIENCE:
            return f"{DAILY_REPLACES_PER_AUDIENCE} REPLACE"
        return None

    def report(self, needed: int, *, fits: bool | None = None) -> QuotaSummary:
        """The ``quota`` block of a plan: today's use and whether ``needed`` operations fit."""
        return QuotaSummary(
            day=iso_utc(self.day_start)[:10],
            operations_used=self.operations,
            operations_remaining=self.operations_left,
            replaces_used=self.replaces,
            replaces_remaining=self.replaces_left,
            operations_needed=needed,
            fits_today=needed <= self.operations_left if fits is None else fits,
        )


def quota_use(
    journal: Journal, api_base: str, advertiser_id: str, audience_id: str | None, now: float
) -> QuotaUse:
    """Today's (the UTC day of ``now``) use of the audience's quotas, from the journal."""
    start, end = utc_day_bounds(now)
    if audience_id is None:
        return QuotaUse(start, 0, 0)
    ops = [
        op
        for op in journal.operations_between(api_base, advertiser_id, audience_id, start, end)
        if op.kind is not OperationKind.CREATE
    ]
    return QuotaUse(start, len(ops), sum(1 for op in ops if op.kind is OperationKind.REPLACE))


# -- the dry run's report --------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PlanReport:
    """What a dry run found: the ``plan`` of ``asyncsync sync --dry-run --json``."""

    audience_id: str | None
    resumes_job: int | None
    parts: int
    bytes: int
    uploads: int
    uploads_reused: int
    steps: tuple[Step, ...]
    quota: QuotaUse
    problems: tuple[str, ...]
    already_done: bool = False
    mirror: MirrorCounts | None = None
    """A mirror's mode, reason and counts."""
    cover_num: int | None = None
    """A mirror's audience size as TikTok shows it (None: no audience yet)."""

    def summary(self) -> PlanSummary:
        """The plan as ``SyncResult.plan`` reports it."""
        steps = () if self.already_done else self.steps
        calls: dict[str, int] = {} if self.already_done else {"upload": self.uploads}
        for s in steps:
            key = s.kind.value.lower()
            calls[key] = calls.get(key, 0) + 1
        return PlanSummary(
            already_done=self.already_done,
            audience_id=self.audience_id,
            parts=self.parts,
            bytes=self.bytes,
            uploads=0 if self.already_done else self.uploads,
            uploads_reused=self.uploads_reused,
            calls=calls,
            operations=tuple(s.summary() for s in steps),
            resumes_job=None if self.resumes_job is None else str(self.resumes_job),
            quota=self.quota.report(
                sum(1 for s in steps if s.is_update), fits=True if self.already_done else None
            ),
            problems=self.problems,
            mirror=self.mirror,
            cover_num=self.cover_num,
        )


# -- times -----------------------------------------------------------------------------------


def utc_day_bounds(now: float) -> tuple[float, float]:
    """The UTC day holding ``now``: ``[start, end)`` in epoch seconds."""
    start = math.floor(now / DAY) * DAY
    return start, start + DAY


def iso_utc(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def epoch_of(value: object) -> float | None:
    """TikTok's time fields (``YYYY-MM-DD HH:MM:SS`` UTC, or epoch seconds/milliseconds)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) / 1000.0 if value > 10**11 else float(value)
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return epoch_of(int(text))
        for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%SZ"):
            try:
                return float(calendar.timegm(time.strptime(text, fmt)))
            except ValueError:
                continue
    return None
