"""The official TikTok SDK (``business_api_client``), unchanged, works against the sandbox.

Only its ``Configuration().host`` is pointed at the sandbox. The SDK is synchronous (urllib3), so
each call runs in a thread while the event loop keeps serving the sandbox.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import business_api_client  # type: ignore[import-untyped]
import pytest
from business_api_client.tiktok_business import tiktok_exceptions  # type: ignore[import-untyped]
from helpers.api import ADVERTISER

from asyncsync.sandbox import Sandbox

TiktokSDKError = tiktok_exceptions.TiktokSDKError


def sha256_lines(prefix: str, n: int) -> list[str]:
    return [hashlib.sha256(f"{prefix}-{i}".encode()).hexdigest() for i in range(n)]


def write_file(path: Path, digests: list[str]) -> str:
    data = ("\n".join(digests) + "\n").encode()
    path.write_bytes(data)
    return hashlib.md5(data).hexdigest()


def sdk_api(sandbox: Sandbox) -> Any:
    config = business_api_client.Configuration()
    config.host = sandbox.api_base
    return business_api_client.AudienceApi(business_api_client.ApiClient(config))


async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Run one SDK call in a thread; return ``{"data", "request_id"}``.

    The SDK itself checks the envelope: it returns only when ``code == 0`` and raises
    ``TiktokSDKError`` (naming the code) otherwise, so a return is the ``code == 0`` assertion.
    """
    answer: dict[str, Any] = await asyncio.to_thread(fn, *args, **kwargs)
    assert answer["request_id"]
    return answer


async def test_official_sdk_runs_upload_create_get_list_update_delete(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    token = sandbox.issue_token([ADVERTISER])
    api = sdk_api(sandbox)
    first = sha256_lines("first", 1500)
    second = sha256_lines("second", 700)
    file_a, file_b = tmp_path / "first.csv", tmp_path / "second.txt"
    md5_a, md5_b = write_file(file_a, first), write_file(file_b, second)

    up_a = await call(
        api.dmp_custom_audience_file_upload,
        token,
        advertiser_id=ADVERTISER,
        calculate_type="FIRST_SHA256",
        file=str(file_a),
        file_signature=md5_a,
    )
    path_a = up_a["data"]["file_path"]
    assert isinstance(path_a, str) and path_a

    created = await call(
        api.dmp_custom_audience_create,
        token,
        body=business_api_client.CustomAudienceCreateBody(
            advertiser_id=ADVERTISER,
            custom_audience_name="SDK conformance",
            file_paths=[path_a],
            calculate_type="FIRST_SHA256",
            retention_in_days=30,
        ),
    )
    audience_id = created["data"]["custom_audience_id"]
    assert isinstance(audience_id, str) and audience_id.isdigit()

    async def details() -> dict[str, Any]:
        got = await call(
            api.dmp_custom_audience_get, ADVERTISER, [audience_id], token, history_size=5
        )
        (entry,) = got["data"]["list"]
        return dict(entry)

    async def wait_valid() -> dict[str, Any]:
        for _ in range(100):
            entry = await details()
            if entry["audience_details"]["is_valid"]:
                return entry
            await asyncio.sleep(0.02)
        raise AssertionError("the audience operation never finished")

    entry = await wait_valid()
    assert entry["audience_details"]["audience_id"] == audience_id
    assert entry["audience_details"]["name"] == "SDK conformance"
    assert entry["audience_details"]["cover_num"] == 1500
    assert entry["audience_details"]["calculate_type"] == "FIRST_SHA256"
    assert [h["action"] for h in entry["audience_history"]] == ["CREATE"]

    listed = await call(api.dmp_custom_audience_list, ADVERTISER, token, page=1, page_size=10)
    assert [a["audience_id"] for a in listed["data"]["list"]] == [audience_id]
    assert listed["data"]["page_info"] == {
        "page": 1,
        "page_size": 10,
        "total_number": 1,
        "total_page": 1,
    }

    up_b = await call(
        api.dmp_custom_audience_file_upload,
        token,
        advertiser_id=ADVERTISER,
        calculate_type="FIRST_SHA256",
        file=str(file_b),
        file_signature=md5_b,
    )
    await call(
        api.dmp_custom_audience_update,
        token,
        body=business_api_client.CustomAudienceUpdateBody(
            advertiser_id=ADVERTISER,
            custom_audience_id=audience_id,
            file_paths=[up_b["data"]["file_path"]],
            action="APPEND",
        ),
    )
    entry = await wait_valid()
    assert entry["audience_details"]["cover_num"] == 2200
    assert [h["action"] for h in entry["audience_history"]] == ["APPEND", "CREATE"]
    assert sandbox.members(audience_id) == frozenset(first) | frozenset(second)

    await call(
        api.dmp_custom_audience_delete,
        token,
        body=business_api_client.CustomAudienceDeleteBody(
            advertiser_id=ADVERTISER, custom_audience_ids=[audience_id]
        ),
    )
    listed = await call(api.dmp_custom_audience_list, ADVERTISER, token)
    assert listed["data"]["list"] == []
    assert listed["data"]["page_info"]["total_number"] == 0


async def test_official_sdk_raises_on_error_codes_sent_in_an_http_200_envelope(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    api = sdk_api(sandbox)
    file_a = tmp_path / "ids.csv"
    write_file(file_a, sha256_lines("x", 10))
    with pytest.raises(TiktokSDKError, match="Error Code: 40900"):
        await asyncio.to_thread(
            api.dmp_custom_audience_file_upload,
            sandbox.issue_token(),
            advertiser_id=ADVERTISER,
            calculate_type="FIRST_SHA256",
            file=str(file_a),
            file_signature="0" * 32,
        )
    with pytest.raises(TiktokSDKError, match="Error Code: 40105"):
        await asyncio.to_thread(api.dmp_custom_audience_list, ADVERTISER, "not-a-token")
