"""``asyncsync audiences list|get|rename|delete`` run as subprocesses against a sandbox."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import pty
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers.api import ADVERTISER

from asyncsync.cli import main
from asyncsync.sandbox import Sandbox
from asyncsync.tiktok.client import TikTokClient

TOKEN = "tok-SENTINEL-audiences-51c3"


@dataclass
class Run:
    code: int
    out: str
    err: str


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIKTOK_", "ASYNCSYNC_"))}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "xdg"), TIKTOK_ACCESS_TOKEN=TOKEN)
    env.update(extra)
    return env


async def cli(sb: Sandbox, tmp_path: Path, *args: str, **env: str) -> Run:
    argv = ["audiences", *args, "--advertiser-id", ADVERTISER, "--api-base", sb.api_base]
    run = await invoke(argv, env_for(tmp_path, **env))
    assert TOKEN not in run.out + run.err
    return run


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


async def make_audiences(sb: Sandbox, tmp_path: Path, names: list[str]) -> list[str]:
    sb.issue_token(token=TOKEN)
    part = tmp_path / "part.txt"
    part.write_text("".join(hashlib.sha256(b"%d" % i).hexdigest() + "\n" for i in range(20)))
    async with TikTokClient(TOKEN, api_base=sb.api_base, requests_per_second=None) as client:
        uploaded = await client.upload_file(ADVERTISER, part, "FIRST_SHA256")
        return [
            await client.create_audience(ADVERTISER, name, [uploaded.file_path], "FIRST_SHA256")
            for name in names
        ]


async def test_list_returns_every_audience_across_pages(sandbox: Sandbox, tmp_path: Path) -> None:
    names = [f"aud-{i:03d}" for i in range(105)]
    ids = await make_audiences(sandbox, tmp_path, names)
    run = await cli(sandbox, tmp_path, "list", "--json")
    assert run.code == 0, run.err
    listed = json.loads(run.out)["audiences"]
    assert sorted(a["audience_id"] for a in listed) == sorted(ids)
    assert sorted(a["name"] for a in listed) == names
    human = await cli(sandbox, tmp_path, "list")
    assert human.code == 0 and "aud-104" in human.err and human.out == ""


async def test_get_shows_details_and_rename_changes_only_the_name(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    [audience_id] = await make_audiences(sandbox, tmp_path, ["before"])
    renamed = await cli(sandbox, tmp_path, "rename", audience_id, "after rename", "--json")
    assert renamed.code == 0, renamed.err
    got = await cli(sandbox, tmp_path, "get", audience_id, "--json")
    assert got.code == 0, got.err
    [audience] = json.loads(got.out)["audiences"]
    assert audience["audience_id"] == audience_id
    assert audience["name"] == "after rename"
    assert audience["calculate_type"] == "FIRST_SHA256"
    sandbox.clock.advance(1)  # the create operation ends
    assert len(sandbox.members(audience_id)) == 20


async def test_delete_needs_yes_when_not_on_a_terminal(sandbox: Sandbox, tmp_path: Path) -> None:
    ids = await make_audiences(sandbox, tmp_path, ["a", "b", "c"])
    refused = await cli(sandbox, tmp_path, "delete", ids[0], ids[1])
    assert refused.code == 2
    assert "--yes" in refused.err and refused.err.count("\n") == 1
    assert set(ids) <= set(sandbox.state.audiences)
    deleted = await cli(sandbox, tmp_path, "delete", ids[0], ids[1], "--yes", "--json")
    assert deleted.code == 0, deleted.err
    assert json.loads(deleted.out) == {"deleted": ids[:2]}
    assert set(sandbox.state.audiences) & set(ids) == {ids[2]}


@pytest.mark.parametrize(("answer", "gone"), [(b"n\n", False), (b"y\n", True)])
async def test_delete_asks_on_a_terminal(
    sandbox: Sandbox, tmp_path: Path, answer: bytes, gone: bool
) -> None:
    [audience_id] = await make_audiences(sandbox, tmp_path, ["asked"])
    primary, secondary = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "asyncsync",
        "audiences",
        "delete",
        audience_id,
        "--advertiser-id",
        ADVERTISER,
        "--api-base",
        sandbox.api_base,
        stdin=secondary,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env_for(tmp_path),
    )
    os.close(secondary)
    try:
        os.write(primary, answer)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        os.close(primary)
    assert "Delete 1 audience(s)" in err.decode()
    assert proc.returncode == (0 if gone else 1)
    assert (audience_id not in sandbox.state.audiences) is gone


async def test_advertiser_id_comes_from_the_environment_and_is_required(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.issue_token(token=TOKEN)
    argv = ["audiences", "list", "--api-base", sandbox.api_base, "--json"]
    missing = await invoke(argv, env_for(tmp_path))
    assert missing.code == 2
    assert "TIKTOK_ADVERTISER_ID" in missing.err
    listed = await invoke(argv, env_for(tmp_path, TIKTOK_ADVERTISER_ID=ADVERTISER))
    assert listed.code == 0, listed.err
    assert json.loads(listed.out) == {"audiences": []}


async def test_plain_http_to_a_remote_host_is_refused_before_sending(tmp_path: Path) -> None:
    argv = ["audiences", "list", "--advertiser-id", ADVERTISER]
    run = await invoke([*argv, "--api-base", "http://business-api.tiktok.com"], env_for(tmp_path))
    assert run.code == 2
    assert "non-loopback" in run.err and run.err.count("\n") == 1
