"""``asyncsync sync`` as users run it: the README's first command, exit codes, --dry-run, --json.

Jobs run as subprocesses (``python -m asyncsync``) against a sandbox on loopback; usage errors
that stop before any I/O run through click's runner.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import sys
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers.api import ADVERTISER, CREATE, UPDATE, UPLOAD

from asyncsync.cli import main
from asyncsync.sandbox import Sandbox

TOKEN = "tok-SENTINEL-sync-0c8f2a"

SandboxFactory = Callable[..., AbstractAsyncContextManager[Sandbox]]


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> dict[str, object]:
        loaded = json.loads(self.out)
        assert isinstance(loaded, dict)
        return loaded


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIKTOK_", "ASYNCSYNC_"))}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "xdg"), XDG_STATE_HOME=str(tmp_path / "xdg-state"))
    env.update(extra)
    return env


async def cli(*args: str, env: dict[str, str]) -> Run:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "asyncsync",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    run = Run(proc.returncode, out.decode(), err.decode())
    assert TOKEN not in run.out + run.err
    return run


def _runner_env(env: dict[str, str]) -> dict[str, str | None]:
    """``env`` as CliRunner's overrides of the current environment."""
    overrides: dict[str, str | None] = {k: None for k in os.environ if k not in env}
    overrides.update({k: v for k, v in env.items() if os.environ.get(k) != v})
    return overrides


async def invoke(*args: str, env: dict[str, str]) -> Run:
    """Run the CLI through click's runner in a worker thread (its own event loop runs there,
    while the sandbox keeps serving on the test's loop)."""

    def run() -> Run:
        result = CliRunner().invoke(main, list(args), env=_runner_env(env), catch_exceptions=False)
        return Run(result.exit_code, result.stdout, result.stderr)

    run_ = await asyncio.wait_for(asyncio.to_thread(run), 120)
    assert TOKEN not in run_.out + run_.err
    return run_


def write_export(path: Path, rows: int, seed: int = 1) -> set[str]:
    """Mixed-case mobile IDs with duplicates and junk; returns the SHA-256 set to deliver."""
    rng = random.Random(seed)
    expected: set[str] = set()
    lines: list[str] = []
    for i in range(rows):
        maid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        expected.add(hashlib.sha256(maid.encode()).hexdigest())
        lines.append(maid.upper() if i % 2 else maid)
        if i % 40 == 0:
            lines += [maid, "", "00000000-0000-0000-0000-000000000000", "junk"]
    path.write_text("\n".join(lines) + "\n")
    return expected


def assert_one_line_error(run: Run, *needles: str) -> None:
    assert run.code == 2, (run.out, run.err)
    assert "Traceback" not in run.err
    lines = run.err.strip().splitlines()
    errors = [line for line in lines if line.startswith("asyncsync: error: ")]
    assert errors == lines[-1:], run.err  # one error line, the last (progress lines may precede)
    for needle in needles:
        assert needle in errors[0]


# -- the README's first command ------------------------------------------------------------------


async def test_readme_first_command_lands_the_sample_in_a_sandbox_audience(
    tmp_path: Path,
) -> None:
    env = env_for(tmp_path)
    sample = tmp_path / "sample.txt"
    made = await cli("sample", "-n", "30000", "-o", str(sample), env=env)
    assert made.code == 0, made.err
    run = await cli(
        "sync", str(sample), "--sandbox", "--name", "Sample audience", "--json", env=env
    )
    assert run.code == 0, run.err
    summary = run.json()
    assert summary["action"] == "create"
    assert isinstance(summary["rows_written"], int) and summary["rows_written"] > 20_000
    assert summary["sandbox_members"] == summary["rows_written"]
    assert summary["rows_valid"] == summary["rows_read"] - summary["rows_invalid"]  # type: ignore[operator]
    # The sandbox's journal went to a temporary directory, not the user's state directory.
    assert not (tmp_path / "xdg-state").exists()

    human = await cli("sync", str(sample), "--sandbox", "--name", "Sample audience", env=env)
    assert human.code == 0, human.err
    assert human.out == ""
    assert f"now holds {summary['rows_written']:,} members" in human.err
    assert "rows written" in human.err


# -- usage errors: exit 2, one line, no traceback ------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--advertiser-id", ADVERTISER, "--name", "n"], ["no access token", "asyncsync auth"]),
        (["--advertiser-id", ADVERTISER, "--audience-id", "123"], ["--audience-id needs --action"]),
        (["--name", "n"], ["TIKTOK_ADVERTISER_ID"]),
        (["--advertiser-id", ADVERTISER], ["--name NAME"]),
        (
            ["--advertiser-id", ADVERTISER, "--name", "n", "--api-base", "http://example.com"],
            ["non-loopback"],
        ),
        (["--advertiser-id", ADVERTISER, "--name", "n", "--action", "append"], ["--audience-id"]),
    ],
)
def test_bad_usage_exits_2_with_one_line(
    tmp_path: Path, args: list[str], needles: list[str]
) -> None:
    export = tmp_path / "ids.txt"
    write_export(export, 10)
    env = env_for(tmp_path)
    if "no access token" not in needles:
        env["TIKTOK_ACCESS_TOKEN"] = TOKEN
    result = CliRunner().invoke(main, ["sync", str(export), *args], env=env)
    run = Run(result.exit_code, result.stdout, result.stderr)
    assert_one_line_error(run, *needles)
    assert TOKEN not in run.err


def test_missing_input_file_exits_2_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    result = CliRunner().invoke(
        main,
        ["sync", str(missing), "--advertiser-id", ADVERTISER, "--name", "n"],
        env=env_for(tmp_path, TIKTOK_ACCESS_TOKEN=TOKEN),
    )
    assert_one_line_error(Run(result.exit_code, result.stdout, result.stderr), str(missing))


async def test_input_without_a_valid_id_exits_2_and_sends_nothing(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.issue_token(token=TOKEN)
    export = tmp_path / "junk.txt"
    export.write_text("hello\nworld\n\n")
    run = await invoke(
        "sync",
        str(export),
        "--advertiser-id",
        ADVERTISER,
        "--name",
        "n",
        "--api-base",
        sandbox.api_base,
        "--state-dir",
        str(tmp_path / "state"),
        env=env_for(tmp_path, TIKTOK_ACCESS_TOKEN=TOKEN),
    )
    assert_one_line_error(run, "junk.txt")
    assert sandbox.request_counts().get(UPLOAD, 0) == 0


# -- dry run, update, pause ----------------------------------------------------------------------


async def test_dry_run_plans_and_sends_nothing(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.issue_token(token=TOKEN)
    export = tmp_path / "ids.txt"
    expected = write_export(export, 5000)
    env = env_for(tmp_path, TIKTOK_ACCESS_TOKEN=TOKEN, TIKTOK_ADVERTISER_ID=ADVERTISER)
    args = [
        "sync",
        str(export),
        "--name",
        "planned",
        "--api-base",
        sandbox.api_base,
        "--state-dir",
        str(tmp_path / "state"),
        "--max-file-bytes",
        "100kB",
        "--json",
    ]
    dry = await invoke(*args, "--dry-run", env=env)
    assert dry.code == 0, dry.err
    plan = dry.json()["plan"]
    assert plan
    counts = sandbox.request_counts()
    assert counts.get(UPLOAD, 0) == counts.get(CREATE, 0) == counts.get(UPDATE, 0) == 0
    assert sandbox.state.audiences == {}

    real = await invoke(*args, env=env)
    assert real.code == 0, real.err
    summary = real.json()
    assert summary["resumed"] is False
    sandbox.clock.advance(1)  # the create operation ends
    assert sandbox.members(str(summary["audience_id"])) == expected


async def test_append_to_an_existing_audience_by_id(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.issue_token(token=TOKEN)
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    expected = write_export(first, 3000, seed=1) | write_export(second, 3000, seed=2)
    env = env_for(tmp_path, TIKTOK_ACCESS_TOKEN=TOKEN, TIKTOK_ADVERTISER_ID=ADVERTISER)
    common = ["--api-base", sandbox.api_base, "--state-dir", str(tmp_path / "s"), "--json"]
    created = await invoke("sync", str(first), "--name", "grows", *common, env=env)
    assert created.code == 0, created.err
    audience_id = str(created.json()["audience_id"])
    sandbox.clock.advance(1)  # the create operation ends
    appended = await invoke(
        "sync", str(second), "--audience-id", audience_id, "--action", "APPEND", *common, env=env
    )
    assert appended.code == 0, appended.err
    assert appended.json()["action"] == "append"
    sandbox.clock.advance(1)  # the append operation ends
    assert sandbox.members(audience_id) == expected


async def test_paused_job_exits_3_with_json_and_the_same_command_resumes(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    export = tmp_path / "ids.txt"
    expected = write_export(export, 6000)
    async with sandbox_factory(operation_seconds=3600) as sb:
        sb.issue_token(token=TOKEN)
        env = env_for(tmp_path, TIKTOK_ACCESS_TOKEN=TOKEN)
        args = [
            "sync",
            str(export),
            "--advertiser-id",
            ADVERTISER,
            "--name",
            "slow",
            "--api-base",
            sb.api_base,
            "--state-dir",
            str(tmp_path / "state"),
            "--max-file-bytes",
            "100kB",
            "--paths-per-call",
            "2",
            "--max-wait",
            "0",
            "--json",
        ]
        paused = await invoke(*args, env=env)
        assert paused.code == 3, paused.err
        summary = paused.json()
        assert summary["paused"] is True
        assert summary["pending"]
        assert "paused" in paused.err and "Traceback" not in paused.err

        # Each batch waits for the previous operation: end it, rerun, until the job is done.
        for _ in range(5):
            sb.clock.advance(7200)
            resumed = await invoke(*args, env=env)
            if resumed.code != 3:
                break
        assert resumed.code == 0, resumed.err
        done = resumed.json()
        assert done["resumed"] is True
        sb.clock.advance(7200)
        assert sb.members(str(done["audience_id"])) == expected


def test_sync_names_the_exact_count_of_national_phone_numbers(tmp_path: Path) -> None:
    from asyncsync.cli.sync import sync_command

    phones = [f"3749{i:07d}" for i in range(1200)]
    national = [f"06{i:08d}" for i in range(30)]
    bad = ["12ab", "+", "1" * 20]  # malformed, but not national numbers
    export = tmp_path / "phones.txt"
    export.write_text("\n".join(phones + national + bad) + "\n")
    args = [str(export), "--sandbox", "--name", "P", "--id-type", "phone", "--workers", "1"]
    runner = CliRunner()
    dry = runner.invoke(sync_command, [*args, "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    summary = json.loads(dry.stdout)
    assert summary["national_phones"] == 30 and summary["rejected"]["malformed"] == 33
    human = runner.invoke(sync_command, args)
    assert human.exit_code == 0, human.output
    assert "30 phone number(s) were national numbers" in human.output
    assert "--default-country" in human.output
    done = runner.invoke(sync_command, [*args, "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["national_phones"] == 30
