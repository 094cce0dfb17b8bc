"""Ctrl-C (SIGINT) in each stage of ``asyncsync sync`` exits 130 within 5 s with a consistent
journal (SIGTERM: 143), and the same command then finishes the job exactly; SIGKILL at many
seeded moments never costs a second audience, a lost ID or a part uploaded twice outside those
in flight.

Uses the harness of ``tests/helpers/process.py`` (a sandbox in its own process, the job in its
own process group); ``test_crash_resume.py`` covers Ctrl-C while uploading and four kill points.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.api import ADVERTISER, CREATE, UPDATE, UPLOAD
from helpers.ids import write_messy_maids
from helpers.process import Job, SandboxProcess, cli_env, deliver_through_random_kills

from asyncsync.store.journal import JOURNAL_FILENAME


def sync_job(sb: SandboxProcess, tmp_path: Path, export: Path, name: str, **opts: str) -> Job:
    args = [
        sys.executable, "-m", "asyncsync", "sync", str(export),
        "--advertiser-id", ADVERTISER, "--name", name,
        "--api-base", sb.api_base, "--state-dir", str(tmp_path / "state"),
        "--workers", "2", "--json",
    ]  # fmt: skip
    for key, value in opts.items():
        args += [f"--{key.replace('_', '-')}", value]
    return Job(args, cli_env(tmp_path))


def check_journal(state_dir: Path, uploads_received: int) -> None:
    """The interrupted job's journal: intact, one unfinished job, at most one operation whose
    outcome is unknown (the one in flight), no upload recorded that TikTok did not receive."""
    with sqlite3.connect(state_dir / JOURNAL_FILENAME) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        statuses = [row[0] for row in db.execute("SELECT status FROM jobs")]
        assert statuses == ["active"], statuses
        unknown = db.execute("SELECT count(*) FROM operations WHERE outcome IS NULL").fetchone()
        assert unknown[0] <= 1
        recorded = db.execute("SELECT count(*) FROM parts WHERE file_path IS NOT NULL").fetchone()
        assert recorded[0] <= uploads_received


def interrupt_when(
    job: Job, reached: Callable[[], bool], sig: signal.Signals = signal.SIGINT
) -> float:
    """Start the job, send ``sig`` (SIGINT to its process group, as Ctrl-C does; SIGTERM to
    the command alone, as ``kill`` does) once ``reached()``; returns how long it took to exit
    (asserting exit code 130 or 143 and the one-line message)."""
    proc = job.start()
    deadline = time.monotonic() + 60
    while not reached():
        assert proc.poll() is None, "the job ended before the moment came"
        assert time.monotonic() < deadline, "the moment never came"
        time.sleep(0.005)
    if sig is signal.SIGINT:
        os.killpg(proc.pid, sig)
    else:
        os.kill(proc.pid, sig)
    sent = time.monotonic()
    code = job.collect(proc, timeout=15)
    took = time.monotonic() - sent
    assert code == 128 + sig, job.outputs[-1].decode()
    last = job.outputs[-1].decode().strip().splitlines()[-1]
    what = "interrupted" if sig is signal.SIGINT else "terminated (SIGTERM)"
    assert last == f"asyncsync: {what}; run the same command again to resume"
    return took


def finish(job: Job, sb: SandboxProcess, name: str, expected: set[str]) -> None:
    rerun = job.start()
    assert job.collect(rerun) == 0, job.outputs[-1].decode()
    summary = json.loads(job.outputs[-2])
    assert summary["resumed"] is True
    [audience] = sb.audiences_named(name)
    assert audience["audience_id"] == summary["audience_id"]
    assert sb.members(audience["audience_id"]) == expected


def test_sigint_while_hashing_exits_130_within_5s_and_the_rerun_finishes(
    sandbox_process: SandboxProcess, tmp_path: Path
) -> None:
    sb = sandbox_process
    export = tmp_path / "export.txt"
    expected = write_messy_maids(export, 100_000, seed=31)
    job = sync_job(sb, tmp_path, export, "sigint hashing")
    work = tmp_path / "state" / "work"

    def hashing() -> bool:
        # The job's work dir holds spill runs, and not one part has gone out yet.
        started = work.exists() and any(p.is_file() for p in work.rglob("*"))
        return started and sb.counts().get(UPLOAD, 0) == 0

    took = interrupt_when(job, hashing)
    assert took < 5
    assert sb.counts().get(UPLOAD, 0) == 0
    check_journal(tmp_path / "state", 0)
    finish(job, sb, "sigint hashing", expected)


def test_sigterm_while_hashing_exits_143_within_5s_and_the_rerun_finishes(
    sandbox_process: SandboxProcess, tmp_path: Path
) -> None:
    sb = sandbox_process
    export = tmp_path / "export.txt"
    expected = write_messy_maids(export, 100_000, seed=33)
    job = sync_job(sb, tmp_path, export, "sigterm hashing")
    work = tmp_path / "state" / "work"

    def hashing() -> bool:
        started = work.exists() and any(p.is_file() for p in work.rglob("*"))
        return started and sb.counts().get(UPLOAD, 0) == 0

    took = interrupt_when(job, hashing, signal.SIGTERM)
    assert took < 5
    assert sb.counts().get(UPLOAD, 0) == 0
    check_journal(tmp_path / "state", 0)
    finish(job, sb, "sigterm hashing", expected)


def test_sigint_during_audience_operations_exits_130_within_5s_and_the_rerun_finishes(
    sandbox_process: SandboxProcess, tmp_path: Path
) -> None:
    sb = sandbox_process
    export = tmp_path / "export.txt"
    expected = write_messy_maids(export, 12_000, seed=32)
    name = "sigint operations"
    job = sync_job(sb, tmp_path, export, name, max_file_bytes="60kB", paths_per_call="4")
    took = interrupt_when(job, lambda: sb.counts().get(UPDATE, 0) >= 1)
    assert took < 5
    check_journal(tmp_path / "state", sb.counts()[UPLOAD])
    finish(job, sb, name, expected)
    # Resuming sent no second create: the audience of the first run took every batch.
    assert sb.counts()[CREATE] == 1


@pytest.mark.slow
@pytest.mark.parametrize("seed", [101, 102, 103, 104, 105, 106])
def test_sigkill_sweep_of_24_seeded_points_delivers_exactly_once(
    sandbox_process: SandboxProcess, tmp_path: Path, seed: int
) -> None:
    """Six seeds of four kills each (hashing, uploading, creating, appending): 24 points."""
    deliver_through_random_kills(sandbox_process, tmp_path, seed)
