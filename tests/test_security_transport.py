"""Where the token may travel: only to the configured API base, over verified TLS unless the
host is loopback; a redirect is never followed (with or without the token).
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from click.testing import CliRunner
from helpers.api import ADVERTISER

from asyncsync.cli import main
from asyncsync.errors import AsyncSyncError, TransportError
from asyncsync.tiktok.client import TikTokClient
from asyncsync.tiktok.retry import RetryPolicy

TOKEN = "tok-SENTINEL-transport-41d7"
NO_RETRY = RetryPolicy(attempts=1)


@dataclass
class Recorder:
    """A loopback HTTP server that records every request's path and headers."""

    base: str = ""
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)


async def _serve(
    app: web.Application, ssl_context: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    scheme = "https" if ssl_context else "http"
    return runner, f"{scheme}://127.0.0.1:{port}"


@pytest.fixture
async def elsewhere() -> AsyncIterator[Recorder]:
    """The host a redirect points to."""
    recorder = Recorder()

    async def record(request: web.Request) -> web.Response:
        recorder.seen.append((request.path, dict(request.headers)))
        return web.json_response({"code": 0, "message": "OK", "data": {"list": []}})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner, recorder.base = await _serve(app)
    yield recorder
    await runner.cleanup()


@pytest.fixture
async def redirector(elsewhere: Recorder) -> AsyncIterator[str]:
    """An API base whose every answer is a 302 to the same path on ``elsewhere``."""

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"{elsewhere.base}{request.path_qs}")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", redirect)
    runner, base = await _serve(app)
    yield base
    await runner.cleanup()


async def test_a_redirect_is_not_followed_and_the_token_goes_nowhere_else(
    redirector: str, elsewhere: Recorder
) -> None:
    async with TikTokClient(TOKEN, api_base=redirector, retry=NO_RETRY) as client:
        with pytest.raises(AsyncSyncError, match="302"):
            await client.list_audiences(ADVERTISER)
    assert elsewhere.seen == []


async def test_the_cli_does_not_follow_a_redirect_either(
    redirector: str, elsewhere: Recorder, tmp_path: Path
) -> None:
    import asyncio
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "asyncsync", "audiences", "list",
        "--advertiser-id", ADVERTISER, "--api-base", redirector,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TIKTOK_ACCESS_TOKEN": TOKEN},
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 1, err
    assert TOKEN.encode() not in out + err
    assert elsewhere.seen == []


@pytest.mark.parametrize(
    "args",
    [
        ["sync", "{ids}", "--name", "n", "--advertiser-id", ADVERTISER],
        ["audiences", "list", "--advertiser-id", ADVERTISER],
        ["audiences", "get", "1", "--advertiser-id", ADVERTISER],
        ["auth", "token", "--app-id", "1", "--auth-code", "c"],
        ["auth", "revoke", "--app-id", "1"],
    ],
    ids=["sync", "audiences-list", "audiences-get", "auth-token", "auth-revoke"],
)
@pytest.mark.parametrize(
    "base",
    ["http://example.com", "http://10.0.0.1:8080", "http://127.0.0.1.example.com", "ftp://x"],
)
def test_plain_http_to_a_non_loopback_host_is_refused_before_any_call(
    args: list[str], base: str, tmp_path: Path
) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("5f3a2b18-9c4d-4e7f-b8e2-17d3a1e69b25\n")
    argv = [a.replace("{ids}", str(ids)) for a in args] + ["--api-base", base]
    result = CliRunner().invoke(
        main,
        argv,
        env={
            "TIKTOK_ACCESS_TOKEN": TOKEN,
            "TIKTOK_APP_SECRET": "sec-SENTINEL-x",
            "XDG_CONFIG_HOME": str(tmp_path),
            "XDG_STATE_HOME": str(tmp_path),
        },
    )
    assert result.exit_code == 2, result.output
    [line] = result.stderr.strip().splitlines()
    assert "--api-base" in line and TOKEN not in line
    assert not (tmp_path / "asyncsync").exists() or not list((tmp_path / "asyncsync").rglob("*"))


def test_plain_http_on_loopback_is_accepted_for_a_sandbox() -> None:
    from asyncsync.cli.common import check_api_base

    for base in ("http://127.0.0.1:8080", "http://[::1]:9", "http://localhost:1/"):
        assert check_api_base(base) == base.rstrip("/")
    assert check_api_base("https://business-api.tiktok.com/") == "https://business-api.tiktok.com"


@pytest.mark.parametrize(
    "base", ["http://example.com", "http://10.0.0.1:8080", "http://127.0.0.1.example.com"]
)
def test_the_library_client_refuses_plain_http_to_a_non_loopback_host(base: str) -> None:
    with pytest.raises(AsyncSyncError, match="plain http on a non-loopback host") as caught:
        TikTokClient(TOKEN, api_base=base)
    assert TOKEN not in str(caught.value)


@pytest.mark.parametrize(
    "base",
    [
        "ftp://user:SECRET@example.com/",
        "https://example.com/?access_token=SECRET",
        "http://example.com/#SECRET",
        "http://user:SECRET@example.com:99999/",
        "gopher://example.com/SECRET",
    ],
)
def test_a_refused_api_base_never_shows_credentials_query_or_path(base: str) -> None:
    with pytest.raises(AsyncSyncError) as caught:
        TikTokClient(TOKEN, api_base=base)
    assert "SECRET" not in str(caught.value)


def test_the_library_client_takes_plain_http_elsewhere_only_when_told_to() -> None:
    client = TikTokClient(TOKEN, api_base="http://sandbox.internal:8080/", allow_plain_http=True)
    assert client.api_base == "http://sandbox.internal:8080"
    with pytest.raises(AsyncSyncError, match="must be an https:// URL"):
        TikTokClient(TOKEN, api_base="ftp://sandbox.internal", allow_plain_http=True)


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a self-signed certificate")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"), "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(d / "cert.pem", d / "key.pem")
    return context


async def test_an_untrusted_certificate_is_refused_and_no_request_reaches_the_server(
    self_signed: ssl.SSLContext,
) -> None:
    reached: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        reached.append(request.path)
        return web.json_response({"code": 0, "message": "OK", "data": {"list": []}})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner, base = await _serve(app, self_signed)
    try:
        async with TikTokClient(TOKEN, api_base=base, retry=NO_RETRY) as client:
            with pytest.raises(TransportError, match=r"(?i)certificate") as info:
                await client.list_audiences(ADVERTISER)
        assert TOKEN not in str(info.value)
    finally:
        await runner.cleanup()
    assert reached == []


def test_no_code_turns_tls_verification_off() -> None:
    import asyncsync

    package = Path(asyncsync.__file__).parent
    switches = ("ssl=False", "verify_ssl", "CERT_NONE", "check_hostname = False", "_unverified")
    for source in package.rglob("*.py"):
        text = source.read_text()
        for switch in switches:
            assert switch not in text, f"{source} has {switch}"
