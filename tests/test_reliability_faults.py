"""Sync jobs under a storm of injected faults, and across a sandbox that lost its state, still end
with one audience holding exactly the input's IDs.

The sandbox runs in the test's event loop; the client retries with its real backoff policy,
scaled down (short delays) so that the storm costs seconds, not minutes.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

from helpers.api import ADVERTISER, UPLOAD
from helpers.ids import write_maids
from helpers.process import TOKEN, SandboxProcess, cli_env

from asyncsync import sync_audience
from asyncsync.errors import OutcomeUnknownError
from asyncsync.events import Event, PartUploaded
from asyncsync.sandbox import FaultConfig, Sandbox
from asyncsync.tiktok.client import TikTokClient
from asyncsync.tiktok.retry import RetryPolicy

SandboxFactory = Callable[..., AbstractAsyncContextManager[Sandbox]]

STORM = FaultConfig(
    rate_limit=0.10,
    server_error=0.02,
    http_503=0.01,
    drop=0.01,
    slow=0.05,
    slow_seconds=0.1,
    seed=7,
)
"""The soak's mix: 10 % rate limits, 2 % TikTok 5xx codes, 1 % HTTP 503, 1 % dropped
connections, 5 % answers delayed by 0.1 s."""

STORM_IDS = 1_000_000
"""IDs of the storm test: 1 M mobile IDs (about 15 s on a 2-core machine)."""

FAST_RETRY = RetryPolicy(attempts=12, initial_delay=0.01, max_delay=0.2, total_timeout=60.0)


def settled_members(sb: Sandbox, audience_id: str | None) -> frozenset[str]:
    """The audience's members once its last operation has finished on the sandbox clock."""
    assert audience_id is not None
    sb.clock.advance(60)
    return sb.members(audience_id)


def client_for(sb: Sandbox, token: str) -> TikTokClient:
    return TikTokClient(token, api_base=sb.api_base, retry=FAST_RETRY, requests_per_second=None)


async def test_fault_storm_of_a_million_ids_ends_with_the_exact_set(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    export = tmp_path / "export.txt"
    expected = write_maids(export, STORM_IDS, seed=1)
    async with sandbox_factory(faults=STORM, min_members=1) as sb:
        started = time.monotonic()
        async with client_for(sb, sb.issue_token()) as client:
            for _ in range(10):  # a create whose answer a fault took stops the run: rerun
                try:
                    result = await sync_audience(
                        client,
                        export,
                        advertiser_id=ADVERTISER,
                        name="storm",
                        state_dir=tmp_path / "state",
                        max_file_bytes=250_000,
                        paths_per_call=20,
                        concurrency=4,
                        workers=2,
                        poll_interval=0.02,
                        reconcile_window=1.0,
                    )
                    break
                except OutcomeUnknownError:
                    continue
        elapsed = time.monotonic() - started
        faults = sb.fault_counts()
        audiences = sb.state.snapshot()["audiences"]
        members = settled_members(sb, result.audience_id)
    assert [a["audience_id"] for a in audiences] == [result.audience_id]
    assert result.rows_written == len(expected)
    assert members == expected
    # The storm did happen: every kind of fault hit the job, and it retried through them.
    assert all(faults[kind] > 0 for kind in ("rate_limit", "server_error", "drop", "slow")), faults
    assert result.retries >= faults["rate_limit"] + faults["server_error"]
    assert elapsed < 60, elapsed
    print(f"storm: {STORM_IDS:,} IDs, {result.parts} parts in {elapsed:.1f} s, faults {faults}")


async def test_sandbox_restart_mid_job_reuploads_lost_parts_and_ends_exact(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    export = tmp_path / "export.txt"
    expected = write_maids(export, 30_000, seed=2)
    async with sandbox_factory(min_members=1) as sb:
        uploaded = 0

        def forget_after_third_part(event: Event) -> None:
            # TikTok loses every file_path uploaded so far (as a restarted sandbox does): the
            # create that names them answers 40910.
            nonlocal uploaded
            if isinstance(event, PartUploaded) and not event.reused:
                uploaded += 1
                if uploaded == 3:
                    sb.state.reset()

        async with client_for(sb, sb.issue_token()) as client:
            result = await sync_audience(
                client,
                export,
                advertiser_id=ADVERTISER,
                name="restarted",
                state_dir=tmp_path / "state",
                max_file_bytes=200_000,
                paths_per_call=3,
                concurrency=1,
                workers=1,
                poll_interval=0.02,
                reporter=forget_after_third_part,
            )
        counts = sb.request_counts()
        audiences = sb.state.snapshot()["audiences"]
        members = settled_members(sb, result.audience_id)
    upload = UPLOAD
    assert uploaded >= 3 + 3, "the lost parts were not uploaded again"
    assert counts[upload] == result.parts + 3
    assert [a["audience_id"] for a in audiences] == [result.audience_id]
    assert members == expected


def _sandbox_on(port: int, tmp_path: Path) -> SandboxProcess:
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "asyncsync", "sandbox", "--port", str(port), "--json",
            "--token", TOKEN, "--operation-seconds", "0.05",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=cli_env(tmp_path),
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, "the sandbox did not start"
    return SandboxProcess(proc, json.loads(line)["api_base"])


def _stop(sb: SandboxProcess) -> None:
    sb.proc.kill()
    sb.proc.wait(10)
    if sb.proc.stdout is not None:
        sb.proc.stdout.close()


def test_sandbox_process_killed_and_restarted_mid_job_ends_exact(tmp_path: Path) -> None:
    """The TikTok emulator dies (SIGKILL) while parts stream up and comes back on the same port
    with no memory of them: the job rides out the refused connections, re-uploads the parts
    TikTok forgot (40910 on the create) and ends with one audience holding the exact set."""
    export = tmp_path / "export.txt"
    expected = write_maids(export, 20_000, seed=3)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    first = _sandbox_on(port, tmp_path)
    second: SandboxProcess | None = None
    job = subprocess.Popen(
        [
            sys.executable, "-m", "asyncsync", "sync", str(export),
            "--advertiser-id", ADVERTISER, "--name", "restarted",
            "--api-base", first.api_base, "--state-dir", str(tmp_path / "state"),
            "--max-file-bytes", "60kB", "--paths-per-call", "10", "--concurrency", "2",
            "--workers", "1", "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(tmp_path),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while first.counts().get(UPLOAD, 0) < 4:
            assert job.poll() is None, "the job ended before the restart"
            assert time.monotonic() < deadline
            time.sleep(0.005)
        _stop(first)
        time.sleep(0.3)
        second = _sandbox_on(port, tmp_path)
        out, err = job.communicate(timeout=120)
        assert job.returncode == 0, err.decode()
        summary = json.loads(out)
        [audience] = second.audiences_named("restarted")
        assert audience["audience_id"] == summary["audience_id"]
        assert second.members(audience["audience_id"]) == expected
        # Every part the new sandbox holds was uploaded to it: the forgotten ones again.
        assert second.counts()[UPLOAD] >= summary["parts"]
    finally:
        if job.poll() is None:
            job.kill()
            job.communicate()
        for sb in (first, second):
            if sb is not None and sb.proc.poll() is None:
                _stop(sb)
