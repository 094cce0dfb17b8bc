"""The mirror strategy (``--action mirror``): make an audience equal to an export by sending only
what changed since the last delivery.

1. the export is prepared into the job's work dir (``input/``), as for any sync;
2. it is merged with the audience's snapshot (:mod:`asyncsync.store.snapshots`, checked for
   trust: a sound file, written for this audience, not made stale by a later operation of
   another job), giving the added and removed IDs as part files (``diff/``) and the new
   snapshot body;
3. :func:`~asyncsync.jobs.mirror.plan.choose_mode` picks APPEND + REMOVE, a REPLACE (no
   trustworthy snapshot, or a diff above ``replace_threshold``), a create (first run) or
   nothing; the plan is refused before any upload when it would leave fewer than 1,000 members;
4. the chosen parts are uploaded and the plan (:class:`~asyncsync.jobs.mirror.plan.MirrorPlan`)
   is journaled with them; the operations run with the journal's intent/result discipline and
   daily quotas (APPEND and REMOVE count as two);
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
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import xxhash

from asyncsync.errors import BadRequestError, StateError, UsageError
from asyncsync.events import PartUploaded, StageChanged
from asyncsync.jobs.mirror.diff import DiffResult, diff_parts
from asyncsync.jobs.mirror.plan import MirrorDecision, MirrorMode, MirrorPlan, choose_mode
from asyncsync.jobs.plan import PlanReport, Step
from asyncsync.jobs.reconcile import HISTORY_SIZE, get_audience
from asyncsync.jobs.result import MirrorSummary
from asyncsync.jobs.uploads import PartUpload
from asyncsync.pipeline.parts import PartInfo, PlannedPart, plan_parts
from asyncsync.pipeline.prepare import PrepareCount, PrepareResult
from asyncsync.rules.limits import DAILY_FILE_OPERATIONS_PER_AUDIENCE
from asyncsync.store.journal import JobRow, JobStatus, OperationKind, OperationRow, Outcome
from asyncsync.store.snapshots import HEADER_BYTES, PendingSnapshot, Snapshot, SnapshotStore
from asyncsync.tiktok.audience_state import history_mark, history_since_mark

if TYPE_CHECKING:
    from asyncsync.jobs.runner import JobRun

__all__ = ["MirrorStrategy", "SnapshotOutcome"]

INPUT_DIR: Final = "input"
DIFF_DIR: Final = "diff"
PENDING_SNAPSHOT: Final = "snapshot.pending"

P = TypeVar("P", PartInfo, PlannedPart)
"""A part written (the real run) or planned (the dry run)."""


class SnapshotOutcome(StrEnum):
    """What a mirror run did with the audience's snapshot (``SyncResult.mirror.snapshot``)."""

    PENDING = "pending"
    RECORDED = "recorded"
    KEPT = "kept"
    DISCARDED = "discarded"
    UNCHANGED = "unchanged"
    """A dry run: the store is not touched."""


def changed_by_others(
    ops: Iterable[OperationRow], job_id: int | None, *, after: int
) -> list[OperationRow]:
    """The operations in ``ops`` later than operation ``after``, by another job than
    ``job_id``, that TikTok applied or may have applied (done, or of unknown outcome)."""
    return [
        op
        for op in ops
        if op.id > after and op.job_id != job_id and Outcome.applied_or_unknown(op.outcome)
    ]


def journaled_plan(job: JobRow) -> MirrorPlan | None:
    """The mirror plan ``job`` journaled with its parts, if it got that far."""
    data = (job.prepared or {}).get("mirror")
    return MirrorPlan.from_json(data) if isinstance(data, dict) else None


class MirrorStrategy:
    """The mirror's half of a sync job."""

    supersedes_changed_input = True

    def __init__(self, store: SnapshotStore) -> None:
        self.store = store
        self.snapshot_outcome = SnapshotOutcome.PENDING

    # -- which audience --------------------------------------------------------------------

    async def resolve_target(self, run: JobRun, restart: bool, *, dry: bool) -> str | None:
        if run.spec.audience_id is not None:
            return run.spec.audience_id
        named = await self._named_audience(run)
        if named is None:
            named = await self._audience_of_replaced_job(run, restart, remember=not dry)
        if named is None:
            named = await self._audience_of_journal(run, remember=not dry)
        return named

    async def _exists(self, run: JobRun, audience_id: str) -> bool:
        try:
            audiences = await run.client.get_audiences(run.spec.advertiser_id, [audience_id])
        except BadRequestError:
            return False
        return any(a.audience_id == audience_id for a in audiences)

    async def _named_audience(self, run: JobRun) -> str | None:
        """The audience this tool last mirrored under the name, if it still exists."""
        assert run.spec.name is not None
        found = self.store.audience_for_name(run.api_base, run.spec.advertiser_id, run.spec.name)
        return found if found is not None and await self._exists(run, found) else None

    async def _audience_of_replaced_job(
        self, run: JobRun, restart: bool, *, remember: bool
    ) -> str | None:
        """An unfinished job about to be abandoned (``--restart``, or a new export superseding
        it) may have created the audience and stopped before remembering its name. When the
        name leads to no live audience and that job's audience still exists, mirror into it
        (and remember it) instead of creating a second one."""
        job = run.replaced_job(restart)
        if job is None or job.audience_id is None:
            return None
        if not await self._exists(run, job.audience_id):
            return None
        if remember:
            self._remember_name(run, job.audience_id)
        return job.audience_id

    async def _audience_of_journal(self, run: JobRun, *, remember: bool) -> str | None:
        """The snapshot store may have lost the name (a damaged or moved store): a live
        audience of the name that a job of this same mirror made or worked on is continued
        into, never duplicated."""
        assert run.spec.name is not None
        ours = run.journal.audiences_of_key(run.key)
        if not ours:
            return None
        audiences = await run.client.list_audiences(run.spec.advertiser_id)
        live = {a.audience_id for a in audiences if a.name == run.spec.name}
        for audience_id in ours:
            if audience_id in live:
                if remember:
                    self._remember_name(run, audience_id)
                return audience_id
        return None

    def _remember_name(self, run: JobRun, audience_id: str) -> None:
        if run.spec.name is not None:
            self.store.remember_name(
                run.api_base, run.spec.advertiser_id, run.spec.name, audience_id
            )

    def on_audience_created(self, run: JobRun, audience_id: str) -> None:
        self._remember_name(run, audience_id)

    def is_stale(self, run: JobRun, job: JobRow) -> bool:
        """A diff planned by an unfinished job is stale once another job has touched the
        audience since the plan's baseline: its APPEND/REMOVE would apply to a membership it
        did not see, so a new job plans again."""
        if job.status is JobStatus.DONE or job.audience_id is None:
            return False
        plan = journaled_plan(job)
        if plan is None or plan.mode is not MirrorMode.DIFF:
            return False
        ops = run.operations_on(job.audience_id)
        return bool(changed_by_others(ops, job.id, after=plan.baseline_op_id or 0))

    # -- the snapshot ----------------------------------------------------------------------

    async def _trusted_snapshot(
        self, run: JobRun, audience_id: str, job_id: int | None
    ) -> tuple[Snapshot | None, str]:
        """The audience's snapshot if it can be trusted, else (None, why not).

        Stale when the journal holds an operation on the audience, by another job than
        ``job_id``, after the one the snapshot ends with, that TikTok applied or may have
        applied; untrustworthy when the journal no longer holds that operation at all, or
        when TikTok's history of the audience shows operations after the snapshot that no
        journaled operation accounts for (made by another tool, state dir or person).
        """
        snapshot, why = self.store.load(
            run.api_base, run.spec.advertiser_id, audience_id, calculate_type=run.calculate_type
        )
        if snapshot is None:
            return None, why
        ops = run.operations_on(audience_id)
        last = snapshot.header.last_op_id
        if last is not None and not any(op.id == last for op in ops):
            return None, "the journal no longer holds the operation the snapshot was taken after"
        later = changed_by_others(ops, job_id, after=last or 0)
        if later:
            return None, (
                f"{len(later)} operation(s) changed the audience since the snapshot "
                f"(the latest a {later[-1].kind} of job {later[-1].job_id})"
            )
        mark = snapshot.header.history
        if mark is None:
            return None, "the snapshot does not record where TikTok's history of the audience stood"
        audience = await get_audience(
            run.client, run.spec.advertiser_id, audience_id, history_size=HISTORY_SIZE
        )
        seen = history_since_mark(audience, mark)
        ours = [
            op
            for op in ops
            if op.id > (last or 0)
            and op.kind is not OperationKind.CREATE
            and Outcome.applied_or_unknown(op.outcome)
        ]
        if seen is None:
            return None, "TikTok's history of the audience cannot be read"
        if seen > len(ours):
            return None, (
                f"TikTok's history shows {seen - len(ours)} operation(s) on the audience since "
                "the snapshot that this journal did not make (another tool, state directory or "
                "person changed it)"
            )
        return snapshot, ""

    def _last_op_id(self, run: JobRun, audience_id: str | None) -> int | None:
        if audience_id is None:
            return None
        return max((op.id for op in run.operations_on(audience_id)), default=None)

    # -- prepare, diff, decide -------------------------------------------------------------

    async def _diff(
        self,
        run: JobRun,
        work: Path,
        audience_id: str | None,
        job_id: int | None,
        *,
        snapshot_path: Path | None,
        write_diff: bool,
    ) -> tuple[PrepareResult, DiffResult, str]:
        """Prepare the export into ``work/input`` and diff it against the audience's snapshot.
        Returns (prepare result, diff, why the snapshot is not trustworthy or "").

        The source is the export prepared (a prepared directory is refused for a mirror by
        :meth:`~asyncsync.jobs.spec.JobSpec.check_source`), so its parts are in ``work/input``.
        """
        result = await run.source.parts(work / INPUT_DIR, reporter=run.reporter)
        run.reporter(StageChanged(stage="diff", started=True))
        snapshot, problem = (
            await self._trusted_snapshot(run, audience_id, job_id) if audience_id else (None, "")
        )
        diff = await asyncio.to_thread(
            diff_parts,
            [p.path for p in result.parts],
            snapshot,
            out_dir=work / DIFF_DIR,
            digest_size=run.options.digest_size,
            max_file_bytes=run.options.max_file_bytes,
            snapshot_path=snapshot_path,
            write_diff=write_diff and snapshot is not None,
            rel=DIFF_DIR,
        )
        if snapshot is not None and not diff.old_ok:
            problem = f"the snapshot {snapshot.path.name} failed its checksum"
        run.reporter(StageChanged(stage="diff", started=False))
        return result, diff, problem

    def _decide(
        self, run: JobRun, audience_id: str | None, diff: DiffResult, problem: str
    ) -> MirrorDecision:
        use = run.quota_use(audience_id)
        diff_parts_count = len(diff.added) + len(diff.removed)
        ppc = run.settings.paths_per_call
        return choose_mode(
            has_audience=audience_id is not None,
            snapshot_problem=problem,
            added=diff.added_rows,
            removed=diff.removed_rows,
            old_rows=diff.old_rows,
            replace_threshold=run.settings.replace_threshold,
            replaces_left_today=use.replaces_left,
            operations_left_today=use.operations_left,
            diff_operations=math.ceil(diff_parts_count / ppc) if diff_parts_count else 0,
        )

    def _make_plan(
        self,
        run: JobRun,
        decision: MirrorDecision,
        diff: DiffResult,
        whole: Sequence[P],
        baseline_op_id: int | None,
        *,
        diff_parts: tuple[Sequence[P], Sequence[P]],
    ) -> tuple[MirrorPlan, list[P]]:
        """The journaled plan and the parts to upload, numbered 1.. in the journal: ``whole``
        (the export's parts) for a create or a REPLACE, ``diff_parts`` (added, removed) for a
        diff. Parts written (the real run) or planned (the dry run) alike."""
        added: list[P] = []
        removed: list[P] = []
        if decision.mode is MirrorMode.DIFF:
            added = [dataclasses.replace(p, index=i) for i, p in enumerate(diff_parts[0], start=1)]
            removed = [
                dataclasses.replace(p, index=i)
                for i, p in enumerate(diff_parts[1], start=len(added) + 1)
            ]
            chosen = added + removed
        elif decision.mode in (MirrorMode.REPLACE, MirrorMode.CREATE):
            chosen = [
                dataclasses.replace(p, file=f"{INPUT_DIR}/{p.file}", index=i)
                for i, p in enumerate(whole, start=1)
            ]
        else:
            chosen = []
        plan = MirrorPlan(
            mode=decision.mode,
            reason=decision.reason,
            added=diff.added_rows,
            removed=diff.removed_rows,
            unchanged=diff.unchanged_rows,
            export_rows=diff.new_rows,
            snapshot_rows=diff.old_rows,
            replace_threshold=run.settings.replace_threshold,
            paths_per_call=run.settings.paths_per_call,
            baseline_op_id=baseline_op_id,
            snapshot_count=diff.snapshot.count if diff.snapshot else diff.new_rows,
            snapshot_xxh3=diff.snapshot.body_xxh3 if diff.snapshot else None,
            added_parts=tuple(p.index for p in added),
            removed_parts=tuple(p.index for p in removed),
            parts=tuple(p.index for p in chosen),
        )
        return plan, chosen

    async def prepare_and_upload(self, run: JobRun) -> None:
        """Prepare, diff and decide (or redo the journaled decision), then upload the parts."""
        job = run.current
        work = run.work_dir
        recorded = journaled_plan(job)
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(mode=0o700, parents=True, exist_ok=True)
        audience_id = job.audience_id
        if recorded is not None and recorded.mode is MirrorMode.CREATE:
            # The create may have happened since: the plan is the one journaled.
            audience_id = None
        result, diff, problem = await self._diff(
            run,
            work,
            audience_id,
            job.id,
            snapshot_path=work / PENDING_SNAPSHOT,
            write_diff=recorded is None or recorded.mode is MirrorMode.DIFF,
        )
        if recorded is not None:
            if recorded.mode is MirrorMode.DIFF and problem:
                raise StateError(
                    f"job {job.id} planned its APPEND/REMOVE from a snapshot that is no longer "
                    f"usable ({problem}); rerun with --restart (the mirror then sends a REPLACE)"
                )
            decision = MirrorDecision(mode=recorded.mode, reason=recorded.reason)
            baseline = recorded.baseline_op_id
        else:
            decision = self._decide(run, audience_id, diff, problem)
            baseline = self._last_op_id(run, audience_id)
        plan, chosen = self._make_plan(
            run, decision, diff, result.parts, baseline, diff_parts=(diff.added, diff.removed)
        )
        if recorded is None and (refusal := plan.floor_refusal({p.index: p.rows for p in chosen})):
            raise UsageError(f"refusing to start: {refusal}; nothing was sent")
        # Keep only the files the plan uploads (the export's parts or the diff's).
        drop = INPUT_DIR if decision.mode in (MirrorMode.DIFF, MirrorMode.NOTHING) else DIFF_DIR
        await asyncio.to_thread(shutil.rmtree, work / drop, True)
        for part in chosen:
            run.journal.record_part(
                job.id, index=part.index, file=part.file, bytes=part.bytes, rows=part.rows,
                md5=part.md5,
            )  # fmt: skip
        run.journal.truncate_parts(job.id, len(chosen))
        rows = run.journal.parts(job.id)
        for part in chosen:
            if (file_path := rows[part.index].file_path) is not None:
                run.reporter(
                    PartUploaded(
                        path=str(part.path), file_path=file_path, bytes=part.bytes, reused=True
                    )
                )
        await run.uploader().upload(
            PartUpload(p.index, p.path, p.md5) for p in chosen if rows[p.index].file_path is None
        )
        run.record_prepared(result, len(chosen), mirror=plan.to_json())

    # -- operations ------------------------------------------------------------------------

    def _plan(self, run: JobRun) -> MirrorPlan:
        plan = journaled_plan(run.refresh())
        if plan is None:
            raise StateError(f"job {run.current.id} has no journaled mirror plan")
        return plan

    def steps(self, run: JobRun) -> list[Step]:
        return self._plan(run).steps()

    async def before_operations(self, run: JobRun, steps: Sequence[Step], *, first: bool) -> None:
        if not first:
            return
        todo = [s for s in steps if s.is_update]
        audience_id = run.current.audience_id
        if todo and audience_id is not None:
            # Pause before the first operation rather than between the APPEND and the REMOVE
            # (the audience would hold the removed IDs until the next day).
            use, limit = run.quota_use(audience_id), DAILY_FILE_OPERATIONS_PER_AUDIENCE
            if len(todo) <= limit < use.operations + len(todo):
                run.pause_for_quota(
                    f"{limit} file operations a day per audience "
                    f"({use.operations} used, this mirror needs {len(todo)})",
                    steps,
                    use.day_end,
                )
        rows_of = {i: p.rows for i, p in run.journal.parts(run.current.id).items()}
        if refusal := self._plan(run).floor_refusal(rows_of):
            raise UsageError(f"refusing to start: {refusal}")

    async def after_operations(self, run: JobRun) -> None:
        """Seal the new snapshot now that TikTok accepted every operation of the plan."""
        plan = self._plan(run)
        job = run.current
        audience_id = job.audience_id
        if audience_id is None:
            raise StateError(f"job {job.id} finished without an audience")
        self._remember_name(run, audience_id)
        pending_path = run.work_dir / PENDING_SNAPSHOT
        if plan.mode is MirrorMode.NOTHING:
            pending_path.unlink(missing_ok=True)
            self.snapshot_outcome = SnapshotOutcome.KEPT
            return
        adv = run.spec.advertiser_id
        current, _ = self.store.load(run.api_base, adv, audience_id)
        if (
            current is not None
            and current.header.job_id == job.id
            and current.header.body_xxh3 == plan.snapshot_xxh3
        ):
            self.snapshot_outcome = SnapshotOutcome.RECORDED  # a rerun after the commit itself
            return
        own = [op for op in run.journal.operations(job.id) if op.outcome is Outcome.DONE]
        others = changed_by_others(
            run.operations_on(audience_id), job.id, after=plan.baseline_op_id or 0
        )
        if others:
            # Another job changed the audience while this one ran: what it holds is unknown.
            self.store.discard(run.api_base, adv, audience_id)
            self.snapshot_outcome = SnapshotOutcome.DISCARDED
            return
        pending = await self._pending_snapshot(run, plan, pending_path)
        audience = await get_audience(run.client, adv, audience_id, history_size=HISTORY_SIZE)
        self.store.commit(
            pending,
            api_base=run.api_base,
            advertiser_id=adv,
            audience_id=audience_id,
            calculate_type=run.calculate_type,
            last_op_id=max((op.id for op in own), default=plan.baseline_op_id),
            job_id=job.id,
            written_at=run.clock(),
            history=history_mark(audience),
        )
        self.snapshot_outcome = SnapshotOutcome.RECORDED

    async def _pending_snapshot(self, run: JobRun, plan: MirrorPlan, path: Path) -> PendingSnapshot:
        """The new snapshot body in the work dir, checked against the plan; rebuilt (the same
        prepare and diff) when a crash or a clean-up lost it."""
        pending = PendingSnapshot(
            path=path,
            digest_size=run.options.digest_size,
            count=plan.snapshot_count,
            body_xxh3=str(plan.snapshot_xxh3),
        )
        for attempt in range(2):
            if await asyncio.to_thread(_body_matches, pending):
                return pending
            if attempt == 0:
                await self.prepare_and_upload(run)
        raise StateError(
            f"job {run.current.id}: the new snapshot could not be rebuilt identically; "
            "rerun with --restart"
        )

    def result_extras(self, run: JobRun) -> dict[str, Any]:
        plan = journaled_plan(run.current)
        if plan is None:
            return {}
        return {
            "mirror": MirrorSummary.of(
                plan.report(),
                snapshot=self.snapshot_outcome.value,
                superseded_job=run.superseded_job,
            )
        }

    # -- dry run ---------------------------------------------------------------------------

    async def plan(
        self,
        run: JobRun,
        job: JobRow | None,
        *,
        audience_id: str | None,
        cover_num: int | None,
        problems: list[str],
    ) -> tuple[PrepareCount, PlanReport]:
        """Count the export and diff it against the snapshot in a temporary directory beside
        the journal, without writing a part file (the export's sorted digests are kept as
        binary runs: ``digest_size`` bytes per unique ID, besides the dedupe's spill); decide
        as the real run would (or take the journaled decision of the job it continues), and
        plan the parts from the counts. Nothing is written to the journal or the store."""
        recorded = journaled_plan(job) if job is not None else None
        parent = run.journal.state_dir / "work"
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="plan-", dir=parent) as tmp:
            result = await run.source.count(
                Path(tmp), reporter=run.reporter, unique_dir=Path(tmp) / "unique"
            )
            # The export is counted (a prepared directory is refused for a mirror), so its
            # sorted unique digests are in result.unique_runs.
            assert isinstance(result, PrepareCount)
            run.reporter(StageChanged(stage="diff", started=True))
            diffed = None if recorded and recorded.mode is MirrorMode.CREATE else audience_id
            snapshot, problem = (
                await self._trusted_snapshot(run, diffed, None if job is None else job.id)
                if diffed
                else (None, "")
            )
            diff = await asyncio.to_thread(
                diff_parts,
                result.unique_runs,
                snapshot,
                out_dir=Path(tmp) / DIFF_DIR,
                digest_size=run.options.digest_size,
                max_file_bytes=run.options.max_file_bytes,
                snapshot_path=None,
                write_diff=False,
                binary=True,
            )
            if snapshot is not None and not diff.old_ok:
                problem = f"the snapshot {snapshot.path.name} failed its checksum"
            run.reporter(StageChanged(stage="diff", started=False))
        if recorded is not None:
            decision = MirrorDecision(mode=recorded.mode, reason=recorded.reason)
        else:
            decision = self._decide(run, audience_id, diff, problem)
        size, cap = run.options.digest_size, run.options.max_file_bytes
        plan, chosen = self._make_plan(
            run,
            decision,
            diff,
            result.parts,
            self._last_op_id(run, audience_id),
            diff_parts=(
                plan_parts(diff.added_rows, cap, size),
                plan_parts(diff.removed_rows, cap, size),
            ),
        )
        done: set[int] = set()
        if job is not None:
            done = run.done_batches(job.id)
        elif refusal := plan.floor_refusal({p.index: p.rows for p in chosen}):
            problems.append(f"refusing to start: {refusal}")
        already_done = job is not None and job.status is JobStatus.DONE
        shown = recorded if already_done and recorded is not None else plan
        report = PlanReport(
            audience_id=audience_id,
            resumes_job=None if job is None else job.id,
            parts=len(chosen),
            bytes=sum(p.bytes for p in chosen),
            uploads=len(chosen),
            uploads_reused=0,
            steps=tuple(s for s in plan.steps() if s.index not in done),
            quota=run.quota_use(audience_id),
            problems=tuple(problems),
            already_done=already_done,
            mirror=shown.report(),
            cover_num=cover_num,
        )
        return result, report

    def dry_result_extras(self, run: JobRun, report: PlanReport) -> dict[str, Any]:
        assert report.mirror is not None
        return {"mirror": MirrorSummary.of(report.mirror, snapshot=SnapshotOutcome.UNCHANGED.value)}


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
