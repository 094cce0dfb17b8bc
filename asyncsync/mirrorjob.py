"""The mirror sync job (``--action mirror``): make an audience equal to an export by sending only
what changed since the last delivery.

:class:`MirrorRun` is the sync job of :mod:`asyncsync.sync` with another middle:

1. the export is prepared into the job's work dir (``input/``), as for any sync;
2. it is merged with the audience's snapshot (:mod:`asyncsync.store.snapshots`, checked for trust: a
   sound file, written for this audience, not made stale by a later operation of another job),
   giving the added and removed IDs as part files (``diff/``) and the new snapshot body;
3. :func:`asyncsync.mirror.choose_mode` picks APPEND + REMOVE, a REPLACE (no trustworthy
   snapshot, or a diff above ``replace_threshold``), a create (first run) or nothing; the plan
   is refused before any upload when it would leave fewer than 1,000 members;
4. the chosen parts are uploaded and the plan is journaled with them; the operations run with
   the journal's intent/result discipline and daily quotas (APPEND and REMOVE count as two);
5. once TikTok accepted every operation, the new snapshot is sealed and renamed into the store.

A crash anywhere resumes: the journaled plan fixes the mode, the diff is deterministic (same
export, same snapshot: the snapshot only changes in step 5), operations already done are
skipped, and step 5 runs on the rerun.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

import xxhash

from asyncsync.errors import BadRequestError, StateError, UsageError
from asyncsync.events import PartUploaded, StageChanged
from asyncsync.mirror import (
    MODE_CREATE,
    MODE_DIFF,
    MODE_NOTHING,
    MODE_REPLACE,
    DiffResult,
    MirrorDecision,
    choose_mode,
    diff_parts,
)
from asyncsync.pipeline.parts import PartInfo
from asyncsync.pipeline.prepare import PrepareResult, prepare
from asyncsync.rules.limits import (
    DAILY_FILE_OPERATIONS_PER_AUDIENCE,
    DAILY_REPLACES_PER_AUDIENCE,
    MIN_AUDIENCE_MEMBERS,
    Action,
)
from asyncsync.store.journal import JobRow, JobStatus, OperationRow, Outcome
from asyncsync.store.snapshots import HEADER_BYTES, PendingSnapshot, Snapshot, SnapshotStore
from asyncsync.sync import SUMMARY_KEYS, SyncResult, _one_error, _SyncRun
from asyncsync.syncplan import Step, build_steps, iso_utc, utc_day_bounds
from asyncsync.tiktok.wire import Audience

__all__ = ["MirrorRun", "mirror_steps"]

INPUT_DIR: Final = "input"
DIFF_DIR: Final = "diff"
PENDING_SNAPSHOT: Final = "snapshot.pending"
RESULT_KEYS: Final = (
    "mode",
    "reason",
    "added",
    "removed",
    "unchanged",
    "export_rows",
    "snapshot_rows",
)


def mirror_steps(plan: dict[str, Any], paths_per_call: int) -> list[Step]:
    """The operations of a journaled mirror plan, numbered in the order they are sent."""
    mode = plan["mode"]
    if mode == MODE_DIFF:
        steps = build_steps("append", plan["added_parts"], paths_per_call) + build_steps(
            "remove", plan["removed_parts"], paths_per_call
        )
    elif mode == MODE_REPLACE:
        steps = build_steps("replace", plan["parts"], paths_per_call)
    elif mode == MODE_CREATE:
        steps = build_steps("create", plan["parts"], paths_per_call)
    else:
        steps = []
    return [Step(i, s.kind, s.parts) for i, s in enumerate(steps)]


def floor_refusal(plan: dict[str, Any], rows_of: dict[int, int]) -> str | None:
    """Why the plan would leave an audience with fewer than 1,000 members, if it would.

    With a snapshot the result of a diff is known exactly: the export's own size (APPENDs run
    first, so the audience only shrinks to it during the REMOVEs). A REPLACE keeps its first
    batch; a create is followed by APPENDs of the rest.
    """
    mode, floor = plan["mode"], MIN_AUDIENCE_MEMBERS
    steps = mirror_steps(plan, plan["paths_per_call"])
    if mode == MODE_DIFF and plan["removed"] and plan["export_rows"] < floor:
        return (
            f"REMOVE of {plan['removed']:,} IDs would leave the audience with "
            f"{plan['export_rows']:,} members, fewer than TikTok's floor of {floor:,}"
        )
    if mode == MODE_REPLACE and steps:
        first = sum(rows_of.get(i, 0) for i in steps[0].parts)
        if first < floor:
            return (
                f"REPLACE would leave the audience with {first:,} members, fewer than "
                f"TikTok's floor of {floor:,}"
            )
    if mode == MODE_CREATE and len(steps) > 1:
        first = sum(rows_of.get(i, 0) for s in steps[:2] for i in s.parts)
        if first < floor:
            return (
                f"the first APPEND after create would leave {first:,} members, fewer than "
                f"TikTok's floor of {floor:,} (use a larger --paths-per-call)"
            )
    return None


def _changed_by_others(
    ops: Iterable[OperationRow], job_id: int | None, *, after: int
) -> list[OperationRow]:
    """The operations in ``ops`` later than operation ``after``, by another job than
    ``job_id``, that TikTok applied or may have applied (done, or of unknown outcome)."""
    return [
        op
        for op in ops
        if op.id > after
        and op.job_id != job_id
        and (op.outcome is None or op.outcome == Outcome.DONE)
    ]


class MirrorRun(_SyncRun):
    """One call of ``sync_audience(..., action="mirror")``."""

    supersedes_changed_input = True

    def __init__(self, *, replace_threshold: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.replace_threshold = replace_threshold
        self.store = SnapshotStore(self.journal.state_dir)
        self.named_audience: str | None = None
        self.snapshot_outcome = "pending"

    @property
    def pending_snapshot_path(self) -> Path:
        return self.work_dir / PENDING_SNAPSHOT

    # -- which audience --------------------------------------------------------------------

    async def _resolve_target(self, restart: bool) -> None:
        if self.spec.name is not None:
            self.named_audience = await self._named_audience()
            if self.named_audience is None:
                self.named_audience = await self._audience_of_replaced_job(restart)

    def _find_job(self, restart: bool) -> JobRow | None:
        """As for every action, and: a diff planned by an unfinished job is stale once another
        job has touched the audience since the plan's baseline (its APPEND/REMOVE would apply
        to a membership it did not see), so that job is abandoned and a new one plans again."""
        job = super()._find_job(restart)
        if job is None or not self._stale_diff(job):
            return job
        self._abandon(job)
        self.superseded_job = job.id
        return None

    def _stale_diff(self, job: JobRow) -> bool:
        """Whether ``job`` is an unfinished diff whose audience another job touched (an
        operation done or of unknown outcome) since the plan's baseline."""
        if job.status == JobStatus.DONE or job.audience_id is None:
            return False
        plan = (job.prepared or {}).get("mirror")
        if not isinstance(plan, dict) or plan.get("mode") != MODE_DIFF:
            return False
        ops = self.journal.operations_on(self.api_base, self.spec.advertiser_id, job.audience_id)
        return bool(_changed_by_others(ops, job.id, after=plan.get("baseline_op_id") or 0))

    async def _audience_of_replaced_job(self, restart: bool) -> str | None:
        """An unfinished job about to be abandoned (``--restart``, or a new export superseding
        it) may have created the audience and stopped before remembering its name. When the
        name leads to no live audience and that job's audience still exists, mirror into it
        (and remember it) instead of creating a second one."""
        job = self._replaced_job(restart)
        if job is None or job.audience_id is None:
            return None
        try:
            audiences = await self.client.get_audiences(self.spec.advertiser_id, [job.audience_id])
        except BadRequestError:
            return None
        if not any(a.audience_id == job.audience_id for a in audiences):
            return None
        self._remember_name_of(job.audience_id)
        return job.audience_id

    async def _named_audience(self) -> str | None:
        """The audience this tool last mirrored under the name, if it still exists."""
        assert self.spec.name is not None
        found = self.store.audience_for_name(self.api_base, self.spec.advertiser_id, self.spec.name)
        if found is None:
            return None
        try:
            audiences = await self.client.get_audiences(self.spec.advertiser_id, [found])
        except BadRequestError:
            return None
        return found if any(a.audience_id == found for a in audiences) else None

    def _initial_audience_id(self) -> str | None:
        return self.spec.audience_id or self.named_audience

    def _remember_name(self) -> None:
        audience_id = self.current.audience_id
        if audience_id is not None:
            self._remember_name_of(audience_id)

    def _remember_name_of(self, audience_id: str) -> None:
        if self.spec.name is not None:
            self.store.remember_name(
                self.api_base, self.spec.advertiser_id, self.spec.name, audience_id
            )

    async def _create(self, step: Step, file_paths: list[str]) -> bool:
        created = await super()._create(step, file_paths)
        if created:
            self._remember_name()
        return created

    async def _reconcile_create(self, op: OperationRow) -> bool:
        adopted = await super()._reconcile_create(op)
        if adopted:
            self._remember_name()
        return adopted

    # -- the snapshot ----------------------------------------------------------------------

    def _trusted_snapshot(
        self, audience_id: str, job_id: int | None
    ) -> tuple[Snapshot | None, str]:
        """The audience's snapshot if it can be trusted, else (None, why not).

        Stale when the journal holds an operation on the audience, by another job than
        ``job_id``, after the one the snapshot ends with, that TikTok applied or may have
        applied; untrustworthy when the journal no longer holds that operation at all.
        """
        snapshot, why = self.store.load(
            self.api_base,
            self.spec.advertiser_id,
            audience_id,
            calculate_type=self.calculate_type,
        )
        if snapshot is None:
            return None, why
        ops = self.journal.operations_on(self.api_base, self.spec.advertiser_id, audience_id)
        last = snapshot.header.last_op_id
        if last is not None and not any(op.id == last for op in ops):
            return None, "the journal no longer holds the operation the snapshot was taken after"
        later = _changed_by_others(ops, job_id, after=last or 0)
        if later:
            return None, (
                f"{len(later)} operation(s) changed the audience since the snapshot "
                f"(the latest a {later[-1].kind} of job {later[-1].job_id})"
            )
        return snapshot, ""

    def _quota_used(self, audience_id: str | None) -> tuple[int, int]:
        """(operations, REPLACEs) journaled on the audience in today's UTC day."""
        if audience_id is None:
            return 0, 0
        start, end = utc_day_bounds(self.clock())
        ops = [
            op
            for op in self.journal.operations_between(
                self.api_base, self.spec.advertiser_id, audience_id, start, end
            )
            if op.kind != "create"
        ]
        return len(ops), sum(1 for op in ops if op.kind == Action.REPLACE.value)

    def _last_op_id(self, audience_id: str | None) -> int | None:
        if audience_id is None:
            return None
        ops = self.journal.operations_on(self.api_base, self.spec.advertiser_id, audience_id)
        return max((op.id for op in ops), default=None)

    # -- prepare, diff, decide, upload -----------------------------------------------------

    async def _diff(
        self,
        work: Path,
        audience_id: str | None,
        job_id: int | None,
        *,
        snapshot_path: Path | None,
        write_diff: bool,
    ) -> tuple[PrepareResult, DiffResult, str]:
        """Prepare the export into ``work/input`` and diff it against the audience's snapshot.
        Returns (prepare result, diff, why the snapshot is not trustworthy or "")."""
        result = await prepare(
            *self.inputs, out_dir=work / INPUT_DIR, reporter=self.reporter, options=self.options
        )
        self.reporter(StageChanged(stage="diff", started=True))
        snapshot, problem = (
            self._trusted_snapshot(audience_id, job_id) if audience_id else (None, "")
        )
        diff = await asyncio.to_thread(
            diff_parts,
            [p.path for p in result.parts],
            snapshot,
            out_dir=work / DIFF_DIR,
            digest_size=self.options.digest_size,
            max_file_bytes=self.options.max_file_bytes,
            snapshot_path=snapshot_path,
            write_diff=write_diff and snapshot is not None,
            rel=DIFF_DIR,
        )
        if snapshot is not None and not diff.old_ok:
            problem = f"the snapshot {snapshot.path.name} failed its checksum"
        self.reporter(StageChanged(stage="diff", started=False))
        return result, diff, problem

    def _decide(
        self, audience_id: str | None, diff: DiffResult, problem: str, diff_parts_count: int
    ) -> MirrorDecision:
        ops_used, replaces_used = self._quota_used(audience_id)
        diff_ops = math.ceil(diff_parts_count / self.paths_per_call) if diff_parts_count else 0
        return choose_mode(
            has_audience=audience_id is not None,
            snapshot_problem=problem,
            added=diff.added_rows,
            removed=diff.removed_rows,
            old_rows=diff.old_rows,
            replace_threshold=self.replace_threshold,
            replaces_left_today=DAILY_REPLACES_PER_AUDIENCE - replaces_used,
            operations_left_today=DAILY_FILE_OPERATIONS_PER_AUDIENCE - ops_used,
            diff_operations=diff_ops,
        )

    def _make_plan(
        self,
        decision: MirrorDecision,
        diff: DiffResult,
        audience_id: str | None,
        added: Sequence[PartInfo],
        removed: Sequence[PartInfo],
        whole: Sequence[PartInfo],
    ) -> tuple[dict[str, Any], list[PartInfo]]:
        """The journaled plan and the parts to upload, numbered 1.. in the journal."""
        plan: dict[str, Any] = {
            "mode": decision.mode,
            "reason": decision.reason,
            "added": diff.added_rows,
            "removed": diff.removed_rows,
            "unchanged": diff.unchanged_rows,
            "export_rows": diff.new_rows,
            "snapshot_rows": diff.old_rows,
            "replace_threshold": self.replace_threshold,
            "paths_per_call": self.paths_per_call,
            "baseline_op_id": self._last_op_id(audience_id),
            "snapshot_count": diff.snapshot.count if diff.snapshot else diff.new_rows,
            "snapshot_xxh3": diff.snapshot.body_xxh3 if diff.snapshot else None,
            "added_parts": [],
            "removed_parts": [],
            "parts": [],
        }
        if decision.mode == MODE_DIFF:
            chosen = [dataclasses.replace(p, index=i) for i, p in enumerate(added, start=1)]
            plan["added_parts"] = [p.index for p in chosen]
            more = [
                dataclasses.replace(p, index=i)
                for i, p in enumerate(removed, start=len(chosen) + 1)
            ]
            plan["removed_parts"] = [p.index for p in more]
            chosen += more
        elif decision.mode in (MODE_REPLACE, MODE_CREATE):
            chosen = [
                dataclasses.replace(p, file=f"{INPUT_DIR}/{p.file}", index=i)
                for i, p in enumerate(whole, start=1)
            ]
        else:
            chosen = []
        plan["parts"] = [p.index for p in chosen]
        return plan, chosen

    async def _prepare_and_upload(self) -> None:
        """Prepare, diff and decide (or redo the journaled decision), then upload the parts."""
        job = self.current
        work = self.work_dir
        recorded: dict[str, Any] | None = (job.prepared or {}).get("mirror")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(mode=0o700, parents=True, exist_ok=True)
        audience_id = job.audience_id
        if recorded is not None and recorded["mode"] == MODE_CREATE:
            # The create may have happened since: the plan is the one journaled.
            audience_id = None
        result, diff, problem = await self._diff(
            work,
            audience_id,
            job.id,
            snapshot_path=self.pending_snapshot_path,
            write_diff=recorded is None or recorded["mode"] == MODE_DIFF,
        )
        if recorded is not None:
            if recorded["mode"] == MODE_DIFF and problem:
                raise StateError(
                    f"job {job.id} planned its APPEND/REMOVE from a snapshot that is no longer "
                    f"usable ({problem}); rerun with --restart (the mirror then sends a REPLACE)"
                )
            decision = MirrorDecision(mode=recorded["mode"], reason=recorded["reason"])
        else:
            decision = self._decide(audience_id, diff, problem, len(diff.added) + len(diff.removed))
        plan, chosen = self._make_plan(
            decision, diff, audience_id, diff.added, diff.removed, result.parts
        )
        if recorded is not None:
            plan["baseline_op_id"] = recorded.get("baseline_op_id")
        rows_of = {p.index: p.rows for p in chosen}
        if recorded is None and (refusal := floor_refusal(plan, rows_of)):
            raise UsageError(f"refusing to start: {refusal}; nothing was sent")
        # Keep only the files the plan uploads (the export's parts or the diff's).
        drop = INPUT_DIR if decision.mode in (MODE_DIFF, MODE_NOTHING) else DIFF_DIR
        await asyncio.to_thread(shutil.rmtree, work / drop, True)
        for part in chosen:
            self.journal.record_part(
                job.id,
                index=part.index,
                file=part.file,
                bytes=part.bytes,
                rows=part.rows,
                md5=part.md5,
            )
        self.journal.truncate_parts(job.id, len(chosen))
        await self._upload_parts(chosen)
        summary = {key: getattr(result, key) for key in SUMMARY_KEYS if key != "parts"}
        summary["parts"] = len(chosen)
        summary["calculate_type"] = str(result.calculate_type)
        summary["rejected"] = {str(k): int(v) for k, v in dict(result.rejected).items()}
        summary["mirror"] = plan
        self.journal.set_prepared(job.id, summary, str(result.calculate_type), now=self.clock())

    async def _upload_parts(self, chosen: Sequence[PartInfo]) -> None:
        rows = self.journal.parts(self.current.id)
        self.reporter(StageChanged(stage="upload", started=True))
        sem = asyncio.Semaphore(self.concurrency)
        try:
            async with asyncio.TaskGroup() as tg:
                for part in chosen:
                    row = rows[part.index]
                    if row.file_path is not None:
                        self.reporter(
                            PartUploaded(
                                path=str(part.path),
                                file_path=row.file_path,
                                bytes=part.bytes,
                                reused=True,
                            )
                        )
                        continue
                    await sem.acquire()
                    tg.create_task(self._upload(part.index, part.path, part.md5, sem))
        except BaseExceptionGroup as group:
            raise _one_error(group) from group
        self.reporter(StageChanged(stage="upload", started=False))

    # -- operations ------------------------------------------------------------------------

    def _plan(self) -> dict[str, Any]:
        prepared = self._refresh().prepared or {}
        plan = prepared.get("mirror")
        if not isinstance(plan, dict):
            raise StateError(f"job {self.current.id} has no journaled mirror plan")
        return plan

    def _steps(self) -> list[Step]:
        return mirror_steps(self._plan(), self.paths_per_call)

    async def _check_floor(self, steps: Sequence[Step]) -> None:
        rows_of = {i: p.rows for i, p in self.journal.parts(self.current.id).items()}
        refusal = floor_refusal(self._plan(), rows_of)
        if refusal:
            raise UsageError(f"refusing to start: {refusal}")

    async def _operate(self) -> None:
        plan = self._plan()
        steps = self._steps()
        done = self._done_batches()
        todo = [s for s in steps if s.index not in done and s.is_update]
        if not done and todo and self.current.audience_id is not None:
            # Pause before the first operation rather than between the APPEND and the REMOVE
            # (the audience would hold the removed IDs until the next day).
            used, _ = self._quota_used(self.current.audience_id)
            limit = DAILY_FILE_OPERATIONS_PER_AUDIENCE
            if len(todo) <= limit < used + len(todo):
                _, end = utc_day_bounds(self.clock())
                self._pause_for_quota(
                    f"{limit} file operations a day per audience ({used} used, this mirror "
                    f"needs {len(todo)})",
                    steps,
                    end,
                )
        await super()._operate()
        await self._record_snapshot(plan)

    async def _record_snapshot(self, plan: dict[str, Any]) -> None:
        """Seal the new snapshot now that TikTok accepted every operation of the plan."""
        job = self._refresh()
        audience_id = job.audience_id
        if audience_id is None:
            raise StateError(f"job {job.id} finished without an audience")
        self._remember_name()
        if plan["mode"] == MODE_NOTHING:
            self.pending_snapshot_path.unlink(missing_ok=True)
            self.snapshot_outcome = "kept"
            return
        adv = self.spec.advertiser_id
        current, _ = self.store.load(self.api_base, adv, audience_id)
        if (
            current is not None
            and current.header.job_id == job.id
            and current.header.body_xxh3 == plan["snapshot_xxh3"]
        ):
            self.snapshot_outcome = "recorded"  # a rerun after the commit itself
            return
        own = [op for op in self.journal.operations(job.id) if op.outcome == Outcome.DONE]
        others = _changed_by_others(
            self.journal.operations_on(self.api_base, adv, audience_id),
            job.id,
            after=plan.get("baseline_op_id") or 0,
        )
        if others:
            # Another job changed the audience while this one ran: what it holds is unknown.
            self.store.discard(self.api_base, adv, audience_id)
            self.snapshot_outcome = "discarded"
            return
        pending = await self._pending_snapshot(plan)
        self.store.commit(
            pending,
            api_base=self.api_base,
            advertiser_id=adv,
            audience_id=audience_id,
            calculate_type=self.calculate_type,
            last_op_id=max((op.id for op in own), default=plan.get("baseline_op_id")),
            job_id=job.id,
            written_at=self.clock(),
        )
        self.snapshot_outcome = "recorded"

    async def _pending_snapshot(self, plan: dict[str, Any]) -> PendingSnapshot:
        """The new snapshot body in the work dir, checked against the plan; rebuilt (the same
        prepare and diff) when a crash or a clean-up lost it."""
        for attempt in range(2):
            pending = PendingSnapshot(
                path=self.pending_snapshot_path,
                digest_size=self.options.digest_size,
                count=int(plan["snapshot_count"]),
                body_xxh3=str(plan["snapshot_xxh3"]),
            )
            if await asyncio.to_thread(_body_matches, pending):
                return pending
            if attempt == 0:
                await self._prepare_and_upload()
        raise StateError(
            f"job {self.current.id}: the new snapshot could not be rebuilt identically; "
            "rerun with --restart"
        )

    def _result(self, *, paused: bool = False, pending: dict[str, Any] | None = None) -> SyncResult:
        base = super()._result(paused=paused, pending=pending)
        plan = (self.current.prepared or {}).get("mirror")
        if not isinstance(plan, dict):
            return base
        info = {key: plan[key] for key in RESULT_KEYS}
        info["snapshot"] = self.snapshot_outcome
        if self.superseded_job is not None:
            info["superseded_job"] = self.superseded_job
        return dataclasses.replace(base, mirror=info)

    # -- dry run ---------------------------------------------------------------------------

    async def plan(self, *, restart: bool) -> SyncResult:
        """Prepare and diff into a temporary directory; report the counts, the mode and why,
        and the operations a real run would send. Nothing is written to the journal or the
        snapshot store."""
        job = None if restart or not self.resumable else self.journal.find_job(self.key)
        same = (
            job is not None
            and job.fingerprint == self.fingerprint
            and job.status != JobStatus.DONE
            and not self._stale_diff(job)
        )
        recorded = (job.prepared or {}).get("mirror") if same and job is not None else None
        if same and job is not None and job.audience_id is not None:
            audience_id: str | None = job.audience_id
        elif self.spec.audience_id is not None:
            audience_id = self.spec.audience_id
        elif self.spec.name is not None:
            audience_id = await self._named_audience()
        else:
            audience_id = None
        problems: list[str] = []
        cover: int | None = None
        if audience_id is not None:
            try:
                audience = await self._get(audience_id)
                cover = audience.cover_num
            except UsageError as exc:
                problems.append(str(exc))
        else:
            audiences: list[Audience] = await self.client.list_audiences(self.spec.advertiser_id)
            try:
                self._check_room(audiences)
            except UsageError as exc:
                problems.append(str(exc))
        parent = self.journal.state_dir / "work"
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="plan-", dir=parent) as tmp:
            result, diff, problem = await self._diff(
                Path(tmp),
                None if recorded and recorded["mode"] == MODE_CREATE else audience_id,
                job.id if same and job is not None else None,
                snapshot_path=None,
                write_diff=True,
            )
            if recorded is not None:
                decision = MirrorDecision(mode=recorded["mode"], reason=recorded["reason"])
            else:
                decision = self._decide(
                    audience_id, diff, problem, len(diff.added) + len(diff.removed)
                )
            plan, chosen = self._make_plan(
                decision, diff, audience_id, diff.added, diff.removed, result.parts
            )
        rows_of = {p.index: p.rows for p in chosen}
        done: set[int] = set()
        if same and job is not None:
            done = {
                op.batch for op in self.journal.operations(job.id) if op.outcome is Outcome.DONE
            }
        elif refusal := floor_refusal(plan, rows_of):
            problems.append(f"refusing to start: {refusal}")
        steps = [s for s in mirror_steps(plan, self.paths_per_call) if s.index not in done]
        ops_used, replaces_used = self._quota_used(audience_id)
        updates = [s for s in steps if s.is_update]
        calls: dict[str, int] = {"upload": len(chosen)} if chosen else {}
        for s in steps:
            calls[s.kind.lower()] = calls.get(s.kind.lower(), 0) + 1
        start, _ = utc_day_bounds(self.clock())
        remaining = max(0, DAILY_FILE_OPERATIONS_PER_AUDIENCE - ops_used)
        report = {
            **{key: plan[key] for key in RESULT_KEYS},
            "audience_id": audience_id,
            "cover_num": cover,
            "parts": len(chosen),
            "bytes": sum(p.bytes for p in chosen),
            "calls": calls,
            "operations": [
                {"batch": s.index, "action": s.kind, "file_paths": len(s.parts)} for s in steps
            ],
            "resumes_job": str(job.id) if same and job is not None else None,
            "quota": {
                "day": iso_utc(start)[:10],
                "operations_used": ops_used,
                "operations_remaining": remaining,
                "replaces_used": replaces_used,
                "replaces_remaining": max(0, DAILY_REPLACES_PER_AUDIENCE - replaces_used),
                "operations_needed": len(updates),
                "fits_today": len(updates) <= remaining,
            },
            "problems": problems,
        }
        return self._plan_result(
            audience_id,
            result,
            len(chosen),
            report,
            mirror={**{key: plan[key] for key in RESULT_KEYS}, "snapshot": "unchanged"},
        )


def _body_matches(pending: PendingSnapshot) -> bool:
    """Whether the file holds a header block and exactly the expected body."""
    try:
        with open(pending.path, "rb") as f:
            f.seek(0, 2)
            if f.tell() != HEADER_BYTES + pending.count * pending.digest_size:
                return False
            f.seek(HEADER_BYTES)
            h = xxhash.xxh3_128()
            while block := f.read(32 << 20):
                h.update(block)
    except OSError:
        return False
    return h.hexdigest() == pending.body_xxh3
