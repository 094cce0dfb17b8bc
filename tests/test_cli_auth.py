"""``asyncsync auth url|token|revoke`` run as subprocesses against a sandbox over loopback."""

from __future__ import annotations

import asyncio
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from click.testing import CliRunner
from helpers.api import ADVERTISER

from asyncsync.cli import main
from asyncsync.sandbox import Sandbox

APP_ID = "7100000000000000001"
APP_SECRET = "app-secret-SENTINEL-9d2e"


@dataclass
class Run:
    code: int
    out: str
    err: str


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIKTOK_", "ASYNCSYNC_"))}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    env.update(extra)
    return env


async def cli(*args: str, env: dict[str, str]) -> Run:
    return await invoke(list(args), env)


def _runner_env(env: dict[str, str]) -> dict[str, str | None]:
    """``env`` as CliRunner's overrides of the current environment."""
    overrides: dict[str, str | None] = {k: None for k in os.environ if k not in env}
    overrides.update({k: v for k, v in env.items() if os.environ.get(k) != v})
    return overrides


async def invoke(args: list[str], env: dict[str, str]) -> Run:
    """Run the CLI through click's runner in a worker thread (the CLI runs its own event loop
    there, while the sandbox keeps serving on the test's loop)."""

    def run() -> Run:
        result = CliRunner().invoke(main, args, env=_runner_env(env), catch_exceptions=False)
        return Run(result.exit_code, result.stdout, result.stderr)

    return await asyncio.wait_for(asyncio.to_thread(run), 60)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def auth_code_from_portal(url: str) -> str:
    """Follow the authorization page as a browser would, up to the redirect."""
    async with aiohttp.ClientSession() as session, session.get(url, allow_redirects=False) as r:
        assert r.status == 302
        location = r.headers["Location"]
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == ["xyz"]
    return query["auth_code"][0]


async def test_full_oauth_flow_stores_a_private_token_that_other_commands_use(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.register_app(app_id=APP_ID, secret=APP_SECRET, advertiser_ids=[ADVERTISER])
    secret_file = tmp_path / "secret"
    secret_file.write_text(APP_SECRET + "\n")
    secret_file.chmod(0o600)
    token_file = tmp_path / "conf" / "asyncsync" / "token"
    env = clean_env(tmp_path)
    base = ["--api-base", sandbox.api_base]
    runs: list[Run] = []

    url = await cli(
        "auth",
        "url",
        "--app-id",
        APP_ID,
        "--redirect-uri",
        "https://example.com/cb",
        "--state",
        "xyz",
        *base,
        env=env,
    )
    runs.append(url)
    assert url.code == 0, url.err
    assert url.out.startswith(f"{sandbox.api_base}/portal/auth?")
    code = await auth_code_from_portal(url.out.strip())

    stored = await cli(
        "auth",
        "token",
        "--app-id",
        APP_ID,
        "--auth-code",
        code,
        "--secret-file",
        str(secret_file),
        "--token-file",
        str(token_file),
        *base,
        env=env,
    )
    runs.append(stored)
    assert stored.code == 0, stored.err
    assert mode(token_file) == 0o600
    assert mode(token_file.parent) == 0o700
    token = token_file.read_text().strip()
    assert token in sandbox.state.tokens

    listed = await cli(
        "audiences",
        "list",
        "--advertiser-id",
        ADVERTISER,
        "--access-token-file",
        str(token_file),
        "--json",
        *base,
        env=env,
    )
    runs.append(listed)
    assert listed.code == 0, listed.err
    assert listed.out.strip() == '{"audiences": []}'

    revoked = await cli(
        "auth",
        "revoke",
        "--app-id",
        APP_ID,
        "--secret-file",
        str(secret_file),
        "--access-token-file",
        str(token_file),
        *base,
        env=env,
    )
    runs.append(revoked)
    assert revoked.code == 0, revoked.err
    assert not token_file.exists()

    refused = await cli(
        "audiences",
        "list",
        "--advertiser-id",
        ADVERTISER,
        *base,
        env=clean_env(tmp_path, TIKTOK_ACCESS_TOKEN=token),
    )
    runs.append(refused)
    assert refused.code == 1
    assert "40105" in refused.err
    assert refused.err.count("\n") == 1 and "Traceback" not in refused.err

    for run in runs:
        for secret in (token, APP_SECRET):
            assert secret not in run.out and secret not in run.err


async def test_auth_token_writes_the_default_token_file_that_commands_read_by_default(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    code = sandbox.issue_auth_code(app_id=APP_ID, secret=APP_SECRET, advertiser_ids=[ADVERTISER])
    env = clean_env(tmp_path, TIKTOK_APP_SECRET=APP_SECRET)
    stored = await cli(
        "auth",
        "token",
        "--app-id",
        APP_ID,
        "--auth-code",
        code,
        "--api-base",
        sandbox.api_base,
        "--json",
        env=env,
    )
    assert stored.code == 0, stored.err
    default = tmp_path / "xdg" / "asyncsync" / "token"
    assert mode(default) == 0o600 and mode(default.parent) == 0o700
    assert f'"advertiser_ids": ["{ADVERTISER}"]' in stored.out
    listed = await cli(
        "audiences",
        "list",
        "--api-base",
        sandbox.api_base,
        env=dict(env, TIKTOK_ADVERTISER_ID=ADVERTISER),
    )
    assert listed.code == 0, listed.err
    assert "no audiences" in listed.err


async def test_auth_code_used_twice_fails_and_leaves_no_token_file(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    code = sandbox.issue_auth_code(app_id=APP_ID, secret=APP_SECRET, advertiser_ids=[ADVERTISER])
    env = clean_env(tmp_path, TIKTOK_APP_SECRET=APP_SECRET)
    first_file, second_file = tmp_path / "t1", tmp_path / "t2"
    args = ["auth", "token", "--app-id", APP_ID, "--auth-code", code]
    first = await cli(
        *args, "--token-file", str(first_file), "--api-base", sandbox.api_base, env=env
    )
    assert first.code == 0, first.err
    second = await cli(
        *args, "--token-file", str(second_file), "--api-base", sandbox.api_base, env=env
    )
    assert second.code == 1
    assert "40110" in second.err and "Traceback" not in second.err
    assert not second_file.exists()


async def test_auth_token_without_a_secret_exits_2_and_takes_none_from_argv(
    tmp_path: Path,
) -> None:
    env = clean_env(tmp_path)
    missing = await cli("auth", "token", "--app-id", APP_ID, "--auth-code", "c", env=env)
    assert missing.code == 2
    assert "TIKTOK_APP_SECRET" in missing.err and "--secret-file" in missing.err
    on_argv = await cli(
        "auth", "token", "--app-id", APP_ID, "--auth-code", "c", "--secret", "x", env=env
    )
    assert on_argv.code == 2
    assert "No such option" in on_argv.err


@pytest.mark.parametrize("loose", [0o640, 0o604])
async def test_token_file_readable_by_others_is_refused_as_ssh_does(
    tmp_path: Path, loose: int
) -> None:
    token_file = tmp_path / "xdg" / "asyncsync" / "token"
    token_file.parent.mkdir(parents=True)
    token_file.write_text("tok-SENTINEL-loose\n")
    token_file.chmod(loose)
    run = await cli(
        "audiences",
        "list",
        "--advertiser-id",
        ADVERTISER,
        "--api-base",
        "http://127.0.0.1:9",
        env=clean_env(tmp_path),
    )
    assert run.code == 2
    assert f"{loose:04o}" in run.err and "chmod 600" in run.err
    assert "tok-SENTINEL-loose" not in run.err


def test_auth_url_points_at_tiktoks_portal_by_default(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["auth", "url", "--app-id", APP_ID, "--redirect-uri", "https://example.com/cb?x=1"],
        env=clean_env(tmp_path),
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        "https://business-api.tiktok.com/portal/auth?app_id=7100000000000000001"
        "&redirect_uri=https%3A%2F%2Fexample.com%2Fcb%3Fx%3D1"
    )
