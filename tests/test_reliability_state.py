"""An unusable state directory (a torn or corrupt journal, a full disk, a path that cannot be a
directory) stops ``asyncsync sync`` with one clear line and exit 2, before any request that
depends on it; nothing reaches TikTok that the journal does not know about.

The CLI runs as a subprocess against a sandbox served by the test's own event loop, so the
sandbox's request counts show exactly what the job sent.
"""

from __future__ import annotations

import asyncio
import resource
import signal
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

from helpers.api import ADVERTISER, CREATE, UPDATE, UPLOAD
from test_reliability_faults import write_maids

from asyncsync.sandbox import Sandbox
from asyncsync.store.journal import JOURNAL_FILENAME


async def run_sync(
    sandbox: Sandbox,
    export: Path,
    state_dir: Path,
    *,
    name: str = "state test",
    preexec: Callable[[], None] | None = None,
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "asyncsync", "sync", str(export),
        "--advertiser-id", ADVERTISER, "--name", name,
        "--api-base", sandbox.api_base, "--state-dir", str(state_dir),
        "--max-file-bytes", "100kB", "--workers", "1", "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"TIKTOK_ACCESS_TOKEN": sandbox.issue_token(), "PATH": "/usr/bin:/bin"},
        preexec_fn=preexec,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("asyncsync: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    return lines[0]


async def test_corrupt_journal_is_refused_before_any_request(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    export = tmp_path / "ids.txt"
    write_maids(export, 2_000, seed=1)
    state = tmp_path / "state"
    state.mkdir()
    (state / JOURNAL_FILENAME).write_bytes(b"SQLite format 3\x00" + b"\xa5" * 8192)
    code, out, err = await run_sync(sandbox, export, state)
    assert code == 2, err
    assert out == ""
    line = one_error_line(err)
    assert JOURNAL_FILENAME in line and "corrupt" in line, line
    assert sandbox.request_counts() == {}


async def test_torn_journal_is_refused_and_its_job_is_not_resent(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    export = tmp_path / "ids.txt"
    write_maids(export, 4_000, seed=2)
    state = tmp_path / "state"
    code, _, err = await run_sync(sandbox, export, state)
    assert code == 0, err
    before = sandbox.request_counts()
    journal = state / JOURNAL_FILENAME
    data = journal.read_bytes()
    assert len(data) > 8192
    journal.write_bytes(data[: len(data) // 2 + 100])  # a write torn mid-page

    code, _, err = await run_sync(sandbox, export, state)
    assert code == 2, err
    line = one_error_line(err)
    assert "journal" in line, line
    assert sandbox.request_counts() == before
    assert len(sandbox.state.snapshot()["audiences"]) == 1


async def test_state_dir_under_a_regular_file_is_refused_before_any_request(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    export = tmp_path / "ids.txt"
    write_maids(export, 2_000, seed=3)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a regular file where the state directory should go\n")
    code, _, err = await run_sync(sandbox, export, blocker / "state")
    assert code == 2, err
    line = one_error_line(err)
    assert str(blocker) in line, line
    assert sandbox.request_counts() == {}


def _file_size_limit(limit: int) -> Callable[[], None]:
    """Run in the child: writes past ``limit`` bytes fail with EFBIG, as on a full disk."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


async def test_full_disk_is_one_clear_error_and_nothing_unjournaled_is_sent(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    export = tmp_path / "ids.txt"
    expected = write_maids(export, 20_000, seed=4)
    state = tmp_path / "state"
    outcomes: list[tuple[int, str]] = []
    # Small limits break the journal itself; larger ones let it open and break the parts.
    for limit in (20_000, 300_000):
        code, _, err = await run_sync(
            sandbox, export, state / str(limit), preexec=_file_size_limit(limit)
        )
        assert code == 2, err
        line = one_error_line(err)
        # Whether the journal or a part hit the limit, the line says what to do, and never
        # calls a healthy journal corrupt.
        assert "is the disk full" in line and "corrupt" not in line, line
        outcomes.append((limit, line))
        counts = sandbox.request_counts()
        assert counts.get(CREATE, 0) == counts.get(UPDATE, 0) == 0, counts
        if (state / str(limit) / JOURNAL_FILENAME).exists() and counts.get(UPLOAD):
            with sqlite3.connect(state / str(limit) / JOURNAL_FILENAME) as db:
                known = db.execute("SELECT count(*) FROM parts").fetchone()[0]
            assert counts[UPLOAD] <= known, (counts, known)
    assert any("journal" in line for _, line in outcomes), outcomes

    # With room again, the same command finishes the job.
    code, _, err = await run_sync(sandbox, export, state / "300000")
    assert code == 0, err
    [audience] = sandbox.state.snapshot()["audiences"]
    sandbox.clock.advance(60)
    assert sandbox.members(audience["audience_id"]) == expected
