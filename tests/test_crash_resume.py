"""Kill ``asyncsync sync`` at random moments (SIGKILL, SIGINT) and rerun it: the job still ends
with one audience holding exactly the input's IDs, and no part is uploaded twice except those in
flight at a kill.

The sandbox runs in its own process (``python -m asyncsync sandbox``) so that it outlives every
killed job; the job runs as a subprocess in its own process group, which is killed whole (its
hashing workers included), as an out-of-memory kill or a power cut would.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

TOKEN = "tok-SENTINEL-crash-7e5d0b"
ADVERTISER = "7000000000000000077"
UPLOAD = "/open_api/v1.3/dmp/custom_audience/file/upload/"
CREATE = "/open_api/v1.3/dmp/custom_audience/create/"
UPDATE = "/open_api/v1.3/dmp/custom_audience/update/"
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


@pytest.fixture
def sandbox_process(tmp_path: Path) -> Iterator[SandboxProcess]:
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
        env=_env(tmp_path),
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


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIKTOK_", "ASYNCSYNC_"))}
    env.update(TIKTOK_ACCESS_TOKEN=TOKEN, XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    return env


def write_export(path: Path, rows: int, seed: int) -> set[str]:
    """A messy export of mobile IDs; returns the SHA-256 set TikTok should end up holding."""
    rng = random.Random(seed)
    expected: set[str] = set()
    lines: list[str] = []
    for i in range(rows):
        maid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        expected.add(hashlib.sha256(maid.encode()).hexdigest())
        lines.append(maid.upper() if i % 3 == 0 else maid)
        if i % 50 == 0:
            lines.append(f"  {maid}  ")  # a duplicate once trimmed
        if i % 97 == 0:
            lines.append("not-an-id")
    path.write_text("\n".join(lines) + "\n")
    return expected


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


def _no_secret_anywhere(job: Job, state_dir: Path) -> None:
    needle = TOKEN.encode()
    for output in job.outputs:
        assert needle not in output
    for path in state_dir.rglob("*"):
        if path.is_file():
            assert needle not in path.read_bytes(), path


@pytest.mark.parametrize("seed", [11, pytest.param(23, marks=pytest.mark.slow)])
def test_rerun_after_sigkill_at_random_moments_delivers_exactly_once(
    sandbox_process: SandboxProcess, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    export = tmp_path / "export.txt"
    expected = write_export(export, 14_000, seed)
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
            sandbox_process.api_base,
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
        _env(tmp_path),
    )
    parts = -(-len(expected) * 65 // 80_000)  # ceil: one 65-byte line per ID, 80 kB parts
    sb = sandbox_process

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
    _no_secret_anywhere(job, state_dir)


def test_sigint_exits_130_within_5s_and_the_rerun_finishes(
    sandbox_process: SandboxProcess, tmp_path: Path
) -> None:
    export = tmp_path / "export.txt"
    expected = write_export(export, 10_000, 5)
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
        _env(tmp_path),
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
    _no_secret_anywhere(job, state_dir)
