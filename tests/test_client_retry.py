"""Retries against the sandbox's seeded fault injection: what is retried, how often, and what
is not (a 40105, a create whose answer was lost)."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
from helpers.api import ADVERTISER, CREATE, LIST, UPLOAD

from asyncsync import RetryPolicy, TikTokClient
from asyncsync.errors import (
    AuthError,
    OutcomeUnknownError,
    RequestTimeout,
    TransientError,
    TransportError,
)
from asyncsync.events import Event, RequestRetried
from asyncsync.sandbox import FaultConfig, Sandbox
from asyncsync.tiktok import retry

SandboxFactory = Callable[..., AbstractAsyncContextManager[Sandbox]]


def write_part(path: Path, n: int, prefix: str = "id") -> int:
    data = "".join(hashlib.sha256(f"{prefix}-{i}".encode()).hexdigest() + "\n" for i in range(n))
    path.write_text(data)
    return len(data)


def first_draw_below(p: float) -> int:
    """A seed whose first draw faults with probability ``p`` (the sandbox draws drop first)."""
    return next(seed for seed in range(1000) if random.Random(seed).random() < p)


async def test_a_rate_limit_storm_is_ridden_out(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    write_part(tmp_path / "a.txt", 1500)
    events: list[Event] = []
    faults = FaultConfig(rate_limit=0.5, seed=11)
    with retry.testing():
        async with (
            sandbox_factory(faults=faults) as sb,
            TikTokClient(
                sb.issue_token(),
                api_base=sb.api_base,
                retry=RetryPolicy(attempts=15),
                requests_per_second=None,
                reporter=events.append,
            ) as client,
        ):
            up = await client.upload_file(ADVERTISER, tmp_path / "a.txt", "FIRST_SHA256")
            audience_id = await client.create_audience(
                ADVERTISER, "storm", [up.file_path], "FIRST_SHA256"
            )
            for i in range(10):
                await client.update_audience(ADVERTISER, audience_id, name=f"storm {i}")
            (got,) = await client.get_audiences(ADVERTISER, [audience_id])
            listed = await client.list_audiences(ADVERTISER)

            limited = sb.fault_counts()["rate_limit"]
            assert limited >= 5
            assert got.name == "storm 9"
            assert [a.audience_id for a in listed] == [audience_id]
            assert client.stats.retries == limited
            assert client.stats.api_calls == sum(sb.request_counts().values())
            retried = [e for e in events if isinstance(e, RequestRetried)]
            assert len(retried) == limited
            assert all("40100" in e.reason and e.delay == 0.0 for e in retried)


async def test_an_invalid_token_fails_at_once_with_a_clear_message(sandbox: Sandbox) -> None:
    async with TikTokClient("not-a-token", api_base=sandbox.api_base) as client:
        with pytest.raises(AuthError) as info:
            await client.list_audiences(ADVERTISER)
    assert info.value.code == 40105
    assert info.value.request_id
    assert "invalid or has expired" in str(info.value)
    assert "retrying cannot help" in str(info.value)
    assert client.stats.api_calls == 1
    assert client.stats.retries == 0


async def test_a_dropped_connection_during_an_upload_is_retried_and_succeeds(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    size = write_part(tmp_path / "big.txt", 40_000)  # 2.6 MB: cut after the first MiB
    faults = FaultConfig(drop=0.5, seed=first_draw_below(0.5), endpoints=frozenset({UPLOAD}))
    with retry.testing():
        async with (
            sandbox_factory(faults=faults, min_members=1) as sb,
            TikTokClient(sb.issue_token(), api_base=sb.api_base, requests_per_second=None) as c,
        ):
            up = await c.upload_file(ADVERTISER, tmp_path / "big.txt", "FIRST_SHA256")
            audience_id = await c.create_audience(ADVERTISER, "d", [up.file_path], "FIRST_SHA256")
            sb.clock.advance(60)
            (got,) = await c.get_audiences(ADVERTISER, [audience_id])
            dropped = sb.fault_counts()["drop"]
    assert dropped >= 1
    assert c.stats.retries == dropped
    assert sb.request_counts()[UPLOAD] == dropped + 1
    assert got.cover_num == 40_000
    assert up.bytes == size
    assert c.stats.bytes_uploaded == size


async def test_http_503_on_create_is_an_unknown_outcome_and_is_not_resent(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """A 5xx can come after TikTok created the audience: the client never resends a create on
    it, whereas reads and uploads are retried."""
    write_part(tmp_path / "a.txt", 1500)
    with retry.testing():
        async with (
            sandbox_factory() as sb,
            TikTokClient(
                sb.issue_token(),
                api_base=sb.api_base,
                retry=RetryPolicy(attempts=12),
                requests_per_second=None,
            ) as c,
        ):
            up = await c.upload_file(ADVERTISER, tmp_path / "a.txt", "FIRST_SHA256")
            sb.set_faults(FaultConfig(http_503=1.0, endpoints=frozenset({CREATE})))
            with pytest.raises(OutcomeUnknownError) as info:
                await c.create_audience(ADVERTISER, "a0", [up.file_path], "FIRST_SHA256")
            sent = sb.request_counts()[CREATE]
            sb.set_faults(FaultConfig(http_503=0.5, seed=first_draw_below(0.5)))
            names = [a.name for a in await c.list_audiences(ADVERTISER)]
    assert sent == 1
    assert info.value.endpoint == "dmp/custom_audience/create/"
    assert names == []


async def test_retries_are_bounded_and_the_last_error_names_code_and_endpoint(
    sandbox_factory: SandboxFactory,
) -> None:
    async with (
        sandbox_factory(faults=FaultConfig(http_503=1.0)) as sb,
        TikTokClient(
            sb.issue_token(),
            api_base=sb.api_base,
            retry=RetryPolicy(attempts=4, wait=False),
            requests_per_second=None,
        ) as c,
    ):
        with pytest.raises(TransientError) as info:
            await c.list_audiences(ADVERTISER)
        assert sb.request_counts()[LIST] == 4
    assert info.value.code == 503
    assert info.value.endpoint == "dmp/custom_audience/list/"
    assert "503" in str(info.value) and "dmp/custom_audience/list/" in str(info.value)
    assert "not JSON" in str(info.value)
    assert (c.stats.api_calls, c.stats.retries) == (4, 3)


async def test_testing_mode_caps_attempts_without_waiting(sandbox_factory: SandboxFactory) -> None:
    async with (
        sandbox_factory(faults=FaultConfig(server_error=1.0)) as sb,
        TikTokClient(sb.issue_token(), api_base=sb.api_base, requests_per_second=None) as c,
    ):
        with retry.testing(attempts=3), pytest.raises(TransientError) as info:
            await c.list_audiences(ADVERTISER)
    assert info.value.code == 50002
    assert c.stats.api_calls == 3


async def test_a_create_whose_answer_is_lost_is_not_resent(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    write_part(tmp_path / "a.txt", 1500)
    async with (
        sandbox_factory(faults=FaultConfig(drop=1.0, endpoints=frozenset({CREATE}))) as sb,
        TikTokClient(sb.issue_token(), api_base=sb.api_base, requests_per_second=None) as c,
    ):
        up = await c.upload_file(ADVERTISER, tmp_path / "a.txt", "FIRST_SHA256")
        with retry.testing(), pytest.raises(OutcomeUnknownError) as info:
            await c.create_audience(ADVERTISER, "once", [up.file_path], "FIRST_SHA256")
        assert sb.request_counts()[CREATE] == 1
    assert isinstance(info.value, TransportError)
    assert info.value.endpoint == "dmp/custom_audience/create/"
    assert "not resent" in str(info.value)
    assert c.stats.retries == 0


async def test_a_slow_answer_times_out_and_is_retried_then_reported(
    sandbox_factory: SandboxFactory,
) -> None:
    faults = FaultConfig(slow=1.0, slow_seconds=0.5)
    async with (
        sandbox_factory(faults=faults) as sb,
        TikTokClient(
            sb.issue_token(),
            api_base=sb.api_base,
            timeout=0.1,
            retry=RetryPolicy(attempts=2, wait=False),
            requests_per_second=None,
        ) as c,
    ):
        with pytest.raises(RequestTimeout, match=r"dmp/custom_audience/list/.*0\.1 s"):
            await c.list_audiences(ADVERTISER)
    assert (c.stats.api_calls, c.stats.retries) == (2, 1)
