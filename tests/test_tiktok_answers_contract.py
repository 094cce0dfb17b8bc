"""How asyncsync reads TikTok's answers, against the sandbox over loopback: a 40002 on update is
"busy" only when TikTok shows an operation running; answers that can come after TikTok did the
work (50002, 51010, HTTP 5xx) are reconciled from TikTok's state, never blindly resent; a file
TikTok does not know (40905) or no longer keeps (40910) is uploaded again; expiring audiences
are never waited for."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from asyncsync import sync_audience
from asyncsync.errors import (
    AudienceBusyError,
    BadRequestError,
    OutcomeUnknownError,
    Paused,
)
from asyncsync.sandbox import Sandbox, SandboxConfig, ScriptedAnswer
from asyncsync.sandbox.state import DEFAULT_EXPIRY_DAYS
from asyncsync.tiktok.audience_state import operation_running
from asyncsync.tiktok.client import TikTokClient
from asyncsync.tiktok.retry import RetryPolicy

ADVERTISER = "7000000000000000001"
CREATE = "/dmp/custom_audience/create/"
UPDATE = "/dmp/custom_audience/update/"
DAY = 86_400.0
PART_LINE = 65


def ids(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        h = f"{rng.getrandbits(128):032x}"
        out.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return out


def digests(values: list[str]) -> set[str]:
    return {hashlib.sha256(v.encode()).hexdigest() for v in values}


def export(path: Path, values: list[str]) -> Path:
    path.write_text("\n".join(values) + "\n")
    return path


@pytest.fixture
async def sb(tmp_path: Path) -> AsyncIterator[Sandbox]:
    config = SandboxConfig(operation_seconds=0.05, seed=3)
    async with Sandbox(config=config, spool_dir=tmp_path / "spool") as sandbox:
        yield sandbox


@pytest.fixture
async def client(sb: Sandbox) -> AsyncIterator[TikTokClient]:
    async with TikTokClient(
        sb.issue_token(),
        api_base=sb.api_base,
        retry=RetryPolicy(attempts=6, wait=False),
        requests_per_second=None,
    ) as c:
        yield c


def options(tmp_path: Path, sb: Sandbox, **extra: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "advertiser_id": ADVERTISER,
        "state_dir": tmp_path / "state",
        "clock": sb.clock.now,
        "poll_interval": 0.01,
        "max_wait": 30.0,
        "workers": 1,
        "max_file_bytes": 400 * PART_LINE,
    }
    values.update(extra)
    return values


async def idle_members(sb: Sandbox, client: TikTokClient, audience_id: str) -> set[str]:
    for _ in range(500):
        (audience,) = await client.get_audiences(ADVERTISER, [audience_id])
        if audience.is_valid:
            return set(sb.members(audience_id))
        await asyncio.sleep(0.01)
    raise AssertionError(f"audience {audience_id} stayed busy")


def named(sb: Sandbox, name: str) -> list[str]:
    return [a.audience_id for a in sb.state.audiences.values() if a.name == name]


def operations(sb: Sandbox, audience_id: str) -> list[str]:
    return [op.action for op in sb.state.audiences[audience_id].history]


async def created(sb: Sandbox, client: TikTokClient, tmp_path: Path, values: list[str]) -> str:
    result = await sync_audience(
        client, export(tmp_path / "base.txt", values), name="Base", **options(tmp_path, sb)
    )
    assert result.audience_id is not None
    await idle_members(sb, client, result.audience_id)
    return result.audience_id


# -- 40002 on update ---------------------------------------------------------------------------


async def test_a_persistent_40002_on_an_idle_audience_fails_at_once_with_tiktoks_answer(
    sb: Sandbox, client: TikTokClient, tmp_path: Path
) -> None:
    base = ids(1, 1500)
    audience_id = await created(sb, client, tmp_path, base)
    message = "Invalid parameter: file_paths[0] has a format this endpoint does not take."
    sb.script(
        ScriptedAnswer(endpoint=UPDATE, code=40002, message=message, carry_out=False, times=None)
    )
    started = time.monotonic()
    with pytest.raises(BadRequestError) as info:
        await sync_audience(
            client,
            export(tmp_path / "more.txt", ids(2, 300)),
            audience_id=audience_id,
            action="append",
            **options(tmp_path, sb, max_wait=120.0),
        )
    assert time.monotonic() - started < 10
    error = info.value
    assert error.exit_code == 1
    assert error.code == 40002 and message in error.message and error.request_id
    assert error.request_id in str(error) and "40002" in str(error)
    # Refused twice while idle, never taken for a running operation.
    assert sb.request_counts()[f"/open_api/v1.3{UPDATE}"] == 2
    assert set(sb.members(audience_id)) == digests(base)


async def test_a_40002_while_tiktok_shows_an_operation_running_is_busy(
    tmp_path: Path,
) -> None:
    async with (
        Sandbox(config=SandboxConfig(operation_seconds=600, seed=4)) as sb,
        TikTokClient(sb.issue_token(), api_base=sb.api_base, requests_per_second=None) as c,
    ):
        (tmp_path / "a.txt").write_text("\n".join(sorted(digests(ids(1, 1200)))) + "\n")
        (tmp_path / "b.txt").write_text("\n".join(sorted(digests(ids(2, 10)))) + "\n")
        a = await c.upload_file(ADVERTISER, tmp_path / "a.txt", "FIRST_SHA256")
        b = await c.upload_file(ADVERTISER, tmp_path / "b.txt", "FIRST_SHA256")
        audience_id = await c.create_audience(ADVERTISER, "busy", [a.file_path], "FIRST_SHA256")
        with pytest.raises(AudienceBusyError):
            await c.update_audience(
                ADVERTISER, audience_id, file_paths=[b.file_path], action="APPEND"
            )
        # The job waits within max_wait, then pauses (exit 3): a real busy audience still waits.
        with pytest.raises(Paused) as paused:
            await sync_audience(
                c,
                export(tmp_path / "more.txt", ids(3, 50)),
                audience_id=audience_id,
                action="append",
                **options(tmp_path, sb, max_wait=0.3),
            )
    assert paused.value.exit_code == 3
    assert "still running an operation" in str(paused.value)


async def test_an_update_of_an_expiring_audience_fails_clearly_and_is_never_waited_for(
    sb: Sandbox, client: TikTokClient, tmp_path: Path
) -> None:
    audience_id = await created(sb, client, tmp_path, ids(1, 1200))
    (tmp_path / "b.txt").write_text("\n".join(sorted(digests(ids(2, 10)))) + "\n")
    b = await client.upload_file(ADVERTISER, tmp_path / "b.txt", "FIRST_SHA256")
    sb.clock.advance((DEFAULT_EXPIRY_DAYS - 30) * DAY)
    with pytest.raises(BadRequestError, match="expiring or expired"):
        await client.update_audience(
            ADVERTISER, audience_id, file_paths=[b.file_path], action="APPEND"
        )
    sb.clock.advance(31 * DAY)
    (expired,) = await client.get_audiences(ADVERTISER, [audience_id])
    # TikTok: is_valid is false once expired; that is not a running operation.
    assert expired.is_valid is False and expired.is_expiring is True
    assert not operation_running(expired)


# -- answers that may come after the work was done -----------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        {"code": 50002, "message": "System timeout."},
        {"code": 51010, "message": "Internal time out."},
        {"http_status": 500},
    ],
    ids=["50002", "51010", "http500"],
)
async def test_a_create_carried_out_then_answered_as_failed_leaves_one_audience(
    sb: Sandbox, client: TikTokClient, tmp_path: Path, answer: dict[str, Any]
) -> None:
    values = ids(7, 2000)
    sb.script(ScriptedAnswer(endpoint=CREATE, carry_out=True, **answer))
    result = await sync_audience(
        client, export(tmp_path / "x.txt", values), name="X", **options(tmp_path, sb)
    )
    assert named(sb, "X") == [result.audience_id]
    assert result.audience_id is not None
    assert await idle_members(sb, client, result.audience_id) == digests(values)


async def test_a_client_create_answered_50002_is_an_unknown_outcome_not_a_retry(
    sb: Sandbox, client: TikTokClient, tmp_path: Path
) -> None:
    (tmp_path / "a.txt").write_text("\n".join(sorted(digests(ids(1, 10)))) + "\n")
    up = await client.upload_file(ADVERTISER, tmp_path / "a.txt", "FIRST_SHA256")
    sb.script(ScriptedAnswer(endpoint=CREATE, code=50002, carry_out=True))
    with pytest.raises(OutcomeUnknownError) as info:
        await client.create_audience(ADVERTISER, "X", [up.file_path], "FIRST_SHA256")
    assert info.value.answer is not None and info.value.answer.code == 50002
    assert info.value.answer.request_id
    assert len(named(sb, "X")) == 1
    assert sb.request_counts()[f"/open_api/v1.3{CREATE}"] == 1


@pytest.mark.parametrize("action", ["replace", "remove", "append"])
async def test_an_update_carried_out_then_answered_50002_is_applied_exactly_once(
    sb: Sandbox, client: TikTokClient, tmp_path: Path, action: str
) -> None:
    base = ids(1, 3000)
    audience_id = await created(sb, client, tmp_path, base)
    change = base[:400] if action == "remove" else ids(9, 1500)
    sb.script(ScriptedAnswer(endpoint=UPDATE, code=50002, carry_out=True))
    result = await sync_audience(
        client,
        export(tmp_path / "change.txt", change),
        audience_id=audience_id,
        action=action,
        **options(tmp_path, sb, max_file_bytes=2000 * PART_LINE),
    )
    assert result.audience_id == audience_id
    members = await idle_members(sb, client, audience_id)
    expected = {
        "replace": digests(change),
        "remove": digests(base) - digests(change),
        "append": digests(base) | digests(change),
    }[action]
    assert members == expected
    assert operations(sb, audience_id) == ["CREATE", action.upper()]


# -- files TikTok does not know ----------------------------------------------------------------


@pytest.mark.parametrize("code", [40905, 40910])
async def test_a_create_answered_file_not_exist_or_expired_uploads_again(
    sb: Sandbox, client: TikTokClient, tmp_path: Path, code: int
) -> None:
    values = ids(5, 1200)
    sb.script(
        ScriptedAnswer(endpoint=CREATE, code=code, message="file_path unknown", carry_out=False)
    )
    result = await sync_audience(
        client, export(tmp_path / "x.txt", values), name="Files", **options(tmp_path, sb)
    )
    assert result.audience_id is not None
    assert await idle_members(sb, client, result.audience_id) == digests(values)
    uploads = sb.request_counts()["/open_api/v1.3/dmp/custom_audience/file/upload/"]
    assert uploads == 2 * result.parts


async def test_a_held_create_is_carried_out_after_the_caller_gave_up(
    sb: Sandbox, tmp_path: Path
) -> None:
    (tmp_path / "a.txt").write_text("\n".join(sorted(digests(ids(1, 10)))) + "\n")
    async with TikTokClient(
        sb.issue_token(),
        api_base=sb.api_base,
        timeout=0.3,
        retry=RetryPolicy(attempts=3, wait=False),
        requests_per_second=None,
    ) as c:
        up = await c.upload_file(ADVERTISER, tmp_path / "a.txt", "FIRST_SHA256")
        sb.script(ScriptedAnswer(endpoint=CREATE, code=0, hold_seconds=0.8))
        with pytest.raises(OutcomeUnknownError):
            await c.create_audience(ADVERTISER, "Held", [up.file_path], "FIRST_SHA256")
        assert named(sb, "Held") == []
        for _ in range(100):
            if named(sb, "Held"):
                break
            await asyncio.sleep(0.02)
    assert len(named(sb, "Held")) == 1
    assert sb.request_counts()[f"/open_api/v1.3{CREATE}"] == 1
