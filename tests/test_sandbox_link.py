"""The sandbox's emulated wide-area link: request latency, a speed per upload and a shared uplink.

Only lower bounds on time are asserted (the emulator must never be faster than the link it
emulates); the data must arrive whole whatever the pacing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner
from helpers.api import ADVERTISER
from helpers.ids import digest_file, sha256_digests
from helpers.sandbox import RawApi

from asyncsync.cli import main
from asyncsync.errors import UsageError
from asyncsync.sandbox import Sandbox, SandboxConfig

SandboxFactory = Callable[..., AbstractAsyncContextManager[Sandbox]]

# 40,000 SHA256 lines of 65 bytes: 2.6 MB per file.
DIGESTS = sha256_digests("link", 40_000)
CONTENT = digest_file(DIGESTS)
CREDIT = 1024 * 1024
"""The most a paced stream may send ahead of its rate: one chunk (the sandbox reads 1 MiB)."""


async def _raw(sb: Sandbox, session: aiohttp.ClientSession) -> RawApi:
    return RawApi(session, sb, sb.issue_token())


async def _timed_uploads(api: RawApi, count: int) -> tuple[float, list[dict[str, Any]]]:
    """Upload ``CONTENT`` ``count`` times side by side; (seconds taken, the accepted answers)."""
    start = time.perf_counter()
    answers = await asyncio.gather(*(api.upload(CONTENT) for _ in range(count)))
    took = time.perf_counter() - start
    assert [a["code"] for a in answers] == [0] * count, answers
    return took, answers


async def test_each_upload_is_read_no_faster_than_the_per_upload_speed(
    sandbox_factory: SandboxFactory,
) -> None:
    rate = 4_000_000.0
    async with (
        sandbox_factory(upload_bytes_per_second=rate) as sb,
        aiohttp.ClientSession() as session,
    ):
        took, [answer] = await _timed_uploads(await _raw(sb, session), 1)
        entry = sb.state.files[answer["data"]["file_path"]]
        assert entry.matched == len(DIGESTS) and entry.size_bytes == len(CONTENT)
    # Every chunk read is followed by its time on the link, less at most one chunk of credit.
    assert took >= 0.95 * (len(CONTENT) - CREDIT) / rate


async def test_the_per_upload_speed_applies_to_each_upload_on_its_own(
    sandbox_factory: SandboxFactory,
) -> None:
    rate = 4_000_000.0
    async with (
        sandbox_factory(upload_bytes_per_second=rate) as sb,
        aiohttp.ClientSession() as session,
    ):
        api = await _raw(sb, session)
        one, _ = await _timed_uploads(api, 1)
        three, _ = await _timed_uploads(api, 3)
    # Three streams side by side take about as long as one (a shared cap would take 3 x).
    assert three < 2 * one, (one, three)


async def test_uploads_in_flight_share_the_link_speed(sandbox_factory: SandboxFactory) -> None:
    link = 8_000_000.0
    async with (
        sandbox_factory(upload_bytes_per_second=1e9, link_bytes_per_second=link) as sb,
        aiohttp.ClientSession() as session,
    ):
        took, answers = await _timed_uploads(await _raw(sb, session), 3)
        assert len({a["data"]["file_path"] for a in answers}) == 3
    # Three files through one 8 MB/s link: at least 3 x 2.6 MB / 8 MB/s (less one chunk of
    # credit), although each upload alone may go at 1 GB/s.
    assert took >= 0.95 * (3 * len(CONTENT) - CREDIT) / link


async def test_every_api_request_waits_the_latency(sandbox_factory: SandboxFactory) -> None:
    async with (
        sandbox_factory(latency_seconds=0.2) as sb,
        aiohttp.ClientSession() as session,
    ):
        api = await _raw(sb, session)
        start = time.perf_counter()
        answer = await api.get(
            "/dmp/custom_audience/list/", {"advertiser_id": ADVERTISER, "page": 1}
        )
        took = time.perf_counter() - start
        assert answer["code"] == 0, answer
    assert took >= 0.2


async def test_a_paced_upload_with_a_wrong_md5_is_still_refused(
    sandbox_factory: SandboxFactory,
) -> None:
    async with (
        sandbox_factory(upload_bytes_per_second=50_000_000.0) as sb,
        aiohttp.ClientSession() as session,
    ):
        api = await _raw(sb, session)
        answer = await api.upload(CONTENT, signature="0" * 32)
        assert answer["code"] == 40900
        assert sb.state.files == {}


@pytest.mark.parametrize(
    "field, value",
    [
        ("latency_seconds", -0.1),
        ("latency_seconds", float("nan")),
        ("upload_bytes_per_second", 0.0),
        ("link_bytes_per_second", float("nan")),
    ],
)
def test_link_settings_out_of_range_are_refused_by_name(field: str, value: float) -> None:
    settings: dict[str, Any] = {field: value}
    with pytest.raises(UsageError, match=field):
        SandboxConfig(**settings)


def test_the_cli_refuses_a_zero_upload_speed_with_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["sandbox", "--upload-mb-per-s", "0"])
    assert result.exit_code == 2
    assert "--upload-mb-per-s" in result.output
    assert "Traceback" not in result.output
