"""A sandbox in its own process (``python -m asyncsync sandbox``), so that it outlives every
killed job, and the ``asyncsync sync`` command run as a subprocess in its own process group,
killed whole (its hashing workers included) as an out-of-memory kill or a power cut would.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers.api import ADVERTISER, CREATE, UPDATE, UPLOAD
from helpers.ids import write_messy_maids

TOKEN = "tok-SENTINEL-crash-7e5d0b"
TEST_RECONCILE_WINDOW = "3"
"""Seconds a create of unknown outcome is looked for in CLI tests (minutes by default)."""
CONCURRENCY = 3


@dataclass
class SandboxProcess:
    proc: subprocess.Popen[bytes]
    api_base: str

    def control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.api_base}/_sandbox/{path}",
            data=data,
            headers={"Content-Type": "application/json"},
            method="GET" if body is None else "POST",
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.load(answer)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = self.control("state")["request_counts"]
        return counts

    def audiences_named(self, name: str) -> list[dict[str, Any]]:
        return [a for a in self.control("state")["audiences"] if a["name"] == name]

    def members(self, audience_id: str) -> set[str]:
        # Let any operation still "running" on the sandbox clock finish first.
        self.control("clock", {"advance_seconds": 60})
        return set(self.control(f"audiences/{audience_id}/members?digests=1")["digests"])


@contextlib.contextmanager
def sandbox_process(tmp_path: Path) -> Iterator[SandboxProcess]:
    """Start the sandbox in its own process; stop it at the end of the block."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "asyncsync",
            "sandbox",
            "--port",
            "0",
            "--json",
            "--token",
            TOKEN,
            "--operation-seconds",
            "0.05",
            "--seed",
            "7",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=cli_env(tmp_path),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, "the sandbox printed nothing"
        yield SandboxProcess(proc, json.loads(line)["api_base"])
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def cli_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a CLI subprocess: the test token, no outside TikTok settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIKTOK_", "ASYNCSYNC_"))}
    env.update(TIKTOK_ACCESS_TOKEN=TOKEN, XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    # A create of unknown outcome is looked for seconds, not minutes, in tests.
    env["ASYNCSYNC_RECONCILE_WINDOW"] = TEST_RECONCILE_WINDOW
    return env


@dataclass
class Job:
    """The same ``asyncsync sync`` command, run again and again."""

    args: list[str]
    env: dict[str, str]
    outputs: list[bytes] = field(default_factory=list)

    def start(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            start_new_session=True,
        )

    def collect(self, proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
        out, err = proc.communicate(timeout=timeout)
        self.outputs += [out, err]
        return proc.returncode

    def kill_when(self, moment: Moment, rng: random.Random, jitter: float = 0.05) -> bool:
        """Start the job, SIGKILL its process group once ``moment`` comes (plus a random delay).

        Returns False when the job finished before the moment came.
        """
        reached = moment()
        proc = self.start()
        started = time.monotonic()
        while not reached(time.monotonic() - started):
            if proc.poll() is not None:
                code = self.collect(proc)
                assert code == 0, self.outputs[-1].decode()
                return False
            assert time.monotonic() - started < 60, "the job never reached the kill point"
            time.sleep(0.005)
        time.sleep(rng.uniform(0, jitter))
        os.killpg(proc.pid, signal.SIGKILL)
        self.collect(proc)
        assert proc.returncode == -signal.SIGKILL
        return True


Moment = Callable[[], Callable[[float], bool]]
"""Called as a run starts; returns whether, ``elapsed`` seconds in, the kill moment has come."""


def after_seconds(seconds: float) -> Moment:
    return lambda: lambda elapsed: elapsed >= seconds


def after_requests(sb: SandboxProcess, path: str, more: int) -> Moment:
    """When the sandbox has received ``more`` requests on ``path`` since the run began."""

    def start() -> Callable[[float], bool]:
        before = sb.counts().get(path, 0)
        return lambda _elapsed: sb.counts().get(path, 0) >= before + more

    return start


def no_secret_anywhere(job: Job, state_dir: Path) -> None:
    needle = TOKEN.encode()
    for output in job.outputs:
        assert needle not in output
    for path in state_dir.rglob("*"):
        if path.is_file():
            assert needle not in path.read_bytes(), path


def deliver_through_random_kills(sb_proc: SandboxProcess, tmp_path: Path, seed: int) -> None:
    """Kill the same sync command at four seeded moments (hashing, uploading, creating,
    appending), then let it finish: one audience holds exactly the input's IDs, and no part was
    uploaded twice except those in flight at a kill."""
    rng = random.Random(seed)
    export = tmp_path / "export.txt"
    expected = write_messy_maids(export, 14_000, seed)
    state_dir = tmp_path / "state"
    name = f"crash test {seed}"
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
            name,
            "--api-base",
            sb_proc.api_base,
            "--state-dir",
            str(state_dir),
            "--max-file-bytes",
            "80kB",
            "--paths-per-call",
            "3",
            "--concurrency",
            str(CONCURRENCY),
            "--workers",
            "2",
            "--json",
        ],
        cli_env(tmp_path),
    )
    parts = -(-len(expected) * 65 // 80_000)  # ceil: one 65-byte line per ID, 80 kB parts
    sb = sb_proc

    moments = [
        after_seconds(rng.uniform(0.3, 1.2)),  # starting up or hashing
        after_requests(sb, UPLOAD, rng.randint(1, parts // 2)),  # uploading
        after_requests(sb, CREATE, 1),  # creating: before or after TikTok's answer
        after_requests(sb, UPDATE, rng.randint(1, 2)),  # appending
    ]
    kills = sum(job.kill_when(moment, rng) for moment in moments)
    assert kills == len(moments), "the job finished before it could be killed"

    final = job.start()
    assert job.collect(final) == 0, job.outputs[-1].decode()
    summary = json.loads(job.outputs[-2])
    assert summary["resumed"] is True
    assert summary["rows_written"] == len(expected)

    [audience] = sb.audiences_named(name)
    assert audience["audience_id"] == summary["audience_id"]
    assert sb.members(audience["audience_id"]) == expected
    assert summary["parts"] >= parts
    assert sb.counts()[UPLOAD] <= summary["parts"] + CONCURRENCY * kills
    no_secret_anywhere(job, state_dir)
