"""The client-side rate limiter and the retry policy (backoff bounds, total time, testing mode)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from helpers.api import ADVERTISER, LIST

from asyncsync import RetryPolicy, TikTokClient
from asyncsync.errors import TransientError
from asyncsync.tiktok import TokenBucket, retry


@pytest.fixture
async def arrivals() -> AsyncIterator[tuple[str, list[float]]]:
    """A raw server whose list endpoint records when each request arrived (then 503s on
    ``?fail``)."""
    times: list[float] = []

    async def handler(request: web.Request) -> web.Response:
        times.append(time.monotonic())
        if request.headers.get("Access-Token") == "fail":
            return web.Response(status=503, text="down")
        return web.json_response(
            {"code": 0, "message": "OK", "request_id": "r", "data": {"list": [], "page_info": {}}}
        )

    app = web.Application()
    app.router.add_get(LIST, handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/"), times
    await server.close()


async def test_concurrent_calls_share_one_limiter_that_holds_the_rate(
    arrivals: tuple[str, list[float]],
) -> None:
    base, times = arrivals
    rate = 40.0
    async with TikTokClient("t", api_base=base, requests_per_second=rate) as client:
        await asyncio.gather(*(client.list_audiences(ADVERTISER) for _ in range(41)))
    assert len(times) == 41
    times.sort()
    # Over any run of k+1 consecutive requests at least (k - burst) / rate seconds pass; the
    # tolerance absorbs delivery jitter, far less than the extra requests a broken limiter lets by.
    k = 20
    for i in range(len(times) - k):
        assert times[i + k] - times[i] >= (k - 1) / rate - 0.1
    assert times[-1] - times[0] >= 39 / rate - 0.1


async def test_the_default_limit_is_tiktoks_basic_tier_of_10_per_second() -> None:
    client = TikTokClient("t")
    assert client.requests_per_second == 10.0
    assert TikTokClient("t", requests_per_second=None).requests_per_second is None


async def test_token_bucket_spaces_acquisitions_after_the_burst() -> None:
    bucket = TokenBucket(100.0, burst=5)
    started = time.monotonic()
    for _ in range(5):
        await bucket.acquire()
    burst_done = time.monotonic()
    for _ in range(20):
        await bucket.acquire()
    assert time.monotonic() - burst_done >= 20 / 100.0 - 0.01
    assert burst_done - started < 0.2


def test_token_bucket_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(0)
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(1, burst=0.5)


def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    policy = RetryPolicy(initial_delay=0.5, multiplier=2.0, max_delay=3.0)
    rng = random.Random(5)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (9, 3.0)]:
        waits = [policy.backoff(attempt, rng) for _ in range(500)]
        assert all(0.0 <= w <= ceiling for w in waits)
        assert max(waits) > 0.9 * ceiling
        assert min(waits) < 0.1 * ceiling
    assert RetryPolicy(wait=False).backoff(5) == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [{"attempts": 0}, {"initial_delay": -1.0}, {"multiplier": 0.5}, {"total_timeout": 0.0}],
)
def test_retry_policy_validates_its_fields(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_testing_mode_overrides_nest_and_restore() -> None:
    policy = RetryPolicy(attempts=8)
    with retry.testing():
        assert (policy.effective().wait, policy.effective().attempts) == (False, 8)
        with retry.testing(attempts=2):
            assert policy.effective().attempts == 2
        assert policy.effective().attempts == 8
    assert policy.effective() is policy


async def test_retries_stop_at_the_total_time_budget(arrivals: tuple[str, list[float]]) -> None:
    base, times = arrivals
    policy = RetryPolicy(attempts=1000, initial_delay=0.05, max_delay=0.05, total_timeout=0.3)
    async with TikTokClient("fail", api_base=base, retry=policy, requests_per_second=None) as c:
        started = time.monotonic()
        with pytest.raises(TransientError, match="HTTP 503"):
            await c.list_audiences(ADVERTISER)
        elapsed = time.monotonic() - started
    assert 2 <= len(times) < 1000
    assert elapsed < 5.0
    assert c.stats.api_calls == len(times)
