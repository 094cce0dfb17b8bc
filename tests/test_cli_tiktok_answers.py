"""The CLI against a sandbox process: a 40002 that TikTok keeps giving an idle audience ends
``sync`` with exit 1 within seconds, naming TikTok's code, message and request_id (not an
endless wait for an operation that is not running)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

TOKEN = "tok-contract-40002"
ADVERTISER = "7000000000000000078"
MESSAGE = "Invalid parameter: file_paths has an unsupported value."


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIKTOK_", "ASYNCSYNC_"))}
    env.update(TIKTOK_ACCESS_TOKEN=TOKEN, XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    return env


@pytest.fixture
def api_base(tmp_path: Path) -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "asyncsync", "sandbox", "--port", "0", "--json",
         "--token", TOKEN, "--operation-seconds", "0.05", "--seed", "8"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=_env(tmp_path),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, "the sandbox printed nothing"
        yield str(json.loads(line)["api_base"])
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def control(api_base: str, path: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        f"{api_base}/_sandbox/{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)


def sync(
    tmp_path: Path, api_base: str, source: Path, *target: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asyncsync", "sync", str(source), "--advertiser-id", ADVERTISER,
         "--api-base", api_base, "--state-dir", str(tmp_path / "state"), "--workers", "1",
         "--max-wait", "120", "--json", *target],
        capture_output=True, text=True, timeout=300, env=_env(tmp_path), check=False,
    )  # fmt: skip


def export(path: Path, rows: int, seed: int) -> Path:
    rng = random.Random(seed)
    path.write_text(
        "".join(f"{uuid.UUID(int=rng.getrandbits(128), version=4)}\n" for _ in range(rows))
    )
    return path


def test_a_persistent_40002_on_an_idle_audience_exits_1_at_once(
    tmp_path: Path, api_base: str
) -> None:
    created = sync(tmp_path, api_base, export(tmp_path / "base.txt", 1500, 1), "--name", "Base")
    assert created.returncode == 0, created.stderr
    audience_id = json.loads(created.stdout)["audience_id"]
    control(
        api_base,
        "scripts",
        {
            "endpoint": "/dmp/custom_audience/update/",
            "code": 40002,
            "message": MESSAGE,
            "carry_out": False,
            "times": None,
        },
    )
    started = time.monotonic()
    refused = sync(
        tmp_path, api_base, export(tmp_path / "more.txt", 200, 2),
        "--audience-id", audience_id, "--action", "append",
    )  # fmt: skip
    assert time.monotonic() - started < 60
    assert refused.returncode == 1, refused.stderr
    assert "40002" in refused.stderr and MESSAGE in refused.stderr
    assert "request_id" in refused.stderr
    assert "still running an operation" not in refused.stderr
