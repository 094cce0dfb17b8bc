"""The dry run and the real run agree: in every situation the suite sets up (a new job, a
finished one, a paused one, an edited input, the member floor, 400 audiences, the daily quota,
a mirror's first run and its diff), a dry run made just before the real run reports the
operations the real run then sends, or the refusal it then meets; and a dry run of a large
input keeps no part files."""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.api import ADVERTISER, CREATE, UPDATE, UPLOAD
from helpers.ids import DIGEST_LINE, maids
from helpers.sandbox import client_for, sync_options

from asyncsync import SyncResult, sync_audience
from asyncsync.errors import (
    AsyncSyncError,
    InputChangedError,
    NameTakenError,
    Paused,
    UsageError,
)
from asyncsync.events import AudienceOperation, Event, PartWritten
from asyncsync.sandbox import Sandbox
from asyncsync.store.journal import JOURNAL_FILENAME
from asyncsync.tiktok.client import TikTokClient

WRITES = (UPLOAD, CREATE, UPDATE)


def write_ids(path: Path, ids: list[str]) -> Path:
    path.write_text("\n".join(ids) + "\n")
    return path


def sent(sandbox: Sandbox) -> dict[str, int]:
    counts = sandbox.request_counts()
    return {k: counts.get(k, 0) for k in WRITES}


def journal_rows(state_dir: Path) -> tuple[int, int, int]:
    path = state_dir / JOURNAL_FILENAME
    if not path.exists():
        return (0, 0, 0)
    with sqlite3.connect(path) as db:
        return tuple(  # type: ignore[return-value]
            db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("jobs", "parts", "operations")
        )


async def agree(
    client: TikTokClient, sandbox: Sandbox, tmp_path: Path, export: Path, **kwargs: Any
) -> SyncResult | AsyncSyncError:
    """Dry run, then the same real run; asserts they agree and returns the real outcome."""
    state = Path(kwargs["state_dir"])
    before, rows = sent(sandbox), journal_rows(state)
    try:
        dry: SyncResult | AsyncSyncError = await sync_audience(
            client, export, dry_run=True, **kwargs
        )
    except AsyncSyncError as exc:
        dry = exc
    assert sent(sandbox) == before, "the dry run sent a write"
    assert journal_rows(state) == rows, "the dry run wrote to the journal"
    try:
        real: SyncResult | AsyncSyncError = await sync_audience(client, export, **kwargs)
    except (AsyncSyncError, Paused) as exc:
        real = exc
    after = sent(sandbox)
    if isinstance(dry, AsyncSyncError):
        assert type(real) is type(dry), (dry, real)
        assert str(real) == str(dry)
        return real
    plan = dry.plan
    assert plan is not None
    if plan.problems:
        assert isinstance(real, UsageError), (plan.problems, real)
        assert any(p.removeprefix("refusing to start: ") in str(real) for p in plan.problems)
        assert after[CREATE] == before[CREATE] and after[UPDATE] == before[UPDATE]
        return real
    if isinstance(real, Paused):
        if real.pending["reason"] == "daily quota":
            assert plan.quota.fits_today is False, plan.quota
            assert after[UPDATE] - before[UPDATE] == plan.quota.operations_remaining
        else:  # how long TikTok runs an operation is not for a plan to know
            assert real.pending["reason"] == "operation running"
        # What is pending is the tail of the plan's operations.
        left = real.pending["operations"]
        planned = [op.to_json() for op in plan.operations]
        assert left == planned[len(planned) - len(left) :]
        return real
    assert isinstance(real, SyncResult), real
    actions = [op.action for op in plan.operations]
    assert after[CREATE] - before[CREATE] == actions.count("create")
    assert after[UPDATE] - before[UPDATE] == len(actions) - actions.count("create")
    assert after[UPLOAD] - before[UPLOAD] == plan.uploads
    assert plan.already_done == (real.resumed and after == before)
    if plan.resumes_job is not None:
        assert real.resumed and real.job_id == plan.resumes_job
    if not plan.already_done:
        assert (real.parts, real.rows_written) == (dry.parts, dry.rows_written)
    if dry.mirror is not None:
        assert real.mirror is not None
        assert dry.mirror.mode == real.mirror.mode
    return real


async def test_create_new_finished_paused_and_resumed(sandbox: Sandbox, tmp_path: Path) -> None:
    export = write_ids(tmp_path / "a.txt", maids(1, 1500))
    opts = sync_options(tmp_path, sandbox, paths_per_call=2, max_file_bytes=300 * DIGEST_LINE)
    async with client_for(sandbox) as client:
        paused = await agree(client, sandbox, tmp_path, export, name="p", **opts | {"max_wait": 0})
        assert isinstance(paused, Paused)  # waiting for the create to finish
        resumed = await agree(client, sandbox, tmp_path, export, name="p", **opts)
        assert isinstance(resumed, SyncResult) and resumed.resumed
        again = await agree(client, sandbox, tmp_path, export, name="p", **opts)
        assert isinstance(again, SyncResult) and again.resumed


async def test_an_edited_input_of_an_unfinished_create_is_refused_by_both(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    export = write_ids(tmp_path / "changing.txt", maids(2, 1200))
    opts = sync_options(tmp_path, sandbox, paths_per_call=2, max_file_bytes=300 * DIGEST_LINE)
    async with client_for(sandbox) as client:
        with pytest.raises(_Killed):  # the create is done, its APPENDs pending
            await sync_audience(client, export, name="c", reporter=_killed_after_create, **opts)
        write_ids(export, maids(3, 1300))
        refused = await agree(client, sandbox, tmp_path, export, name="c", **opts)
        assert isinstance(refused, InputChangedError)
        # The abandoned job made the audience: both refuse to make a second one of the name.
        restarted = await agree(client, sandbox, tmp_path, export, name="c", restart=True, **opts)
        assert isinstance(restarted, NameTakenError)


class _Killed(Exception):
    """Stands for the process being killed."""


def _killed_after_create(event: Event) -> None:
    if isinstance(event, AudienceOperation) and event.done and event.action == "create":
        raise _Killed


async def test_member_floor_and_400_audiences_are_problems_of_both(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    opts = sync_options(tmp_path, sandbox)
    async with client_for(sandbox) as client:
        created = await sync_audience(
            client, write_ids(tmp_path / "a.txt", maids(4, 1500)), name="f", **opts
        )
        small = write_ids(tmp_path / "b.txt", maids(5, 900))
        floor = await agree(
            client, sandbox, tmp_path, small, audience_id=created.audience_id, action="replace",
            **opts,
        )  # fmt: skip
        assert isinstance(floor, UsageError) and "1,000" in str(floor)
        removed = await agree(
            client, sandbox, tmp_path, small, audience_id=created.audience_id, action="remove",
            **opts,
        )  # fmt: skip
        assert isinstance(removed, UsageError)
        seed = write_ids(tmp_path / "seed.txt", maids(6, 10))
        uploaded = await client.upload_file(ADVERTISER, seed, "MAID_SHA256")
        for i in range(399):  # the audience made above is the 400th
            sandbox.state.create(
                advertiser_id=ADVERTISER, name=f"a{i}", file_paths=[uploaded.file_path],
                calculate_type="FIRST_SHA256", sub_type=None, retention_in_days=None,
            )  # fmt: skip
        full = await agree(client, sandbox, tmp_path, small, name="one too many", **opts)
        assert isinstance(full, UsageError) and "400 audiences" in str(full)


async def test_the_daily_quota_is_foreseen(sandbox: Sandbox, tmp_path: Path) -> None:
    export = write_ids(tmp_path / "q.txt", maids(7, 15_000))
    opts = sync_options(tmp_path, sandbox, max_file_bytes=500 * DIGEST_LINE, paths_per_call=1)
    async with client_for(sandbox) as client:
        created = await sync_audience(
            client, write_ids(tmp_path / "a.txt", maids(8, 1500)), name="q", **opts
        )
        paused = await agree(
            client, sandbox, tmp_path, export, audience_id=created.audience_id, action="append",
            **opts,
        )  # fmt: skip
        assert isinstance(paused, Paused)


async def test_mirror_first_run_then_diff(sandbox: Sandbox, tmp_path: Path) -> None:
    day0 = maids(9, 2000)
    opts = sync_options(tmp_path, sandbox)
    async with client_for(sandbox) as client:
        first = await agree(
            client, sandbox, tmp_path, write_ids(tmp_path / "d0.txt", day0), name="m",
            action="mirror", **opts,
        )  # fmt: skip
        assert isinstance(first, SyncResult) and first.mirror is not None
        assert first.mirror.mode == "create"
        sandbox.clock.advance(86_400)
        day1 = write_ids(tmp_path / "d1.txt", day0[100:] + maids(10, 150))
        diff = await agree(client, sandbox, tmp_path, day1, name="m", action="mirror", **opts)
        assert isinstance(diff, SyncResult) and diff.mirror is not None
        assert diff.mirror.mode == "diff"


def part_files(root: Path) -> list[Path]:
    return list(root.rglob("part-*"))


@pytest.fixture
def plan_tmp(tmp_path: Path) -> Iterator[Path]:
    """Where a dry run's temporary directory goes during the test."""
    root = tmp_path / "tmp"
    root.mkdir()
    saved = tempfile.tempdir
    tempfile.tempdir = str(root)
    try:
        yield root
    finally:
        tempfile.tempdir = saved


async def test_a_dry_run_of_many_parts_writes_no_part_file(
    sandbox: Sandbox, tmp_path: Path, plan_tmp: Path
) -> None:
    export = write_ids(tmp_path / "big.txt", maids(11, 6000))
    opts = sync_options(tmp_path, sandbox, max_file_bytes=100 * DIGEST_LINE)
    seen: list[Event] = []
    on_disk = 0

    def watch(event: Event) -> None:
        nonlocal on_disk
        seen.append(event)
        on_disk = max(on_disk, len(part_files(tmp_path)))

    async with client_for(sandbox) as client:
        dry = await sync_audience(client, export, name="big", dry_run=True, reporter=watch, **opts)
        assert not [e for e in seen if isinstance(e, PartWritten)], "the dry run wrote parts"
        assert on_disk == 0, f"{on_disk} part files were on disk during the dry run"
        assert part_files(tmp_path) == []
        assert dry.plan is not None and dry.plan.parts == 60
        assert dry.plan.bytes == 6000 * DIGEST_LINE
        real = await sync_audience(client, export, name="big", **opts)
    assert (dry.parts, dry.rows_written) == (real.parts, real.rows_written) == (60, 6000)
    assert dry.duplicates == real.duplicates and dry.rows_read == real.rows_read


async def test_a_mirror_dry_run_writes_no_part_file(sandbox: Sandbox, tmp_path: Path) -> None:
    day0 = maids(12, 3000)
    opts = sync_options(tmp_path, sandbox, max_file_bytes=100 * DIGEST_LINE)
    seen: list[Event] = []
    on_disk = 0

    def watch(event: Event) -> None:
        nonlocal on_disk
        seen.append(event)
        on_disk = max(on_disk, len(part_files(tmp_path)))

    async with client_for(sandbox) as client:
        d0 = write_ids(tmp_path / "d0.txt", day0)
        first = await sync_audience(
            client, d0, name="m", action="mirror", dry_run=True, reporter=watch, **opts
        )
        assert first.plan is not None and first.plan.parts == 30
        await sync_audience(client, d0, name="m", action="mirror", **opts)
        sandbox.clock.advance(86_400)
        d1 = write_ids(tmp_path / "d1.txt", day0[250:] + maids(13, 420))
        dry = await sync_audience(
            client, d1, name="m", action="mirror", dry_run=True, reporter=watch, **opts
        )
        assert not [e for e in seen if isinstance(e, PartWritten)], "the dry run wrote parts"
        assert on_disk == 0, f"{on_disk} part files were on disk during a dry run"
        real = await sync_audience(client, d1, name="m", action="mirror", **opts)
    assert dry.plan is not None and dry.mirror is not None and real.mirror is not None
    assert dry.mirror.mode == real.mirror.mode == "diff"
    assert (dry.mirror.added, dry.mirror.removed) == (real.mirror.added, real.mirror.removed)
    planned = (dry.plan.parts, dry.plan.bytes)
    assert planned == (real.parts, real.bytes_uploaded) == (8, 670 * DIGEST_LINE)
    assert [op.action for op in dry.plan.operations] == ["APPEND", "REMOVE"]
