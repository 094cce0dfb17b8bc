"""The sandbox's audience endpoints: create, update, delete, get, list, and their rules."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import aiohttp
import pytest
from helpers.api import ADVERTISER
from helpers.ids import md5_digests, sha256_digests
from helpers.sandbox import RawApi

from asyncsync.sandbox import Sandbox
from asyncsync.sandbox.state import DEFAULT_EXPIRY_DAYS

Factory = Callable[..., AbstractAsyncContextManager[Sandbox]]
BUSY = "Audience is busy: another operation is still running. Retry after it completes."
QUOTA = "Daily quota exceeded: at most 24 update operations per audience per day."
REPLACE_QUOTA = "Daily quota exceeded: only one REPLACE operation per audience per day."
DAY = 86_400


@pytest.fixture
def api_with(sandbox_factory: Factory) -> Callable[..., AbstractAsyncContextManager[RawApi]]:
    """``async with api_with(operation_seconds=1000) as api``: a RawApi on a custom sandbox."""

    @asynccontextmanager
    async def make(**overrides: Any) -> AsyncIterator[RawApi]:
        async with sandbox_factory(**overrides) as sb, aiohttp.ClientSession() as session:
            yield RawApi(session, sb, sb.issue_token())

    return make


async def test_create_holds_the_union_of_its_files(raw_api: RawApi) -> None:
    a, b = sha256_digests("a", 700), sha256_digests("b", 600)
    paths = [await raw_api.upload_path(a), await raw_api.upload_path(b + a[:100])]
    answer = await raw_api.create(paths, name="Buyers")
    assert answer["code"] == 0
    audience_id = answer["data"]["custom_audience_id"]
    assert isinstance(audience_id, str) and audience_id.isdigit()
    entry = await raw_api.wait_idle(audience_id)
    details = entry["audience_details"]
    assert details["cover_num"] == 1300
    assert details["name"] == "Buyers"
    assert details["calculate_type"] == "FIRST_SHA256"
    assert raw_api.sandbox.members(audience_id) == frozenset(a) | frozenset(b)


async def test_create_allows_duplicate_names(raw_api: RawApi) -> None:
    first = await raw_api.create_id(sha256_digests("a", 10), name="Same")
    second = await raw_api.create_id(sha256_digests("a", 10), name="Same")
    assert first != second


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"name": ""}, "custom_audience_name"),
        ({"name": "x" * 129}, "custom_audience_name"),
        ({"retention_in_days": 0}, "retention_in_days"),
        ({"retention_in_days": 366}, "retention_in_days"),
        ({"retention_in_days": "30"}, "retention_in_days"),
        ({"audience_sub_type": "LOOKALIKE"}, "audience_sub_type"),
        ({"calculate_type": "MAID_SHA256"}, "calculate_type"),
        ({"calculate_type": "NOPE"}, "calculate_type"),
    ],
)
async def test_create_refuses_an_invalid_field_with_40002_naming_it(
    raw_api: RawApi, extra: dict[str, Any], field: str
) -> None:
    path = await raw_api.upload_path(sha256_digests("a", 5))
    answer = await raw_api.create([path], **extra)
    assert answer["code"] == 40002
    assert field in answer["message"]
    assert raw_api.sandbox.state.audiences == {}


@pytest.mark.parametrize(
    "extra",
    [
        {"name": "x" * 128},
        {"retention_in_days": 1},
        {"retention_in_days": 365},
        {"audience_sub_type": "REACH_FREQUENCY"},
    ],
)
async def test_create_accepts_the_bounds(raw_api: RawApi, extra: dict[str, Any]) -> None:
    path = await raw_api.upload_path(sha256_digests("a", 5))
    assert (await raw_api.create([path], **extra))["code"] == 0


async def test_create_takes_1_to_500_file_paths(raw_api: RawApi) -> None:
    path = await raw_api.upload_path(sha256_digests("a", 5))
    none = await raw_api.create([])
    too_many = await raw_api.create([path] * 501)
    most = await raw_api.create([path] * 500)
    assert none["code"] == 40002 and "file_paths" in none["message"]
    assert too_many["code"] == 40002 and "500" in too_many["message"]
    assert most["code"] == 0


async def test_create_with_an_unknown_file_path_is_40905_file_not_exist(raw_api: RawApi) -> None:
    answer = await raw_api.create(["0123456789abcdef"])
    assert answer["code"] == 40905
    assert "0123456789abcdef" in answer["message"]


async def test_create_with_an_expired_file_path_is_40910(raw_api: RawApi) -> None:
    path = await raw_api.upload_path(sha256_digests("a", 5))
    raw_api.sandbox.clock.advance(raw_api.sandbox.config.file_ttl_seconds + 1)
    answer = await raw_api.create([path])
    assert answer["code"] == 40910


async def test_create_with_another_advertisers_file_is_40905(raw_api: RawApi) -> None:
    path = await raw_api.upload_path(sha256_digests("a", 5), advertiser_id="7000000000000000002")
    assert (await raw_api.create([path]))["code"] == 40905


async def test_create_with_an_md5_file_for_a_sha256_audience_is_40909(raw_api: RawApi) -> None:
    path = await raw_api.upload_path(md5_digests("a", 5), calculate_type="FIRST_MD5")
    answer = await raw_api.create([path], calculate_type="FIRST_SHA256")
    assert answer["code"] == 40909 and "calculate_type" in answer["message"]
    assert (await raw_api.create([path], calculate_type="FIRST_MD5"))["code"] == 0


async def test_an_advertiser_holds_at_most_max_audiences(api_with: Any) -> None:
    async with api_with(max_audiences=3) as api:
        path = await api.upload_path(sha256_digests("a", 5))
        codes = [(await api.create([path]))["code"] for _ in range(4)]
        other = await api.create(
            [await api.upload_path(sha256_digests("a", 5), advertiser_id="7000000000000000002")],
            advertiser_id="7000000000000000002",
        )
    assert codes == [0, 0, 0, 40002]
    assert other["code"] == 0


async def test_is_valid_is_false_while_an_operation_runs(api_with: Any) -> None:
    async with api_with(operation_seconds=600) as api:
        audience_id = await api.create_id(sha256_digests("a", 1200))
        running = await api.details(audience_id)
        api.sandbox.clock.advance(600)
        done = await api.details(audience_id)
    assert running["audience_details"]["is_valid"] is False
    assert running["audience_history"][0]["action"] == "CREATE"
    assert done["audience_details"]["is_valid"] is True
    assert done["audience_details"]["cover_num"] == 1200


async def test_update_while_an_operation_runs_is_busy_40002(api_with: Any) -> None:
    async with api_with(operation_seconds=600) as api:
        audience_id = await api.create_id(sha256_digests("a", 1200))
        path = await api.upload_path(sha256_digests("b", 10))
        busy = await api.update(audience_id, file_paths=[path], action="APPEND")
        api.sandbox.clock.advance(600)
        later = await api.update(audience_id, file_paths=[path], action="APPEND")
    assert busy["code"] == 40002 and busy["message"] == BUSY
    assert "quota" not in busy["message"]
    assert later["code"] == 0


async def test_update_without_action_replaces_as_the_api_default(raw_api: RawApi) -> None:
    audience_id = await raw_api.create_id(sha256_digests("a", 1200))
    await raw_api.wait_idle(audience_id)
    fresh = sha256_digests("b", 1100)
    answer = await raw_api.update(audience_id, file_paths=[await raw_api.upload_path(fresh)])
    assert answer["code"] == 0 and answer["data"] == {}
    entry = await raw_api.wait_idle(audience_id)
    assert entry["audience_history"][0]["action"] == "REPLACE"
    assert raw_api.sandbox.members(audience_id) == frozenset(fresh)


async def test_append_adds_and_remove_subtracts_members(raw_api: RawApi) -> None:
    base, extra = sha256_digests("a", 1200), sha256_digests("b", 300)
    audience_id = await raw_api.create_id(base)
    await raw_api.wait_idle(audience_id)
    append = await raw_api.update(
        audience_id, file_paths=[await raw_api.upload_path(extra)], action="APPEND"
    )
    assert append["code"] == 0
    assert (await raw_api.wait_idle(audience_id))["audience_details"]["cover_num"] == 1500
    gone = base[:100] + sha256_digests("never-there", 50)
    remove = await raw_api.update(
        audience_id, file_paths=[await raw_api.upload_path(gone)], action="REMOVE"
    )
    assert remove["code"] == 0
    entry = await raw_api.wait_idle(audience_id)
    assert entry["audience_details"]["cover_num"] == 1400
    assert raw_api.sandbox.members(audience_id) == frozenset(base[100:]) | frozenset(extra)
    history = entry["audience_history"]
    assert [h["action"] for h in history] == ["REMOVE", "APPEND", "CREATE"]
    assert all(h["opt_time"] and h["msg"] for h in history)


async def test_24_file_operations_a_day_then_quota_until_the_next_day(api_with: Any) -> None:
    async with api_with(operation_seconds=0) as api:
        audience_id = await api.create_id(sha256_digests("a", 1200))
        path = await api.upload_path(sha256_digests("b", 10))
        codes = [
            (await api.update(audience_id, file_paths=[path], action="APPEND"))["code"]
            for _ in range(24)
        ]
        over = await api.update(audience_id, file_paths=[path], action="APPEND")
        renamed = await api.update(audience_id, custom_audience_name="still allowed")
        api.sandbox.clock.advance(DAY)
        next_day = await api.update(audience_id, file_paths=[path], action="APPEND")
    assert codes == [0] * 24
    assert over["code"] == 40002 and over["message"] == QUOTA
    assert renamed["code"] == 0
    assert next_day["code"] == 0


async def test_one_replace_a_day(api_with: Any) -> None:
    async with api_with(operation_seconds=0) as api:
        audience_id = await api.create_id(sha256_digests("a", 1200))
        path = await api.upload_path(sha256_digests("b", 1100))
        first = await api.update(audience_id, file_paths=[path], action="REPLACE")
        second = await api.update(audience_id, file_paths=[path], action="REPLACE")
        append = await api.update(audience_id, file_paths=[path], action="APPEND")
        api.sandbox.clock.advance(DAY)
        tomorrow = await api.update(audience_id, file_paths=[path], action="REPLACE")
    assert first["code"] == 0
    assert second["code"] == 40002 and second["message"] == REPLACE_QUOTA
    assert append["code"] == 0
    assert tomorrow["code"] == 0


async def test_an_unfinished_replace_refuses_another_replace(api_with: Any) -> None:
    async with api_with(operation_seconds=600, daily_replaces=5) as api:
        audience_id = await api.create_id(sha256_digests("a", 1200))
        api.sandbox.clock.advance(600)
        path = await api.upload_path(sha256_digests("b", 1100))
        assert (await api.update(audience_id, file_paths=[path], action="REPLACE"))["code"] == 0
        again = await api.update(audience_id, file_paths=[path], action="REPLACE")
    assert again["code"] == 40002
    assert "REPLACE" in again["message"] and "quota" not in again["message"]


async def test_an_update_that_leaves_fewer_than_1000_members_is_not_applied(
    raw_api: RawApi,
) -> None:
    base = sha256_digests("a", 1100)
    audience_id = await raw_api.create_id(base)
    await raw_api.wait_idle(audience_id)
    path = await raw_api.upload_path(base[:101])
    answer = await raw_api.update(audience_id, file_paths=[path], action="REMOVE")
    assert answer["code"] == 40002 and "1000" in answer["message"]
    small = await raw_api.upload_path(sha256_digests("c", 999))
    replace = await raw_api.update(audience_id, file_paths=[small], action="REPLACE")
    assert replace["code"] == 40002 and "1000" in replace["message"]
    assert raw_api.sandbox.members(audience_id) == frozenset(base)
    (snapshot,) = raw_api.sandbox.state.snapshot()["audiences"]
    assert snapshot["operations_today"] == 0


async def test_remove_of_all_the_audiences_data_is_refused(api_with: Any) -> None:
    async with api_with(min_members=0) as api:
        base = sha256_digests("a", 50)
        audience_id = await api.create_id(base)
        await api.wait_idle(audience_id)
        answer = await api.update(
            audience_id, file_paths=[await api.upload_path(base)], action="REMOVE"
        )
        members = api.sandbox.members(audience_id)
    assert answer["code"] == 40002 and "REMOVE" in answer["message"]
    assert members == frozenset(base)


async def test_an_expiring_audience_can_only_be_deleted(raw_api: RawApi) -> None:
    audience_id = await raw_api.create_id(sha256_digests("a", 1200), retention_in_days=30)
    await raw_api.wait_idle(audience_id)
    raw_api.sandbox.clock.advance((DEFAULT_EXPIRY_DAYS - 61) * DAY)
    assert (await raw_api.details(audience_id))["audience_details"]["is_expiring"] is False
    raw_api.sandbox.clock.advance(2 * DAY)
    details = (await raw_api.details(audience_id))["audience_details"]
    assert details["is_expiring"] is True
    assert details["is_valid"] is True
    path = await raw_api.upload_path(sha256_digests("b", 10))
    update = await raw_api.update(audience_id, file_paths=[path], action="APPEND")
    rename = await raw_api.update(audience_id, custom_audience_name="new")
    assert update["code"] == 40002 and "deleted" in update["message"]
    assert rename["code"] == 40002
    delete = await raw_api.post(
        "/dmp/custom_audience/delete/",
        {"advertiser_id": ADVERTISER, "custom_audience_ids": [audience_id]},
    )
    assert delete["code"] == 0


async def test_a_rename_alone_is_not_a_file_operation(api_with: Any) -> None:
    async with api_with(operation_seconds=600) as api:
        audience_id = await api.create_id(sha256_digests("a", 1200))
        answer = await api.update(audience_id, custom_audience_name="Renamed")
        details = (await api.details(audience_id))["audience_details"]
        (snapshot,) = api.sandbox.state.snapshot()["audiences"]
    assert answer["code"] == 0
    assert details["name"] == "Renamed"
    assert snapshot["operations_today"] == 0
    assert snapshot["operations"] == ["CREATE"]


async def test_update_needs_a_name_or_file_paths_and_a_known_action(raw_api: RawApi) -> None:
    audience_id = await raw_api.create_id(sha256_digests("a", 1200))
    await raw_api.wait_idle(audience_id)
    nothing = await raw_api.update(audience_id)
    path = await raw_api.upload_path(sha256_digests("b", 10))
    bad_action = await raw_api.update(audience_id, file_paths=[path], action="MERGE")
    unknown = await raw_api.update("123", custom_audience_name="x")
    assert nothing["code"] == 40002 and "file_paths" in nothing["message"]
    assert bad_action["code"] == 40002 and "action" in bad_action["message"]
    assert unknown["code"] == 40002 and "123" in unknown["message"]


async def test_delete_takes_1_to_100_known_ids(raw_api: RawApi) -> None:
    keep = await raw_api.create_id(sha256_digests("a", 10))
    gone = await raw_api.create_id(sha256_digests("a", 10))

    async def delete(ids: list[str]) -> dict[str, Any]:
        payload = {"advertiser_id": ADVERTISER, "custom_audience_ids": ids}
        return await raw_api.post("/dmp/custom_audience/delete/", payload)

    assert (await delete([]))["code"] == 40002
    assert (await delete([gone] * 101))["code"] == 40002
    assert (await delete([gone, "999"]))["code"] == 40002
    assert set(raw_api.sandbox.state.audiences) == {keep, gone}
    assert (await delete([gone]))["code"] == 0
    assert set(raw_api.sandbox.state.audiences) == {keep}


async def test_get_takes_ids_as_a_json_string_or_repeated_values(raw_api: RawApi) -> None:
    ids = [await raw_api.create_id(sha256_digests(str(i), 10)) for i in range(3)]
    as_json = await raw_api.get(
        "/dmp/custom_audience/get/",
        {"advertiser_id": ADVERTISER, "custom_audience_ids": json.dumps(ids)},
    )
    repeated = await raw_api.get(
        "/dmp/custom_audience/get/",
        [("advertiser_id", ADVERTISER)] + [("custom_audience_ids", i) for i in ids],
    )
    missing = await raw_api.get("/dmp/custom_audience/get/", {"advertiser_id": ADVERTISER})
    for answer in (as_json, repeated):
        assert answer["code"] == 0
        assert [e["audience_details"]["audience_id"] for e in answer["data"]["list"]] == ids
    assert missing["code"] == 40002 and "custom_audience_ids" in missing["message"]


async def test_get_history_size_limits_the_history_newest_first(api_with: Any) -> None:
    async with api_with(operation_seconds=0) as api:
        audience_id = await api.create_id(sha256_digests("a", 1200))
        path = await api.upload_path(sha256_digests("b", 10))
        for _ in range(3):
            api.sandbox.clock.advance(60)
            await api.update(audience_id, file_paths=[path], action="APPEND")
        two = await api.details(audience_id, history_size=2)
        everything = await api.details(audience_id, history_size=10)
    assert [h["action"] for h in two["audience_history"]] == ["APPEND", "APPEND"]
    times = [h["opt_time"] for h in everything["audience_history"]]
    assert len(times) == 4 and times == sorted(times, reverse=True)
    assert everything["audience_history"][-1]["action"] == "CREATE"


async def test_list_pages_through_every_audience(raw_api: RawApi) -> None:
    ids = {await raw_api.create_id(sha256_digests("a", 10), name=f"n{i}") for i in range(5)}
    seen: list[str] = []
    pages = []
    for page in (1, 2, 3):
        answer = await raw_api.get(
            "/dmp/custom_audience/list/",
            {"advertiser_id": ADVERTISER, "page": str(page), "page_size": "2"},
        )
        assert answer["code"] == 0
        pages.append(answer["data"]["page_info"])
        seen += [a["audience_id"] for a in answer["data"]["list"]]
    assert set(seen) == ids and len(seen) == 5
    assert pages[0] == {"page": 1, "page_size": 2, "total_number": 5, "total_page": 3}
    too_big = await raw_api.get(
        "/dmp/custom_audience/list/", {"advertiser_id": ADVERTISER, "page_size": "101"}
    )
    assert too_big["code"] == 40002 and "page_size" in too_big["message"]


async def test_each_answer_carries_a_fresh_request_id(raw_api: RawApi) -> None:
    params = {"advertiser_id": ADVERTISER}
    ids = {
        (await raw_api.get("/dmp/custom_audience/list/", params))["request_id"] for _ in range(20)
    }
    assert len(ids) == 20
    assert all(isinstance(i, str) and i.isdigit() for i in ids)


async def test_ids_in_json_bodies_may_be_numbers(raw_api: RawApi) -> None:
    path = await raw_api.upload_path(sha256_digests("a", 10))
    answer = await raw_api.create([path], advertiser_id=int(ADVERTISER))  # type: ignore[arg-type]
    assert answer["code"] == 0
    not_numeric = await raw_api.create([path], advertiser_id="adv-1")
    assert not_numeric["code"] == 40002 and "advertiser_id" in not_numeric["message"]


async def test_paths_need_their_trailing_slash(raw_api: RawApi) -> None:
    url = raw_api.url("/dmp/custom_audience/list/").rstrip("/")
    async with raw_api.session.get(
        url, params={"advertiser_id": ADVERTISER}, headers=raw_api.headers(None)
    ) as response:
        assert response.status == 404
