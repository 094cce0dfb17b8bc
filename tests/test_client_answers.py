"""Answers the sandbox never gives (HTML with 200, broken JSON, wrong types, huge bodies) and the
exact shape of what the client sends, checked with small raw aiohttp servers on loopback."""

from __future__ import annotations

import hashlib
import json
import logging
import resource
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp import BodyPartReader, web
from aiohttp.test_utils import TestServer
from helpers.api import ADVERTISER

from asyncsync import RetryPolicy, TikTokClient
from asyncsync.errors import (
    AuthError,
    DuplicatedRequestError,
    OutcomeUnknownError,
    RateLimitedError,
    SignatureMismatchError,
    TransientError,
    TransportError,
)

TOKEN = "tok-5f3a2b18c0ffee-secret"
P = "/open_api/v1.3"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Serve = Callable[[Mapping[str, Handler]], Awaitable[str]]


def envelope(code: int = 0, data: Any = None, message: str = "OK") -> web.Response:
    return web.json_response(
        {"code": code, "message": message, "data": data or {}, "request_id": "rid-42"}
    )


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start a raw aiohttp app from ``{"GET /path/": handler}``; returns its base URL."""
    servers: list[TestServer] = []

    async def start(routes: Mapping[str, Handler]) -> str:
        app = web.Application(client_max_size=1 << 30)
        for key, handler in routes.items():
            method, path = key.split(" ", 1)
            app.router.add_route(method, path, handler)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield start
    for server in servers:
        await server.close()


def client_for(base: str, **kwargs: Any) -> TikTokClient:
    kwargs.setdefault("retry", RetryPolicy(attempts=3, wait=False))
    kwargs.setdefault("requests_per_second", None)
    return TikTokClient(TOKEN, api_base=base, **kwargs)


async def test_requests_have_the_documented_shape(serve: Serve, tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []

    async def record(request: web.Request) -> web.Response:
        entry: dict[str, Any] = {
            "method": request.method,
            "path": request.path,
            "token": request.headers.get("Access-Token"),
            "query": dict(request.query),
            "content_length": request.content_length,
        }
        if request.content_type == "application/json":
            entry["json"] = await request.json()
        elif request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            fields: dict[str, Any] = {}
            async for part in reader:
                assert isinstance(part, BodyPartReader)
                body = await part.read()
                fields[part.name or ""] = (
                    {"filename": part.filename, "bytes": bytes(body)}
                    if part.filename
                    else body.decode()
                )
            entry["form"] = fields
        seen.append(entry)
        if request.path.endswith("/upload/"):
            return envelope(data={"file_path": "fp-1"})
        if request.path.endswith("/create/"):
            return envelope(data={"custom_audience_id": "900"})
        if request.path.endswith("/get/"):
            return envelope(data={"list": []})
        return envelope(data={"list": [], "page_info": {"total_page": 0}})

    routes = {
        f"{m} {P}/dmp/custom_audience/{p}/": record
        for m, p in [
            ("POST", "file/upload"),
            ("POST", "create"),
            ("POST", "update"),
            ("POST", "delete"),
            ("GET", "get"),
            ("GET", "list"),
        ]
    }
    base = await serve(routes)
    part = tmp_path / "part-0001.csv"
    part.write_bytes(b"a" * 64 + b"\n")
    async with client_for(base) as c:
        up = await c.upload_file(ADVERTISER, part, "FIRST_SHA256")
        await c.create_audience(
            ADVERTISER,
            "N",
            ["fp-1"],
            "MAID_SHA256",
            audience_sub_type="normal",
            retention_in_days=7,
        )
        await c.update_audience(ADVERTISER, "900", file_paths=["fp-1"], action="append")
        await c.delete_audiences(ADVERTISER, ["900", "901"])
        await c.get_audiences(ADVERTISER, ["900", "901"], history_size=3)
        await c.list_audiences(ADVERTISER, page_size=50)

    upload, create, update, delete, get, listing = seen
    assert all(e["token"] == TOKEN for e in seen)
    assert all(e["path"].startswith(f"{P}/dmp/custom_audience/") for e in seen)
    assert all(e["path"].endswith("/") for e in seen)
    assert upload["content_length"] is not None  # streamed, yet with a known length
    assert upload["form"] == {
        "advertiser_id": ADVERTISER,
        "file_signature": hashlib.md5(part.read_bytes()).hexdigest(),
        "calculate_type": "FIRST_SHA256",
        "file": {"filename": "part-0001.csv", "bytes": part.read_bytes()},
    }
    assert up.md5 == upload["form"]["file_signature"]
    assert create["json"] == {
        "advertiser_id": ADVERTISER,
        "custom_audience_name": "N",
        "file_paths": ["fp-1"],
        "calculate_type": "FIRST_SHA256",
        "audience_sub_type": "NORMAL",
        "retention_in_days": 7,
    }
    assert update["json"] == {
        "advertiser_id": ADVERTISER,
        "custom_audience_id": "900",
        "file_paths": ["fp-1"],
        "action": "APPEND",
    }
    assert delete["json"] == {"advertiser_id": ADVERTISER, "custom_audience_ids": ["900", "901"]}
    assert get["method"] == "GET"
    assert get["query"] == {
        "advertiser_id": ADVERTISER,
        "custom_audience_ids": '["900", "901"]',
        "history_size": "3",
    }
    assert json.loads(get["query"]["custom_audience_ids"]) == ["900", "901"]
    assert listing["query"] == {"advertiser_id": ADVERTISER, "page": "1", "page_size": "50"}


async def test_a_200_html_page_is_retried_then_reported_as_transport_error(serve: Serve) -> None:
    calls = 0

    async def proxy_page(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.Response(text="<html><body>Bad gateway</body></html>", content_type="text/html")

    base = await serve({f"GET {P}/dmp/custom_audience/list/": proxy_page})
    async with client_for(base) as c:
        with pytest.raises(TransportError, match=r"not JSON \(text/html\).*Bad gateway"):
            await c.list_audiences(ADVERTISER)
    assert calls == 3
    assert c.stats.retries == 2


async def test_truncated_json_is_a_clear_error_not_a_traceback(serve: Serve) -> None:
    async def truncated(request: web.Request) -> web.Response:
        return web.Response(text='{"code": 0, "data": {"li', content_type="application/json")

    base = await serve({f"GET {P}/dmp/custom_audience/list/": truncated})
    async with client_for(base, retry=RetryPolicy(attempts=1)) as c:
        with pytest.raises(TransportError, match="not JSON"):
            await c.list_audiences(ADVERTISER)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({"message": "OK", "data": {}}, "no 'code'"),
        ({"code": "zero", "data": {}}, "'code' is not an integer"),
        ([1, 2], "not an object"),
        ({"code": 0, "data": None}, r"data is NoneType"),
        ({"code": 0, "data": {"list": {"a": 1}}}, r"data.list is dict, not a list"),
        (
            {"code": 0, "data": {"list": [{"audience_id": "1", "cover_num": "lots"}]}},
            r"data.list\[\].cover_num is not an integer",
        ),
        ({"code": 0, "data": {"list": [{"name": "no id"}]}}, r"audience_id is missing"),
    ],
)
async def test_malformed_envelopes_and_wrong_types_are_named_and_not_retried(
    serve: Serve, body: Any, match: str
) -> None:
    calls = 0

    async def broken(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.json_response(body)

    base = await serve({f"GET {P}/dmp/custom_audience/get/": broken})
    async with client_for(base) as c:
        with pytest.raises(TransportError, match=match) as info:
            await c.get_audiences(ADVERTISER, ["1"])
    assert "dmp/custom_audience/get/" in str(info.value)
    assert calls == 1


async def test_a_huge_answer_is_refused_without_reading_it_all(serve: Serve) -> None:
    async def huge(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        chunk = b" " * (1 << 20)
        try:
            for _ in range(40):
                await resp.write(chunk)
        except (ConnectionResetError, RuntimeError):
            pass
        return resp

    base = await serve({f"GET {P}/dmp/custom_audience/list/": huge})
    async with client_for(base, retry=RetryPolicy(attempts=1)) as c:
        with pytest.raises(TransportError, match="larger than"):
            await c.list_audiences(ADVERTISER)


async def test_create_with_an_unreadable_answer_is_outcome_unknown_and_not_resent(
    serve: Serve,
) -> None:
    calls = 0

    async def created_but_garbled(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.Response(
            status=502, text="<html>502 Bad Gateway</html>", content_type="text/html"
        )

    base = await serve({f"POST {P}/dmp/custom_audience/create/": created_but_garbled})
    async with client_for(base) as c:
        with pytest.raises(OutcomeUnknownError, match="outcome is unknown"):
            await c.create_audience(ADVERTISER, "n", ["fp"], "FIRST_SHA256")
    assert calls == 1


async def test_create_refused_with_a_rate_limit_code_is_retried(serve: Serve) -> None:
    calls = 0

    async def busy_then_ok(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return envelope(40100, message="Too many requests")
        return envelope(data={"custom_audience_id": "77"})

    base = await serve({f"POST {P}/dmp/custom_audience/create/": busy_then_ok})
    async with client_for(base) as c:
        assert await c.create_audience(ADVERTISER, "n", ["fp"], "FIRST_SHA256") == "77"
    assert calls == 2


async def test_a_rate_limit_that_never_ends_raises_rate_limited_with_request_id(
    serve: Serve,
) -> None:
    async def limited(request: web.Request) -> web.Response:
        return envelope(40100, message="Too many requests")

    base = await serve({f"GET {P}/dmp/custom_audience/list/": limited})
    async with client_for(base) as c:
        with pytest.raises(RateLimitedError) as info:
            await c.list_audiences(ADVERTISER)
    assert (info.value.code, info.value.request_id) == (40100, "rid-42")
    assert c.stats.api_calls == 3


async def test_duplicated_request_code_maps_to_its_own_error(serve: Serve) -> None:
    async def duplicated(request: web.Request) -> web.Response:
        return envelope(40050, message="Duplicated request")

    base = await serve(
        {
            f"POST {P}/dmp/custom_audience/update/": duplicated,
            f"POST {P}/dmp/custom_audience/delete/": duplicated,
        }
    )
    async with client_for(base) as c:
        with pytest.raises(DuplicatedRequestError):
            await c.delete_audiences(ADVERTISER, ["1"])
        # An earlier copy of the update may have been carried out: its outcome is unknown.
        with pytest.raises(OutcomeUnknownError) as info:
            await c.update_audience(ADVERTISER, "1", name="n")
    assert isinstance(info.value.answer, DuplicatedRequestError)
    assert c.stats.api_calls == 2


async def test_a_persistent_signature_mismatch_gives_up_after_one_reupload(
    serve: Serve, tmp_path: Path
) -> None:
    calls = 0

    async def mismatch(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        await request.read()
        return envelope(40900, message="file_signature mismatch")

    base = await serve({f"POST {P}/dmp/custom_audience/file/upload/": mismatch})
    (tmp_path / "p.txt").write_text("x\n")
    async with client_for(base) as c:
        with pytest.raises(SignatureMismatchError):
            await c.upload_file(ADVERTISER, tmp_path / "p.txt", "FIRST_SHA256")
    assert calls == 2
    assert c.stats.bytes_uploaded == 0


async def test_the_token_and_secret_stay_out_of_repr_logs_and_errors(
    serve: Serve, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    secret = "app-secret-9f8e7d6c5b4a"

    async def echo_token(request: web.Request) -> web.Response:
        # A hostile or buggy server that echoes credentials back in its messages.
        await request.read()
        return envelope(40105, message=f"token {request.headers.get('Access-Token')} is invalid")

    async def echo_secret(request: web.Request) -> web.Response:
        body = await request.json()
        return envelope(40104, message=f"secret {body['secret']} for code {body['auth_code']}")

    async def html_echo(request: web.Request) -> web.Response:
        return web.Response(
            status=500,
            text=f"<pre>{request.headers.get('Access-Token')}</pre>",
            content_type="text/html",
        )

    base = await serve(
        {
            f"GET {P}/dmp/custom_audience/list/": echo_token,
            f"POST {P}/dmp/custom_audience/file/upload/": echo_token,
            f"POST {P}/oauth2/access_token/": echo_secret,
            f"GET {P}/dmp/custom_audience/get/": html_echo,
        }
    )
    (tmp_path / "p.txt").write_text("x\n")
    caplog.set_level(logging.DEBUG, logger="asyncsync.tiktok")
    errors: list[BaseException] = []
    async with client_for(base) as c:
        assert TOKEN not in repr(c)
        for call in (
            c.list_audiences(ADVERTISER),
            c.upload_file(ADVERTISER, tmp_path / "p.txt", "FIRST_SHA256"),
            c.exchange_auth_code(app_id="a", secret=secret, auth_code="code-123456"),
            c.get_audiences(ADVERTISER, ["1"]),
        ):
            with pytest.raises((AuthError, TransientError)) as info:
                await call
            errors.append(info.value)
    assert [type(e) for e in errors] == [AuthError, AuthError, AuthError, TransientError]
    assert "***" in str(errors[0]) and "***" in str(errors[2])
    texts = [str(e) for e in errors] + [repr(e) for e in errors]
    texts += [str(e.__cause__) for e in errors if e.__cause__] + [caplog.text]
    assert caplog.records  # the debug log did run
    for text in texts:
        assert TOKEN not in text
        assert secret not in text
        assert "code-123456" not in text


async def test_the_upload_streams_from_disk_without_holding_the_file_in_memory(
    serve: Serve, tmp_path: Path
) -> None:
    size = 96 << 20
    path = tmp_path / "big.txt"
    block = (hashlib.sha256(b"x").hexdigest() + "\n").encode() * ((1 << 20) // 65)
    file_md5, written = hashlib.md5(), 0
    with path.open("wb") as out:
        while written < size:
            out.write(block)
            file_md5.update(block)
            written += len(block)
    received: dict[str, Any] = {}
    rss_samples: list[int] = []

    async def sink(request: web.Request) -> web.Response:
        reader = await request.multipart()
        async for part in reader:
            assert isinstance(part, BodyPartReader)
            if part.name == "file":
                digest, total = hashlib.md5(), 0
                while chunk := await part.read_chunk(1 << 20):
                    digest.update(chunk)
                    total += len(chunk)
                    rss_samples.append(current_rss())
                received.update(md5=digest.hexdigest(), bytes=total)
            else:
                await part.read()
        return envelope(data={"file_path": "big"})

    base = await serve({f"POST {P}/dmp/custom_audience/file/upload/": sink})
    async with client_for(base) as c:
        baseline = current_rss()
        up = await c.upload_file(ADVERTISER, path, "FIRST_SHA256")
    growth_mib = (max(rss_samples) - baseline) / (1 << 20)
    assert received == {"md5": file_md5.hexdigest(), "bytes": written}
    assert up.md5 == file_md5.hexdigest()
    assert up.bytes == written
    assert len(rss_samples) > 50
    assert growth_mib < 32, f"RSS grew by {growth_mib:.0f} MiB during a {written >> 20} MiB upload"


def current_rss() -> int:
    """Resident set size of this process now, in bytes (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


async def test_a_refused_connection_is_retried_even_for_create_since_nothing_was_sent() -> None:
    with socket.socket() as probe:  # a loopback port with nobody listening
        probe.bind(("127.0.0.1", 0))
        base = f"http://127.0.0.1:{probe.getsockname()[1]}"
    async with client_for(base) as c:
        with pytest.raises(TransportError, match="cannot connect") as info:
            await c.create_audience(ADVERTISER, "n", ["fp"], "FIRST_SHA256")
    assert not isinstance(info.value, OutcomeUnknownError)
    assert (c.stats.api_calls, c.stats.retries) == (3, 2)
