"""What varies between sync actions, behind one Protocol: which audience a job works on, what it
prepares and uploads, which operations it sends, and what follows them.

:class:`DirectStrategy` is create, append, remove and replace: the export's parts are uploaded
as its source hands them over (as prepare finishes them, or from a prepared directory) and sent
in batches. The mirror's strategy lives in
:mod:`asyncsync.jobs.mirror.strategy`. A strategy keeps its own state and drives the run only
through the run's public members.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from asyncsync.errors import UsageError, as_sync_error, first_error
from asyncsync.events import JobNotice, PartUploaded
from asyncsync.jobs.plan import PlanReport, Step, build_steps, floor_problem
from asyncsync.jobs.spec import JobAction
from asyncsync.jobs.uploads import PartUpload
from asyncsync.pipeline.parts import PartInfo
from asyncsync.pipeline.prepare import PrepareCount, PrepareResult
from asyncsync.rules.limits import DAILY_FILE_OPERATIONS_PER_AUDIENCE
from asyncsync.store.journal import JobRow, JobStatus

if TYPE_CHECKING:
    from asyncsync.jobs.runner import JobRun

__all__ = ["DirectStrategy", "JobStrategy"]


class JobStrategy(Protocol):
    """The action-specific half of a sync job (the run, :class:`~asyncsync.jobs.runner.JobRun`,
    is the other)."""

    supersedes_changed_input: bool
    """Whether an unfinished job whose input files changed is abandoned for a new one (mirror:
    the newest export is what the audience must equal) instead of refused with
    InputChangedError (the others: abandoning would drop the old input's unsent batches)."""

    async def resolve_target(self, run: JobRun, restart: bool, *, dry: bool) -> str | None:
        """The audience a new job starts with (None: it creates one). ``dry``: write nothing."""
        ...

    def is_stale(self, run: JobRun, job: JobRow) -> bool:
        """Whether the unfinished ``job``'s journaled plan no longer fits the audience, so a
        new job must plan again."""
        ...

    async def prepare_and_upload(self, run: JobRun) -> None:
        """Take the job's parts from its source (:attr:`JobRun.source`: the input prepared
        into the job's work dir, or a prepared directory), journal them and upload them."""
        ...

    def steps(self, run: JobRun) -> list[Step]:
        """The job's operations, from the journal (after :meth:`prepare_and_upload`)."""
        ...

    async def before_operations(self, run: JobRun, steps: Sequence[Step], *, first: bool) -> None:
        """Refuse or pause before the operations (``first``: none is done yet)."""
        ...

    def on_audience_created(self, run: JobRun, audience_id: str) -> None:
        """A create of this job made (or reconciliation adopted) ``audience_id``."""
        ...

    async def after_operations(self, run: JobRun) -> None:
        """Every operation is done (also on a rerun that found nothing left to send)."""
        ...

    def result_extras(self, run: JobRun) -> dict[str, Any]:
        """Extra fields of the job's :class:`~asyncsync.SyncResult`."""
        ...

    async def plan(
        self,
        run: JobRun,
        job: JobRow | None,
        *,
        audience_id: str | None,
        cover_num: int | None,
        problems: list[str],
    ) -> tuple[PrepareCount | PrepareResult, PlanReport]:
        """The dry run's plan: what a real run continuing ``job`` (None: a new job) on
        ``audience_id`` would send. ``problems`` holds what the run's checks found so far."""
        ...

    def dry_result_extras(self, run: JobRun, report: PlanReport) -> dict[str, Any]:
        """Extra fields of a dry run's :class:`~asyncsync.SyncResult`."""
        ...


class DirectStrategy:
    """create, append, remove, replace: deliver the export's parts as they are prepared."""

    supersedes_changed_input = False

    def __init__(self, action: JobAction) -> None:
        self.action = action

    async def resolve_target(self, run: JobRun, restart: bool, *, dry: bool) -> str | None:
        return run.spec.audience_id

    def is_stale(self, run: JobRun, job: JobRow) -> bool:
        return False

    async def prepare_and_upload(self, run: JobRun) -> None:
        """Take the parts from the job's source (prepare writes them into the job's work dir)
        and upload each part as soon as it is final."""
        job = run.current
        work = run.work_dir
        shutil.rmtree(work, ignore_errors=True)
        work.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        queue: asyncio.Queue[PartInfo | None] = asyncio.Queue(maxsize=run.settings.concurrency)

        async def on_part(part: PartInfo) -> None:
            row = run.journal.record_part(
                job.id,
                index=part.index,
                file=part.file,
                bytes=part.bytes,
                rows=part.rows,
                md5=part.md5,
            )
            if row.file_path is not None:
                run.reporter(
                    PartUploaded(
                        path=str(part.path), file_path=row.file_path, bytes=part.bytes, reused=True
                    )
                )
                return
            await queue.put(part)

        async def produce() -> PrepareResult:
            result = await run.source.parts(work, reporter=run.reporter, on_part=on_part)
            await queue.put(None)
            return result

        async def handed_over() -> AsyncIterator[PartUpload]:
            while (part := await queue.get()) is not None:
                yield PartUpload(part.index, Path(part.path), part.md5)

        try:
            async with asyncio.TaskGroup() as tg:
                producer = tg.create_task(produce())
                tg.create_task(run.uploader().upload(handed_over()))
        except BaseExceptionGroup as group:
            raise as_sync_error(first_error(group)) from group
        result = producer.result()
        run.journal.truncate_parts(job.id, max((p.index for p in result.parts), default=0))
        run.record_prepared(result, len(result.parts))

    def steps(self, run: JobRun) -> list[Step]:
        parts = run.journal.parts(run.current.id)
        return build_steps(self.action, list(parts), run.settings.paths_per_call)

    async def before_operations(self, run: JobRun, steps: Sequence[Step], *, first: bool) -> None:
        if not first:
            return
        self._check_today(run, steps)
        rows_of = {i: p.rows for i, p in run.journal.parts(run.current.id).items()}
        cover: int | None = None
        audience_id = run.current.audience_id
        if audience_id is not None and self.action in (JobAction.APPEND, JobAction.REMOVE):
            audience = await run.wait_idle(audience_id, steps, time.monotonic())
            cover = audience.cover_num
        problem = floor_problem(self.action, steps, rows_of, cover)
        if problem:
            raise UsageError(f"refusing to start: {problem}")

    def _check_today(self, run: JobRun, steps: Sequence[Step]) -> None:
        """A REPLACE cuts the audience to its first batch: it starts only when the APPENDs
        that follow it fit in today's quota too (else the job pauses before sending anything,
        saying when it can run). A create destroys nothing: it starts, saying when its APPENDs
        beyond today's quota will be sent."""
        limit = DAILY_FILE_OPERATIONS_PER_AUDIENCE
        audience_id = run.current.audience_id
        if self.action is JobAction.REPLACE and audience_id is not None:
            use = run.quota_use(audience_id)
            needed = len(steps)
            if use.replaces_left < 1 or use.operations + min(needed, limit) > limit:
                run.pause_for_quota(
                    f"{limit} file operations and 1 REPLACE a day per audience (this REPLACE "
                    f"and its {needed - 1} APPEND(s) need {needed} operations, "
                    f"{use.operations_left} left today, {use.replaces_left} REPLACE left); "
                    "nothing was sent, so that the audience is not left cut to its first batch",
                    steps,
                    use.day_end,
                )
        elif self.action is JobAction.CREATE and audience_id is None and len(steps) > limit:
            run.reporter(
                JobNotice(
                    message=f"this create needs {len(steps)} operations, TikTok allows {limit} "
                    "a day per audience: the job will pause after the first "
                    f"{limit} and the same command sends the rest on the following day(s)"
                )
            )

    def on_audience_created(self, run: JobRun, audience_id: str) -> None:
        pass

    async def after_operations(self, run: JobRun) -> None:
        pass

    def result_extras(self, run: JobRun) -> dict[str, Any]:
        return {}

    async def plan(
        self,
        run: JobRun,
        job: JobRow | None,
        *,
        audience_id: str | None,
        cover_num: int | None,
        problems: list[str],
    ) -> tuple[PrepareCount | PrepareResult, PlanReport]:
        result = await count_parts(run)
        parts = result.parts
        journaled = run.journal.parts(job.id) if job is not None else {}
        # A continued job has this call's fingerprint, so prepare would write the same parts
        # (its output depends only on the input and the fingerprinted options): a journaled
        # part of the same index, rows and bytes (and MD5, when the source has it: a prepared
        # directory) with a file_path is not uploaded again.
        reused = sum(
            1
            for p in parts
            if (row := journaled.get(p.index)) is not None
            and (row.rows, row.bytes) == (p.rows, p.bytes)
            and (not isinstance(p, PartInfo) or row.md5 == p.md5)  # a delivered part's MD5
            and row.file_path is not None
        )
        steps = build_steps(self.action, [p.index for p in parts], run.settings.paths_per_call)
        done = run.done_batches(job.id) if job is not None else set()
        if not done and (
            floor := floor_problem(self.action, steps, {p.index: p.rows for p in parts}, cover_num)
        ):
            problems.append(floor)
        report = PlanReport(
            audience_id=audience_id,
            resumes_job=None if job is None else job.id,
            parts=len(parts),
            bytes=sum(p.bytes for p in parts),
            uploads=len(parts) - reused,
            uploads_reused=reused,
            steps=tuple(s for s in steps if s.index not in done),
            quota=run.quota_use(audience_id),
            problems=tuple(problems),
            already_done=job is not None and job.status is JobStatus.DONE,
        )
        return result, report

    def dry_result_extras(self, run: JobRun, report: PlanReport) -> dict[str, Any]:
        return {}


async def count_parts(run: JobRun) -> PrepareCount | PrepareResult:
    """Count the job's parts for a dry run through its source (:meth:`PartSource.count
    <asyncsync.jobs.source.PartSource.count>`): the counts and part sizes a real run would see,
    without writing a part file. A counting pass spills into the state directory's ``work/``
    (as the real run's parts do), never into ``$TMPDIR``."""
    work = run.journal.state_dir / "work"
    await asyncio.to_thread(work.mkdir, mode=0o700, parents=True, exist_ok=True)
    return await run.source.count(work, reporter=run.reporter)
