"""The sandbox as a resource and its controls: lifecycle, /_sandbox endpoints, restart, CLI."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import resource
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers.api import ADVERTISER
from helpers.ids import sha256_digests
from helpers.sandbox import RawApi

import asyncsync
from asyncsync.errors import UsageError
from asyncsync.sandbox import FaultConfig, Sandbox, SandboxConfig


async def test_sandbox_serves_on_a_free_loopback_port_and_stops(tmp_path: Path) -> None:
    sb = asyncsync.Sandbox(spool_dir=tmp_path)
    assert sb.api_base == ""
    async with sb:
        assert sb.api_base.startswith("http://127.0.0.1:") and not sb.api_base.endswith("/")
        assert sb.port > 0
        async with aiohttp.ClientSession() as session:
            async with session.get(sb.api_base + "/_sandbox/state") as response:
                assert response.status == 200
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as session:
            await session.get(sb.api_base + "/_sandbox/state")
    with pytest.raises(RuntimeError):
        await sb.start()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"operation_seconds": -1},
        {"max_file_bytes": 0},
        {"daily_operations": 0},
        {"min_members": -1},
        {"page_size_max": 0},
    ],
)
def test_sandbox_config_refuses_impossible_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        SandboxConfig(**kwargs)


async def control(
    session: aiohttp.ClientSession, sb: Sandbox, method: str, path: str, body: object = None
) -> Any:
    async with session.request(method, sb.api_base + path, json=body) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_control_endpoints_inspect_and_steer_the_sandbox(raw_api: RawApi) -> None:
    sb, session = raw_api.sandbox, raw_api.session
    digests = sha256_digests("a", 1200)
    audience_id = await raw_api.create_id(digests)
    await raw_api.wait_idle(audience_id)

    state = await control(session, sb, "GET", "/_sandbox/state")
    (entry,) = state["audiences"]
    assert entry["audience_id"] == audience_id and entry["cover_num"] == 1200
    assert state["request_counts"]["/open_api/v1.3/dmp/custom_audience/create/"] == 1
    assert state["fault_counts"]["drop"] == 0

    members = await control(session, sb, "GET", f"/_sandbox/audiences/{audience_id}/members")
    expected = hashlib.sha256("\n".join(sorted(digests)).encode()).hexdigest()
    assert members["count"] == 1200 and members["sha256"] == expected
    listed = await control(
        session, sb, "GET", f"/_sandbox/audiences/{audience_id}/members?digests=1"
    )
    assert listed["digests"] == sorted(digests)

    before = sb.clock.now()
    moved = await control(session, sb, "POST", "/_sandbox/clock", {"advance_seconds": 3600})
    assert float(moved["now"]) >= before + 3600

    token = await control(session, sb, "POST", "/_sandbox/tokens", {"advertiser_ids": ["5"]})
    assert sb.state.tokens[str(token["access_token"])].advertiser_ids == frozenset({"5"})
    code = await control(
        session,
        sb,
        "POST",
        "/_sandbox/auth_codes",
        {"app_id": "11", "secret": "s", "advertiser_ids": ["5"]},
    )
    assert str(code["auth_code"]) in sb.state.auth_codes

    faults = await control(session, sb, "POST", "/_sandbox/faults", {"rate_limit": 1.0})
    assert faults["rate_limit"] == 1.0 and sb.faults == FaultConfig(rate_limit=1.0)
    async with session.post(sb.api_base + "/_sandbox/faults", json={"nope": 1}) as response:
        assert response.status == 400


async def test_restart_forgets_files_and_audiences_but_keeps_tokens(raw_api: RawApi) -> None:
    path = await raw_api.upload_path(sha256_digests("a", 10))
    audience_id = await raw_api.create_id(sha256_digests("b", 10))
    await raw_api.sandbox.restart()
    async with aiohttp.ClientSession() as session:
        api = RawApi(session, raw_api.sandbox, raw_api.token)
        create = await api.create([path])
        gone = await api.update(audience_id, custom_audience_name="x")
        again = await api.upload(b"x\n")
    assert create["code"] == 40905
    assert gone["code"] == 40002
    assert again["code"] == 0


async def test_restart_endpoint_resets_state(raw_api: RawApi) -> None:
    await raw_api.upload_path(sha256_digests("a", 10))
    result = await control(raw_api.session, raw_api.sandbox, "POST", "/_sandbox/restart")
    assert result == {"restarted": True}
    assert raw_api.sandbox.state.files == {}


def non_loopback_address() -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # no packet is sent
            address: str = probe.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


async def test_control_endpoints_answer_on_loopback_only(tmp_path: Path) -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    async with Sandbox(host="0.0.0.0", spool_dir=tmp_path) as sb, aiohttp.ClientSession() as s:
        outside = f"http://{address}:{sb.port}"
        async with s.get(outside + "/_sandbox/state") as response:
            assert response.status == 403
        async with s.get(f"http://127.0.0.1:{sb.port}/_sandbox/state") as response:
            assert response.status == 200


async def test_a_40_mb_upload_is_spooled_not_held_in_memory(
    raw_api: RawApi, tmp_path: Path
) -> None:
    big = tmp_path / "big.csv"
    line = b"not-a-digest-line-" * 4 + b"\n"
    block = line * (1024 * 1024 // len(line))
    md5 = hashlib.md5()
    with big.open("wb") as out:
        for _ in range(40):
            out.write(block)
            md5.update(block)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    form = aiohttp.FormData()
    form.add_field("advertiser_id", ADVERTISER)
    form.add_field("calculate_type", "FIRST_SHA256")
    form.add_field("file_signature", md5.hexdigest())
    with big.open("rb") as handle:
        form.add_field("file", handle, filename="big.csv")
        async with raw_api.session.post(
            raw_api.url("/dmp/custom_audience/file/upload/"),
            data=form,
            headers=raw_api.headers(None),
        ) as response:
            answer = await response.json()
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert answer["code"] == 0
    assert raw_api.sandbox.state.files[answer["data"]["file_path"]].size_bytes == big.stat().st_size
    assert grown_mib < 20


async def test_cli_sandbox_prints_its_base_url_and_a_ready_token() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "asyncsync",
        "sandbox",
        "--port",
        "0",
        "--operation-seconds",
        "0",
        "--rate-limit",
        "0",
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=20)
        info = json.loads(line)
        async with aiohttp.ClientSession() as session:
            async with session.get(
                info["api_base"] + "/open_api/v1.3/dmp/custom_audience/list/",
                params={"advertiser_id": ADVERTISER},
                headers={"Access-Token": info["access_token"]},
            ) as response:
                answer = await response.json()
        assert answer["code"] == 0
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), timeout=20)
    assert process.returncode == 0
