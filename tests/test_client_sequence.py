"""TikTokClient against the sandbox over loopback HTTP: the full audience lifecycle, OAuth,
validation before sending, the session lifecycle, and the error codes the sandbox produces."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import aiohttp
import pytest
from helpers.api import ADVERTISER

from asyncsync import Action, RetryPolicy, TikTokClient
from asyncsync.errors import (
    AudienceBusyError,
    AuthError,
    BadRequestError,
    FileExpiredError,
    InputError,
    QuotaExceededError,
    UsageError,
)
from asyncsync.events import Event, UploadProgress
from asyncsync.sandbox import Sandbox
from asyncsync.tiktok import ClientState


def digests(prefix: str, n: int) -> list[str]:
    return [hashlib.sha256(f"{prefix}-{i}".encode()).hexdigest() for i in range(n)]


def write_part(path: Path, lines: list[str]) -> str:
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(data)
    return hashlib.md5(data).hexdigest()


@pytest.fixture
async def client(sandbox: Sandbox) -> AsyncIterator[TikTokClient]:
    async with TikTokClient(
        sandbox.issue_token(), api_base=sandbox.api_base, requests_per_second=None
    ) as c:
        yield c


async def settle(sandbox: Sandbox, client: TikTokClient, audience_id: str) -> None:
    """Let the running operation of the audience finish (the sandbox clock jumps ahead)."""
    sandbox.clock.advance(60)
    (audience,) = await client.get_audiences(ADVERTISER, [audience_id])
    assert audience.is_valid is True


async def test_upload_create_get_list_append_rename_delete_with_expected_data(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    first, second = digests("first", 1500), digests("second", 700)
    md5_a = write_part(tmp_path / "first.csv", first)
    write_part(tmp_path / "second.txt", second)
    events: list[Event] = []
    async with TikTokClient(
        sandbox.issue_token(), api_base=sandbox.api_base, reporter=events.append
    ) as client:
        await run_full_sequence(sandbox, client, tmp_path, first, second, md5_a, events)


async def run_full_sequence(
    sandbox: Sandbox,
    client: TikTokClient,
    tmp_path: Path,
    first: list[str],
    second: list[str],
    md5_a: str,
    events: list[Event],
) -> None:

    up_a = await client.upload_file(ADVERTISER, tmp_path / "first.csv", "FIRST_SHA256", md5=md5_a)
    assert up_a.md5 == md5_a
    assert up_a.bytes == (tmp_path / "first.csv").stat().st_size
    progress = [e for e in events if isinstance(e, UploadProgress)]
    assert progress and progress[-1].sent == progress[-1].total == up_a.bytes

    audience_id = await client.create_audience(
        ADVERTISER, "Nightly buyers", [up_a.file_path], "FIRST_SHA256", retention_in_days=30
    )
    assert audience_id.isdigit()
    await settle(sandbox, client, audience_id)

    (got,) = await client.get_audiences(ADVERTISER, [audience_id], history_size=5)
    assert (got.audience_id, got.name, got.cover_num) == (audience_id, "Nightly buyers", 1500)
    assert got.calculate_type == "FIRST_SHA256"
    assert got.is_expiring is False
    assert isinstance(got.create_time, str) and got.create_time
    assert [h.action for h in got.history] == ["CREATE"]
    assert got.raw["audience_details"]["audience_id"] == audience_id

    others = [
        await client.create_audience(ADVERTISER, f"Other {i}", [up_a.file_path], "FIRST_SHA256")
        for i in range(4)
    ]
    calls_before = client.stats.api_calls
    listed = await client.list_audiences(ADVERTISER, page_size=2)
    assert client.stats.api_calls - calls_before == 3  # 5 audiences, 2 per page
    assert sorted(a.audience_id for a in listed) == sorted([audience_id, *others])
    assert {a.name for a in listed} == {
        "Nightly buyers",
        "Other 0",
        "Other 1",
        "Other 2",
        "Other 3",
    }

    up_b = await client.upload_file(ADVERTISER, tmp_path / "second.txt", "FIRST_SHA256")
    assert up_b.md5 == hashlib.md5((tmp_path / "second.txt").read_bytes()).hexdigest()
    await client.update_audience(
        ADVERTISER, audience_id, file_paths=[up_b.file_path], action=Action.APPEND
    )
    await settle(sandbox, client, audience_id)
    (got,) = await client.get_audiences(ADVERTISER, [audience_id], history_size=5)
    assert got.cover_num == 2200
    assert [h.action for h in got.history] == ["APPEND", "CREATE"]
    assert sandbox.members(audience_id) == frozenset(first) | frozenset(second)

    await client.update_audience(ADVERTISER, audience_id, name="Nightly buyers (renamed)")
    (got,) = await client.get_audiences(ADVERTISER, [audience_id])
    assert got.name == "Nightly buyers (renamed)"

    await client.delete_audiences(ADVERTISER, [audience_id, *others])
    assert await client.list_audiences(ADVERTISER) == []
    assert client.stats.bytes_uploaded == up_a.bytes + up_b.bytes
    assert client.stats.retries == 0


async def test_delete_of_250_ids_goes_out_in_batches_of_100(
    sandbox_factory: Callable[..., AbstractAsyncContextManager[Sandbox]], tmp_path: Path
) -> None:
    md5 = write_part(tmp_path / "p.txt", digests("p", 5))
    async with (
        sandbox_factory(min_members=1, max_audiences=1000) as sb,
        TikTokClient(sb.issue_token(), api_base=sb.api_base, requests_per_second=None) as c,
    ):
        up = await c.upload_file(ADVERTISER, tmp_path / "p.txt", "FIRST_SHA256", md5=md5)
        ids = [
            await c.create_audience(ADVERTISER, f"a{i}", [up.file_path], "FIRST_SHA256")
            for i in range(250)
        ]
        assert len(await c.list_audiences(ADVERTISER)) == 250
        await c.delete_audiences(ADVERTISER, ids)
        assert sb.request_counts()["/open_api/v1.3/dmp/custom_audience/delete/"] == 3
        assert await c.list_audiences(ADVERTISER) == []


async def test_update_with_file_paths_but_no_action_is_refused_before_sending(
    sandbox: Sandbox, client: TikTokClient
) -> None:
    with pytest.raises(UsageError, match="action is required"):
        await client.update_audience(ADVERTISER, "123", file_paths=["f1"])
    assert client.stats.api_calls == 0
    assert sandbox.request_counts() == {}


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c: c.create_audience(ADVERTISER, "", ["f"], "FIRST_SHA256"), "name"),
        (lambda c: c.create_audience(ADVERTISER, "x" * 129, ["f"], "FIRST_SHA256"), "name"),
        (lambda c: c.create_audience(ADVERTISER, "a\tb", ["f"], "FIRST_SHA256"), "control"),
        (lambda c: c.create_audience(ADVERTISER, "n", [], "FIRST_SHA256"), "file_paths"),
        (
            lambda c: c.create_audience(
                ADVERTISER, "n", [f"f{i}" for i in range(501)], "FIRST_SHA256"
            ),
            "file_paths",
        ),
        (lambda c: c.create_audience(ADVERTISER, "n", ["f"], "SHA1"), "calculate_type"),
        (
            lambda c: c.create_audience(
                ADVERTISER, "n", ["f"], "FIRST_SHA256", retention_in_days=0
            ),
            "retention_in_days",
        ),
        (
            lambda c: c.create_audience(
                ADVERTISER, "n", ["f"], "FIRST_SHA256", retention_in_days=366
            ),
            "retention_in_days",
        ),
        (lambda c: c.update_audience(ADVERTISER, "1", file_paths=["f"], action="MERGE"), "action"),
        (lambda c: c.update_audience(ADVERTISER, "1"), "custom_audience_name"),
        (lambda c: c.update_audience(ADVERTISER, "1", name="n", action="APPEND"), "action"),
        (lambda c: c.delete_audiences(ADVERTISER, []), "custom_audience_ids"),
        (lambda c: c.get_audiences(ADVERTISER, []), "custom_audience_ids"),
        (lambda c: c.get_audiences("", ["1"]), "advertiser_id"),
        (lambda c: c.list_audiences(ADVERTISER, page_size=101), "page_size"),
    ],
)
async def test_invalid_arguments_raise_usage_error_naming_the_field_before_sending(
    sandbox: Sandbox, client: TikTokClient, call: Callable[[TikTokClient], object], field: str
) -> None:
    with pytest.raises(UsageError, match=field):
        await call(client)  # type: ignore[misc]
    assert client.stats.api_calls == 0
    assert sandbox.request_counts() == {}


async def test_upload_refuses_a_bad_suffix_and_a_missing_file_without_sending(
    client: TikTokClient, tmp_path: Path
) -> None:
    (tmp_path / "ids.json").write_text("x\n")
    with pytest.raises(UsageError, match=r"\.csv or \.txt"):
        await client.upload_file(ADVERTISER, tmp_path / "ids.json", "FIRST_SHA256")
    with pytest.raises(InputError, match=r"missing\.txt"):
        await client.upload_file(ADVERTISER, tmp_path / "missing.txt", "FIRST_SHA256")
    assert client.stats.api_calls == 0


async def test_a_file_that_changes_during_its_upload_is_an_input_error(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    part = tmp_path / "moving.txt"
    write_part(part, digests("m", 50_000))  # 3.2 MB: several 1 MiB chunks

    def truncate_on_first_chunk(event: Event) -> None:
        if isinstance(event, UploadProgress) and event.sent < event.total:
            part.write_bytes(b"")

    async with TikTokClient(
        sandbox.issue_token(),
        api_base=sandbox.api_base,
        requests_per_second=None,
        retry=RetryPolicy(wait=False),
        reporter=truncate_on_first_chunk,
    ) as c:
        with pytest.raises(InputError, match=r"moving\.txt: changed during the upload"):
            await c.upload_file(ADVERTISER, part, "FIRST_SHA256")
    # The cut-short request was aborted and retried; the retry found the file changed.
    assert (c.stats.api_calls, c.stats.retries, c.stats.bytes_uploaded) == (1, 1, 0)


async def test_signature_mismatch_leads_to_exactly_one_reupload_with_the_md5_from_disk(
    sandbox: Sandbox, client: TikTokClient, tmp_path: Path
) -> None:
    real = write_part(tmp_path / "part.txt", digests("x", 50))
    up = await client.upload_file(ADVERTISER, tmp_path / "part.txt", "FIRST_SHA256", md5="0" * 32)
    assert up.md5 == real
    assert client.stats.api_calls == 2
    assert client.stats.retries == 0
    assert sandbox.request_counts()["/open_api/v1.3/dmp/custom_audience/file/upload/"] == 2


async def test_unknown_file_path_surfaces_as_file_expired_error(client: TikTokClient) -> None:
    with pytest.raises(FileExpiredError) as info:
        await client.create_audience(ADVERTISER, "n", ["nope"], "FIRST_SHA256")
    assert info.value.code == 40905
    assert info.value.request_id
    assert client.stats.api_calls == 1


async def test_update_while_an_operation_runs_is_audience_busy_and_not_retried(
    sandbox_factory: Callable[..., AbstractAsyncContextManager[Sandbox]], tmp_path: Path
) -> None:
    write_part(tmp_path / "a.txt", digests("a", 1200))
    write_part(tmp_path / "b.txt", digests("b", 10))
    async with (
        sandbox_factory(operation_seconds=600) as sb,
        TikTokClient(sb.issue_token(), api_base=sb.api_base, requests_per_second=None) as c,
    ):
        a = await c.upload_file(ADVERTISER, tmp_path / "a.txt", "FIRST_SHA256")
        b = await c.upload_file(ADVERTISER, tmp_path / "b.txt", "FIRST_SHA256")
        audience_id = await c.create_audience(ADVERTISER, "busy", [a.file_path], "FIRST_SHA256")
        calls = c.stats.api_calls
        with pytest.raises(AudienceBusyError) as info:
            await c.update_audience(
                ADVERTISER, audience_id, file_paths=[b.file_path], action="APPEND"
            )
        assert info.value.code == 40002
        # The update, then one get that shows the running operation; no resend.
        assert c.stats.api_calls == calls + 2
        assert sb.request_counts()["/open_api/v1.3/dmp/custom_audience/update/"] == 1


async def test_update_past_the_daily_quota_is_quota_exceeded(
    sandbox_factory: Callable[..., AbstractAsyncContextManager[Sandbox]], tmp_path: Path
) -> None:
    write_part(tmp_path / "a.txt", digests("a", 1200))
    write_part(tmp_path / "b.txt", digests("b", 10))
    async with (
        sandbox_factory(daily_operations=1) as sb,
        TikTokClient(sb.issue_token(), api_base=sb.api_base, requests_per_second=None) as c,
    ):
        a = await c.upload_file(ADVERTISER, tmp_path / "a.txt", "FIRST_SHA256")
        b = await c.upload_file(ADVERTISER, tmp_path / "b.txt", "FIRST_SHA256")
        audience_id = await c.create_audience(ADVERTISER, "quota", [a.file_path], "FIRST_SHA256")
        for _ in range(2):
            sb.clock.advance(60)
            try:
                await c.update_audience(
                    ADVERTISER, audience_id, file_paths=[b.file_path], action="APPEND"
                )
            except QuotaExceededError as exc:
                assert exc.code == 40002
                assert "quota" in exc.message.lower()
                break
        else:
            pytest.fail("the second update of the day was accepted")


async def test_bad_request_names_what_tiktok_refused(client: TikTokClient, tmp_path: Path) -> None:
    write_part(tmp_path / "md5.txt", [hashlib.md5(b"x").hexdigest()])
    up = await client.upload_file(ADVERTISER, tmp_path / "md5.txt", "FIRST_MD5")
    with pytest.raises(BadRequestError, match="calculate_type"):
        await client.create_audience(ADVERTISER, "n", [up.file_path], "FIRST_SHA256")


async def test_oauth_code_exchange_gives_a_working_token_and_revoke_ends_it(
    sandbox: Sandbox,
) -> None:
    code = sandbox.issue_auth_code(app_id="app1", secret="s3cr3t-app", advertiser_ids=[ADVERTISER])
    async with TikTokClient(None, api_base=sandbox.api_base, requests_per_second=None) as anon:
        token = await anon.exchange_auth_code(app_id="app1", secret="s3cr3t-app", auth_code=code)
        assert token.advertiser_ids == (ADVERTISER,)
        assert token.access_token not in repr(token)
        with pytest.raises(AuthError) as reused:
            await anon.exchange_auth_code(app_id="app1", secret="s3cr3t-app", auth_code=code)
        assert reused.value.code == 40110
        with pytest.raises(UsageError, match="access token is required"):
            await anon.list_audiences(ADVERTISER)

    async with TikTokClient(token.access_token, api_base=sandbox.api_base) as authed:
        assert await authed.list_audiences(ADVERTISER) == []
        await authed.revoke_token(
            app_id="app1", secret="s3cr3t-app", access_token=token.access_token
        )
        with pytest.raises(AuthError) as revoked:
            await authed.list_audiences(ADVERTISER)
        assert revoked.value.code == 40105


def test_authorization_url_matches_the_portal_format() -> None:
    url = TikTokClient.authorization_url(
        "7237383493024481281", "https://www.redpointglobal.com", "your_custom_params"
    )
    assert url == (
        "https://business-api.tiktok.com/portal/auth?app_id=7237383493024481281"
        "&state=your_custom_params&redirect_uri=https%3A%2F%2Fwww.redpointglobal.com"
    )


async def test_authorization_url_is_accepted_by_the_sandbox_portal(sandbox: Sandbox) -> None:
    sandbox.register_app(app_id="app9", secret="sec", advertiser_ids=[ADVERTISER])
    url = TikTokClient.authorization_url(
        "app9", "http://127.0.0.1:9/cb?x=1", "st", portal_base=sandbox.api_base
    )
    async with (
        aiohttp.ClientSession() as s,
        s.get(url, allow_redirects=False) as resp,
    ):
        assert resp.status == 302
        assert "auth_code=" in resp.headers["Location"]
        assert "state=st" in resp.headers["Location"]


async def test_borrowed_session_is_used_and_left_open(sandbox: Sandbox) -> None:
    async with aiohttp.ClientSession() as session:
        client = TikTokClient(sandbox.issue_token(), api_base=sandbox.api_base, session=session)
        async with client:
            opened = client.state
            assert await client.list_audiences(ADVERTISER) == []
        assert (opened, client.state) == (ClientState.OPENED, ClientState.CLOSED)
        assert not session.closed
        async with session.get(f"{sandbox.api_base}/_sandbox/state") as resp:
            assert resp.status == 200


async def test_owned_session_is_closed_and_the_client_cannot_be_reused(sandbox: Sandbox) -> None:
    client = TikTokClient(sandbox.issue_token(), api_base=sandbox.api_base)
    assert client.state is ClientState.UNOPENED
    async with client:
        session = client._session
        assert session is not None and not session.closed
    assert session.closed
    with pytest.raises(RuntimeError, match="closed"):
        await client.list_audiences(ADVERTISER)
    with pytest.raises(RuntimeError, match="reopened"):
        async with client:
            pass
