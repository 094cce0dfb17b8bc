"""The sync job: prepare, upload and create or update a TikTok audience, exactly once.

:func:`sync_audience` runs the prepare stage with a callback that hands every finished part to a
bounded queue; up to ``concurrency`` uploads stream parts to TikTok while later parts are still
being hashed. Once every part is uploaded, the file_paths go to TikTok in batches of at most
``paths_per_call`` (one audience operation each, one at a time, within the daily quotas).

Every step is recorded in the journal (:mod:`asyncsync.journal`) before the job moves on, so the
same call after a crash, a pause or an error resumes the job instead of starting over.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, NoReturn, Protocol

from asyncsync.errors import (
    AsyncSyncError,
    AudienceBusyError,
    FileExpiredError,
    InputChangedError,
    OutcomeUnknownError,
    Paused,
    QuotaExceededError,
    StateError,
    TikTokError,
    TransportError,
    UsageError,
)
from asyncsync.events import (
    AudienceOperation,
    OperationWaiting,
    PartUploaded,
    Reporter,
    StageChanged,
    null_reporter,
)
from asyncsync.journal import JobRow, Journal, OperationRow, Outcome, PartRow, job_key
from asyncsync.mirror import DEFAULT_REPLACE_THRESHOLD, check_replace_threshold
from asyncsync.pipeline.parts import PartInfo
from asyncsync.pipeline.prepare import PrepareOptions, PrepareResult, prepare
from asyncsync.pipeline.prepared import open_prepared
from asyncsync.rules.limits import (
    DAILY_FILE_OPERATIONS_PER_AUDIENCE,
    DAILY_REPLACES_PER_AUDIENCE,
    MAX_AUDIENCES_PER_ADVERTISER,
    MAX_FILE_PATHS_PER_CALL,
    Action,
    calculate_type,
    canonical_calculate_type,
)
from asyncsync.syncplan import (
    JobSpec,
    Step,
    build_steps,
    describe_change,
    epoch_of,
    floor_problem,
    input_fingerprint,
    iso_utc,
    utc_day_bounds,
)
from asyncsync.tiktok.client import TikTokClient
from asyncsync.tiktok.wire import Audience

__all__ = ["SyncResult", "default_state_dir", "sync_audience"]

HISTORY_SIZE: Final = 50
"""History entries read when reconciling an update whose outcome is unknown."""
HISTORY_SLACK_S: Final = 2.0
"""TikTok's ``opt_time`` has one-second resolution: allow for it when matching an intent."""
MAX_POLL_INTERVAL_FACTOR: Final = 16.0
MAX_CREATE_RESENDS: Final = 5
"""Creates sent in one run whose answers were lost (and that did not happen) before giving up."""
RECONCILE_LOOKS: Final = 3
"""Times the audience list is read before concluding that a create did not happen."""
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


def default_state_dir() -> Path:
    """Where the journal lives by default: the user's state directory for asyncsync."""
    import platformdirs

    return Path(platformdirs.user_state_dir("asyncsync"))


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


async def sync_audience(
    client: TikTokClient,
    *inputs: str | os.PathLike[str],
    advertiser_id: str,
    name: str | None = None,
    audience_id: str | None = None,
    action: str | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    concurrency: int = 8,
    paths_per_call: int = MAX_FILE_PATHS_PER_CALL,
    max_wait: float = 900.0,
    dry_run: bool = False,
    restart: bool = False,
    reporter: Reporter = null_reporter,
    clock: Callable[[], float] = time.time,
    poll_interval: float = 1.0,
    replace_threshold: float = DEFAULT_REPLACE_THRESHOLD,
    prepared: str | os.PathLike[str] | None = None,
    **prepare_options: Any,
) -> SyncResult:
    """Prepare ``inputs``, upload the parts and create or update a TikTok audience.

    ``name`` creates a new audience (``action`` None or ``"create"``); ``audience_id`` with
    ``action`` ``"append"``, ``"remove"`` or ``"replace"`` updates one. ``prepare_options`` are the
    fields of :class:`~asyncsync.pipeline.prepare.PrepareOptions` (``id_type``, ``hash_algo``,
    ``column``, ``max_file_bytes``, ``workers``...). ``concurrency`` uploads run at once;
    ``paths_per_call`` (1..500) file_paths go in one audience operation; a running operation is
    waited for (polling every ``poll_interval`` seconds, backing off) at most ``max_wait`` seconds.
    ``clock`` gives epoch seconds: the journal's timestamps and the UTC day of the daily quotas.

    ``action="mirror"`` (with ``audience_id``, or with ``name``: the audience this tool last
    mirrored under that name for the advertiser, created on the first run) makes the audience
    equal to the input by sending only what changed since the last delivery, as recorded in the
    snapshot store beside the journal: APPEND the added IDs, REMOVE the removed ones. It sends a
    REPLACE instead when no trustworthy snapshot exists or when ``added + removed`` exceeds
    ``replace_threshold`` (default 0.5) times the audience as last delivered, and nothing for
    an empty diff; ``SyncResult.mirror`` says which and why. See :mod:`asyncsync.mirrorjob`.

    Resuming: the job is identified by (API base, advertiser, name or audience_id, action) and
    journaled in ``state_dir`` (default :func:`default_state_dir`). Calling again with the same
    arguments resumes an unfinished job: parts already uploaded are not uploaded again, operations
    already done are skipped, and an operation whose outcome was lost is reconciled with TikTok's
    state first (a create is looked up by name, an update in the audience's history), so a job
    never creates two audiences. When the same job with the same, unchanged input already
    finished, nothing is sent and its earlier result is returned with ``resumed=True``
    (``restart=True`` runs it again). A finished job's prepared parts are deleted; the journal
    keeps their MD5s and file_paths. Standard input (``"-"``) cannot be fingerprinted: a job that
    reads it is journaled (its operations count against the quotas) but never resumed.

    ``prepared`` (instead of ``inputs``): deliver the parts of a directory (or URL) written by
    ``prepare``, each checked against its manifest (size and MD5) before any request
    (:mod:`asyncsync.pipeline.prepared`); the manifest's calculate_type is the job's.

    ``dry_run=True`` prepares into a temporary directory and returns a result whose ``plan``
    lists the parts, bytes, calls and quota use; it sends nothing but get/list calls and records
    nothing in the journal.

    Raises :class:`UsageError` for bad arguments or a plan TikTok would refuse (400 audiences,
    the 1,000-member floor), :class:`InputError` for unusable input, :class:`StateError` for an
    unusable journal (before any network call), :class:`InputChangedError` when the input
    changed since the unfinished job began, :class:`Paused` when a daily quota or a running
    operation stops progress (``exc.result`` is a :class:`SyncResult` with ``paused=True``), and
    other :class:`AsyncSyncError` subclasses for failures after retries.
    """
    spec = JobSpec.from_arguments(
        advertiser_id=advertiser_id, name=name, audience_id=audience_id, action=action
    )
    if not inputs and prepared is None:
        raise UsageError("give at least one input file (or - for standard input)")
    if inputs and prepared is not None:
        raise UsageError("give either input files or a prepared directory, not both")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise UsageError(f"concurrency must be a positive integer, not {concurrency!r}")
    if not isinstance(paths_per_call, int) or not 1 <= paths_per_call <= MAX_FILE_PATHS_PER_CALL:
        raise UsageError(f"paths_per_call must be in [1, {MAX_FILE_PATHS_PER_CALL}]")
    if not max_wait >= 0:
        raise UsageError(f"max_wait must be >= 0 seconds, not {max_wait!r}")
    if not poll_interval > 0:
        raise UsageError(f"poll_interval must be > 0 seconds, not {poll_interval!r}")
    threshold = check_replace_threshold(replace_threshold)
    options = _prepare_options(prepare_options)
    try:
        ct = calculate_type(options.id_type, options.hash_algo).value
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    state = Path(state_dir) if state_dir is not None else default_state_dir()
    preparer: Preparer = prepare
    if prepared is not None:
        if spec.action == "mirror":
            raise UsageError("--prepared cannot be mirrored yet: sync the export itself")
        given = _prepare_options(prepare_options) if prepare_options else None
        delivery = await asyncio.to_thread(open_prepared, prepared, stage_root=state / "prepared")
        options, ct, preparer = (
            delivery.options,
            delivery.result.calculate_type.value,
            delivery.replay,
        )
        if given is not None and given.calculate_type.value != ct:
            raise UsageError(
                f"{delivery.source} holds {ct} digests, not {given.calculate_type.value}"
            )
        fingerprint, resumable = delivery.fingerprint(paths_per_call), True
    else:
        fingerprint, resumable = input_fingerprint(inputs, options.fingerprint(), paths_per_call)
    with Journal(state) as journal:
        run_class: type[_SyncRun] = _SyncRun
        extra: dict[str, Any] = {}
        if spec.action == "mirror":
            # Imported here: the mirror job extends _SyncRun, so its module imports this one.
            from asyncsync.mirrorjob import MirrorRun

            run_class, extra = MirrorRun, {"replace_threshold": threshold}
        run = run_class(
            client=client,
            inputs=tuple(os.fspath(i) for i in inputs),
            spec=spec,
            options=options,
            calculate_type=ct,
            fingerprint=fingerprint,
            resumable=resumable,
            journal=journal,
            concurrency=concurrency,
            paths_per_call=paths_per_call,
            max_wait=float(max_wait),
            reporter=reporter,
            clock=clock,
            poll_interval=float(poll_interval),
            preparer=preparer,
            **extra,
        )
        if dry_run:
            return await run.plan(restart=restart)
        with journal.lock(run.key):
            return await run.run(restart=restart)


class Preparer(Protocol):
    """The prepare step of a job: :func:`~asyncsync.pipeline.prepare.prepare`, or the replay of a
    prepared directory (:meth:`~asyncsync.pipeline.prepared.PreparedDir.replay`)."""

    def __call__(
        self,
        *inputs: str | os.PathLike[str],
        out_dir: str | os.PathLike[str],
        reporter: Reporter = ...,
        on_part: Callable[[PartInfo], Awaitable[None]] | None = None,
        options: PrepareOptions | None = None,
    ) -> Awaitable[PrepareResult]: ...


def _prepare_options(fields: dict[str, Any]) -> PrepareOptions:
    if "options" in fields:
        given = fields.pop("options")
        if fields:
            raise UsageError("pass either options=PrepareOptions(...) or option fields, not both")
        if given is not None and not isinstance(given, PrepareOptions):
            raise UsageError("options must be a PrepareOptions")
        return given or PrepareOptions()
    try:
        return PrepareOptions(**fields)
    except TypeError as exc:
        raise UsageError(f"unknown prepare option: {exc}") from None


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


def _one_error(group: BaseExceptionGroup[BaseException]) -> AsyncSyncError:
    """The error a failed task group reaches the caller as: its first AsyncSyncError."""
    leaves = list(_leaves(group))
    for exc in leaves:
        if isinstance(exc, AsyncSyncError):
            return exc
    first = leaves[0] if leaves else group
    return AsyncSyncError(f"sync failed: {type(first).__name__}: {first}")


def _md5_of(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while block := f.read(4 << 20):
            h.update(block)
    return h.hexdigest()


def _inputs_changed(old: dict[str, Any], run: _SyncRun) -> bool:
    """Whether the input files differ between a journaled fingerprint and ``run``'s (a change
    of options alone does not make a new export)."""
    return old.get("inputs") != run.fingerprint.get("inputs")


class _SyncRun:
    """One call of :func:`sync_audience`: the job's state between its steps."""

    supersedes_changed_input = False
    """Whether an unfinished job whose input changed is abandoned for a new one (mirror: the
    newest export is what the audience must equal, and the snapshot's trust check sees what
    the abandoned job sent) instead of refused with InputChangedError (append, remove,
    replace, create: abandoning would drop the old input's unsent batches)."""

    def __init__(
        self,
        *,
        client: TikTokClient,
        inputs: tuple[str, ...],
        spec: JobSpec,
        options: PrepareOptions,
        calculate_type: str,
        fingerprint: dict[str, Any],
        resumable: bool,
        journal: Journal,
        concurrency: int,
        paths_per_call: int,
        max_wait: float,
        reporter: Reporter,
        clock: Callable[[], float],
        poll_interval: float,
        preparer: Preparer = prepare,
    ) -> None:
        self.preparer = preparer
        self.client = client
        self.inputs = inputs
        self.spec = spec
        self.options = options
        self.calculate_type = calculate_type
        self.fingerprint = fingerprint
        self.resumable = resumable
        self.journal = journal
        self.concurrency = concurrency
        self.paths_per_call = paths_per_call
        self.max_wait = max_wait
        self.reporter = reporter
        self.clock = clock
        self.poll_interval = poll_interval
        self.api_base = client.api_base.rstrip("/")
        self.key = job_key(self.api_base, spec.advertiser_id, spec.target, spec.action)
        self.started = time.monotonic()
        self.stats0 = (
            client.stats.api_calls,
            client.stats.retries,
            client.stats.bytes_uploaded,
        )
        self.job: JobRow | None = None
        self.resumed = False
        self.superseded_job: int | None = None

    # -- the job ---------------------------------------------------------------------------

    @property
    def current(self) -> JobRow:
        assert self.job is not None
        return self.job

    def _refresh(self) -> JobRow:
        self.job = self.journal.get_job(self.current.id)
        return self.job

    @property
    def work_dir(self) -> Path:
        return self.journal.state_dir / "work" / f"job-{self.current.id}"

    def _find_job(self, restart: bool) -> JobRow | None:
        """The journaled job this call continues (None: start a new one).

        Raises InputChangedError when an unfinished job's input differs from this call's.
        """
        if not self.resumable:
            return None
        job = self.journal.find_job(self.key)
        if job is None:
            return None
        if restart:
            if job.status != "done":
                self._abandon(job)
            return None
        if self._supersedes(job):
            # run() settled its operations of unknown outcome first (_settle_replaced).
            self._abandon(job)
            self.superseded_job = job.id
            return None
        if job.fingerprint != self.fingerprint:
            if job.status == "done":
                return None
            change = describe_change(job.fingerprint, self.fingerprint)
            if any(
                op.outcome is None and op.kind == "create" for op in self.journal.operations(job.id)
            ):
                change += f"; job {job.id} sent a create whose outcome is still unknown"
            raise InputChangedError(
                f"the input changed since job {job.id} began ({change}); "
                "rerun with --restart to start the job over"
            )
        return job

    def _supersedes(self, job: JobRow) -> bool:
        """Whether this run abandons the unfinished ``job`` because its input files changed."""
        return (
            job.status != "done"
            and self.supersedes_changed_input
            and _inputs_changed(job.fingerprint, self)
        )

    def _replaced_job(self, restart: bool) -> JobRow | None:
        """The unfinished job of this key that this call will abandon, if any: with
        ``--restart``, or when this run supersedes it (:meth:`_supersedes`)."""
        if not self.resumable:
            return None
        job = self.journal.find_job(self.key)
        if job is None or job.status == "done":
            return None
        return job if restart or self._supersedes(job) else None

    async def _settle_replaced(self, restart: bool) -> None:
        """Before a job is abandoned, settle its operations of unknown outcome by reading
        TikTok (an unanswered create is adopted if it happened), so that what it did stays
        known and the new job cannot make a second audience."""
        job = self._replaced_job(restart)
        if job is None or all(op.outcome is not None for op in self.journal.operations(job.id)):
            return
        self.job = job
        try:
            await self._reconcile_pending()
        finally:
            self.job = None

    def _abandon(self, job: JobRow) -> None:
        """Mark ``job`` abandoned and delete its parts (its journal rows stay: what it sent is
        still known to later jobs)."""
        self.journal.set_status(job.id, "abandoned", now=self.clock())
        shutil.rmtree(self.journal.state_dir / "work" / f"job-{job.id}", ignore_errors=True)

    async def _resolve_target(self, restart: bool) -> None:
        """Work out the audience before the job is found or made (mirror by name: which
        audience the name leads to)."""

    async def run(self, *, restart: bool) -> SyncResult:
        await self._settle_replaced(restart)
        await self._resolve_target(restart)
        job = self._find_job(restart)
        if job is not None and job.status == "done" and job.result is not None:
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
                audience_id=self._initial_audience_id(),
                now=self.clock(),
            )
        else:
            self.resumed = True
            if job.status == "paused":
                self.journal.set_status(job.id, "active", now=self.clock())
        self.job = job
        try:
            await self._reconcile_pending()
            await self._preflight()
            await self._upload_all()
            await self._operate()
        except Paused as paused:
            self.journal.set_status(self.current.id, "paused", now=self.clock())
            paused.result = self._result(paused=True, pending=paused.pending)
            raise
        except UsageError:
            # Refused before any operation was sent (400 audiences, the member floor, a wrong
            # audience): nothing to resume, so a corrected rerun starts afresh.
            if not self.journal.operations(self.current.id):
                self.journal.set_status(self.current.id, "abandoned", now=self.clock())
            raise
        result = self._result()
        self.journal.set_status(self.current.id, "done", now=self.clock(), result=result.to_json())
        shutil.rmtree(self.work_dir, ignore_errors=True)
        return result

    def _initial_audience_id(self) -> str | None:
        """The audience a new job of this run starts with (None: it creates one)."""
        return self.spec.audience_id

    def _result(self, *, paused: bool = False, pending: dict[str, Any] | None = None) -> SyncResult:
        job = self._refresh()
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
            bytes_uploaded=stats.bytes_uploaded - self.stats0[2],
            api_calls=stats.api_calls - self.stats0[0],
            retries=stats.retries - self.stats0[1],
            elapsed_s=round(time.monotonic() - self.started, 3),
            resumed=self.resumed,
            paused=paused,
            pending=pending or {},
            job_id=str(job.id),
        )

    # -- preflight -------------------------------------------------------------------------

    async def _preflight(self) -> None:
        """Read-only checks before uploading: the audience exists and can take these files, or
        the advertiser has room for another audience."""
        job = self.current
        if job.audience_id is None:
            audiences = await self.client.list_audiences(self.spec.advertiser_id)
            self._check_room(audiences)
            return
        audience = await self._get(job.audience_id)
        if audience.is_expiring:
            raise UsageError(
                f"audience {job.audience_id} is expiring or expired: TikTok only allows deleting it"
            )
        if audience.calculate_type:
            try:
                theirs = canonical_calculate_type(audience.calculate_type)
                ours = canonical_calculate_type(self.calculate_type)
            except ValueError:
                return
            if theirs != ours:
                raise UsageError(
                    f"audience {job.audience_id} holds {theirs.value} IDs but this input gives "
                    f"{ours.value} (check --id-type and --hash)"
                )

    def _check_room(self, audiences: Sequence[Audience]) -> None:
        if len(audiences) >= MAX_AUDIENCES_PER_ADVERTISER:
            raise UsageError(
                f"advertiser {self.spec.advertiser_id} already has {len(audiences)} audiences, "
                f"TikTok's limit is {MAX_AUDIENCES_PER_ADVERTISER}: delete some "
                "(asyncsync audiences delete) before creating another"
            )

    async def _get(self, audience_id: str, history_size: int | None = None) -> Audience:
        found = await self.client.get_audiences(
            self.spec.advertiser_id, [audience_id], history_size=history_size
        )
        for audience in found:
            if audience.audience_id == audience_id:
                return audience
        raise UsageError(
            f"audience {audience_id} was not found for advertiser {self.spec.advertiser_id}"
        )

    # -- uploads ---------------------------------------------------------------------------

    async def _upload_all(self) -> None:
        """Make sure every part of the job is uploaded, preparing the input when needed."""
        job = self._refresh()
        parts = self.journal.parts(job.id)
        if job.prepared is not None and len(parts) == job.prepared.get("parts"):
            missing = [p for p in parts.values() if p.file_path is None]
            if not missing:
                return
            if await self._reupload_from_disk(missing):
                return
        await self._prepare_and_upload()

    async def _reupload_from_disk(self, missing: Sequence[PartRow]) -> bool:
        """Upload parts whose files are still in the work dir; False if one is gone or differs."""
        for part in missing:
            path = self.work_dir / part.file
            try:
                if path.stat().st_size != part.bytes:
                    return False
                if await asyncio.to_thread(_md5_of, path) != part.md5:
                    return False
            except OSError:
                return False
        self.reporter(StageChanged(stage="upload", started=True))
        sem = asyncio.Semaphore(self.concurrency)
        try:
            async with asyncio.TaskGroup() as tg:
                for part in missing:
                    await sem.acquire()
                    tg.create_task(
                        self._upload(part.index, self.work_dir / part.file, part.md5, sem)
                    )
        except BaseExceptionGroup as group:
            raise _one_error(group) from group
        self.reporter(StageChanged(stage="upload", started=False))
        return True

    async def _prepare_and_upload(self) -> None:
        """Run prepare into the job's work dir and upload each part as soon as it is final."""
        job = self.current
        work = self.work_dir
        shutil.rmtree(work, ignore_errors=True)
        work.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        queue: asyncio.Queue[PartInfo | None] = asyncio.Queue(maxsize=self.concurrency)
        sem = asyncio.Semaphore(self.concurrency)

        async def on_part(part: PartInfo) -> None:
            row = self.journal.record_part(
                job.id,
                index=part.index,
                file=part.file,
                bytes=part.bytes,
                rows=part.rows,
                md5=part.md5,
            )
            if row.file_path is not None:
                self.reporter(
                    PartUploaded(
                        path=str(part.path), file_path=row.file_path, bytes=part.bytes, reused=True
                    )
                )
                return
            await queue.put(part)

        async def produce() -> PrepareResult:
            result = await self.preparer(
                *self.inputs,
                out_dir=work,
                reporter=self.reporter,
                on_part=on_part,
                options=self.options,
            )
            await queue.put(None)
            return result

        async def consume(tg: asyncio.TaskGroup) -> None:
            while (part := await queue.get()) is not None:
                await sem.acquire()
                tg.create_task(self._upload(part.index, Path(part.path), part.md5, sem))

        self.reporter(StageChanged(stage="upload", started=True))
        try:
            async with asyncio.TaskGroup() as tg:
                producer = tg.create_task(produce())
                tg.create_task(consume(tg))
        except BaseExceptionGroup as group:
            raise _one_error(group) from group
        result = producer.result()
        self.reporter(StageChanged(stage="upload", started=False))
        self.journal.truncate_parts(job.id, max((p.index for p in result.parts), default=0))
        summary = {key: getattr(result, key) for key in SUMMARY_KEYS if key != "parts"}
        summary["parts"] = len(result.parts)
        summary["calculate_type"] = str(result.calculate_type)
        summary["rejected"] = {str(k): int(v) for k, v in dict(result.rejected).items()}
        self.journal.set_prepared(job.id, summary, str(result.calculate_type), now=self.clock())

    async def _upload(self, index: int, path: Path, md5: str, sem: asyncio.Semaphore) -> None:
        try:
            uploaded = await self.client.upload_file(
                self.spec.advertiser_id, path, self.calculate_type, md5=md5
            )
            self.journal.record_upload(self.current.id, index, uploaded.file_path, now=self.clock())
            self.reporter(
                PartUploaded(path=str(path), file_path=uploaded.file_path, bytes=uploaded.bytes)
            )
        finally:
            sem.release()

    # -- audience operations ---------------------------------------------------------------

    def _steps(self) -> list[Step]:
        parts = self.journal.parts(self.current.id)
        return build_steps(self.spec.action, list(parts), self.paths_per_call)

    def _done_batches(self) -> set[int]:
        return {
            op.batch
            for op in self.journal.operations(self.current.id)
            if op.outcome == Outcome.DONE
        }

    async def _operate(self) -> None:
        steps = self._steps()
        done = self._done_batches()
        todo = [s for s in steps if s.index not in done]
        if not todo:
            return
        if not done:
            await self._check_floor(steps)
        self.reporter(StageChanged(stage="operations", started=True))
        for step in todo:
            await self._perform(step, steps)
        self.reporter(StageChanged(stage="operations", started=False))

    async def _check_floor(self, steps: Sequence[Step]) -> None:
        rows_of = {i: p.rows for i, p in self.journal.parts(self.current.id).items()}
        cover: int | None = None
        audience_id = self.current.audience_id
        if audience_id is not None and self.spec.action in ("append", "remove"):
            audience = await self._wait_idle(audience_id, steps, time.monotonic())
            cover = audience.cover_num
        problem = floor_problem(self.spec.action, steps, rows_of, cover)
        if problem:
            raise UsageError(f"refusing to start: {problem}")

    def _pending(self, steps: Sequence[Step], reason: str) -> dict[str, Any]:
        done = self._done_batches()
        left = [s for s in steps if s.index not in done]
        return {
            "reason": reason,
            "audience_id": self.current.audience_id,
            "operations": [
                {"batch": s.index, "action": s.kind, "file_paths": len(s.parts)} for s in left
            ],
        }

    def _check_quota(self, step: Step, steps: Sequence[Step]) -> None:
        """Pause before an update that would exceed the audience's daily quotas."""
        audience_id = self.current.audience_id
        assert audience_id is not None
        now = self.clock()
        start, end = utc_day_bounds(now)
        ops = [
            op
            for op in self.journal.operations_between(
                self.api_base, self.spec.advertiser_id, audience_id, start, end
            )
            if op.kind != "create"
        ]
        replaces = sum(1 for op in ops if op.kind == Action.REPLACE.value)
        if len(ops) >= DAILY_FILE_OPERATIONS_PER_AUDIENCE:
            limit = f"{DAILY_FILE_OPERATIONS_PER_AUDIENCE} file operations"
        elif step.kind == Action.REPLACE.value and replaces >= DAILY_REPLACES_PER_AUDIENCE:
            limit = f"{DAILY_REPLACES_PER_AUDIENCE} REPLACE"
        else:
            return
        self._pause_for_quota(limit + " a day per audience (journal count)", steps, end)

    def _pause_for_quota(self, limit: str, steps: Sequence[Step], resume_after: float) -> NoReturn:
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
        raise Paused(
            f"paused: audience {audience_id} is still running an operation after "
            f"waiting {waited:.0f} s (max wait {self.max_wait:.0f} s); "
            f"{len(pending['operations'])} operation(s) pending; run the same command "
            "later to resume",
            pending=pending,
            resume_after=self.clock() + max(self.poll_interval, 60.0),
        )

    async def _wait_idle(self, audience_id: str, steps: Sequence[Step], since: float) -> Audience:
        """Poll the audience until no operation runs on it; Paused after ``max_wait`` s."""
        delay = self.poll_interval
        while True:
            audience = await self._get(audience_id)
            if audience.is_valid is not False:
                return audience
            waited = time.monotonic() - since
            if waited >= self.max_wait:
                self._pause_for_running(audience_id, steps, waited)
            self.reporter(
                OperationWaiting(audience_id=audience_id, waited_s=waited, max_wait_s=self.max_wait)
            )
            await asyncio.sleep(min(delay, max(0.0, self.max_wait - waited)) or delay)
            delay = min(delay * 1.5, self.poll_interval * MAX_POLL_INTERVAL_FACTOR)

    def _file_paths(self, step: Step) -> list[str]:
        parts = self.journal.parts(self.current.id)
        paths = [parts[i].file_path for i in step.parts]
        if any(p is None for p in paths):
            raise StateError(f"batch {step.index} has parts without a file_path")
        return [p for p in paths if p is not None]

    async def _perform(self, step: Step, steps: Sequence[Step]) -> None:
        """Send one operation until TikTok has it: waits out running operations (within
        ``max_wait``), re-uploads expired files once, resends a create found not to have
        happened (at most ``MAX_CREATE_RESENDS`` times)."""
        since = time.monotonic()
        expired_once = False
        lost_creates = 0
        while True:
            file_paths = self._file_paths(step)
            try:
                if step.is_update:
                    if await self._update(step, steps, file_paths, since):
                        return
                    # Busy: someone else's operation started since the wait; wait again.
                    waited = time.monotonic() - since
                    if waited >= self.max_wait:
                        assert self.current.audience_id is not None
                        self._pause_for_running(self.current.audience_id, steps, waited)
                    await asyncio.sleep(self.poll_interval)
                    continue
                if await self._create(step, file_paths):
                    return
            except FileExpiredError:
                if expired_once:
                    raise
                expired_once = True
                self.journal.forget_uploads(self.current.id, step.parts)
                await self._upload_all()
                continue
            lost_creates += 1
            if lost_creates >= MAX_CREATE_RESENDS:
                raise TransportError(
                    f"creating audience {self.spec.name!r} failed: its answer was lost "
                    f"{lost_creates} times and TikTok shows no such audience; rerun the same "
                    "command to try again"
                )

    async def _create(self, step: Step, file_paths: list[str]) -> bool:
        name = self.spec.name
        assert name is not None
        audiences = await self.client.list_audiences(self.spec.advertiser_id)
        self._check_room(audiences)
        known = sorted(a.audience_id for a in audiences if a.name == name)
        job = self.current
        op_id = self.journal.begin_operation(
            job,
            kind="create",
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
            op = self._operation(op_id)
            return await self._reconcile_create(op)
        except TikTokError as exc:
            self.journal.finish_operation(
                op_id, Outcome.FAILED, now=self.clock(), detail={"error": str(exc)}
            )
            raise
        self.journal.finish_operation(
            op_id, Outcome.DONE, now=self.clock(), audience_id=audience_id
        )
        self._refresh()
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
        self._check_quota(step, steps)
        await self._wait_idle(audience_id, steps, since)
        op_id = self.journal.begin_operation(
            self.current,
            kind=step.kind,
            batch=step.index,
            audience_id=audience_id,
            file_paths=file_paths,
            now=self.clock(),
        )
        self.reporter(
            AudienceOperation(
                audience_id=audience_id, action=step.kind, file_paths=len(file_paths), done=False
            )
        )
        try:
            await self.client.update_audience(
                self.spec.advertiser_id, audience_id, file_paths=file_paths, action=step.kind
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
            _, end = utc_day_bounds(self.clock())
            self._pause_for_quota(f"operations ({exc.message})", steps, end)
        except OutcomeUnknownError:
            return await self._reconcile_update(self._operation(op_id))
        except TikTokError as exc:
            self.journal.finish_operation(
                op_id, Outcome.FAILED, now=self.clock(), detail={"error": str(exc)}
            )
            raise
        self.journal.finish_operation(op_id, Outcome.DONE, now=self.clock())
        self.reporter(
            AudienceOperation(
                audience_id=audience_id, action=step.kind, file_paths=len(file_paths), done=True
            )
        )
        return True

    def _operation(self, op_id: int) -> OperationRow:
        for op in self.journal.operations(self.current.id):
            if op.id == op_id:
                return op
        raise StateError(f"operation {op_id} is not in the journal")

    # -- reconciliation --------------------------------------------------------------------

    async def _reconcile_pending(self) -> None:
        """Settle every operation of the job whose outcome the journal does not know."""
        for op in self.journal.operations(self.current.id):
            if op.outcome is not None:
                continue
            if op.kind == "create":
                await self._reconcile_create(op)
            else:
                await self._reconcile_update(op)

    async def _reconcile_create(self, op: OperationRow) -> bool:
        """Did this create happen? Look for an audience of that name that did not exist before
        the intent and that no journaled job owns; adopt it, or record that none was made."""
        name = self.spec.name
        known = set(op.detail.get("known_ids", ())) | self.journal.claimed_audience_ids(
            self.api_base, self.spec.advertiser_id
        )
        candidates: list[Audience] = []
        for attempt in range(RECONCILE_LOOKS):
            if attempt:
                # A create that did happen may take a moment to show in the list.
                await asyncio.sleep(self.poll_interval * attempt)
            audiences = await self.client.list_audiences(self.spec.advertiser_id)
            candidates = [a for a in audiences if a.name == name and a.audience_id not in known]
            if candidates:
                break
        if not candidates:
            self.journal.finish_operation(
                op.id, Outcome.ABSENT, now=self.clock(), detail={"reconciled": True}
            )
            return False

        def created(a: Audience) -> tuple[float, str]:
            t = epoch_of(a.create_time)
            return (t if t is not None else float("inf"), a.audience_id)

        adopted = min(candidates, key=created)
        self.journal.finish_operation(
            op.id,
            Outcome.DONE,
            now=self.clock(),
            audience_id=adopted.audience_id,
            detail={"reconciled": True},
        )
        self._refresh()
        return True

    async def _reconcile_update(self, op: OperationRow) -> bool:
        """Did this update happen? Count the audience's history entries of its action since the
        intent, minus those the journal already attributes to other operations."""
        audience_id = op.audience_id or self.current.audience_id
        assert audience_id is not None
        audience = await self._get(audience_id, history_size=HISTORY_SIZE)
        window = op.intent_at - HISTORY_SLACK_S
        seen = 0
        for entry in audience.history:
            at = epoch_of(entry.opt_time)
            if at is not None and at >= window and entry.action.upper() == op.kind:
                seen += 1
        # Our own operations that TikTok may have stamped inside the window: any whose answer
        # came after its start, and any of another job whose outcome is still unknown (an
        # abandoned job's). Erring this way can only make a done operation look absent (it
        # is sent again, costing one daily operation), never the reverse (a batch lost).
        others = [
            o
            for o in self.journal.operations_on(self.api_base, self.spec.advertiser_id, audience_id)
            if o.id != op.id
            and o.kind == op.kind
            and (o.outcome == Outcome.DONE or o.outcome is None)
            and (o.result_at if o.result_at is not None else o.intent_at) >= window
        ]
        applied = seen > len(others)
        self.journal.finish_operation(
            op.id,
            Outcome.DONE if applied else Outcome.ABSENT,
            now=self.clock(),
            detail={"reconciled": True},
        )
        return applied

    # -- dry run ---------------------------------------------------------------------------

    async def plan(self, *, restart: bool) -> SyncResult:
        """Prepare into a temporary directory and describe what a real run would send."""
        job = None if restart else self.journal.find_job(self.key) if self.resumable else None
        same_input = job is not None and job.fingerprint == self.fingerprint
        with tempfile.TemporaryDirectory(prefix="asyncsync-plan-") as tmp:
            result = await self.preparer(
                *self.inputs, out_dir=Path(tmp), reporter=self.reporter, options=self.options
            )
        parts = list(result.parts)
        journaled = self.journal.parts(job.id) if job is not None and same_input else {}
        reused = sum(
            1
            for p in parts
            if (row := journaled.get(p.index)) is not None
            and row.md5 == p.md5
            and row.file_path is not None
        )
        steps = build_steps(self.spec.action, [p.index for p in parts], self.paths_per_call)
        done_batches = (
            {op.batch for op in self.journal.operations(job.id) if op.outcome == Outcome.DONE}
            if job is not None and same_input
            else set()
        )
        todo = [s for s in steps if s.index not in done_batches]
        audience_id = (job.audience_id if job is not None and same_input else None) or (
            self.spec.audience_id
        )
        problems: list[str] = []
        cover: int | None = None
        if audience_id is None:
            audiences = await self.client.list_audiences(self.spec.advertiser_id)
            try:
                self._check_room(audiences)
            except UsageError as exc:
                problems.append(str(exc))
        else:
            try:
                audience = await self._get(audience_id)
                cover = audience.cover_num
            except UsageError as exc:
                problems.append(str(exc))
        if not done_batches:
            floor = floor_problem(self.spec.action, steps, {p.index: p.rows for p in parts}, cover)
            if floor:
                problems.append(floor)
        now = self.clock()
        start, end = utc_day_bounds(now)
        used: list[OperationRow] = []
        if audience_id is not None:
            used = [
                op
                for op in self.journal.operations_between(
                    self.api_base, self.spec.advertiser_id, audience_id, start, end
                )
                if op.kind != "create"
            ]
        updates = [s for s in todo if s.is_update]
        replaces_used = sum(1 for op in used if op.kind == Action.REPLACE.value)
        calls: dict[str, int] = {"upload": len(parts) - reused}
        for s in todo:
            calls[s.kind.lower()] = calls.get(s.kind.lower(), 0) + 1
        remaining = max(0, DAILY_FILE_OPERATIONS_PER_AUDIENCE - len(used))
        already_done = bool(job is not None and same_input and job.status == "done")
        plan = {
            "already_done": already_done,
            "parts": len(parts),
            "bytes": sum(p.bytes for p in parts),
            "uploads": 0 if already_done else len(parts) - reused,
            "uploads_reused": reused,
            "calls": {} if already_done else calls,
            "operations": []
            if already_done
            else [{"batch": s.index, "action": s.kind, "file_paths": len(s.parts)} for s in todo],
            "audience_id": audience_id,
            "resumes_job": None if job is None or not same_input else str(job.id),
            "quota": {
                "day": iso_utc(start)[:10],
                "operations_used": len(used),
                "operations_remaining": remaining,
                "replaces_used": replaces_used,
                "replaces_remaining": max(0, DAILY_REPLACES_PER_AUDIENCE - replaces_used),
                "operations_needed": 0 if already_done else len(updates),
                "fits_today": already_done or len(updates) <= remaining,
            },
            "problems": problems,
        }
        return self._plan_result(audience_id, result, len(parts), plan)

    def _plan_result(
        self,
        audience_id: str | None,
        result: PrepareResult,
        parts: int,
        plan: dict[str, Any],
        **extra: Any,
    ) -> SyncResult:
        """The SyncResult of a dry run: the prepared counts, this call's traffic, the plan."""
        stats = self.client.stats
        return SyncResult(
            audience_id=audience_id,
            action=self.spec.action,
            calculate_type=str(result.calculate_type),
            file_paths=(),
            parts=parts,
            rows_read=result.rows_read,
            rows_valid=result.rows_valid,
            rows_invalid=result.rows_invalid,
            rejected={str(k): int(v) for k, v in dict(result.rejected).items()},
            duplicates=result.duplicates,
            rows_written=result.rows_written,
            bytes_uploaded=stats.bytes_uploaded - self.stats0[2],
            api_calls=stats.api_calls - self.stats0[0],
            retries=stats.retries - self.stats0[1],
            elapsed_s=round(time.monotonic() - self.started, 3),
            resumed=False,
            plan=plan,
            job_id=None,
            **extra,
        )
