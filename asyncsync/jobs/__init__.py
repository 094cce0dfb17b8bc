"""The sync job: prepare, upload and create or update a TikTok audience, exactly once.

:func:`sync_audience` is the public entry. The job's lifecycle is one
:class:`~asyncsync.jobs.runner.JobRun`, the same for every action; what an action does
differently is its :class:`~asyncsync.jobs.strategy.JobStrategy` (the direct strategy for
create, append, remove and replace; the mirror's in :mod:`asyncsync.jobs.mirror`). The rules
the job follows are in ``docs/jobs.md``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asyncsync.errors import UsageError
from asyncsync.events import Reporter, null_reporter
from asyncsync.jobs.mirror.strategy import MirrorStrategy
from asyncsync.jobs.result import (
    MirrorCounts,
    MirrorSummary,
    OperationSummary,
    Pending,
    PlanSummary,
    QuotaSummary,
    SyncResult,
)
from asyncsync.jobs.runner import JobRun, as_inputs, default_state_dir
from asyncsync.jobs.source import DeliveredParts, PartSource, PreparedInputs
from asyncsync.jobs.spec import (
    DEFAULT_RECONCILE_WINDOW,
    DEFAULT_REPLACE_THRESHOLD,
    JobAction,
    JobSpec,
    RunSettings,
    input_fingerprint,
    prepared_fingerprint,
)
from asyncsync.jobs.strategy import DirectStrategy, JobStrategy
from asyncsync.pipeline.prepare import PrepareOptions
from asyncsync.pipeline.prepared import open_prepared
from asyncsync.rules.limits import MAX_FILE_PATHS_PER_CALL, calculate_type
from asyncsync.store.journal import Journal
from asyncsync.store.snapshots import SnapshotStore
from asyncsync.tiktok.client import TikTokClient

__all__ = [
    "MirrorCounts",
    "MirrorSummary",
    "OperationSummary",
    "Pending",
    "PlanSummary",
    "QuotaSummary",
    "SyncResult",
    "default_state_dir",
    "sync_audience",
]


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
    reconcile_window: float = DEFAULT_RECONCILE_WINDOW,
    allow_duplicate_name: bool = False,
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
    an empty diff; ``SyncResult.mirror`` says which and why. See :mod:`asyncsync.jobs.mirror`.

    Resuming: the job is identified by (API base, advertiser, name or audience_id, action) and
    journaled in ``state_dir`` (default :func:`default_state_dir`). Calling again with the same
    arguments resumes an unfinished job: parts already uploaded are not uploaded again, operations
    already done are skipped, and an operation whose outcome was lost is reconciled with TikTok's
    state first (a create is looked up by name, an update in the audience's history), so a job
    never creates two audiences. A create whose answer was lost or ambiguous is looked for until
    ``reconcile_window`` seconds (default 300) after it was sent; if it is still not seen, the
    job stops with :class:`OutcomeUnknownError` and the same call looks again before it ever
    creates. A name is an identity: a create (or a mirror by ``name``) is refused with
    :class:`NameTakenError` when a live audience of the advertiser already has the name and
    this journal did not make it for this job, unless ``allow_duplicate_name=True``. When the
    same job with the same, unchanged input already finished, nothing is sent and its earlier
    result is returned with ``resumed=True`` (``restart=True`` runs it again). A finished job's
    prepared parts are deleted; the journal keeps their MD5s and file_paths. A local input file
    is identified by its content (an XXH3-128 digest), not its mtime. Standard input (``"-"``,
    or another stream: a pipe, a FIFO) cannot be fingerprinted: a job that reads it is journaled
    (its operations count against the quotas) but never resumed. An input in object storage
    (``s3://``...) or a Parquet dataset is identified by what its store says about it (ETag,
    version, size, mtime), without reading it.

    ``prepared`` (instead of ``inputs``): deliver the parts of a directory (or URL) written by
    ``prepare``, each checked against its manifest (size and MD5) before any request
    (:mod:`asyncsync.pipeline.prepared`; a remote directory's parts are staged under
    ``state_dir``). The manifest's options are the job's: ``prepare_options`` may only confirm
    its ``id_type``/``hash_algo`` (another calculate_type is refused). Not with ``"mirror"``. A
    create from a prepared directory looks its name up first, like any create.

    ``dry_run=True`` takes the real run's path up to its first write (the same job lookup and
    refusals, the same checks of TikTok's state, the same plan) and returns a result whose
    ``plan`` lists the parts, bytes, calls and quota use, and the ``problems`` the real run
    would stop on; it sends nothing but get/list calls and records nothing in the journal.
    No part file is written: the input is counted (:func:`asyncsync.pipeline.count`; its
    dedupe spills 32 bytes a valid SHA256 ID into ``state_dir/work``, removed when it returns)
    and the parts are planned from the unique count. A mirror's dry run also keeps the
    export's sorted digests (32 bytes a unique SHA256 ID, in ``state_dir/work``, removed when it
    returns) to diff them against the snapshot.

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
    spec.check_source(inputs, prepared)
    settings = RunSettings(
        concurrency=concurrency,
        paths_per_call=paths_per_call,
        max_wait=max_wait,
        poll_interval=poll_interval,
        replace_threshold=replace_threshold,
        reconcile_window=reconcile_window,
        allow_duplicate_name=allow_duplicate_name,
    )
    state = Path(state_dir) if state_dir is not None else default_state_dir()
    source: PartSource
    if prepared is None:
        options = _prepare_options(prepare_options)
        ct = _calculate_type(options)
        source = PreparedInputs(as_inputs(inputs), options)
        fingerprint, resumable = await asyncio.to_thread(
            input_fingerprint, inputs, options.fingerprint(), paths_per_call
        )
    else:
        given = _calculate_type(_prepare_options(prepare_options)) if prepare_options else None
        delivery = await asyncio.to_thread(open_prepared, prepared, stage_root=state / "prepared")
        options, ct = delivery.options, delivery.result.calculate_type.value
        if given is not None and given != ct:
            raise UsageError(f"{delivery.source} holds {ct} digests, not {given}")
        source = DeliveredParts(delivery)
        fingerprint, resumable = prepared_fingerprint(delivery, paths_per_call), True
    with Journal(state) as journal:
        run = JobRun(
            client=client,
            source=source,
            spec=spec,
            settings=settings,
            options=options,
            calculate_type=ct,
            fingerprint=fingerprint,
            resumable=resumable,
            journal=journal,
            reporter=reporter,
            clock=clock,
            strategy=_strategy(spec, journal),
        )
        if dry_run:
            return await run.dry_run(restart=restart)
        with journal.lock(run.key):
            return await run.run(restart=restart)


def _strategy(spec: JobSpec, journal: Journal) -> JobStrategy:
    if spec.action is JobAction.MIRROR:
        return MirrorStrategy(SnapshotStore(journal.state_dir))
    return DirectStrategy(spec.action)


def _calculate_type(options: PrepareOptions) -> str:
    try:
        return calculate_type(options.id_type, options.digest).value
    except ValueError as exc:
        raise UsageError(str(exc)) from None


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
