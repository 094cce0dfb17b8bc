"""Every command, run with a sentinel access token and app secret (and with debug logging and
``ASYNCSYNC_DEBUG`` on), never shows them: not on stdout or stderr, not in the journal, not in
any file it writes, except the token file, which is mode 0600 in a 0700 directory.
"""

from __future__ import annotations

import asyncio
import json
import signal
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from helpers.api import ADVERTISER

from asyncsync.sandbox import Sandbox

TOKEN = "tok-SENTINEL-5b1e07c2d9a4"
UNKNOWN_TOKEN = "tok-SENTINEL-unknown-88f3a1"
APP_ID = "7100000000000000009"
APP_SECRET = "sec-SENTINEL-c0ffee7d41"

DEBUG_MAIN = (
    "import logging, sys; logging.basicConfig(level=logging.DEBUG, stream=sys.stderr); "
    "from asyncsync.cli import main; main(prog_name='asyncsync')"
)
"""The CLI with every logger (ours, aiohttp's, asyncio's) at DEBUG level on stderr."""


@dataclass
class Ran:
    args: tuple[str, ...]
    code: int
    out: bytes
    err: bytes


class Runner:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.runs: list[Ran] = []

    async def __call__(self, *args: str, ok: bool = True, **env: str) -> Ran:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", DEBUG_MAIN, *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
            env={**self.env, **env},
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode is not None
        ran = Ran(args, proc.returncode, out, err)
        self.runs.append(ran)
        if ok:
            assert ran.code == 0, (args, err.decode())
        return ran


def files_under(root: Path, but: Path | None = None) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p != but]


async def test_no_command_shows_the_token_or_app_secret_anywhere(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.issue_token(token=TOKEN)
    code = sandbox.issue_auth_code(app_id=APP_ID, secret=APP_SECRET, advertiser_ids=[ADVERTISER])
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "ASYNCSYNC_DEBUG": "1",
    }
    run = Runner(env)
    api = ("--api-base", sandbox.api_base, "--advertiser-id", ADVERTISER)
    out = tmp_path / "out"
    ids = out / "ids.txt"
    out.mkdir()
    with_token = {"TIKTOK_ACCESS_TOKEN": TOKEN}

    await run("sample", "-n", "3000", "-o", str(ids), "--seed", "3")
    await run("prepare", str(ids), "-o", str(out / "prepared"), "--json")
    await run("sync", str(ids), "--name", "secrets", *api, "--dry-run", "--json", **with_token)
    synced = await run("sync", str(ids), "--name", "secrets", *api, "--json", **with_token)
    audience_id = json.loads(synced.out)["audience_id"]
    sandbox.clock.advance(60)
    await run("audiences", "list", *api, "--json", **with_token)
    await run("audiences", "get", audience_id, *api, "--json", **with_token)
    await run("audiences", "rename", audience_id, "renamed", *api, **with_token)

    url = await run("auth", "url", "--app-id", APP_ID, "--redirect-uri", "https://example.com/cb")
    assert b"example.com" in url.out + url.err
    await run(
        "auth", "token", "--app-id", APP_ID, "--auth-code", code,
        "--api-base", sandbox.api_base, TIKTOK_APP_SECRET=APP_SECRET,
    )  # fmt: skip
    token_file = home / ".config" / "asyncsync" / "token"
    stored = token_file.read_text().strip()
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    # Commands without TIKTOK_ACCESS_TOKEN read the token file.
    await run("audiences", "delete", audience_id, "--yes", *api)
    refused = await run("audiences", "list", *api, ok=False, TIKTOK_ACCESS_TOKEN=UNKNOWN_TOKEN)
    assert refused.code == 1
    await run(
        "auth", "revoke", "--app-id", APP_ID, "--api-base", sandbox.api_base, "--keep-file",
        TIKTOK_APP_SECRET=APP_SECRET,
    )  # fmt: skip
    failed = await run(
        "auth", "revoke", "--app-id", APP_ID, "--api-base", sandbox.api_base,
        ok=False, TIKTOK_APP_SECRET=APP_SECRET,
    )  # fmt: skip
    assert failed.code != 0  # revoked already: the error must not quote it either

    needles = [s.encode() for s in (TOKEN, UNKNOWN_TOKEN, APP_SECRET, stored)]
    for ran in run.runs:
        for needle in needles:
            assert needle not in ran.out, (ran.args, needle)
            assert needle not in ran.err, (ran.args, needle)
    written = files_under(tmp_path, but=token_file)
    assert any(p.name.startswith("journal") for p in written), written
    for path in written:
        data = path.read_bytes()
        for needle in needles:
            assert needle not in data, (path, needle)


async def test_sandbox_command_prints_its_token_once_on_stdout_and_nowhere_else(
    tmp_path: Path,
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", DEBUG_MAIN, "sandbox", "--port", "0", "--json", "--token", TOKEN,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "ASYNCSYNC_DEBUG": "1"},
    )  # fmt: skip
    assert proc.stdout is not None
    first = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
    assert json.loads(first)["access_token"] == TOKEN
    proc.send_signal(signal.SIGTERM)
    rest, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert TOKEN.encode() not in rest
    assert TOKEN.encode() not in err
    assert not [p for p in files_under(tmp_path) if TOKEN.encode() in p.read_bytes()]
