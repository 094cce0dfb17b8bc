"""The lifecycle of one sync job, the same for every action: find the journaled job (or
supersede, or start one), settle operations of unknown outcome, check TikTok's state, prepare
and upload, then send the operations one at a time within the daily quotas.

What varies between actions (which audience, what is uploaded, which operations, what happens
after them) is a :class:`~asyncsync.jobs.strategy.JobStrategy`. The dry run takes the same
path (:meth:`JobRun.dry_run`): the same job lookup, the same checks of TikTok's state, the same
planning of the strategy, and stops before the first write.

Every step is recorded in the journal before the job moves on, so the same call after a crash,
a pause or an error resumes the job instead of starting over (see ``docs/jobs.md``).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NoReturn

from asyncsync.errors import (
    AudienceBusyError,
    FileExpiredError,
    InputChangedError,
    NameTakenError,
    OutcomeUnknownError,
    Paused,
    QuotaExceededError,
    StateError,
    TikTokError,
    TransportError,
    UsageError,
)
from asyncsync.events import AudienceOperation, OperationWaiting, Reporter, StageChanged
from asyncsync.jobs.plan import QuotaUse, Step, epoch_of, iso_utc, quota_use
from asyncsync.jobs.reconcile import Reconciler, get_audience
from asyncsync.jobs.result import Pending, SyncResult
from asyncsync.jobs.source import PartSource
from asyncsync.jobs.spec import JobSpec, RunSettings, describe_change, inputs_changed
from asyncsync.jobs.strategy import JobStrategy
from asyncsync.jobs.uploads import PartUpload, Uploader
from asyncsync.pipeline.prepare import PrepareOptions, PrepareResult
from asyncsync.rules.limits import MAX_AUDIENCES_PER_ADVERTISER, canonical_calculate_type
from asyncsync.store.journal import (
    JobRow,
    JobStatus,
    Journal,
    OperationKind,
    OperationRow,
    Outcome,
)
from asyncsync.tiktok.audience_state import is_expired, operation_running
from asyncsync.tiktok.client import TikTokClient
from asyncsync.tiktok.wire import Audience

__all__ = ["JobChoice", "JobRun"]

MAX_POLL_INTERVAL_FACTOR: Final = 16.0
MAX_CREATE_RESENDS: Final = 5
"""Creates sent in one run whose answers were lost (and that did not happen) before giving up."""


@dataclass(frozen=True, slots=True)
class JobChoice:
    """Which journaled job a call continues, decided the same way for the real and the dry run.

    ``job`` is the job continued (None: a new one starts); ``abandon`` the unfinished job of
    the same key given up first (``--restart``, or superseded by a new export); ``superseded``
    says it was superseded (reported in the result) rather than restarted.
    """

    job: JobRow | None
    abandon: JobRow | None = None
    superseded: bool = False


class JobRun:
    """One call of :func:`asyncsync.sync_audience`: the job's state between its steps.

    ``source`` gives the job's parts (:mod:`asyncsync.jobs.source`): the inputs prepared, or a
    directory prepared elsewhere; ``options`` and ``calculate_type`` are those of its parts.

    Strategies read and drive the run through its public members; nothing else changes it.
    """

    def __init__(
        self,
        *,
        client: TikTokClient,
        source: PartSource,
        spec: JobSpec,
        settings: RunSettings,
        options: PrepareOptions,
        calculate_type: str,
        fingerprint: dict[str, Any],
        resumable: bool,
        journal: Journal,
        reporter: Reporter,
        clock: Callable[[], float],
        strategy: JobStrategy,
    ) -> None:
        self.client = client
        self.source = source
        self.spec = spec
        self.settings = settings
        self.options = options
        self.calculate_type = calculate_type
        self.fingerprint = fingerprint
        self.resumable = resumable
        self.journal = journal
        self.reporter = reporter
        self.clock = clock
        self.strategy = strategy
        self.api_base = client.api_base.rstrip("/")
        self.key = spec.key(self.api_base)
        self.started = time.monotonic()
        self.stats0 = (
            client.stats.api_calls,
            client.stats.retries,
            client.stats.bytes_uploaded,
        )
        self.job: JobRow | None = None
        self.resumed = False
        self.superseded_job: int | None = None
        self.reconciler = Reconciler(
            client=client,
            journal=journal,
            spec=spec,
            api_base=self.api_base,
            clock=clock,
            poll_interval=settings.poll_interval,
            window=settings.reconcile_window,
        )

    # -- the job ---------------------------------------------------------------------------

    @property
    def current(self) -> JobRow:
        if self.job is None:
            raise StateError("the sync job has no journaled job yet")
        return self.job

    def refresh(self) -> JobRow:
        self.job = self.journal.get_job(self.current.id)
        return self.job

    @property
    def work_dir(self) -> Path:
        return self.work_dir_of(self.current.id)

    def work_dir_of(self, job_id: int) -> Path:
        return self.journal.state_dir / "work" / f"job-{job_id}"

    def uploader(self) -> Uploader:
        return Uploader(
            client=self.client,
            journal=self.journal,
            job_id=self.current.id,
            advertiser_id=self.spec.advertiser_id,
            calculate_type=self.calculate_type,
            concurrency=self.settings.concurrency,
            reporter=self.reporter,
            clock=self.clock,
        )

    def done_batches(self, job_id: int | None = None) -> set[int]:
        jid = self.current.id if job_id is None else job_id
        return {op.batch for op in self.journal.operations(jid) if op.outcome is Outcome.DONE}

    def quota_use(self, audience_id: str | None) -> QuotaUse:
        return quota_use(
            self.journal, self.api_base, self.spec.advertiser_id, audience_id, self.clock()
        )

    def operations_on(self, audience_id: str) -> list[OperationRow]:
        return self.journal.operations_on(self.api_base, self.spec.advertiser_id, audience_id)

    def record_prepared(self, result: PrepareResult, parts: int, **extra: Any) -> None:
        """Journal that prepare finished: its counts, the job's part count, ``extra``."""
        summary: dict[str, Any] = {
            "calculate_type": str(result.calculate_type),
            "parts": parts,
            "rows_read": result.rows_read,
            "rows_valid": result.rows_valid,
            "rows_invalid": result.rows_invalid,
            "rejected": {str(k): int(v) for k, v in dict(result.rejected).items()},
            "duplicates": result.duplicates,
            "rows_written": result.rows_written,
            "national_phones": result.national_phones,
            **extra,
        }
        self.journal.set_prepared(
            self.current.id, summary, str(result.calculate_type), now=self.clock()
        )

    # -- which job -------------------------------------------------------------------------

    def _supersedes(self, job: JobRow) -> bool:
        """Whether this run gives up the unfinished ``job`` for a new one: the strategy says
        so for a changed input, or finds the job's plan stale."""
        if job.status is JobStatus.DONE:
            return False
        changed = inputs_changed(job.fingerprint, self.fingerprint)
        return (self.strategy.supersedes_changed_input and changed) or self.strategy.is_stale(
            self, job
        )

    def replaced_job(self, restart: bool) -> JobRow | None:
        """The unfinished job of this key that this call will abandon, if any."""
        if not self.resumable:
            return None
        job = self.journal.find_job(self.key)
        if job is None or job.status is JobStatus.DONE or self._restart_continues(job):
            return None
        return job if restart or self._supersedes(job) else None

    def _restart_continues(self, job: JobRow) -> bool:
        """``--restart`` of an unfinished create that already made its audience, with the same
        input (by content): starting over would make a second audience of the name, so the
        job continues into the one it made (its remaining APPENDs)."""
        return (
            self.spec.audience_id is None
            and self.spec.action == "create"
            and job.status is not JobStatus.DONE
            and job.audience_id is not None
            and job.fingerprint == self.fingerprint
        )

    def choose_job(self, restart: bool) -> JobChoice:
        """The journaled job this call continues, or the one it abandons; reads only.

        Raises InputChangedError when an unfinished job's input differs from this call's and
        the strategy does not supersede it.
        """
        if not self.resumable:
            return JobChoice(None)
        job = self.journal.find_job(self.key)
        if job is None:
            return JobChoice(None)
        if restart and not self._restart_continues(job):
            return JobChoice(None, abandon=job if job.status is not JobStatus.DONE else None)
        if self._supersedes(job):
            return JobChoice(None, abandon=job, superseded=True)
        if job.fingerprint != self.fingerprint:
            if job.status is JobStatus.DONE:
                return JobChoice(None)
            change = describe_change(job.fingerprint, self.fingerprint)
            if any(
                op.outcome is None and op.kind is OperationKind.CREATE
                for op in self.journal.operations(job.id)
            ):
                change += f"; job {job.id} sent a create whose outcome is still unknown"
            if job.audience_id is not None and self.spec.audience_id is None:
                change += (
                    f"; job {job.id} already made audience {job.audience_id}, which --restart "
                    "continues only with the same input (to deliver this one: --audience-id "
                    f"{job.audience_id} --action replace)"
                )
            raise InputChangedError(
                f"the input changed since job {job.id} began ({change}); "
                "rerun with --restart to start the job over"
            )
        return JobChoice(job)

    def abandon(self, job: JobRow) -> None:
        """Mark ``job`` abandoned and delete its parts (its journal rows stay: what it sent is
        still known to later jobs)."""
        self.journal.set_status(job.id, JobStatus.ABANDONED, now=self.clock())
        shutil.rmtree(self.work_dir_of(job.id), ignore_errors=True)

    async def _settle_replaced(self, restart: bool) -> None:
        """Before a job is abandoned, settle its operations of unknown outcome by reading
        TikTok (an unanswered create is adopted if it happened), so that what it did stays
        known and the new job cannot make a second audience."""
        job = self.replaced_job(restart)
        if job is None or all(op.outcome is not None for op in self.journal.operations(job.id)):
            return
        await self.settle(job)

    async def settle(self, job: JobRow) -> None:
        """Settle ``job``'s operations of unknown outcome (see :mod:`.reconcile`)."""
        for audience_id in await self.reconciler.settle(job.id, job.audience_id):
            self.strategy.on_audience_created(self, audience_id)

    # -- the run ---------------------------------------------------------------------------

    async def run(self, *, restart: bool) -> SyncResult:
        await self._settle_replaced(restart)
        initial = await self.strategy.resolve_target(self, restart, dry=False)
        choice = self.choose_job(restart)
        if choice.abandon is not None:
            self.abandon(choice.abandon)
            if choice.superseded:
                self.superseded_job = choice.abandon.id
        job = choice.job
        if job is not None and job.status is JobStatus.DONE and job.result is not None:
            # Nothing is sent: the earlier result, with this call's (zero) traffic.
            return SyncResult.from_json(
                job.result,
                resumed=True,
                bytes_uploaded=0,
                api_calls=0,
                retries=0,
                elapsed_s=round(time.monotonic() - self.started, 3),
            )
        if job is None:
            job = self.journal.create_job(
                key=self.key,
                api_base=self.api_base,
                advertiser_id=self.spec.advertiser_id,
                target=self.spec.target,
                action=self.spec.action,
                fingerprint=self.fingerprint,
                resumable=self.resumable,
                audience_id=initial,
                now=self.clock(),
            )
        else:
            self.resumed = True
            if job.status is JobStatus.PAUSED:
                self.journal.set_status(job.id, JobStatus.ACTIVE, now=self.clock())
        self.job = job
        try:
            await self.settle(job)
            await self.preflight(self.refresh().audience_id)
            await self.upload_all()
            await self._operate()
            await self.strategy.after_operations(self)
        except Paused as paused:
            self.journal.set_status(self.current.id, JobStatus.PAUSED, now=self.clock())
            paused.result = self.result(paused=True, pending=paused.pending)
            raise
        except UsageError:
            # Refused before any operation was sent (400 audiences, the member floor, a wrong
            # audience): nothing to resume, so a corrected rerun starts afresh.
            if not self.journal.operations(self.current.id):
                self.journal.set_status(self.current.id, JobStatus.ABANDONED, now=self.clock())
            raise
        result = self.result()
        self.journal.set_status(
            self.current.id, JobStatus.DONE, now=self.clock(), result=result.to_json()
        )
        shutil.rmtree(self.work_dir, ignore_errors=True)
        return result

    async def dry_run(self, *, restart: bool) -> SyncResult:
        """The run's own path up to its first write: the same job lookup (the same refusal of
        a changed input), the same checks of TikTok's state, the strategy's plan; then a
        report of what the real run would send. Sends nothing but reads."""
        initial = await self.strategy.resolve_target(self, restart, dry=True)
        choice = self.choose_job(restart)
        job = choice.job
        audience_id = job.audience_id if job is not None else initial
        problems: list[str] = []
        cover: int | None = None
        try:
            audience = await self.preflight(audience_id)
            cover = None if audience is None else audience.cover_num
        except UsageError as exc:
            problems.append(str(exc))
        result, report = await self.strategy.plan(
            self, job, audience_id=audience_id, cover_num=cover, problems=problems
        )
        stats = self.client.stats
        return SyncResult(
            audience_id=report.audience_id,
            action=self.spec.action,
            calculate_type=str(result.calculate_type),
            file_paths=(),
            parts=report.parts,
            rows_read=result.rows_read,
            rows_valid=result.rows_valid,
            rows_invalid=result.rows_invalid,
            rejected={str(k): int(v) for k, v in dict(result.rejected).items()},
            duplicates=result.duplicates,
            rows_written=result.rows_written,
            national_phones=result.national_phones,
            bytes_uploaded=stats.bytes_uploaded - self.stats0[2],
            api_calls=stats.api_calls - self.stats0[0],
            retries=stats.retries - self.stats0[1],
            elapsed_s=round(time.monotonic() - self.started, 3),
            resumed=False,
            plan=report.summary(),
            job_id=None,
            **self.strategy.dry_result_extras(self, report),
        )

    def result(self, *, paused: bool = False, pending: dict[str, Any] | None = None) -> SyncResult:
        job = self.refresh()
        summary = job.prepared or {}
        parts = self.journal.parts(job.id)
        stats = self.client.stats
        return SyncResult(
            audience_id=job.audience_id,
            action=self.spec.action,
            calculate_type=str(summary.get("calculate_type", self.calculate_type)),
            file_paths=tuple(p.file_path for p in parts.values() if p.file_path),
            parts=int(summary.get("parts", len(parts))),
            rows_read=int(summary.get("rows_read", 0)),
            rows_valid=int(summary.get("rows_valid", 0)),
            rows_invalid=int(summary.get("rows_invalid", 0)),
            rejected=dict(summary.get("rejected", {})),
            duplicates=int(summary.get("duplicates", 0)),
            rows_written=int(summary.get("rows_written", 0)),
            national_phones=summary.get("national_phones"),
            bytes_uploaded=stats.bytes_uploaded - self.stats0[2],
            api_calls=stats.api_calls - self.stats0[0],
            retries=stats.retries - self.stats0[1],
            elapsed_s=round(time.monotonic() - self.started, 3),
            resumed=self.resumed,
            paused=paused,
            pending=Pending.from_json(pending) if pending else None,
            job_id=str(job.id),
            **self.strategy.result_extras(self),
        )

    # -- uploads ---------------------------------------------------------------------------

    async def upload_all(self) -> None:
        """Make sure every part of the job is uploaded: from the work dir when prepare already
        finished and the parts are still there, else by the strategy's prepare and upload
        (which a delivered directory's parts always take: they are not in the work dir)."""
        job = self.refresh()
        parts = self.journal.parts(job.id)
        if job.prepared is not None and len(parts) == job.prepared.get("parts"):
            missing = [p for p in parts.values() if p.file_path is None]
            if not missing:
                return
            on_disk = [PartUpload(p.index, self.work_dir / p.file, p.md5) for p in missing]
            if await asyncio.to_thread(_all_intact, on_disk, [p.bytes for p in missing]):
                await self.uploader().upload(on_disk)
                return
        await self.strategy.prepare_and_upload(self)

    # -- TikTok's state before any upload ----------------------------------------------------

    async def preflight(self, audience_id: str | None) -> Audience | None:
        """Read-only checks before uploading: the audience exists and can take these files
        (returned), or the advertiser has room for another audience (None)."""
        if audience_id is None:
            audiences = await self.client.list_audiences(self.spec.advertiser_id)
            self.check_room(audiences)
            self.check_name(audiences)
            return None
        audience = await self.get_audience(audience_id)
        if audience.is_expiring:
            raise UsageError(
                f"audience {audience_id} is expiring or expired: TikTok only allows deleting it"
            )
        if audience.calculate_type:
            try:
                theirs = canonical_calculate_type(audience.calculate_type)
                ours = canonical_calculate_type(self.calculate_type)
            except ValueError:
                return audience
            if theirs != ours:
                raise UsageError(
                    f"audience {audience_id} holds {theirs.value} IDs but this input gives "
                    f"{ours.value} (check --id-type and --hash)"
                )
        return audience

    def check_room(self, audiences: Sequence[Audience]) -> None:
        if len(audiences) >= MAX_AUDIENCES_PER_ADVERTISER:
            raise UsageError(
                f"advertiser {self.spec.advertiser_id} already has {len(audiences)} audiences, "
                f"TikTok's limit is {MAX_AUDIENCES_PER_ADVERTISER}: delete some "
                "(asyncsync audiences delete) before creating another"
            )

    def _same_name(self, audiences: Sequence[Audience], mine: str | None) -> list[Audience]:
        """The live audiences of ``audiences`` named as this job's create would name its own,
        other than ``mine``, the oldest first."""
        return sorted(
            (
                a
                for a in audiences
                if a.name == self.spec.name and a.audience_id != mine and not is_expired(a)
            ),
            key=_created_order,
        )

    def check_name(self, audiences: Sequence[Audience]) -> None:
        """A name is an identity: refuse to create an audience when a live one of the
        advertiser already has the name (unless ``allow_duplicate_name``). The strategy has
        already continued into an audience of the name that this job may continue (see
        ``docs/jobs.md``); any left was made elsewhere, or by an earlier finished job."""
        if self.spec.name is None or self.settings.allow_duplicate_name:
            return
        taken = self._same_name(audiences, None)
        if not taken:
            return
        found = taken[0].audience_id
        claimed = self.journal.advertiser_audience_ids(self.spec.advertiser_id)
        where = (
            "an earlier job of this journal made it"
            if found in claimed
            else "this journal did not make it (another state directory, machine or tool)"
        )
        action = "mirror" if self.spec.action == "mirror" else "append|replace|mirror"
        raise NameTakenError(
            f"advertiser {self.spec.advertiser_id} already has a live audience named "
            f"{self.spec.name!r}: {found} ({where}); refusing to create a second one. "
            f"To update it: asyncsync sync INPUT... --audience-id {found} --action {action} "
            "(or pass --allow-duplicate-name to create another audience of that name)",
            audience_id=found,
        )

    async def _check_race(self, audience_id: str) -> None:
        """After a create: when another run created an audience of the same name at the same
        time, the older one (by create_time, then ID) stays; the younger run deletes its own,
        just made, and stops naming the other. Both runs decide alike from the same list."""
        if self.spec.name is None or self.settings.allow_duplicate_name:
            return
        audiences = await self.client.list_audiences(self.spec.advertiser_id)
        rivals = self._same_name(audiences, audience_id)
        mine = [a for a in audiences if a.audience_id == audience_id]
        if not rivals or min(rivals + mine, key=_created_order).audience_id == audience_id:
            return
        await self.client.delete_audiences(self.spec.advertiser_id, [audience_id])
        self.journal.set_status(self.current.id, JobStatus.ABANDONED, now=self.clock())
        found = rivals[0].audience_id
        raise NameTakenError(
            f"audience {found} named {self.spec.name!r} was created by another run at the same "
            f"time; this run deleted its own, {audience_id}, so that the name stays unique. To "
            f"update {found}: asyncsync sync INPUT... --audience-id {found} --action "
            "append|replace|mirror",
            audience_id=found,
        )

    async def get_audience(self, audience_id: str) -> Audience:
        return await get_audience(self.client, self.spec.advertiser_id, audience_id)

    # -- audience operations ---------------------------------------------------------------

    async def _operate(self) -> None:
        steps = self.strategy.steps(self)
        done = self.done_batches()
        todo = [s for s in steps if s.index not in done]
        if not todo:
            return
        await self.strategy.before_operations(self, steps, first=not done)
        self.reporter(StageChanged(stage="operations", started=True))
        for step in todo:
            await self._perform(step, steps)
        self.reporter(StageChanged(stage="operations", started=False))

    def _pending(self, steps: Sequence[Step], reason: str) -> dict[str, Any]:
        done = self.done_batches()
        return {
            "reason": reason,
            "audience_id": self.current.audience_id,
            "operations": [s.describe() for s in steps if s.index not in done],
        }

    def pause_for_quota(self, limit: str, steps: Sequence[Step], resume_after: float) -> NoReturn:
        pending = self._pending(steps, "daily quota")
        pending["resume_after"] = iso_utc(resume_after)
        raise Paused(
            f"paused: TikTok's daily quota of {limit} of audience "
            f"{self.current.audience_id} is used up; {len(pending['operations'])} operation(s) "
            f"pending; run the same command after {iso_utc(resume_after)} to resume",
            pending=pending,
            resume_after=resume_after,
        )

    def _pause_for_running(
        self, audience_id: str, steps: Sequence[Step], waited: float
    ) -> NoReturn:
        pending = self._pending(steps, "operation running")
        max_wait = self.settings.max_wait
        raise Paused(
            f"paused: audience {audience_id} is still running an operation after "
            f"waiting {waited:.0f} s (max wait {max_wait:.0f} s); "
            f"{len(pending['operations'])} operation(s) pending; run the same command "
            "later to resume",
            pending=pending,
            resume_after=self.clock() + max(self.settings.poll_interval, 60.0),
        )

    async def wait_idle(self, audience_id: str, steps: Sequence[Step], since: float) -> Audience:
        """Poll the audience until no operation runs on it; Paused after ``max_wait`` s."""
        poll, max_wait = self.settings.poll_interval, self.settings.max_wait
        delay = poll
        while True:
            audience = await self.get_audience(audience_id)
            if not operation_running(audience):
                return audience
            waited = time.monotonic() - since
            if waited >= max_wait:
                self._pause_for_running(audience_id, steps, waited)
            self.reporter(
                OperationWaiting(audience_id=audience_id, waited_s=waited, max_wait_s=max_wait)
            )
            await asyncio.sleep(min(delay, max(0.0, max_wait - waited)) or delay)
            delay = min(delay * 1.5, poll * MAX_POLL_INTERVAL_FACTOR)

    def _file_paths(self, step: Step) -> list[str]:
        parts = self.journal.parts(self.current.id)
        paths = [parts[i].file_path for i in step.parts]
        if any(p is None for p in paths):
            raise StateError(f"batch {step.index} has parts without a file_path")
        return [p for p in paths if p is not None]

    async def _perform(self, step: Step, steps: Sequence[Step]) -> None:
        """Send one operation until TikTok has it: waits out running operations (within
        ``max_wait``), re-uploads the files TikTok reports expired (only those), resends a
        create found not to have happened (at most ``MAX_CREATE_RESENDS`` times)."""
        since = time.monotonic()
        expired_rounds = 0
        lost_creates = 0
        while True:
            file_paths = self._file_paths(step)
            try:
                if step.is_update:
                    if await self._update(step, steps, file_paths, since):
                        return
                    # Busy: someone else's operation started since the wait; wait again.
                    waited = time.monotonic() - since
                    if waited >= self.settings.max_wait:
                        assert self.current.audience_id is not None
                        self._pause_for_running(self.current.audience_id, steps, waited)
                    await asyncio.sleep(self.settings.poll_interval)
                    continue
                if await self._create(step, file_paths):
                    return
            except FileExpiredError as exc:
                # Each round uploads again what TikTok named as expired (or, when it names
                # none of the batch's file_paths, the whole batch): at most one round a part.
                expired_rounds += 1
                if expired_rounds > len(step.parts):
                    raise
                self.journal.forget_uploads(self.current.id, self._expired_parts(step, exc))
                await self.upload_all()
                continue
            lost_creates += 1
            if lost_creates >= MAX_CREATE_RESENDS:
                raise TransportError(
                    f"creating audience {self.spec.name!r} failed: its answer was lost "
                    f"{lost_creates} times and TikTok shows no such audience; rerun the same "
                    "command to try again"
                )

    def _expired_parts(self, step: Step, exc: FileExpiredError) -> list[int]:
        """The parts of ``step`` whose file_path TikTok's 40905/40910 answer names; all of
        them when it names none."""
        parts = self.journal.parts(self.current.id)
        text = f"{exc.message} {exc}"
        named = [i for i in step.parts if (path := parts[i].file_path) is not None and path in text]
        return named or list(step.parts)

    async def _create(self, step: Step, file_paths: list[str]) -> bool:
        name = self.spec.name
        assert name is not None
        audiences = await self.client.list_audiences(self.spec.advertiser_id)
        self.check_room(audiences)
        self.check_name(audiences)
        known = sorted(a.audience_id for a in audiences if a.name == name)
        op_id = self.journal.begin_operation(
            self.current,
            kind=OperationKind.CREATE,
            batch=step.index,
            audience_id=None,
            file_paths=file_paths,
            detail={"known_ids": known},
            now=self.clock(),
        )
        self.reporter(
            AudienceOperation(
                audience_id="", action="create", file_paths=len(file_paths), done=False
            )
        )
        try:
            audience_id = await self.client.create_audience(
                self.spec.advertiser_id, name, file_paths, self.calculate_type
            )
        except OutcomeUnknownError:
            adopted = await self.reconciler.create(self._operation(op_id), live=True)
            if adopted is None:
                return False
            self.refresh()
            self.strategy.on_audience_created(self, adopted)
            return True
        except TikTokError as exc:
            self.journal.finish_operation(
                op_id, Outcome.FAILED, now=self.clock(), detail={"error": str(exc)}
            )
            raise
        self.journal.finish_operation(
            op_id, Outcome.DONE, now=self.clock(), audience_id=audience_id
        )
        self.refresh()
        await self._check_race(audience_id)
        self.strategy.on_audience_created(self, audience_id)
        self.reporter(
            AudienceOperation(
                audience_id=audience_id, action="create", file_paths=len(file_paths), done=True
            )
        )
        return True

    async def _update(
        self, step: Step, steps: Sequence[Step], file_paths: list[str], since: float
    ) -> bool:
        audience_id = self.current.audience_id
        assert audience_id is not None
        use = self.quota_use(audience_id)
        if (limit := use.blocks(step.kind)) is not None:
            self.pause_for_quota(limit + " a day per audience (journal count)", steps, use.day_end)
        await self.wait_idle(audience_id, steps, since)
        op_id = self.journal.begin_operation(
            self.current,
            kind=step.kind,
            batch=step.index,
            audience_id=audience_id,
            file_paths=file_paths,
            now=self.clock(),
        )
        action = step.kind.value
        self.reporter(
            AudienceOperation(
                audience_id=audience_id, action=action, file_paths=len(file_paths), done=False
            )
        )
        try:
            await self.client.update_audience(
                self.spec.advertiser_id, audience_id, file_paths=file_paths, action=step.action
            )
        except AudienceBusyError as exc:
            # Another operation started since the wait. (A retried request whose first attempt
            # went through reads "busy" too; sending it again later only costs one operation,
            # whereas taking someone else's operation for ours would lose a batch.)
            self.journal.finish_operation(
                op_id, Outcome.BUSY, now=self.clock(), detail={"error": str(exc)}
            )
            return False
        except QuotaExceededError as exc:
            self.journal.finish_operation(
                op_id, Outcome.QUOTA, now=self.clock(), detail={"error": str(exc)}
            )
            self.pause_for_quota(f"operations ({exc.message})", steps, use.day_end)
        except OutcomeUnknownError:
            return await self.reconciler.update(self._operation(op_id), audience_id)
        except TikTokError as exc:
            self.journal.finish_operation(
                op_id, Outcome.FAILED, now=self.clock(), detail={"error": str(exc)}
            )
            raise
        self.journal.finish_operation(op_id, Outcome.DONE, now=self.clock())
        self.reporter(
            AudienceOperation(
                audience_id=audience_id, action=action, file_paths=len(file_paths), done=True
            )
        )
        return True

    def _operation(self, op_id: int) -> OperationRow:
        for op in self.journal.operations(self.current.id):
            if op.id == op_id:
                return op
        raise StateError(f"operation {op_id} is not in the journal")


def _created_order(audience: Audience) -> tuple[float, str]:
    t = epoch_of(audience.create_time)
    return (t if t is not None else float("inf"), audience.audience_id)


def _all_intact(parts: Sequence[PartUpload], sizes: Sequence[int]) -> bool:
    """Whether every part file is still in the work dir with its journaled size and MD5."""
    for part, size in zip(parts, sizes, strict=True):
        try:
            if part.path.stat().st_size != size:
                return False
            with part.path.open("rb") as f:
                if hashlib.file_digest(f, "md5").hexdigest() != part.md5:
                    return False
        except OSError:
            return False
    return True


def default_state_dir() -> Path:
    """Where the journal lives by default: the user's state directory for asyncsync."""
    import platformdirs

    return Path(platformdirs.user_state_dir("asyncsync"))


def as_inputs(inputs: Sequence[str | os.PathLike[str]]) -> tuple[str, ...]:
    return tuple(os.fspath(i) for i in inputs)
