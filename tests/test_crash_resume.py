"""Kill ``asyncsync sync`` at random moments (SIGKILL, SIGINT) and rerun it: the job still ends
with one audience holding exactly the input's IDs, and no part is uploaded twice except those in
flight at a kill.

The sandbox runs in its own process (``python -m asyncsync sandbox``) so that it outlives every
killed job; the job runs as a subprocess in its own process group, which is killed whole (its
hashing workers included), as an out-of-memory kill or a power cut would.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from helpers.api import ADVERTISER, UPLOAD
from helpers.ids import write_messy_maids
from helpers.process import (
    Job,
    SandboxProcess,
    cli_env,
    deliver_through_random_kills,
    no_secret_anywhere,
)


@pytest.mark.parametrize("seed", [11, pytest.param(23, marks=pytest.mark.slow)])
def test_rerun_after_sigkill_at_random_moments_delivers_exactly_once(
    sandbox_process: SandboxProcess, tmp_path: Path, seed: int
) -> None:
    deliver_through_random_kills(sandbox_process, tmp_path, seed)


def test_sigint_exits_130_within_5s_and_the_rerun_finishes(
    sandbox_process: SandboxProcess, tmp_path: Path
) -> None:
    export = tmp_path / "export.txt"
    expected = write_messy_maids(export, 10_000, 5)
    state_dir = tmp_path / "state"
    job = Job(
        [
            sys.executable,
            "-m",
            "asyncsync",
            "sync",
            str(export),
            "--advertiser-id",
            ADVERTISER,
            "--name",
            "interrupted",
            "--api-base",
            sandbox_process.api_base,
            "--state-dir",
            str(state_dir),
            "--max-file-bytes",
            "60kB",
            "--paths-per-call",
            "5",
            "--workers",
            "2",
            "--json",
        ],
        cli_env(tmp_path),
    )
    proc = job.start()
    deadline = time.monotonic() + 60
    while sandbox_process.counts().get(UPLOAD, 0) < 2:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C on a terminal: the job and its workers
    sent = time.monotonic()
    code = job.collect(proc, timeout=10)
    assert code == 130, job.outputs[-1].decode()
    assert time.monotonic() - sent < 5
    last = job.outputs[-1].decode().strip().splitlines()[-1]
    assert last == "asyncsync: interrupted; run the same command again to resume"

    rerun = job.start()
    assert job.collect(rerun) == 0, job.outputs[-1].decode()
    summary = json.loads(job.outputs[-2])
    assert summary["resumed"] is True
    [audience] = sandbox_process.audiences_named("interrupted")
    assert sandbox_process.members(audience["audience_id"]) == expected
    no_secret_anywhere(job, state_dir)
