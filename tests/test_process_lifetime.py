"""The hashing pool never outlives the command, however the command dies, and SIGTERM stops it
as cleanly as Ctrl-C does.

Each test runs ``asyncsync prepare -`` as a real process in its own session, fed through a pipe
that the test keeps open (so the command is mid-run, its pool started, for as long as the test
needs), with its stdout on a pipe the test reads as ``| cat`` would. Linux only: the process
group is read from ``/proc``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="reads the process group from /proc"
)

TIMEOUT_S = 60.0
"""Generous: the machine may be loaded; every wait polls and ends as soon as the condition holds."""


def live_in_group(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that are alive (zombies waiting to be reaped do not count)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(entry))
    return pids


def wait_for(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def lines(n: int) -> bytes:
    return "".join(f"{uuid.UUID(int=i * 7919 + 3)}\n" for i in range(n)).encode()


class Running:
    """``asyncsync prepare - -o OUT --workers 2`` mid-run: stdin stays open until closed."""

    def __init__(self, tmp_path: Path) -> None:
        self.out_dir = tmp_path / "out"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCSYNC_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "asyncsync", "prepare", "-", "-o", str(self.out_dir),
             "--workers", "2"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )  # fmt: skip
        self.pgid = self.proc.pid
        self.stdout_eof = threading.Event()
        self.stdout = b""
        self.stderr = b""
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        err = threading.Thread(target=self._drain_err, daemon=True)
        err.start()
        self.stdout = self.proc.stdout.read()  # returns once no process holds the pipe
        self.stdout_eof.set()
        err.join()

    def _drain_err(self) -> None:
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()

    def feed_until_hashing(self) -> None:
        """Write about 22 MB (five chunks), then wait until the pool's workers run."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(lines(600_000))
        self.proc.stdin.flush()
        # The command, the resource tracker, the forkserver and at least one worker (the pool
        # starts a second one only when no worker is idle).
        wait_for(lambda: len(live_in_group(self.pgid)) >= 4, "the pool's workers started")

    def cleanup(self) -> None:
        for pid in [*live_in_group(self.pgid), self.proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except BrokenPipeError:
                    pass


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    job = Running(tmp_path)
    try:
        yield job
    finally:
        job.cleanup()


def test_sigkill_of_the_command_leaves_no_worker_and_releases_stdout(running: Running) -> None:
    running.feed_until_hashing()
    os.kill(running.proc.pid, signal.SIGKILL)
    assert running.proc.wait(TIMEOUT_S) == -signal.SIGKILL
    wait_for(lambda: not live_in_group(running.pgid), "every process of the command ended")
    # `asyncsync prepare … | cat` ends: nothing holds the stdout pipe any more.
    assert running.stdout_eof.wait(TIMEOUT_S)


def test_sigterm_stops_like_ctrl_c_with_one_line_and_exit_143(running: Running) -> None:
    running.feed_until_hashing()
    os.kill(running.proc.pid, signal.SIGTERM)
    assert running.proc.wait(TIMEOUT_S) == 143
    wait_for(lambda: not live_in_group(running.pgid), "every process of the command ended")
    assert running.stdout_eof.wait(TIMEOUT_S)
    [line] = running.stderr.decode().strip().splitlines()
    assert line == "asyncsync: terminated (SIGTERM)"
    assert running.stdout == b""
    assert not (running.out_dir / "manifest.json").exists()
    assert not list(running.out_dir.glob(".prepare-spill-*"))


def test_sigterm_to_the_whole_group_stops_it_cleanly_too(running: Running) -> None:
    """As a service manager stopping a unit does: every process gets SIGTERM at once."""
    running.feed_until_hashing()
    os.killpg(running.pgid, signal.SIGTERM)
    assert running.proc.wait(TIMEOUT_S) == 143
    wait_for(lambda: not live_in_group(running.pgid), "every process of the command ended")
    [line] = running.stderr.decode().strip().splitlines()
    assert line == "asyncsync: terminated (SIGTERM)"
