"""Fault injection: seeded 40100, 50002, HTTP 503, slow answers and dropped connections."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import aiohttp
import pytest
from helpers.api import ADVERTISER, LIST
from helpers.ids import digest_file, sha256_digests
from helpers.sandbox import RawApi

from asyncsync.errors import UsageError
from asyncsync.sandbox import FaultConfig, Sandbox

Factory = Callable[..., AbstractAsyncContextManager[Sandbox]]


async def list_once(session: aiohttp.ClientSession, sb: Sandbox, token: str) -> tuple[int, str]:
    async with session.get(
        sb.api_base + LIST,
        params={"advertiser_id": ADVERTISER},
        headers={"Access-Token": token},
    ) as response:
        return response.status, await response.text()


async def test_rate_limit_answers_40100_in_an_http_200_envelope(raw_api: RawApi) -> None:
    raw_api.sandbox.set_faults(FaultConfig(rate_limit=1.0))
    answer = await raw_api.get("/dmp/custom_audience/list/", {"advertiser_id": ADVERTISER})
    assert answer["code"] == 40100 and answer["request_id"]
    assert raw_api.sandbox.fault_counts()["rate_limit"] == 1


async def test_server_error_answers_50002(raw_api: RawApi) -> None:
    raw_api.sandbox.set_faults(FaultConfig(server_error=1.0))
    answer = await raw_api.post("/dmp/custom_audience/delete/", {})
    assert answer["code"] == 50002
    assert raw_api.sandbox.fault_counts()["server_error"] == 1


async def test_http_503_answers_an_html_page(sandbox: Sandbox) -> None:
    sandbox.set_faults(FaultConfig(http_503=1.0))
    async with aiohttp.ClientSession() as session:
        status, text = await list_once(session, sandbox, sandbox.issue_token())
    assert status == 503 and "<html>" in text
    assert sandbox.fault_counts()["http_503"] == 1


async def test_slow_delays_the_answer_by_slow_seconds(sandbox: Sandbox) -> None:
    sandbox.set_faults(FaultConfig(slow=1.0, slow_seconds=0.3))
    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        status, _ = await list_once(session, sandbox, sandbox.issue_token())
        elapsed = time.monotonic() - started
    assert status == 200 and elapsed >= 0.3
    assert sandbox.fault_counts()["slow"] == 1


async def test_drop_closes_the_connection_mid_upload_without_an_answer(
    raw_api: RawApi,
) -> None:
    raw_api.sandbox.set_faults(FaultConfig(drop=1.0))
    content = digest_file(sha256_digests("a", 40_000))
    form = aiohttp.FormData()
    form.add_field("advertiser_id", ADVERTISER)
    form.add_field("calculate_type", "FIRST_SHA256")
    form.add_field("file_signature", "0" * 32)
    form.add_field("file", io.BytesIO(content), filename="ids.csv")
    with pytest.raises(aiohttp.ClientError):
        async with raw_api.session.post(
            raw_api.url("/dmp/custom_audience/file/upload/"),
            data=form,
            headers=raw_api.headers(None),
        ) as response:
            await response.read()
    assert raw_api.sandbox.state.files == {}
    assert raw_api.sandbox.fault_counts()["drop"] == 1
    raw_api.sandbox.set_faults(FaultConfig())
    assert (await raw_api.upload(content))["code"] == 0


async def test_the_same_seed_injects_the_same_faults(sandbox_factory: Factory) -> None:
    faults = FaultConfig(rate_limit=0.3, server_error=0.3, seed=7)
    sequences = []
    for _ in range(2):
        async with sandbox_factory(faults=faults) as sb, aiohttp.ClientSession() as session:
            token = sb.issue_token()
            sequences.append([(await list_once(session, sb, token))[1][:12] for _ in range(30)])
            counts = sb.fault_counts()
    assert sequences[0] == sequences[1]
    assert counts["rate_limit"] > 0 and counts["server_error"] > 0
    assert counts["rate_limit"] + counts["server_error"] < 30


async def test_faults_can_target_one_endpoint(raw_api: RawApi) -> None:
    raw_api.sandbox.set_faults(
        FaultConfig(rate_limit=1.0, endpoints=frozenset({"/dmp/custom_audience/file/upload/"}))
    )
    listed = await raw_api.get("/dmp/custom_audience/list/", {"advertiser_id": ADVERTISER})
    upload = await raw_api.upload(digest_file(sha256_digests("a", 3)))
    assert listed["code"] == 0
    assert upload["code"] == 40100


async def test_requests_are_counted_per_endpoint_faults_included(raw_api: RawApi) -> None:
    raw_api.sandbox.set_faults(FaultConfig(rate_limit=1.0))
    for _ in range(3):
        await raw_api.get("/dmp/custom_audience/list/", {"advertiser_id": ADVERTISER})
    await raw_api.upload(b"x\n")
    counts = raw_api.sandbox.request_counts()
    assert counts[LIST] == 3
    assert counts["/open_api/v1.3/dmp/custom_audience/file/upload/"] == 1
    assert raw_api.sandbox.fault_counts()["rate_limit"] == 4


@pytest.mark.parametrize(
    "kwargs", [{"rate_limit": 1.5}, {"drop": -0.1}, {"slow_seconds": -1}, {"http_503": "x"}]
)
def test_fault_config_refuses_values_out_of_range(kwargs: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        FaultConfig(**kwargs)  # type: ignore[arg-type]
