"""The sync job against the sandbox over loopback: exact membership, batching, quotas, faults,
crash-safe resume, dry runs and the library used inside a caller's own loop and session."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import aiohttp
import pytest
from helpers.api import ADVERTISER, CREATE, UPDATE, UPLOAD
from helpers.ids import DIGEST_LINE, maid_digests, maids
from helpers.sandbox import client_for, sync_options

from asyncsync import SyncResult, sync_audience
from asyncsync.errors import (
    InputChangedError,
    NameTakenError,
    OutcomeUnknownError,
    Paused,
    StateError,
    UsageError,
)
from asyncsync.events import AudienceOperation, Event, PartUploaded
from asyncsync.sandbox import FaultConfig, Sandbox
from asyncsync.store.journal import JOURNAL_FILENAME
from asyncsync.tiktok.client import TikTokClient
from asyncsync.tiktok.retry import RetryPolicy

READS = {"/open_api/v1.3/dmp/custom_audience/get/", "/open_api/v1.3/dmp/custom_audience/list/"}


def write_export(path: Path, ids: list[str], *, noise: bool = True) -> Path:
    """One ID a line, some upper-cased, with duplicates, blank, malformed and zero lines."""
    rng = random.Random(len(ids))
    lines = [i.upper() if rng.random() < 0.3 else i for i in ids]
    if noise:
        lines += [*ids[: len(ids) // 10], "", "not-an-id", "00000000-0000-0000-0000-000000000000"]
        rng.shuffle(lines)
    path.write_text("\n".join(lines) + "\n")
    return path


async def settled_members(sandbox: Sandbox, client: TikTokClient, audience_id: str) -> set[str]:
    """The audience's members once its last operation has finished."""
    for _ in range(500):
        (audience,) = await client.get_audiences(ADVERTISER, [audience_id])
        if audience.is_valid:
            return set(sandbox.members(audience_id))
        await asyncio.sleep(0.01)
    raise AssertionError(f"audience {audience_id} stayed busy")


def audiences_named(sandbox: Sandbox, name: str) -> list[str]:
    return [a.audience_id for a in sandbox.state.audiences.values() if a.name == name]


def counts(sandbox: Sandbox) -> dict[str, int]:
    return sandbox.request_counts()


class _Killed(Exception):
    """Stands for the process being killed."""


def _killed_after_create(event: Event) -> None:
    """A reporter that "kills" the job right after its create is journaled as done."""
    if isinstance(event, AudienceOperation) and event.done and event.action == "create":
        raise _Killed


# -- membership ------------------------------------------------------------------------------


async def test_create_ends_with_exactly_the_valid_input_ids(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    ids = maids(1, 3000)
    export = write_export(tmp_path / "export.txt", ids)
    async with client_for(sandbox) as client:
        result = await sync_audience(
            client, export, name="Nightly buyers", **sync_options(tmp_path, sandbox)
        )
        assert result.audience_id is not None
        members = await settled_members(sandbox, client, result.audience_id)
    assert members == maid_digests(ids)
    assert result.action == "create" and result.calculate_type == "FIRST_SHA256"
    assert result.rows_written == 3000 and result.duplicates == 300
    assert result.rows_invalid == 3 and result.rejected.get("zero_id") == 1
    assert result.parts == len(result.file_paths) == 15
    assert not result.resumed and not result.paused
    assert counts(sandbox)[UPLOAD] == 15 and counts(sandbox)[CREATE] == 1
    summary = result.to_json()
    for key in ("audience_id", "file_paths", "rows_read", "bytes_uploaded", "api_calls", "resumed"):
        assert key in summary
    assert result.bytes_uploaded == sum(1 for _ in maid_digests(ids)) * DIGEST_LINE


async def test_append_then_remove_leave_exactly_the_expected_members(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    base, extra = maids(2, 3000), maids(3, 1200)
    removed = base[:800] + extra[:200]
    async with client_for(sandbox) as client:
        created = await sync_audience(
            client, write_export(tmp_path / "a.txt", base), name="grow",
            **sync_options(tmp_path, sandbox),
        )  # fmt: skip
        aid = created.audience_id
        assert aid is not None
        appended = await sync_audience(
            client, write_export(tmp_path / "b.txt", base[:500] + extra), audience_id=aid,
            action="append", **sync_options(tmp_path, sandbox),
        )  # fmt: skip
        assert appended.action == "append" and appended.audience_id == aid
        assert await settled_members(sandbox, client, aid) == maid_digests(base + extra)
        await sync_audience(
            client, write_export(tmp_path / "c.txt", removed), audience_id=aid,
            action="remove", **sync_options(tmp_path, sandbox),
        )  # fmt: skip
        members = await settled_members(sandbox, client, aid)
    assert members == maid_digests(base + extra) - maid_digests(removed)
    assert audiences_named(sandbox, "grow") == [aid]


async def test_replace_leaves_exactly_the_new_input(sandbox: Sandbox, tmp_path: Path) -> None:
    old, new = maids(4, 2000), maids(5, 2500)
    async with client_for(sandbox) as client:
        created = await sync_audience(
            client, write_export(tmp_path / "old.txt", old), name="swap",
            **sync_options(tmp_path, sandbox),
        )  # fmt: skip
        assert created.audience_id is not None
        replaced = await sync_audience(
            client, write_export(tmp_path / "new.txt", new), audience_id=created.audience_id,
            action="replace", paths_per_call=5, **sync_options(tmp_path, sandbox),
        )  # fmt: skip
        members = await settled_members(sandbox, client, created.audience_id)
    assert members == maid_digests(new)
    ops = [op.action for op in sandbox.state.audiences[created.audience_id].history]
    assert ops == ["CREATE", "REPLACE", "APPEND", "APPEND"]
    assert replaced.parts == 13


async def test_more_than_500_parts_create_then_append_waiting_out_the_running_operation(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    ids = maids(6, 1104)
    export = write_export(tmp_path / "many.txt", ids, noise=False)
    async with client_for(sandbox) as client:
        result = await sync_audience(
            client, export, name="many", concurrency=8,
            **sync_options(tmp_path, sandbox, max_file_bytes=2 * DIGEST_LINE),
        )  # fmt: skip
        assert result.audience_id is not None
        members = await settled_members(sandbox, client, result.audience_id)
    assert result.parts == 552
    assert members == maid_digests(ids)
    history = sandbox.state.audiences[result.audience_id].history
    assert [(op.action, len(op.files)) for op in history] == [("CREATE", 500), ("APPEND", 52)]
    assert counts(sandbox)[CREATE] == 1 and counts(sandbox)[UPDATE] == 1


async def test_fault_storm_still_ends_with_one_audience_and_the_exact_set(
    sandbox_factory: Callable[..., AbstractAsyncContextManager[Sandbox]], tmp_path: Path
) -> None:
    ids = maids(7, 2000)
    export = write_export(tmp_path / "storm.txt", ids)
    storm = FaultConfig(rate_limit=0.15, server_error=0.1, http_503=0.05, drop=0.1, seed=11)
    async with sandbox_factory(faults=storm) as sandbox:
        async with client_for(sandbox, attempts=30) as client:
            for _ in range(10):  # a create whose answer was dropped stops the run: rerun
                try:
                    result = await sync_audience(
                        client, export, name="storm", paths_per_call=6,
                        **sync_options(tmp_path, sandbox, max_file_bytes=100 * DIGEST_LINE),
                    )  # fmt: skip
                    break
                except OutcomeUnknownError:
                    continue
            assert result.audience_id is not None
            sandbox.set_faults(FaultConfig())
            members = await settled_members(sandbox, client, result.audience_id)
        faults = sandbox.fault_counts()
    assert members == maid_digests(ids)
    assert audiences_named(sandbox, "storm") == [result.audience_id]
    assert faults["drop"] > 0 and faults["rate_limit"] > 0 and result.retries > 0


# -- quotas and waiting ----------------------------------------------------------------------


async def test_daily_quota_pauses_before_the_limit_and_a_later_day_resumes(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    ids = maids(8, 15_000)
    export = write_export(tmp_path / "q.txt", ids, noise=False)
    opts = sync_options(tmp_path, sandbox, max_file_bytes=500 * DIGEST_LINE)
    async with client_for(sandbox) as client:
        with pytest.raises(Paused) as paused:
            await sync_audience(client, export, name="quota", paths_per_call=1, **opts)
        result = paused.value.result
        assert isinstance(result, SyncResult) and result.paused
        assert len(paused.value.pending["operations"]) == 30 - 1 - 24
        assert paused.value.resume_after is not None
        assert "quota" in str(paused.value) and "resume" in str(paused.value)
        audience_id = result.audience_id
        assert audience_id is not None
        update_calls = counts(sandbox)[UPDATE]
        assert update_calls == 24, "the job paused before TikTok had to refuse an operation"
        with pytest.raises(Paused):
            await sync_audience(client, export, name="quota", paths_per_call=1, **opts)
        assert counts(sandbox)[UPDATE] == update_calls
        sandbox.clock.advance(86_400)
        uploads = counts(sandbox)[UPLOAD]
        done = await sync_audience(client, export, name="quota", paths_per_call=1, **opts)
        members = await settled_members(sandbox, client, audience_id)
    assert done.resumed and done.audience_id == audience_id and not done.paused
    assert counts(sandbox)[UPLOAD] == uploads, "no part was uploaded again"
    assert members == maid_digests(ids)
    assert audiences_named(sandbox, "quota") == [audience_id]


async def test_quota_used_up_elsewhere_pauses_at_once_on_tiktoks_answer(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    ids = maids(9, 1500)
    async with client_for(sandbox) as client:
        created = await sync_audience(
            client, write_export(tmp_path / "a.txt", ids), name="busyday",
            **sync_options(tmp_path, sandbox),
        )  # fmt: skip
        aid = created.audience_id
        assert aid is not None
        sandbox.state.audiences[aid].day_ops[int(sandbox.clock.now() // 86_400)] = 24
        with pytest.raises(Paused, match="quota") as paused:
            await sync_audience(
                client, write_export(tmp_path / "b.txt", maids(10, 100)), audience_id=aid,
                action="append", **sync_options(tmp_path, sandbox),
            )  # fmt: skip
    assert paused.value.pending["operations"][0]["action"] == "APPEND"
    assert counts(sandbox)[UPDATE] == 1


async def test_a_running_operation_longer_than_max_wait_pauses_the_job(
    sandbox_factory: Callable[..., AbstractAsyncContextManager[Sandbox]], tmp_path: Path
) -> None:
    ids = maids(11, 1500)
    export = write_export(tmp_path / "slow.txt", ids, noise=False)
    async with sandbox_factory(operation_seconds=3600) as sandbox, client_for(sandbox) as client:
        opts = sync_options(tmp_path, sandbox, max_file_bytes=100 * DIGEST_LINE, paths_per_call=5)
        with pytest.raises(Paused, match="still running") as paused:
            await sync_audience(client, export, name="slow", **opts | {"max_wait": 0.2})
        assert [o["action"] for o in paused.value.pending["operations"]] == ["APPEND", "APPEND"]
        sandbox.clock.advance(3600)
        with pytest.raises(Paused) as again:
            await sync_audience(client, export, name="slow", **opts | {"max_wait": 0.1})
        assert [o["action"] for o in again.value.pending["operations"]] == ["APPEND"]
        sandbox.clock.advance(3600)
        done = await sync_audience(client, export, name="slow", **opts | {"max_wait": 0.1})
        assert done.resumed and done.audience_id is not None
        sandbox.clock.advance(3600)
        assert set(sandbox.members(done.audience_id)) == maid_digests(ids)
    assert len(audiences_named(sandbox, "slow")) == 1


async def test_a_second_replace_on_one_day_pauses_before_sending_and_runs_the_next_day(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    async with client_for(sandbox) as client:
        created = await sync_audience(
            client, write_export(tmp_path / "a.txt", maids(28, 1500)), name="daily",
            **sync_options(tmp_path, sandbox),
        )  # fmt: skip
        aid = created.audience_id
        assert aid is not None
        for n, seed in enumerate((29, 30)):
            export = write_export(tmp_path / f"r{n}.txt", maids(seed, 1200))
            kwargs = sync_options(tmp_path, sandbox) | {"audience_id": aid, "action": "replace"}
            if n == 0:
                await sync_audience(client, export, **kwargs)
                continue
            sent = counts(sandbox)[UPDATE]
            with pytest.raises(Paused, match="1 REPLACE") as paused:
                await sync_audience(client, export, **kwargs)
            assert counts(sandbox)[UPDATE] == sent
            assert paused.value.pending["operations"] == [
                {"batch": 0, "action": "REPLACE", "file_paths": 6}
            ]
            sandbox.clock.advance(86_400)
            done = await sync_audience(client, export, **kwargs)
            assert done.resumed
        members = await settled_members(sandbox, client, aid)
    assert members == maid_digests(maids(30, 1200))


async def test_replace_below_the_member_floor_is_refused_before_any_operation(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    async with client_for(sandbox) as client:
        created = await sync_audience(
            client, write_export(tmp_path / "a.txt", maids(12, 1500)), name="floor",
            **sync_options(tmp_path, sandbox),
        )  # fmt: skip
        assert created.audience_id is not None
        with pytest.raises(UsageError, match="1,000"):
            await sync_audience(
                client, write_export(tmp_path / "b.txt", maids(13, 900)),
                audience_id=created.audience_id, action="replace",
                **sync_options(tmp_path, sandbox),
            )  # fmt: skip
        assert counts(sandbox).get(UPDATE, 0) == 0
        # Nothing was sent, so the corrected input starts afresh (no InputChangedError).
        fixed = await sync_audience(
            client, write_export(tmp_path / "b.txt", maids(13, 1100)),
            audience_id=created.audience_id, action="replace", **sync_options(tmp_path, sandbox),
        )  # fmt: skip
        members = await settled_members(sandbox, client, created.audience_id)
    assert not fixed.resumed and members == maid_digests(maids(13, 1100))


# -- resume ----------------------------------------------------------------------------------


async def test_rerun_of_a_finished_job_sends_nothing_and_returns_its_result(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    export = write_export(tmp_path / "once.txt", maids(14, 1000))
    async with client_for(sandbox) as client:
        first = await sync_audience(client, export, name="once", **sync_options(tmp_path, sandbox))
        before = counts(sandbox)
        again = await sync_audience(client, export, name="once", **sync_options(tmp_path, sandbox))
    assert counts(sandbox) == before
    assert again.resumed and not first.resumed
    assert again.audience_id == first.audience_id and again.file_paths == first.file_paths
    assert again.rows_written == first.rows_written and again.api_calls == 0 < first.api_calls
    assert not (tmp_path / "state" / "work" / f"job-{first.job_id}").exists()


async def test_rerun_after_cancel_mid_upload_uploads_no_part_twice_and_creates_one_audience(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    ids = maids(15, 4000)
    export = write_export(tmp_path / "big.txt", ids)
    opts = sync_options(tmp_path, sandbox, max_file_bytes=50 * DIGEST_LINE)
    uploaded: list[str] = []
    async with client_for(sandbox) as client:
        task: asyncio.Task[SyncResult] | None = None

        def reporter(event: Event) -> None:
            if isinstance(event, PartUploaded) and not event.reused:
                uploaded.append(event.file_path)
                if len(uploaded) == 30 and task is not None:
                    task.cancel()

        task = asyncio.create_task(
            sync_audience(client, export, name="crash", concurrency=3, reporter=reporter, **opts)
        )
        with pytest.raises(asyncio.CancelledError):
            await task
        first_uploads = counts(sandbox)[UPLOAD]
        journaled = len(uploaded)
        # Uploads in flight at the cancel may have reached TikTok without being journaled.
        assert 30 <= journaled <= first_uploads <= journaled + 3
        assert CREATE not in counts(sandbox)
        reused: list[PartUploaded] = []
        result = await sync_audience(
            client, export, name="crash", concurrency=3,
            reporter=lambda e: reused.append(e) if isinstance(e, PartUploaded) else None, **opts,
        )  # fmt: skip
        assert result.audience_id is not None
        members = await settled_members(sandbox, client, result.audience_id)
    assert result.resumed and result.parts == 80
    assert sum(1 for e in reused if e.reused) == journaled
    assert counts(sandbox)[UPLOAD] - first_uploads == 80 - journaled
    assert members == maid_digests(ids)
    assert audiences_named(sandbox, "crash") == [result.audience_id]


async def test_create_intent_without_result_is_reconciled_instead_of_creating_again(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    export = write_export(tmp_path / "lost.txt", maids(16, 1500))
    opts = sync_options(tmp_path, sandbox, paths_per_call=3)
    async with client_for(sandbox) as client:
        with pytest.raises(Paused):
            await sync_audience(client, export, name="lost", **opts | {"max_wait": 0.0})
        (audience_id,) = audiences_named(sandbox, "lost")
        # Make the journal look as if the process died between sending the create and
        # recording its answer.
        db = sqlite3.connect(tmp_path / "state" / JOURNAL_FILENAME)
        with db:
            db.execute("UPDATE jobs SET audience_id = NULL")
            db.execute(
                "UPDATE operations SET outcome = NULL, result_at = NULL, audience_id = NULL "
                "WHERE kind = 'create'"
            )
        db.close()
        result = await sync_audience(client, export, name="lost", **opts)
        members = await settled_members(sandbox, client, audience_id)
    assert result.audience_id == audience_id and result.resumed
    assert audiences_named(sandbox, "lost") == [audience_id]
    assert counts(sandbox)[CREATE] == 1
    assert members == maid_digests(maids(16, 1500))


async def test_changed_input_refuses_to_resume_until_restart(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    export = write_export(tmp_path / "changing.txt", maids(17, 1200))
    opts = sync_options(tmp_path, sandbox, paths_per_call=2, max_file_bytes=300 * DIGEST_LINE)
    async with client_for(sandbox) as client:
        with pytest.raises(_Killed):  # the create is done, its APPENDs pending
            await sync_audience(
                client, export, name="changing", reporter=_killed_after_create, **opts
            )
        write_export(export, maids(18, 1300))
        with pytest.raises(InputChangedError, match=r"changing\.txt changed size"):
            await sync_audience(client, export, name="changing", **opts)
        # The abandoned job made the audience: --restart with another input names it rather
        # than make a second audience of the name; it is then updated by its ID.
        with pytest.raises(NameTakenError) as named:
            await sync_audience(client, export, name="changing", restart=True, **opts)
        assert audiences_named(sandbox, "changing") == [named.value.audience_id]
        result = await sync_audience(
            client,
            export,
            audience_id=named.value.audience_id,
            action="replace",
            **opts | {"paths_per_call": 5},
        )
        assert result.audience_id == named.value.audience_id
        members = await settled_members(sandbox, client, result.audience_id)
    assert members == maid_digests(maids(18, 1300))


# -- dry run and the library face ------------------------------------------------------------


async def test_dry_run_sends_nothing_but_reads_and_leaves_no_progress(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    export = write_export(tmp_path / "plan.txt", maids(19, 2000))
    opts = sync_options(tmp_path, sandbox, paths_per_call=4)
    async with client_for(sandbox) as client:
        planned = await sync_audience(client, export, name="plan", dry_run=True, **opts)
        assert set(counts(sandbox)) <= READS
        assert planned.plan is not None
        plan = planned.plan
        assert plan.parts == 10 and plan.uploads == 10
        assert plan.calls == {"upload": 10, "create": 1, "append": 2}
        assert plan.quota.operations_remaining == 24 and plan.problems == ()
        assert planned.rows_written == 2000 and planned.file_paths == ()
        db = sqlite3.connect(tmp_path / "state" / JOURNAL_FILENAME)
        assert db.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
        db.close()
        real = await sync_audience(client, export, name="plan", **opts)
        before = counts(sandbox)
        replanned = await sync_audience(client, export, name="plan", dry_run=True, **opts)
    assert not real.resumed and before[UPLOAD] == 10
    assert replanned.plan is not None and replanned.plan.already_done
    assert replanned.plan.uploads == 0 and replanned.plan.uploads_reused == 10
    assert {k: v for k, v in counts(sandbox).items() if k not in READS} == {
        k: v for k, v in before.items() if k not in READS
    }


async def test_library_runs_in_the_callers_loop_with_the_callers_session_left_open(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    export = write_export(tmp_path / "lib.txt", maids(20, 1000))
    async with aiohttp.ClientSession() as session:
        async with TikTokClient(
            sandbox.issue_token(), api_base=sandbox.api_base, session=session,
            retry=RetryPolicy(wait=False),
        ) as client:  # fmt: skip
            result = await sync_audience(
                client, export, name="lib", **sync_options(tmp_path, sandbox)
            )
        assert not session.closed
        async with session.get(f"{sandbox.api_base}/_sandbox/state") as answer:
            assert answer.status == 200
    assert result.audience_id is not None


async def test_bad_usage_is_refused_before_any_request(sandbox: Sandbox, tmp_path: Path) -> None:
    export = write_export(tmp_path / "u.txt", maids(21, 10))
    async with client_for(sandbox) as client:
        with pytest.raises(UsageError, match=r"^action must be one of"):
            await sync_audience(
                client, export, name="m", action="merge", **sync_options(tmp_path, sandbox)
            )
        with pytest.raises(UsageError, match="needs action"):
            await sync_audience(client, export, audience_id="1", **sync_options(tmp_path, sandbox))
        with pytest.raises(UsageError, match="paths_per_call"):
            await sync_audience(
                client, export, name="m", paths_per_call=501, **sync_options(tmp_path, sandbox)
            )
    assert counts(sandbox) == {}


async def test_update_intents_without_result_are_settled_from_the_audience_history(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    ids = maids(22, 1500)
    export = write_export(tmp_path / "hist.txt", ids, noise=False)
    opts = sync_options(tmp_path, sandbox, paths_per_call=5, max_file_bytes=100 * DIGEST_LINE)
    journal = tmp_path / "state" / JOURNAL_FILENAME
    async with client_for(sandbox) as client:
        with pytest.raises(Paused):
            await sync_audience(client, export, name="hist", **opts | {"max_wait": 0.0})
        # An APPEND intent that never reached TikTok (the process died before sending it).
        db = sqlite3.connect(journal)
        with db:
            db.execute(
                "INSERT INTO operations (job_id, api_base, advertiser_id, audience_id, kind, "
                "batch, file_paths, detail, intent_at) SELECT job_id, api_base, advertiser_id, "
                "audience_id, 'APPEND', 1, '[]', '{}', ? FROM operations WHERE kind = 'create'",
                (sandbox.clock.now(),),
            )
        db.close()
        result = await sync_audience(client, export, name="hist", **opts)
        assert result.audience_id is not None
        members = await settled_members(sandbox, client, result.audience_id)
        assert counts(sandbox)[UPDATE] == 2
        # The last APPEND reached TikTok but its answer was never recorded.
        db = sqlite3.connect(journal)
        with db:
            db.execute(
                "UPDATE operations SET outcome = NULL, result_at = NULL WHERE id = "
                "(SELECT max(id) FROM operations)"
            )
            db.execute("UPDATE jobs SET status = 'active', result = NULL")
        db.close()
        again = await sync_audience(client, export, name="hist", **opts)
    assert again.resumed and again.audience_id == result.audience_id
    assert counts(sandbox)[UPDATE] == 2, "the APPEND found in the history was not sent again"
    assert members == maid_digests(ids)


async def test_expired_file_paths_are_uploaded_again_and_only_those(
    sandbox_factory: Callable[..., AbstractAsyncContextManager[Sandbox]], tmp_path: Path
) -> None:
    ids = maids(23, 1500)
    export = write_export(tmp_path / "ttl.txt", ids, noise=False)
    async with sandbox_factory(file_ttl_seconds=600) as sandbox, client_for(sandbox) as client:
        opts = sync_options(tmp_path, sandbox, paths_per_call=5, max_file_bytes=100 * DIGEST_LINE)
        with pytest.raises(_Killed):  # the create is done, its APPENDs pending
            await sync_audience(client, export, name="ttl", reporter=_killed_after_create, **opts)
        uploads = counts(sandbox)[UPLOAD]
        sandbox.clock.advance(3600)
        result = await sync_audience(client, export, name="ttl", **opts)
        assert result.audience_id is not None
        members = await settled_members(sandbox, client, result.audience_id)
    assert uploads == 15
    assert counts(sandbox)[UPLOAD] - uploads == 10, "the 10 parts of the 2 APPENDs, again"
    assert members == maid_digests(ids)


async def test_an_advertiser_with_400_audiences_is_refused_before_any_upload(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    seed = tmp_path / "seed.txt"
    seed.write_text("".join(f"{d}\n" for d in sorted(maid_digests(maids(24, 10)))))
    async with client_for(sandbox) as client:
        uploaded = await client.upload_file(ADVERTISER, seed, "FIRST_SHA256")
        for i in range(400):
            sandbox.state.create(
                advertiser_id=ADVERTISER, name=f"a{i}", file_paths=[uploaded.file_path],
                calculate_type="FIRST_SHA256", sub_type=None, retention_in_days=None,
            )  # fmt: skip
        with pytest.raises(UsageError, match="400 audiences"):
            await sync_audience(
                client, write_export(tmp_path / "x.txt", maids(25, 1000)), name="one too many",
                **sync_options(tmp_path, sandbox),
            )  # fmt: skip
    assert counts(sandbox)[UPLOAD] == 1 and CREATE not in counts(sandbox)


async def test_corrupt_journal_is_a_state_error_before_any_request(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / JOURNAL_FILENAME).write_bytes(b"\x00garbage" * 512)
    async with client_for(sandbox) as client:
        with pytest.raises(StateError, match="corrupt"):
            await sync_audience(
                client, write_export(tmp_path / "x.txt", maids(26, 10)), name="n",
                **sync_options(tmp_path, sandbox),
            )  # fmt: skip
    assert counts(sandbox) == {}


async def test_a_create_whose_answer_was_lost_is_looked_up_then_sent_again_once(
    sandbox_factory: Callable[..., AbstractAsyncContextManager[Sandbox]], tmp_path: Path
) -> None:
    ids = maids(27, 1200)
    export = write_export(tmp_path / "drop.txt", ids)
    dropped = FaultConfig(drop=1.0, endpoints=frozenset({"/dmp/custom_audience/create/"}))
    async with sandbox_factory(faults=dropped) as sandbox, client_for(sandbox) as client:
        creates = 0

        def reporter(event: Event) -> None:
            nonlocal creates
            if isinstance(event, AudienceOperation) and event.action == "create" and not event.done:
                creates += 1
                if creates == 2:
                    sandbox.set_faults(FaultConfig())

        opts = sync_options(tmp_path, sandbox, reconcile_window=0.5)
        # Not seen within the window: the run stops, the outcome still unknown.
        with pytest.raises(OutcomeUnknownError, match="the same command reconciles"):
            await sync_audience(client, export, name="dropped", reporter=reporter, **opts)
        # The rerun looks again, finds nothing and sends the create once more.
        result = await sync_audience(client, export, name="dropped", reporter=reporter, **opts)
        assert result.audience_id is not None
        members = await settled_members(sandbox, client, result.audience_id)
        assert sandbox.fault_counts()["drop"] == 1
    assert counts(sandbox)[CREATE] == 2 and creates == 2
    assert audiences_named(sandbox, "dropped") == [result.audience_id]
    assert members == maid_digests(ids)
    db = sqlite3.connect(tmp_path / "state" / JOURNAL_FILENAME)
    outcomes = [r[0] for r in db.execute("SELECT outcome FROM operations ORDER BY id")]
    db.close()
    assert outcomes == ["absent", "done"]
