"""Exactly once against the failures nightly jobs meet: a name is an identity (a second state
dir, another spelling of the API base, two runs at once), a create TikTok carries out after the
client gave up, outside edits of a mirrored audience, a REPLACE that cannot finish today, a
damaged journal, a read-only state dir, a short outage, a touched input. Every test drives the
sandbox over HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from helpers.api import ADVERTISER, CREATE, UPDATE, UPLOAD
from helpers.ids import DIGEST_LINE, maid_digests, maids
from helpers.process import Job, SandboxProcess, cli_env
from helpers.sandbox import RawApi, client_for, fast_config, sync_options

from asyncsync import sync_audience
from asyncsync.errors import (
    NameTakenError,
    OutcomeUnknownError,
    Paused,
    StateError,
    TransportError,
)
from asyncsync.events import AudienceOperation, Event, JobNotice
from asyncsync.sandbox import Sandbox, ScriptedAnswer
from asyncsync.store.journal import JOURNAL_FILENAME, Journal
from asyncsync.tiktok.client import TikTokClient
from asyncsync.tiktok.retry import RetryPolicy


def write_export(path: Path, ids: list[str]) -> Path:
    path.write_text("\n".join(ids) + "\n")
    return path


def live_named(sandbox: Sandbox, name: str) -> list[str]:
    now = sandbox.clock.now()
    return sorted(
        a.audience_id
        for a in sandbox.state.audiences.values()
        if a.name == name and not a.is_expired(now)
    )


async def settled(sandbox: Sandbox, client: TikTokClient, audience_id: str) -> set[str]:
    for _ in range(500):
        (audience,) = await client.get_audiences(ADVERTISER, [audience_id])
        if audience.is_valid:
            return set(sandbox.members(audience_id))
        await asyncio.sleep(0.01)
    raise AssertionError(f"audience {audience_id} stayed busy")


@asynccontextmanager
async def impatient_client(sandbox: Sandbox, seconds: float) -> AsyncIterator[TikTokClient]:
    """A client that gives up on a request after ``seconds``."""
    async with TikTokClient(
        sandbox.issue_token(),
        api_base=sandbox.api_base,
        timeout=seconds,
        retry=RetryPolicy(attempts=3, wait=False),
        requests_per_second=None,
    ) as client:
        yield client


class Killed(Exception):
    """Stands for the process being killed."""


def killed_after_create(event: Event) -> None:
    """A reporter that "kills" the job right after its create is journaled as done."""
    if isinstance(event, AudienceOperation) and event.done and event.action == "create":
        raise Killed


def options(tmp_path: Path, sandbox: Sandbox, state: str = "state", **extra: Any) -> dict[str, Any]:
    return sync_options(tmp_path, sandbox, state_dir=tmp_path / state, **extra)


# -- 3. a name is an identity ----------------------------------------------------------------


async def test_a_second_state_dir_refuses_to_create_a_second_audience_of_the_name(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    export = write_export(tmp_path / "a.txt", maids(1, 1500))
    async with client_for(sandbox) as client:
        first = await sync_audience(client, export, name="Buyers", **options(tmp_path, sandbox))
        with pytest.raises(NameTakenError) as refused:
            await sync_audience(
                client, export, name="Buyers", **options(tmp_path, sandbox, "other-home")
            )
        assert refused.value.exit_code == 2
        assert refused.value.audience_id == first.audience_id
        message = str(refused.value)
        assert f"--audience-id {first.audience_id} --action" in message
        assert "--allow-duplicate-name" in message
        assert live_named(sandbox, "Buyers") == [first.audience_id]
        # The same refusal as a dry run's problem, without sending anything.
        dry = await sync_audience(
            client, export, name="Buyers", dry_run=True, **options(tmp_path, sandbox, "third")
        )
        assert dry.plan is not None
        assert any(first.audience_id in p for p in dry.plan.problems)
        # Opting out makes the second audience.
        second = await sync_audience(
            client,
            export,
            name="Buyers",
            allow_duplicate_name=True,
            **options(tmp_path, sandbox, "other-home"),
        )
    assert second.audience_id != first.audience_id
    assert len(live_named(sandbox, "Buyers")) == 2


async def test_another_spelling_of_the_api_base_makes_no_second_audience(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    export = write_export(tmp_path / "a.txt", maids(2, 1500))
    async with client_for(sandbox) as client:
        first = await sync_audience(client, export, name="Spelled", **options(tmp_path, sandbox))
    other_base = sandbox.api_base.replace("127.0.0.1", "localhost")
    assert other_base != sandbox.api_base
    async with TikTokClient(
        sandbox.issue_token(),
        api_base=other_base + "/",
        retry=RetryPolicy(attempts=3, wait=False),
        requests_per_second=None,
    ) as client:
        with pytest.raises(NameTakenError) as refused:
            await sync_audience(client, export, name="Spelled", **options(tmp_path, sandbox))
    assert "an earlier job of this journal made it" in str(refused.value)
    assert live_named(sandbox, "Spelled") == [first.audience_id]


async def test_a_finished_create_run_again_on_a_new_export_names_the_audience(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    async with client_for(sandbox) as client:
        first = await sync_audience(
            client,
            write_export(tmp_path / "a.txt", maids(3, 1500)),
            name="Daily",
            **options(tmp_path, sandbox),
        )
        with pytest.raises(NameTakenError):
            await sync_audience(
                client,
                write_export(tmp_path / "a.txt", maids(4, 1500)),
                name="Daily",
                **options(tmp_path, sandbox),
            )
    assert live_named(sandbox, "Daily") == [first.audience_id]


async def test_two_runs_at_once_with_one_name_leave_one_audience(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    ids = maids(5, 1500)
    export = write_export(tmp_path / "a.txt", ids)
    async with client_for(sandbox) as client:
        outcomes = await asyncio.gather(
            sync_audience(client, export, name="Racing", **options(tmp_path, sandbox, "s1")),
            sync_audience(client, export, name="Racing", **options(tmp_path, sandbox, "s2")),
            return_exceptions=True,
        )
        kept = live_named(sandbox, "Racing")
        assert len(kept) == 1, outcomes
        assert await settled(sandbox, client, kept[0]) == maid_digests(ids)
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(refused) <= 1 and all(isinstance(o, NameTakenError) for o in refused), outcomes


async def test_a_mirror_whose_snapshot_store_was_lost_continues_into_its_audience(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    async with client_for(sandbox) as client:
        first = await sync_audience(
            client,
            write_export(tmp_path / "a.txt", maids(6, 1500)),
            name="Mirrored",
            action="mirror",
            **options(tmp_path, sandbox),
        )
        shutil.rmtree(tmp_path / "state" / "snapshots")
        again = await sync_audience(
            client,
            write_export(tmp_path / "a.txt", maids(7, 1500)),
            name="Mirrored",
            action="mirror",
            **options(tmp_path, sandbox),
        )
        assert again.audience_id == first.audience_id
        assert await settled(sandbox, client, first.audience_id or "") == maid_digests(
            maids(7, 1500)
        )
    assert live_named(sandbox, "Mirrored") == [first.audience_id]


# -- 2. a create TikTok carries out late -------------------------------------------------------


async def test_a_create_held_past_the_client_timeout_is_found_not_sent_again(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    ids = maids(8, 1500)
    export = write_export(tmp_path / "a.txt", ids)
    sandbox.script(ScriptedAnswer(endpoint=CREATE, code=0, hold_seconds=3.0))
    async with impatient_client(sandbox, 1.0) as client:
        result = await sync_audience(
            client, export, name="Late", **options(tmp_path, sandbox, reconcile_window=15.0)
        )
        assert live_named(sandbox, "Late") == [result.audience_id]
        assert await settled(sandbox, client, result.audience_id or "") == maid_digests(ids)
    assert sandbox.request_counts()[CREATE] == 1


async def test_a_create_not_seen_within_the_window_stops_and_the_rerun_adopts_it(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    ids = maids(9, 1500)
    export = write_export(tmp_path / "a.txt", ids)
    sandbox.script(ScriptedAnswer(endpoint=CREATE, code=0, hold_seconds=4.0))
    async with impatient_client(sandbox, 1.0) as client:
        with pytest.raises(OutcomeUnknownError) as stopped:
            await sync_audience(
                client, export, name="Later", **options(tmp_path, sandbox, reconcile_window=1.0)
            )
        assert stopped.value.exit_code == 1
        assert "outcome unknown; the same command reconciles" in str(stopped.value)
        assert live_named(sandbox, "Later") == []
        await asyncio.sleep(4.0)  # TikTok carries the create out meanwhile
        result = await sync_audience(
            client, export, name="Later", **options(tmp_path, sandbox, reconcile_window=1.0)
        )
        assert result.resumed
        assert live_named(sandbox, "Later") == [result.audience_id]
        assert await settled(sandbox, client, result.audience_id or "") == maid_digests(ids)
    assert sandbox.request_counts()[CREATE] == 1


# -- 4. inputs are identified by content; --restart continues into the audience ----------------


async def test_a_touched_input_resumes_and_restart_continues_into_the_partial_audience(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    ids = maids(10, 1200)
    export = write_export(tmp_path / "touched.txt", ids)
    opts = options(tmp_path, sandbox, paths_per_call=2, max_file_bytes=300 * DIGEST_LINE)
    async with client_for(sandbox) as client:
        with pytest.raises(Killed):  # the create is done, its APPENDs are pending
            await sync_audience(
                client, export, name="Touched", reporter=killed_after_create, **opts
            )
        (made,) = live_named(sandbox, "Touched")
        os.utime(export, ns=(1, 1))  # same bytes, new mtime: the same input
        # --restart continues into the audience the job made, never a second one.
        result = await sync_audience(client, export, name="Touched", restart=True, **opts)
        assert result.audience_id == made
        assert await settled(sandbox, client, made) == maid_digests(ids)
        os.utime(export, ns=(2, 2))
        again = await sync_audience(client, export, name="Touched", **opts)
        assert again.resumed and again.api_calls == 0  # the finished job, not "changed"
    assert live_named(sandbox, "Touched") == [made]
    assert sandbox.request_counts()[CREATE] == 1


# -- 1. the mirror sees operations made outside its journal --------------------------------------


@pytest.mark.parametrize("outside", ["APPEND", "REMOVE"])
async def test_a_mirror_replaces_after_an_operation_made_outside_its_journal(
    sandbox: Sandbox, raw_api: RawApi, tmp_path: Path, outside: str
) -> None:
    day1, day2 = maids(11, 3000), maids(11, 3000)[100:] + maids(12, 150)
    strays = sorted(maid_digests(maids(13, 478)))
    mirror: dict[str, Any] = {"name": "Opt-outs", "action": "mirror"}
    async with client_for(sandbox) as client:
        first = await sync_audience(
            client, write_export(tmp_path / "a.txt", day1), **mirror, **options(tmp_path, sandbox)
        )
        audience_id = first.audience_id or ""
        await raw_api.wait_idle(audience_id)
        # Another tool changes the audience: APPENDs strays, or REMOVEs members.
        changed = strays if outside == "APPEND" else sorted(maid_digests(day1[-478:]))
        answer = await raw_api.update(
            audience_id, action=outside, file_paths=[await raw_api.upload_path(changed)]
        )
        assert answer["code"] == 0, answer
        await raw_api.wait_idle(audience_id)
        second = await sync_audience(
            client, write_export(tmp_path / "a.txt", day2), **mirror, **options(tmp_path, sandbox)
        )
        assert second.audience_id == audience_id
        assert second.mirror is not None and second.mirror.mode == "replace"
        assert "this journal did not make" in second.mirror.reason
        assert await settled(sandbox, client, audience_id) == maid_digests(day2)
        # The third run trusts the new snapshot again.
        third = await sync_audience(
            client,
            write_export(tmp_path / "a.txt", day2 + maids(14, 10)),
            **mirror,
            **options(tmp_path, sandbox),
        )
        assert third.mirror is not None and third.mirror.mode == "diff"
        assert await settled(sandbox, client, audience_id) == maid_digests(day2 + maids(14, 10))


# -- 5. a REPLACE that cannot be followed by its APPENDs today does not start ---------------------


async def test_a_replace_that_cannot_finish_today_pauses_before_sending_anything(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    kept = maids(15, 1500)
    async with client_for(sandbox) as client:
        made = await sync_audience(
            client,
            write_export(tmp_path / "a.txt", kept),
            name="Quota",
            **options(tmp_path, sandbox),
        )
        audience_id = made.audience_id or ""
        extra = maids(16, 1260)  # 21 APPENDs of one 60-row part: 3 of 24 operations left
        await sync_audience(
            client,
            write_export(tmp_path / "b.txt", extra),
            audience_id=audience_id,
            action="append",
            **options(tmp_path, sandbox, paths_per_call=1, max_file_bytes=60 * DIGEST_LINE),
        )
        before = await settled(sandbox, client, audience_id)
        updates = sandbox.request_counts()[UPDATE]
        replace = options(tmp_path, sandbox, paths_per_call=1, max_file_bytes=1000 * DIGEST_LINE)
        export = write_export(tmp_path / "c.txt", maids(17, 4000))
        with pytest.raises(Paused) as paused:
            await sync_audience(
                client, export, audience_id=audience_id, action="replace", **replace
            )
        assert paused.value.exit_code == 3
        assert "nothing was sent" in str(paused.value) and "after 20" in str(paused.value)
        result = paused.value.result
        assert result is not None and result.pending is not None
        assert (result.pending.resume_after or "").endswith("00:00:00 UTC")
        assert len(result.pending.operations) == 4
        assert sandbox.request_counts()[UPDATE] == updates
        assert await settled(sandbox, client, audience_id) == before == maid_digests(kept + extra)
        # The next UTC day the same command runs it whole.
        sandbox.clock.advance(86400)
        done = await sync_audience(
            client, export, audience_id=audience_id, action="replace", **replace
        )
        assert done.resumed
        assert await settled(sandbox, client, audience_id) == maid_digests(maids(17, 4000))


# -- 6. a journal that lost committed state is refused --------------------------------------------


async def test_a_journal_that_lost_committed_state_is_refused_and_makes_no_second_audience(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    ids = maids(18, 1200)
    export = write_export(tmp_path / "a.txt", ids)
    opts = options(tmp_path, sandbox, paths_per_call=2, max_file_bytes=300 * DIGEST_LINE)
    journal = tmp_path / "state" / JOURNAL_FILENAME
    async with client_for(sandbox) as client:
        with pytest.raises(Killed):  # the create is done, its APPENDs pending
            await sync_audience(
                client, export, name="Damaged", reporter=killed_after_create, **opts
            )
        (made,) = live_named(sandbox, "Damaged")
        kept = journal.read_bytes()
        for damage in (b"", kept[: len(kept) // 2]):
            journal.write_bytes(damage)  # truncated (or its companion files lost)
            with pytest.raises(StateError, match=r"lost committed state|corrupt") as refused:
                await sync_audience(client, export, name="Damaged", **opts)
            assert refused.value.exit_code == 2
            assert live_named(sandbox, "Damaged") == [made]
        # An older copy of the journal is refused the same way.
        journal.write_bytes(kept)
        await sync_audience(client, export, name="Damaged", **opts)
        journal.write_bytes(kept)
        with pytest.raises(StateError, match="lost committed state"):
            await sync_audience(client, export, name="Damaged", **opts)
        # With the whole state directory gone, the name check still stops a second audience.
        shutil.rmtree(tmp_path / "state")
        with pytest.raises(NameTakenError):
            await sync_audience(client, export, name="Damaged", **opts)
    assert live_named(sandbox, "Damaged") == [made]
    assert sandbox.request_counts()[CREATE] == 1


# -- 7. a state dir that turns read-only mid-run ------------------------------------------------


def test_no_shared_memory_file_is_mapped_while_a_job_runs(
    sandbox_process: SandboxProcess, tmp_path: Path
) -> None:
    """A read-only or full file system under a mapped WAL index (``-shm``) kills the process
    with SIGBUS; the journal maps none: a failed write is one line, exit 2."""
    state = tmp_path / "state"
    export = write_export(tmp_path / "a.txt", maids(19, 1500))
    # TikTok holds the create for 2 s: look at the state directory meanwhile.
    sandbox_process.control(
        "scripts", {"endpoint": "/dmp/custom_audience/create/", "code": 0, "hold_seconds": 2}
    )
    job = Job(
        [
            sys.executable, "-m", "asyncsync", "sync", str(export),
            "--advertiser-id", ADVERTISER, "--name", "NoShm",
            "--api-base", sandbox_process.api_base, "--state-dir", str(state),
        ],
        cli_env(tmp_path),
    )  # fmt: skip
    proc = job.start()
    deadline = time.monotonic() + 30
    while not sandbox_process.counts().get(CREATE) and time.monotonic() < deadline:
        time.sleep(0.05)
    during = sorted(p.name for p in state.iterdir())
    assert job.collect(proc) == 0, job.outputs
    assert JOURNAL_FILENAME in during
    assert not [n for n in during if n.endswith(("-shm", "-wal"))], during


# -- 8. a short outage is ridden out; expired files are uploaded again, only those --------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_a_job_rides_out_a_restart_of_the_api_and_the_restarted_sandbox_keeps_its_state(
    tmp_path: Path,
) -> None:
    port, state = free_port(), tmp_path / "tiktok.json"
    ids = maids(20, 3000)
    export = write_export(tmp_path / "a.txt", ids)
    policy = RetryPolicy(attempts=3, initial_delay=0.05, max_delay=0.2, outage=20.0)
    first = Sandbox(config=fast_config(), port=port, state_file=state)
    await first.__aenter__()
    token = first.issue_token(token="outage-token")
    async with TikTokClient(
        token, api_base=first.api_base, retry=policy, requests_per_second=None
    ) as client:
        job = asyncio.create_task(
            sync_audience(
                client, export, name="Outage", **sync_options(tmp_path, first, concurrency=2)
            )
        )
        for _ in range(3000):
            if first.request_counts().get(UPLOAD, 0) >= 4 or job.done():
                break
            await asyncio.sleep(0.01)
        await first.__aexit__(None, None, None)  # the API is gone for 3 s
        await asyncio.sleep(3.0)
        async with Sandbox(config=fast_config(), port=port, state_file=state) as second:
            result = await job
            assert result.audience_id is not None
            assert await settled(second, client, result.audience_id) == maid_digests(ids)
            assert live_named(second, "Outage") == [result.audience_id]


def test_a_refused_connection_names_the_real_scheme(tmp_path: Path) -> None:
    async def connect() -> None:
        async with TikTokClient(
            "token",
            api_base=f"http://127.0.0.1:{free_port()}",
            retry=RetryPolicy(attempts=1, outage=0.0),
            requests_per_second=None,
        ) as client:
            await client.list_audiences(ADVERTISER)

    with pytest.raises(TransportError) as failed:
        asyncio.run(connect())
    assert "cannot connect to http://127.0.0.1:" in str(failed.value)
    assert "ssl" not in str(failed.value)


async def test_only_the_file_paths_tiktok_reports_expired_are_uploaded_again(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    ids = maids(21, 1500)
    export = write_export(tmp_path / "a.txt", ids)
    opts = options(tmp_path, sandbox, paths_per_call=5, max_file_bytes=100 * DIGEST_LINE)
    async with client_for(sandbox) as client:
        with pytest.raises(Killed):  # the create is done; two APPENDs of 5 parts pending
            await sync_audience(client, export, name="Ttl", reporter=killed_after_create, **opts)
        uploads = sandbox.request_counts()[UPLOAD]
        with Journal(tmp_path / "state") as journal:
            (job,) = journal.db.execute("SELECT id FROM jobs").fetchall()
            parts = journal.parts(job[0])
        for index in (7, 12):  # one part of each APPEND outlived its file_path
            path = parts[index].file_path
            assert path is not None
            sandbox.state.files[path].expires = 0.0
        result = await sync_audience(client, export, name="Ttl", **opts)
        assert await settled(sandbox, client, result.audience_id or "") == maid_digests(ids)
    assert uploads == 15
    assert sandbox.request_counts()[UPLOAD] - uploads == 2


def test_the_cli_refuses_a_taken_name_with_exit_2_unless_duplicates_are_allowed(
    sandbox_process: SandboxProcess, tmp_path: Path
) -> None:
    export = write_export(tmp_path / "a.txt", maids(22, 1500))

    def sync(state: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable, "-m", "asyncsync", "sync", str(export), "--json",
                "--advertiser-id", ADVERTISER, "--name", "Cli name",
                "--api-base", sandbox_process.api_base, "--state-dir", str(tmp_path / state),
                *extra,
            ],
            env=cli_env(tmp_path), capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    first = sync("one")
    assert first.returncode == 0, first.stderr
    made = json.loads(first.stdout)["audience_id"]
    refused = sync("two")
    assert refused.returncode == 2, refused.stderr
    assert f"--audience-id {made} --action" in refused.stderr
    assert len(sandbox_process.audiences_named("Cli name")) == 1
    allowed = sync("two", "--allow-duplicate-name")
    assert allowed.returncode == 0, allowed.stderr
    assert len(sandbox_process.audiences_named("Cli name")) == 2


async def test_a_create_longer_than_a_day_of_operations_starts_and_says_so(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    notices: list[str] = []

    def collect(event: Event) -> None:
        if isinstance(event, JobNotice):
            notices.append(event.message)

    export = write_export(tmp_path / "a.txt", maids(23, 13000))
    opts = options(tmp_path, sandbox, paths_per_call=1, max_file_bytes=500 * DIGEST_LINE)
    async with client_for(sandbox) as client:
        with pytest.raises(Paused) as paused:
            await sync_audience(client, export, name="Long", reporter=collect, **opts)
    assert notices and "needs 26 operations" in notices[0]
    assert paused.value.result is not None and paused.value.result.pending is not None
    assert len(paused.value.result.pending.operations) == 1
    assert len(live_named(sandbox, "Long")) == 1
