"""The mirror's plan: which mode brings the audience to the export (:func:`choose_mode`), and
the typed, versioned record of that decision that a job journals (:class:`MirrorPlan`), with its
operations and its member-floor check. Pure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Final

from asyncsync.errors import StateError
from asyncsync.jobs.plan import Step, build_steps
from asyncsync.jobs.result import MirrorCounts
from asyncsync.jobs.spec import JobAction
from asyncsync.rules.limits import MIN_AUDIENCE_MEMBERS

__all__ = [
    "PLAN_VERSION",
    "MirrorDecision",
    "MirrorMode",
    "MirrorPlan",
    "choose_mode",
]

PLAN_VERSION: Final = 1
"""Version of the journaled :class:`MirrorPlan`; a journal holding a newer one is refused."""


class MirrorMode(StrEnum):
    """How a mirror brings the audience to the export."""

    CREATE = "create"
    """First run: the audience is created with the export."""
    DIFF = "diff"
    """APPEND the added IDs, then REMOVE the removed ones."""
    REPLACE = "replace"
    """REPLACE with the export (then APPEND the rest)."""
    NOTHING = "nothing"
    """The export equals the last delivery."""


@dataclass(frozen=True, kw_only=True)
class MirrorDecision:
    """How a mirror reaches the export, and why."""

    mode: MirrorMode
    reason: str


def choose_mode(
    *,
    has_audience: bool,
    snapshot_problem: str,
    added: int,
    removed: int,
    old_rows: int,
    replace_threshold: float,
    replaces_left_today: int,
    operations_left_today: int,
    diff_operations: int,
) -> MirrorDecision:
    """Pick the operations that make the audience equal to the export.

    - no audience yet: create it with the export;
    - no trustworthy snapshot (``snapshot_problem`` says why): REPLACE;
    - nothing added or removed: nothing;
    - ``added + removed > replace_threshold * old_rows``: REPLACE, unless today's REPLACE is
      used up and the diff fits in today's operations (the diff is still exact);
    - otherwise APPEND the added IDs and REMOVE the removed ones.
    """
    if not has_audience:
        return MirrorDecision(mode=MirrorMode.CREATE, reason="first run: the audience is created")
    if snapshot_problem:
        return MirrorDecision(
            mode=MirrorMode.REPLACE, reason=f"no trustworthy snapshot ({snapshot_problem})"
        )
    changed = added + removed
    if changed == 0:
        return MirrorDecision(mode=MirrorMode.NOTHING, reason="the export equals the last delivery")
    limit = replace_threshold * old_rows
    if changed > limit:
        share = changed / old_rows if old_rows else math.inf
        why = (
            f"the diff ({changed:,} IDs) is {share:.0%} of the audience, above the "
            f"replace threshold of {replace_threshold:.0%}"
        )
        if replaces_left_today > 0 or diff_operations > operations_left_today:
            return MirrorDecision(mode=MirrorMode.REPLACE, reason=why)
        return MirrorDecision(
            mode=MirrorMode.DIFF,
            reason=f"{why}, but today's REPLACE is used up: APPEND + REMOVE instead",
        )
    return MirrorDecision(
        mode=MirrorMode.DIFF,
        reason=f"{added:,} added and {removed:,} removed IDs since the last delivery",
    )


@dataclass(frozen=True, kw_only=True)
class MirrorPlan:
    """A mirror job's decision as journaled with its parts: the mode and why, the diff's
    counts, the parts each operation sends (journal part indices), and the new snapshot the
    job seals once TikTok accepted every operation."""

    version: int = PLAN_VERSION
    mode: MirrorMode
    reason: str
    added: int
    removed: int
    unchanged: int
    export_rows: int
    snapshot_rows: int
    replace_threshold: float
    paths_per_call: int
    baseline_op_id: int | None
    """The last journaled operation on the audience when the plan was made: any later one by
    another job makes a diff stale."""
    snapshot_count: int
    snapshot_xxh3: str | None
    added_parts: tuple[int, ...] = ()
    removed_parts: tuple[int, ...] = ()
    parts: tuple[int, ...] = field(default=())
    """Every part the plan uploads (the diff's, or the export's for a REPLACE or create)."""

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["mode"] = self.mode.value
        for key in ("added_parts", "removed_parts", "parts"):
            out[key] = list(out[key])
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MirrorPlan:
        """The plan as journaled; StateError for a plan of a newer version or a damaged one."""
        version = data.get("version", 1)
        if not isinstance(version, int) or version > PLAN_VERSION:
            raise StateError(
                f"the journaled mirror plan has version {version!r}, this asyncsync reads up to "
                f"{PLAN_VERSION}: use a newer asyncsync, or rerun with --restart"
            )
        try:
            return cls(
                version=version,
                mode=MirrorMode(data["mode"]),
                reason=str(data["reason"]),
                added=int(data["added"]),
                removed=int(data["removed"]),
                unchanged=int(data["unchanged"]),
                export_rows=int(data["export_rows"]),
                snapshot_rows=int(data["snapshot_rows"]),
                replace_threshold=float(data["replace_threshold"]),
                paths_per_call=int(data["paths_per_call"]),
                baseline_op_id=data.get("baseline_op_id"),
                snapshot_count=int(data["snapshot_count"]),
                snapshot_xxh3=data.get("snapshot_xxh3"),
                added_parts=tuple(data.get("added_parts", ())),
                removed_parts=tuple(data.get("removed_parts", ())),
                parts=tuple(data.get("parts", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(
                f"the journaled mirror plan is damaged ({exc!r}); rerun with --restart"
            ) from None

    def report(self) -> MirrorCounts:
        """The fields a mirror reports in ``SyncResult.mirror``."""
        return MirrorCounts(
            mode=self.mode.value,
            reason=self.reason,
            added=self.added,
            removed=self.removed,
            unchanged=self.unchanged,
            export_rows=self.export_rows,
            snapshot_rows=self.snapshot_rows,
        )

    def steps(self) -> list[Step]:
        """The plan's operations, numbered in the order they are sent."""
        ppc = self.paths_per_call
        if self.mode is MirrorMode.DIFF:
            appends = build_steps(JobAction.APPEND, self.added_parts, ppc)
            return appends + build_steps(
                JobAction.REMOVE, self.removed_parts, ppc, first=len(appends)
            )
        if self.mode is MirrorMode.REPLACE:
            return build_steps(JobAction.REPLACE, self.parts, ppc)
        if self.mode is MirrorMode.CREATE:
            return build_steps(JobAction.CREATE, self.parts, ppc)
        return []

    def floor_refusal(self, rows_of: Mapping[int, int]) -> str | None:
        """Why the plan would leave an audience with fewer than 1,000 members, if it would.

        With a snapshot the result of a diff is known exactly: the export's own size (APPENDs
        run first, so the audience only shrinks to it during the REMOVEs). A REPLACE keeps its
        first batch; a create is followed by APPENDs of the rest.
        """
        floor = MIN_AUDIENCE_MEMBERS
        steps = self.steps()
        if self.mode is MirrorMode.DIFF and self.removed and self.export_rows < floor:
            return (
                f"REMOVE of {self.removed:,} IDs would leave the audience with "
                f"{self.export_rows:,} members, fewer than TikTok's floor of {floor:,}"
            )
        if self.mode is MirrorMode.REPLACE and steps:
            first = sum(rows_of.get(i, 0) for i in steps[0].parts)
            if first < floor:
                return (
                    f"REPLACE would leave the audience with {first:,} members, fewer than "
                    f"TikTok's floor of {floor:,}"
                )
        if self.mode is MirrorMode.CREATE and len(steps) > 1:
            first = sum(rows_of.get(i, 0) for s in steps[:2] for i in s.parts)
            if first < floor:
                return (
                    f"the first APPEND after create would leave {first:,} members, fewer than "
                    f"TikTok's floor of {floor:,} (use a larger --paths-per-call)"
                )
        return None
