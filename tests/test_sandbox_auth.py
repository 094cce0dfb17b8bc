"""The sandbox's authentication: tokens, advertisers, OAuth exchange and revocation, portal."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from helpers.api import ADVERTISER
from helpers.ids import sha256_digests
from helpers.sandbox import RawApi

from asyncsync.sandbox import Sandbox

APP_ID = "7237383493024481281"
SECRET = "app-secret-value"
OTHER_ADVERTISER = "7000000000000000009"

GETS = ["/dmp/custom_audience/get/", "/dmp/custom_audience/list/"]
POSTS = [
    "/dmp/custom_audience/create/",
    "/dmp/custom_audience/update/",
    "/dmp/custom_audience/delete/",
]


@pytest.mark.parametrize(("token", "code"), [("", 40104), ("not-a-known-token", 40105)])
async def test_every_endpoint_refuses_a_missing_token_40104_or_unknown_token_40105(
    raw_api: RawApi, token: str, code: int
) -> None:
    answers: list[dict[str, Any]] = []
    for path in GETS:
        params = {"advertiser_id": ADVERTISER, "custom_audience_ids": '["1"]'}
        answers.append(await raw_api.get(path, params, token=token))
    answers += [
        await raw_api.post(path, {"advertiser_id": ADVERTISER}, token=token) for path in POSTS
    ]
    answers.append(await raw_api.upload(b"x\n", token=token))
    assert [a["code"] for a in answers] == [code] * 6
    assert raw_api.sandbox.state.files == {}


async def test_a_token_for_one_advertiser_is_refused_on_another_with_40001(
    raw_api: RawApi,
) -> None:
    token = raw_api.sandbox.issue_token([ADVERTISER])
    own = await raw_api.get(
        "/dmp/custom_audience/list/", {"advertiser_id": ADVERTISER}, token=token
    )
    other = await raw_api.get(
        "/dmp/custom_audience/list/", {"advertiser_id": OTHER_ADVERTISER}, token=token
    )
    upload = await raw_api.upload(b"x\n", advertiser_id=OTHER_ADVERTISER, token=token)
    assert own["code"] == 0
    assert other["code"] == 40001 and "No permission" in other["message"]
    assert upload["code"] == 40001


async def exchange(raw_api: RawApi, code: str, secret: str = SECRET) -> dict[str, Any]:
    return await raw_api.post(
        "/oauth2/access_token/",
        {"app_id": APP_ID, "auth_code": code, "secret": secret},
        token="",
    )


async def test_an_auth_code_is_exchanged_once_for_a_working_token(raw_api: RawApi) -> None:
    code = raw_api.sandbox.issue_auth_code(
        app_id=APP_ID, secret=SECRET, advertiser_ids=[ADVERTISER]
    )
    first = await exchange(raw_api, code)
    again = await exchange(raw_api, code)
    assert first["code"] == 0
    data = first["data"]
    assert data["advertiser_ids"] == [ADVERTISER] and data["scope"]
    listed = await raw_api.get(
        "/dmp/custom_audience/list/", {"advertiser_id": ADVERTISER}, token=data["access_token"]
    )
    assert listed["code"] == 0
    assert again["code"] == 40110 and "used" in again["message"]


async def test_an_auth_code_expires_after_an_hour_on_the_sandbox_clock(raw_api: RawApi) -> None:
    code = raw_api.sandbox.issue_auth_code(
        app_id=APP_ID, secret=SECRET, advertiser_ids=[ADVERTISER]
    )
    raw_api.sandbox.clock.advance(3601)
    answer = await exchange(raw_api, code)
    assert answer["code"] == 40110 and "expired" in answer["message"]


async def test_a_wrong_secret_is_refused_and_keeps_the_code_unused(raw_api: RawApi) -> None:
    code = raw_api.sandbox.issue_auth_code(
        app_id=APP_ID, secret=SECRET, advertiser_ids=[ADVERTISER]
    )
    wrong = await exchange(raw_api, code, secret="guess")
    right = await exchange(raw_api, code)
    assert wrong["code"] == 40101 and "guess" not in wrong["message"]
    assert right["code"] == 0


async def test_a_revoked_token_is_refused_afterwards(raw_api: RawApi) -> None:
    code = raw_api.sandbox.issue_auth_code(
        app_id=APP_ID, secret=SECRET, advertiser_ids=[ADVERTISER]
    )
    token = (await exchange(raw_api, code))["data"]["access_token"]
    revoke = await raw_api.post(
        "/oauth2/revoke_token/",
        {"app_id": APP_ID, "secret": SECRET, "access_token": token},
        token="",
    )
    after = await raw_api.get(
        "/dmp/custom_audience/list/", {"advertiser_id": ADVERTISER}, token=token
    )
    assert revoke["code"] == 0
    assert after["code"] == 40105


async def test_portal_auth_redirects_with_an_auth_code_and_the_state(
    raw_api: RawApi, sandbox: Sandbox
) -> None:
    sandbox.register_app(app_id=APP_ID, secret=SECRET, advertiser_ids=[ADVERTISER])
    async with raw_api.session.get(
        f"{sandbox.api_base}/portal/auth",
        params={"app_id": APP_ID, "state": "s-42", "redirect_uri": "https://example.com/cb?x=1"},
        allow_redirects=False,
    ) as response:
        assert response.status == 302
        location = response.headers["Location"]
    parts = urlsplit(location)
    query = parse_qs(parts.query)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "example.com", "/cb")
    assert query["state"] == ["s-42"] and query["x"] == ["1"]
    answer = await exchange(raw_api, query["auth_code"][0])
    assert answer["code"] == 0 and answer["data"]["advertiser_ids"] == [ADVERTISER]


async def test_portal_auth_refuses_an_unknown_app(sandbox: Sandbox) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{sandbox.api_base}/portal/auth",
            params={"app_id": "1", "state": "s", "redirect_uri": "https://example.com/"},
            allow_redirects=False,
        ) as response,
    ):
        assert response.status == 400


async def test_advertiser_get_lists_the_tokens_advertisers(raw_api: RawApi) -> None:
    code = raw_api.sandbox.issue_auth_code(
        app_id=APP_ID, secret=SECRET, advertiser_ids=[ADVERTISER, OTHER_ADVERTISER]
    )
    token = (await exchange(raw_api, code))["data"]["access_token"]
    answer = await raw_api.get(
        "/oauth2/advertiser/get/", {"app_id": APP_ID, "secret": SECRET}, token=token
    )
    assert answer["code"] == 0
    assert {a["advertiser_id"] for a in answer["data"]["list"]} == {
        ADVERTISER,
        OTHER_ADVERTISER,
    }


async def test_an_oauth_token_works_for_uploads_of_its_advertiser(raw_api: RawApi) -> None:
    code = raw_api.sandbox.issue_auth_code(
        app_id=APP_ID, secret=SECRET, advertiser_ids=[ADVERTISER]
    )
    token = (await exchange(raw_api, code))["data"]["access_token"]
    content = ("\n".join(sha256_digests("a", 3)) + "\n").encode()
    assert (await raw_api.upload(content, token=token))["code"] == 0
