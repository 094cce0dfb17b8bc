"""``sync_audience(..., action="mirror")`` against the sandbox, day after day: the audience always
equals the latest export, and only the difference travels."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers.api import ADVERTISER, CREATE, UPDATE, UPLOAD
from helpers.ids import DIGEST_LINE, maid_digests, maids
from helpers.sandbox import client_for, sync_options

from asyncsync import SyncResult, sync_audience
from asyncsync.cli.sync import sync_command
from asyncsync.errors import InputChangedError, Paused, UsageError
from asyncsync.events import AudienceOperation, Event
from asyncsync.sandbox import Sandbox
from asyncsync.store.journal import Journal, job_key
from asyncsync.store.snapshots import SnapshotStore
from asyncsync.tiktok.client import TikTokClient

DAY = 86_400.0


def write_export(path: Path, ids: list[str], seed: int = 0) -> Path:
    """The IDs shuffled, some upper-cased, some repeated, plus a blank and a malformed line."""
    rng = random.Random(seed)
    lines = [i.upper() if rng.random() < 0.3 else i for i in ids] + ids[: len(ids) // 20]
    lines += ["", "not-an-id"]
    rng.shuffle(lines)
    path.write_text("\n".join(lines) + "\n")
    return path


def members(sandbox: Sandbox, audience_id: str) -> set[str]:
    sandbox.clock.advance(1)  # let the last operation finish
    return set(sandbox.members(audience_id))


def ops(sandbox: Sandbox) -> list[str]:
    (audience,) = sandbox.state.audiences.values()
    return [op.action for op in audience.history]


async def mirror(
    client: TikTokClient, sandbox: Sandbox, tmp_path: Path, export: Path, **extra: Any
) -> SyncResult:
    return await sync_audience(
        client, export, **sync_options(tmp_path, sandbox, action="mirror", **extra)
    )


async def crash_at(
    client: TikTokClient,
    sandbox: Sandbox,
    tmp_path: Path,
    export: Path,
    action: str,
    *,
    done: bool | None,
    **extra: Any,
) -> None:
    """Run a mirror and cut it off (as a crash would) at the first ``action`` event: when the
    operation is sent (``done=False``), answered (``done=True``), or either (``None``)."""
    task: asyncio.Task[SyncResult] | None = None

    def cut(event: Event) -> None:
        if (
            isinstance(event, AudienceOperation)
            and event.action == action
            and (done is None or event.done == done)
        ):
            assert task is not None
            task.cancel()

    task = asyncio.ensure_future(mirror(client, sandbox, tmp_path, export, reporter=cut, **extra))
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_daily_mirrors_track_every_export_and_upload_only_the_difference(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    day0 = maids(1, 3000)
    day1 = day0 + maids(2, 300)  # growth
    day2 = day1[200:] + maids(3, 200)  # churn: 200 out, 200 in
    day3 = maids(4, 2500)  # full turnover
    async with client_for(sandbox) as client:
        first = await mirror(
            client, sandbox, tmp_path, write_export(tmp_path / "d0.txt", day0), name="Buyers"
        )
        aid = first.audience_id
        assert aid is not None and first.action == "mirror"
        assert first.mirror is not None and first.mirror.mode == "create"
        assert first.mirror.snapshot == "recorded"
        assert members(sandbox, aid) == maid_digests(day0)
        assert first.bytes_uploaded == 3000 * DIGEST_LINE

        sandbox.clock.advance(DAY)
        grow = await mirror(
            client, sandbox, tmp_path, write_export(tmp_path / "d1.txt", day1, 1), name="Buyers"
        )
        assert grow.audience_id == aid and grow.mirror is not None
        assert (grow.mirror.mode, grow.mirror.added, grow.mirror.removed) == (
            "diff",
            300,
            0,
        )
        assert grow.mirror.unchanged == 3000
        assert members(sandbox, aid) == maid_digests(day1)
        assert grow.bytes_uploaded == 300 * DIGEST_LINE
        assert ops(sandbox) == ["CREATE", "APPEND"]

        sandbox.clock.advance(DAY)
        churn = await mirror(
            client, sandbox, tmp_path, write_export(tmp_path / "d2.txt", day2, 2), name="Buyers"
        )
        assert churn.mirror is not None and churn.mirror.mode == "diff"
        assert (churn.mirror.added, churn.mirror.removed) == (200, 200)
        assert members(sandbox, aid) == maid_digests(day2)
        assert churn.bytes_uploaded == 400 * DIGEST_LINE
        assert ops(sandbox)[-2:] == ["APPEND", "REMOVE"]

        sandbox.clock.advance(DAY)
        turnover = await mirror(
            client, sandbox, tmp_path, write_export(tmp_path / "d3.txt", day3, 3), name="Buyers"
        )
        assert turnover.mirror is not None and turnover.mirror.mode == "replace"
        assert "replace threshold" in turnover.mirror.reason
        assert members(sandbox, aid) == maid_digests(day3)
        assert turnover.bytes_uploaded == 2500 * DIGEST_LINE
        assert ops(sandbox)[-1] == "REPLACE"

        sandbox.clock.advance(DAY)
        updates = sandbox.request_counts()[UPDATE]
        uploads = sandbox.request_counts()[UPLOAD]
        same = await mirror(
            client, sandbox, tmp_path, write_export(tmp_path / "d4.txt", day3[::-1], 4),
            name="Buyers",
        )  # fmt: skip
        assert same.mirror is not None and same.mirror.mode == "nothing"
        assert same.bytes_uploaded == 0 and same.file_paths == ()
        assert sandbox.request_counts()[UPDATE] == updates
        assert sandbox.request_counts()[UPLOAD] == uploads
        assert members(sandbox, aid) == maid_digests(day3)
    assert sandbox.request_counts()[CREATE] == 1
    assert len(sandbox.state.audiences) == 1


async def test_crash_between_append_and_remove_is_finished_by_the_rerun(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    day0 = maids(5, 2000)
    day1 = day0[300:] + maids(6, 250)
    async with client_for(sandbox) as client:
        first = await mirror(
            client, sandbox, tmp_path, write_export(tmp_path / "d0.txt", day0), name="Crash"
        )
        aid = first.audience_id
        assert aid is not None
        sandbox.clock.advance(DAY)
        export = write_export(tmp_path / "d1.txt", day1, 1)
        await crash_at(client, sandbox, tmp_path, export, "APPEND", done=True, name="Crash")
        assert ops(sandbox) == ["CREATE", "APPEND"]
        # Only the APPEND happened: the snapshot still describes day 0.
        snap, _ = SnapshotStore(tmp_path / "state").load(sandbox.api_base, ADVERTISER, aid)
        assert snap is not None and snap.count == 2000
        uploads = sandbox.request_counts()[UPLOAD]

        resumed = await mirror(client, sandbox, tmp_path, export, name="Crash")
        assert resumed.resumed and resumed.mirror is not None
        assert resumed.mirror.mode == "diff" and resumed.mirror.snapshot == "recorded"
        assert ops(sandbox) == ["CREATE", "APPEND", "REMOVE"]
        assert sandbox.request_counts()[UPLOAD] == uploads  # nothing uploaded again
        assert members(sandbox, aid) == maid_digests(day1)
        snap, _ = SnapshotStore(tmp_path / "state").load(sandbox.api_base, ADVERTISER, aid)
        assert snap is not None and snap.count == len(day1)

        sandbox.clock.advance(DAY)
        day2 = day1 + maids(7, 100)
        after = await mirror(
            client, sandbox, tmp_path, write_export(tmp_path / "d2.txt", day2, 2), name="Crash"
        )
        assert after.mirror is not None and after.mirror.mode == "diff"
        assert (after.mirror.added, after.mirror.removed) == (100, 0)
        assert members(sandbox, aid) == maid_digests(day2)


async def test_lost_or_torn_snapshot_falls_back_to_replace(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    day0 = maids(8, 1500)
    day1 = day0 + maids(9, 100)
    day2 = day1[50:]
    store = SnapshotStore(tmp_path / "state")
    async with client_for(sandbox) as client:
        first = await mirror(
            client, sandbox, tmp_path, write_export(tmp_path / "d0.txt", day0), name="Lost"
        )
        aid = first.audience_id
        assert aid is not None
        store.path_for(sandbox.api_base, ADVERTISER, aid).unlink()

        sandbox.clock.advance(DAY)
        lost = await mirror(
            client, sandbox, tmp_path, write_export(tmp_path / "d1.txt", day1, 1), name="Lost"
        )
        assert lost.audience_id == aid and lost.mirror is not None
        assert lost.mirror.mode == "replace"
        assert "no trustworthy snapshot" in lost.mirror.reason
        assert lost.bytes_uploaded == len(day1) * DIGEST_LINE
        assert members(sandbox, aid) == maid_digests(day1)

        path = store.path_for(sandbox.api_base, ADVERTISER, aid)
        with path.open("r+b") as f:
            f.truncate(path.stat().st_size - 7)  # a torn write
        sandbox.clock.advance(DAY)
        torn = await mirror(
            client, sandbox, tmp_path, write_export(tmp_path / "d2.txt", day2, 2), name="Lost"
        )
        assert torn.mirror is not None and torn.mirror.mode == "replace"
        assert "torn" in torn.mirror.reason
        assert members(sandbox, aid) == maid_digests(day2)


async def test_remove_below_the_floor_is_refused_before_any_call(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    day0 = maids(10, 1500)
    async with client_for(sandbox) as client:
        first = await mirror(
            client, sandbox, tmp_path, write_export(tmp_path / "d0.txt", day0), name="Floor"
        )
        aid = first.audience_id
        assert aid is not None
        sandbox.clock.advance(DAY)
        before = sandbox.request_counts()
        with pytest.raises(
            UsageError, match=r"REMOVE of 600 IDs would leave the audience with 900"
        ):
            await mirror(
                client, sandbox, tmp_path, write_export(tmp_path / "d1.txt", day0[:900], 1),
                name="Floor",
            )  # fmt: skip
        after = sandbox.request_counts()
        assert after.get(UPLOAD) == before.get(UPLOAD)
        assert after.get(UPDATE) == before.get(UPDATE)
        assert members(sandbox, aid) == maid_digests(day0)
        # The refused job is not left to resume: a valid export mirrors normally.
        ok = await mirror(
            client, sandbox, tmp_path, write_export(tmp_path / "d2.txt", day0[:1200], 2),
            name="Floor",
        )  # fmt: skip
        assert ok.mirror is not None and ok.mirror.mode == "diff"
        assert members(sandbox, aid) == maid_digests(day0[:1200])


async def test_mirror_by_audience_id_replaces_first_then_sends_diffs_within_quotas(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    day0 = maids(11, 2000)
    async with client_for(sandbox) as client:
        created = await sync_audience(
            client,
            write_export(tmp_path / "d0.txt", day0),
            **sync_options(tmp_path, sandbox, action=None, name="Made elsewhere"),
        )
        aid = created.audience_id
        assert aid is not None
        day1 = day0 + maids(12, 100)
        first = await mirror(
            client, sandbox, tmp_path, write_export(tmp_path / "d1.txt", day1, 1), audience_id=aid
        )
        assert first.mirror is not None and first.mirror.mode == "replace"
        assert "no snapshot" in first.mirror.reason
        assert members(sandbox, aid) == maid_digests(day1)
        # Same UTC day: the snapshot is lost again, a REPLACE is needed, and today's is used.
        SnapshotStore(tmp_path / "state").discard(sandbox.api_base, ADVERTISER, aid)
        with pytest.raises(Paused, match="REPLACE"):
            await mirror(
                client, sandbox, tmp_path, write_export(tmp_path / "d2.txt", day0, 2),
                audience_id=aid,
            )  # fmt: skip
        assert ops(sandbox).count("REPLACE") == 1


async def test_dry_run_reports_counts_and_operations_and_sends_nothing(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    day0 = maids(13, 2000)
    day1 = day0[100:] + maids(14, 150)
    async with client_for(sandbox) as client:
        first = await mirror(
            client, sandbox, tmp_path, write_export(tmp_path / "d0.txt", day0), name="Dry"
        )
        aid = first.audience_id
        assert aid is not None
        sandbox.clock.advance(DAY)
        before = sandbox.request_counts()
        export = write_export(tmp_path / "d1.txt", day1, 1)
        dry = await mirror(client, sandbox, tmp_path, export, name="Dry", dry_run=True)
        assert sandbox.request_counts().get(UPLOAD) == before.get(UPLOAD)
        assert sandbox.request_counts().get(UPDATE) == before.get(UPDATE)
        assert dry.plan is not None and dry.audience_id == aid
        plan = dry.plan
        counts = plan.mirror
        assert counts is not None
        assert (counts.mode, counts.added, counts.removed, counts.unchanged) == (
            "diff",
            150,
            100,
            1900,
        )
        assert [op.action for op in plan.operations] == ["APPEND", "REMOVE"]
        assert plan.bytes == 250 * DIGEST_LINE and plan.problems == ()
        real = await mirror(client, sandbox, tmp_path, export, name="Dry")
        assert real.mirror is not None
        assert (real.mirror.added, real.mirror.removed) == (150, 100)
        assert members(sandbox, aid) == maid_digests(day1)


async def test_an_append_by_another_job_makes_the_snapshot_stale(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    day0 = maids(15, 2000)
    extra = maids(16, 50)
    async with client_for(sandbox) as client:
        first = await mirror(
            client, sandbox, tmp_path, write_export(tmp_path / "d0.txt", day0), name="Shared"
        )
        aid = first.audience_id
        assert aid is not None
        await sync_audience(
            client,
            write_export(tmp_path / "extra.txt", extra),
            **sync_options(tmp_path, sandbox, audience_id=aid, action="append"),
        )
        sandbox.clock.advance(DAY)
        # The export did not change, but the audience did (it holds the 50 appended IDs).
        again = await mirror(
            client, sandbox, tmp_path, write_export(tmp_path / "d1.txt", day0, 1), name="Shared"
        )
        assert again.mirror is not None and again.mirror.mode == "replace"
        assert "changed the audience since the snapshot" in again.mirror.reason
        assert members(sandbox, aid) == maid_digests(day0)


def test_cli_mirror_says_what_it_sent_and_why(tmp_path: Path) -> None:
    export = write_export(tmp_path / "d0.txt", maids(17, 1200))
    runner = CliRunner()
    args = [str(export), "--sandbox", "--name", "Cli", "--action", "mirror", "--workers", "1"]
    human = runner.invoke(sync_command, args)
    assert human.exit_code == 0, human.output
    assert "mirror: create: first run: the audience is created" in human.output
    dry = runner.invoke(sync_command, [*args, "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    summary = json.loads(dry.stdout)
    assert summary["action"] == "mirror" and summary["plan"]["mode"] == "create"
    assert summary["plan"]["operations"] == [{"action": "create", "batch": 0, "file_paths": 1}]


async def test_next_nights_export_supersedes_a_mirror_left_unfinished(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    day0 = maids(17, 2000)
    day1 = day0[400:] + maids(18, 300)
    day2 = day0[200:] + maids(19, 150)
    export = tmp_path / "export.txt"  # the nightly export, overwritten in place
    async with client_for(sandbox) as client:
        first = await mirror(client, sandbox, tmp_path, write_export(export, day0), name="Night")
        aid = first.audience_id
        assert aid is not None
        sandbox.clock.advance(DAY)
        write_export(export, day1, 1)
        await crash_at(client, sandbox, tmp_path, export, "APPEND", done=True, name="Night")
        assert ops(sandbox) == ["CREATE", "APPEND"]
        with Journal(tmp_path / "state") as journal:
            stale = journal.find_job(job_key(sandbox.api_base, ADVERTISER, "name:Night", "mirror"))
        assert stale is not None and stale.status != "done"
        stale_work = tmp_path / "state" / "work" / f"job-{stale.id}"
        assert stale_work.is_dir()

        # A changed option alone is not a new export: the half-sent job is kept and refused.
        with pytest.raises(InputChangedError, match="paths_per_call changed"):
            await mirror(client, sandbox, tmp_path, export, name="Night", paths_per_call=3)
        assert stale_work.is_dir()

        # The next night brings a new export: no --restart needed; the half-sent diff is
        # abandoned, and since its APPEND reached the audience the snapshot is not trusted.
        sandbox.clock.advance(DAY)
        write_export(export, day2, 2)
        night2 = await mirror(client, sandbox, tmp_path, export, name="Night")
        assert not night2.resumed and night2.audience_id == aid
        assert night2.mirror is not None and night2.mirror.superseded_job == stale.id
        assert night2.mirror.mode == "replace"
        assert "changed the audience since the snapshot" in night2.mirror.reason
        assert members(sandbox, aid) == maid_digests(day2)
        assert not stale_work.exists()
        with Journal(tmp_path / "state") as journal:
            assert journal.get_job(stale.id).status == "abandoned"

        # And the night after, only the difference travels again.
        sandbox.clock.advance(DAY)
        day3 = day2 + maids(20, 40)
        night3 = await mirror(
            client, sandbox, tmp_path, write_export(export, day3, 3), name="Night"
        )
        assert night3.mirror is not None and night3.mirror.mode == "diff"
        assert night3.mirror.superseded_job is None
        assert (night3.mirror.added, night3.mirror.removed) == (40, 0)
        assert members(sandbox, aid) == maid_digests(day3)


@pytest.mark.parametrize("reached_tiktok", [True, False], ids=["created", "not-created"])
async def test_a_new_export_settles_a_create_of_unknown_outcome_before_superseding(
    sandbox: Sandbox, tmp_path: Path, reached_tiktok: bool
) -> None:
    export = tmp_path / "export.txt"  # overwritten in place each night
    async with client_for(sandbox) as client:
        write_export(export, maids(21, 1500))
        await crash_at(client, sandbox, tmp_path, export, "create", done=False, name="Lost")
        with Journal(tmp_path / "state") as journal:
            stale = journal.find_job(job_key(sandbox.api_base, ADVERTISER, "name:Lost", "mirror"))
            assert stale is not None
            assert [op.outcome for op in journal.operations(stale.id)] == [None]
            paths = [p.file_path for p in journal.parts(stale.id).values()]
        await asyncio.sleep(0.3)  # a request cut off after it went out lands meanwhile
        if reached_tiktok and not sandbox.state.audiences:
            # The request went out but its answer was lost: TikTok made the audience.
            await client.create_audience(
                ADVERTISER, "Lost", [p for p in paths if p], "FIRST_SHA256"
            )
        elif not reached_tiktok and sandbox.state.audiences:
            # As if the request had never reached TikTok.
            await client.delete_audiences(ADVERTISER, list(sandbox.state.audiences))
        made = list(sandbox.state.audiences)
        assert len(made) == (1 if reached_tiktok else 0)

        sandbox.clock.advance(DAY)
        day2 = maids(22, 1500)
        night2 = await mirror(client, sandbox, tmp_path, write_export(export, day2, 1), name="Lost")
        # The lost create was settled by reading TikTok: adopted if it happened, so there is
        # still one audience, holding tonight's export.
        assert len(sandbox.state.audiences) == 1
        assert night2.audience_id is not None
        if reached_tiktok:
            assert night2.audience_id == made[0]
        assert night2.mirror is not None and night2.mirror.superseded_job == stale.id
        assert members(sandbox, night2.audience_id) == maid_digests(day2)


async def test_a_live_audience_under_the_name_wins_over_a_superseded_jobs_audience(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    export = tmp_path / "export.txt"
    day0 = maids(25, 2000)
    async with client_for(sandbox) as client:
        first = await mirror(client, sandbox, tmp_path, write_export(export, day0), name="Moved")
        old = first.audience_id
        assert old is not None
        sandbox.clock.advance(DAY)
        write_export(export, day0[100:] + maids(26, 100), 1)
        await crash_at(client, sandbox, tmp_path, export, "APPEND", done=True, name="Moved")
        # Meanwhile the name came to mirror into another audience (the old one was deleted).
        await client.delete_audiences(ADVERTISER, [old])
        sandbox.clock.advance(1)
        paths = [f.file_path for f in sandbox.state.files.values()]
        newer = await client.create_audience(ADVERTISER, "Moved", paths[:1], "FIRST_SHA256")
        SnapshotStore(tmp_path / "state").remember_name(
            sandbox.api_base, ADVERTISER, "Moved", newer
        )

        sandbox.clock.advance(DAY)
        day2 = maids(27, 1500)
        night2 = await mirror(
            client, sandbox, tmp_path, write_export(export, day2, 2), name="Moved"
        )
        assert night2.audience_id == newer
        assert [a for a in sandbox.state.audiences] == [newer]
        assert members(sandbox, newer) == maid_digests(day2)


async def test_a_superseded_job_that_created_the_audience_keeps_mirroring_into_it(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    export = tmp_path / "export.txt"
    async with client_for(sandbox) as client:
        write_export(export, maids(23, 1500))
        await crash_at(client, sandbox, tmp_path, export, "create", done=True, name="Kept")
        (created,) = sandbox.state.audiences
        # As if the job had stopped before writing down which audience the name mirrors into.
        store = SnapshotStore(tmp_path / "state")
        store.remember_name(sandbox.api_base, ADVERTISER, "Kept", "1")
        assert store.audience_for_name(sandbox.api_base, ADVERTISER, "Kept") == "1"

        sandbox.clock.advance(DAY)
        day2 = maids(24, 1200)
        night2 = await mirror(client, sandbox, tmp_path, write_export(export, day2, 1), name="Kept")
        assert night2.audience_id == created
        assert night2.mirror is not None and night2.mirror.mode == "replace"
        assert len(sandbox.state.audiences) == 1
        assert members(sandbox, created) == maid_digests(day2)


async def test_an_unfinished_diff_is_planned_again_when_another_job_touched_the_audience(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    export = tmp_path / "export.txt"
    day0 = maids(40, 2000)
    day1 = day0[300:] + maids(41, 200)
    async with client_for(sandbox) as client:
        first = await mirror(client, sandbox, tmp_path, write_export(export, day0), name="X")
        aid = first.audience_id
        assert aid is not None
        sandbox.clock.advance(DAY)
        write_export(export, day1, 1)
        await crash_at(client, sandbox, tmp_path, export, "APPEND", done=True, name="X")
        # Another job (by audience ID, so another journal key) replaces the membership.
        sandbox.clock.advance(DAY)
        other = write_export(tmp_path / "other.txt", maids(42, 1800), 2)
        await mirror(client, sandbox, tmp_path, other, audience_id=aid)
        # The unchanged export's rerun must not send its stale REMOVE: it plans again, against
        # the audience as the other job left it (a dry run shows that plan too).
        dry = await mirror(client, sandbox, tmp_path, export, name="X", dry_run=True)
        assert dry.mirror is not None and dry.mirror.mode == "diff"
        assert (dry.mirror.added, dry.mirror.removed) == (len(day1), 1800)
        again = await mirror(client, sandbox, tmp_path, export, name="X")
        assert not again.resumed and again.audience_id == aid
        assert again.mirror is not None and again.mirror.superseded_job is not None
        assert members(sandbox, aid) == maid_digests(day1)
