"""TikTok's code table: every code of the official SDK's table is classed once in the client;
the sandbox answers each code of the audience endpoints as TikTok's table names it, and the
client raises the class the table gives. The sandbox's own statement of TikTok's rules agrees
with the client's."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from business_api_client.tiktok_business.tiktok_code import NumericErrorCodes

from asyncsync.errors import (
    AuthError,
    BadRequestError,
    FileExpiredError,
    RateLimitedError,
    TikTokError,
    TransientError,
    UsageError,
)
from asyncsync.rules import limits
from asyncsync.sandbox import Sandbox, SandboxConfig
from asyncsync.sandbox import rules as sandbox_rules
from asyncsync.tiktok import wire
from asyncsync.tiktok.client import TikTokClient
from asyncsync.tiktok.codes import CODES, Outcome, rule_for_code, rule_for_http_status

ADVERTISER = "7000000000000000001"
OTHER = "7000000000000000002"
P = "/open_api/v1.3"


def sdk_codes() -> dict[str, int]:
    return {
        name.removeprefix("ERROR_CODE_"): value
        for name, value in vars(NumericErrorCodes).items()
        if name.startswith("ERROR_CODE_") and value != 0
    }


def test_every_code_of_tiktoks_table_is_classed_with_tiktoks_name() -> None:
    for name, code in sdk_codes().items():
        rule = rule_for_code(code)
        if code in CODES:
            assert CODES[code].name == name, code
        else:  # the 51xxx-53xxx backend errors, classed by range
            assert 51000 <= code < 54000, (code, name)
            assert rule.outcome is Outcome.MAYBE
    assert set(CODES) - set(sdk_codes().values()) == set()


@pytest.mark.parametrize(
    ("code", "outcome", "error"),
    [
        (40100, Outcome.NOT_DONE, RateLimitedError),
        (40001, Outcome.FATAL, BadRequestError),
        (40002, Outcome.FATAL, BadRequestError),
        (40101, Outcome.FATAL, AuthError),
        (40104, Outcome.FATAL, AuthError),
        (40105, Outcome.FATAL, AuthError),
        (40110, Outcome.FATAL, AuthError),
        (40202, Outcome.MAYBE, TransientError),
        (40905, Outcome.NOT_DONE, FileExpiredError),
        (40906, Outcome.FATAL, BadRequestError),
        (40907, Outcome.FATAL, BadRequestError),
        (40908, Outcome.FATAL, BadRequestError),
        (40909, Outcome.FATAL, BadRequestError),
        (40910, Outcome.NOT_DONE, FileExpiredError),
        (50000, Outcome.MAYBE, TransientError),
        (50002, Outcome.MAYBE, TransientError),
        (51010, Outcome.MAYBE, TransientError),
        (52001, Outcome.MAYBE, TransientError),
        (49999, Outcome.FATAL, BadRequestError),
        (59999, Outcome.MAYBE, TransientError),
    ],
)
def test_the_client_classes_each_code_once(
    code: int, outcome: Outcome, error: type[TikTokError]
) -> None:
    rule = rule_for_code(code)
    assert (rule.outcome, rule.error) == (outcome, error)
    assert type(wire.error_for_code(code, "m", "rid")) is error


def test_every_http_5xx_may_have_been_carried_out() -> None:
    for status in (500, 502, 503, 504):
        assert rule_for_http_status(status).outcome is Outcome.MAYBE
    assert rule_for_http_status(429).outcome is Outcome.NOT_DONE
    assert rule_for_http_status(401).error is AuthError


# -- the sandbox answers TikTok's codes, the client raises their class --------------------------


@pytest.fixture
async def sb(tmp_path: Path) -> AsyncIterator[Sandbox]:
    config = SandboxConfig(operation_seconds=0.05, seed=5, max_file_bytes=10_000)
    async with Sandbox(config=config, spool_dir=tmp_path / "spool") as sandbox:
        yield sandbox


async def raw_upload(
    sb: Sandbox, content: bytes, *, filename: str = "ids.csv", token: str | None = None
) -> dict[str, Any]:
    form = aiohttp.FormData()
    form.add_field("advertiser_id", ADVERTISER)
    form.add_field("calculate_type", "FIRST_SHA256")
    form.add_field("file_signature", hashlib.md5(content).hexdigest())
    form.add_field("file", io.BytesIO(content), filename=filename, content_type="text/csv")
    headers = {"Access-Token": sb.issue_token() if token is None else token}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{sb.api_base}{P}/dmp/custom_audience/file/upload/", data=form, headers=headers
        ) as r,
    ):
        body: dict[str, Any] = await r.json()
    return body


def lines(prefix: str, n: int) -> bytes:
    return "".join(
        hashlib.sha256(f"{prefix}{i}".encode()).hexdigest() + "\n" for i in range(n)
    ).encode()


async def test_token_and_app_codes(sb: Sandbox, tmp_path: Path) -> None:
    empty = await raw_upload(sb, lines("a", 2), token="")
    assert empty["code"] == 40104
    assert rule_for_code(empty["code"]).error is AuthError
    async with TikTokClient("unknown-token", api_base=sb.api_base, requests_per_second=None) as c:
        with pytest.raises(AuthError) as invalid:
            await c.list_audiences(ADVERTISER)
    assert invalid.value.code == 40105
    code = sb.issue_auth_code(app_id="app", secret="right", advertiser_ids=[ADVERTISER])
    async with TikTokClient(None, api_base=sb.api_base, requests_per_second=None) as anon:
        with pytest.raises(AuthError) as partner:
            await anon.exchange_auth_code(app_id="app", secret="wrong", auth_code=code)
        with pytest.raises(AuthError) as bad_code:
            await anon.exchange_auth_code(app_id="app", secret="right", auth_code="nope")
    assert (partner.value.code, bad_code.value.code) == (40101, 40110)


async def test_permission_and_parameter_codes(sb: Sandbox) -> None:
    async with TikTokClient(
        sb.issue_token([ADVERTISER]), api_base=sb.api_base, requests_per_second=None
    ) as c:
        with pytest.raises(BadRequestError) as permission:
            await c.list_audiences(OTHER)
        with pytest.raises(BadRequestError) as unknown:
            await c.delete_audiences(ADVERTISER, ["123"])
    assert permission.value.code == 40001 and OTHER in permission.value.message
    assert unknown.value.code == 40002 and "custom_audience_id" in unknown.value.message


async def test_file_codes(sb: Sandbox, tmp_path: Path) -> None:
    assert (await raw_upload(sb, b""))["code"] == 40906
    assert (await raw_upload(sb, lines("a", 200)))["code"] == 40907
    suffix = await raw_upload(sb, lines("a", 2), filename="ids.CSV")
    assert suffix["code"] == 40908
    (tmp_path / "a.txt").write_bytes(lines("a", 5))
    (tmp_path / "m.txt").write_bytes(
        "".join(hashlib.md5(f"{i}".encode()).hexdigest() + "\n" for i in range(5)).encode()
    )
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "big.txt").write_bytes(lines("b", 200))
    async with TikTokClient(sb.issue_token(), api_base=sb.api_base, requests_per_second=None) as c:
        with pytest.raises(BadRequestError) as empty:
            await c.upload_file(ADVERTISER, tmp_path / "empty.txt", "FIRST_SHA256")
        with pytest.raises(BadRequestError) as big:
            await c.upload_file(ADVERTISER, tmp_path / "big.txt", "FIRST_SHA256")
        md5 = await c.upload_file(ADVERTISER, tmp_path / "m.txt", "FIRST_MD5")
        with pytest.raises(BadRequestError) as mismatch:
            await c.create_audience(ADVERTISER, "n", [md5.file_path], "FIRST_SHA256")
        with pytest.raises(FileExpiredError) as missing:
            await c.create_audience(ADVERTISER, "n", ["0123456789abcdef"], "FIRST_SHA256")
        up = await c.upload_file(ADVERTISER, tmp_path / "a.txt", "FIRST_SHA256")
        sb.clock.advance(sb.config.file_ttl_seconds + 1)
        with pytest.raises(FileExpiredError) as expired:
            await c.create_audience(ADVERTISER, "n", [up.file_path], "FIRST_SHA256")
        # The client refuses a suffix TikTok refuses before sending anything.
        (tmp_path / "ids.CSV").write_bytes(lines("a", 2))
        with pytest.raises(UsageError, match=r"exactly with \.csv or \.txt"):
            await c.upload_file(ADVERTISER, tmp_path / "ids.CSV", "FIRST_SHA256")
    codes = [e.value.code for e in (empty, big, mismatch, missing, expired)]
    assert codes == [40906, 40907, 40909, 40905, 40910]


# -- shapes --------------------------------------------------------------------------------------


async def test_get_and_list_items_carry_owner_id_msg_and_error_msg(
    sb: Sandbox, tmp_path: Path
) -> None:
    (tmp_path / "a.txt").write_bytes(lines("a", 5))
    async with TikTokClient(sb.issue_token(), api_base=sb.api_base, requests_per_second=None) as c:
        up = await c.upload_file(ADVERTISER, tmp_path / "a.txt", "MAID_SHA256")
        # MAID_* is an upload-only alias: create is sent FIRST_SHA256.
        audience_id = await c.create_audience(ADVERTISER, "n", [up.file_path], "MAID_SHA256")
        (got,) = await c.get_audiences(ADVERTISER, [audience_id])
        (listed,) = await c.list_audiences(ADVERTISER)
    for audience in (got, listed):
        assert audience.owner_id == ADVERTISER
        assert audience.msg is not None and audience.error_msg is not None
    assert sb.state.audiences[audience_id].calculate_type == "FIRST_SHA256"
    with pytest.raises(UsageError):
        wire.create_payload(ADVERTISER, "n", ["p"], "NOPE")
    assert wire.create_payload(ADVERTISER, "n", ["p"], "MAID_MD5")["calculate_type"] == "FIRST_MD5"


async def test_revoke_answers_app_id_and_advertiser_ids(sb: Sandbox) -> None:
    code = sb.issue_auth_code(app_id="app", secret="s3cret", advertiser_ids=[ADVERTISER])
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{sb.api_base}{P}/oauth2/access_token/",
            json={"app_id": "app", "secret": "s3cret", "auth_code": code},
        ) as r:
            token = (await r.json())["data"]["access_token"]
        async with session.post(
            f"{sb.api_base}{P}/oauth2/revoke_token/",
            json={"app_id": "app", "secret": "s3cret", "access_token": token},
        ) as r:
            answer = await r.json()
    assert answer["code"] == 0
    assert answer["data"] == {"app_id": "app", "advertiser_ids": [ADVERTISER]}


# -- the sandbox is an independent oracle -------------------------------------------------------


def test_the_sandbox_states_tiktoks_rules_itself_and_they_agree_with_the_clients() -> None:
    source = Path(sandbox_rules.__file__).parent
    for module in source.glob("*.py"):
        text = module.read_text()
        assert "asyncsync.rules" not in text.replace("asyncsync.rules.limits``", ""), module
        assert "asyncsync.tiktok" not in text, module
    r = sandbox_rules
    assert r.API_PREFIX == limits.API_VERSION_PREFIX
    assert r.MAX_UPLOAD_BYTES == limits.MAX_FILE_BYTES
    assert r.UPLOAD_SUFFIXES == limits.FILE_SUFFIXES
    assert r.PATHS_PER_CALL == limits.MAX_FILE_PATHS_PER_CALL
    assert r.AUDIENCES_PER_ADVERTISER == limits.MAX_AUDIENCES_PER_ADVERTISER
    assert r.NAME_MAX_CHARS == limits.MAX_AUDIENCE_NAME_CHARS
    assert r.RETENTION_DAYS == (limits.MIN_RETENTION_DAYS, limits.MAX_RETENTION_DAYS)
    assert r.DAILY_OPERATIONS == limits.DAILY_FILE_OPERATIONS_PER_AUDIENCE
    assert r.DAILY_REPLACES == limits.DAILY_REPLACES_PER_AUDIENCE
    assert r.MIN_MEMBERS == limits.MIN_AUDIENCE_MEMBERS
    assert r.DELETE_IDS_PER_CALL == limits.MAX_DELETE_IDS_PER_CALL
    assert r.GET_IDS_PER_CALL == wire.MAX_GET_IDS_PER_CALL
    assert r.LIST_PAGE_SIZE_MAX == limits.MAX_LIST_PAGE_SIZE
    assert r.AUTH_CODE_TTL_SECONDS == limits.AUTH_CODE_TTL_SECONDS
    assert set(r.ACTIONS) == {a.value for a in limits.Action}
    assert set(r.SUB_TYPES) == {s.value for s in limits.AudienceSubType}
    assert set(r.CALCULATE_TYPES) | set(r.UPLOAD_ONLY_TYPES) == {
        c.value for c in limits.CalculateType
    }
    assert r.UPLOAD_ONLY_TYPES == {k.value: v.value for k, v in limits.UPLOAD_ONLY_ALIASES.items()}
    for ct in limits.CalculateType:
        assert r.digest_hex_chars(ct.value) == limits.digest_hex_length(ct)
    for name, code in sdk_codes().items():
        if hasattr(r, name):
            assert getattr(r, name) == code, name
    assert json.dumps(r.EXPIRING_WINDOW_DAYS) == "60"
