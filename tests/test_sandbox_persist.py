"""``Sandbox(state_file=...)`` / ``asyncsync sandbox --state FILE``: a restarted sandbox serves
the same tokens, files and audiences, an operation that was running included."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from asyncsync.errors import UsageError
from asyncsync.sandbox import Sandbox, SandboxConfig
from asyncsync.tiktok.client import TikTokClient

ADVERTISER = "7000000000000000001"


def write(path: Path, prefix: str, n: int) -> Path:
    path.write_text(
        "".join(hashlib.sha256(f"{prefix}{i}".encode()).hexdigest() + "\n" for i in range(n))
    )
    return path


async def test_a_restarted_sandbox_serves_the_same_state(tmp_path: Path) -> None:
    state = tmp_path / "sandbox.json"
    config = SandboxConfig(operation_seconds=600, seed=9)
    async with Sandbox(config=config, state_file=state) as first:
        token = first.issue_token(token="persisted-token")
        async with TikTokClient(token, api_base=first.api_base, requests_per_second=None) as c:
            a = await c.upload_file(
                ADVERTISER, write(tmp_path / "a.txt", "a", 1200), "FIRST_SHA256"
            )
            b = await c.upload_file(ADVERTISER, write(tmp_path / "b.txt", "b", 50), "FIRST_SHA256")
            audience_id = await c.create_audience(ADVERTISER, "Kept", [a.file_path], "FIRST_SHA256")
        offset = first.clock.offset
    assert state.exists()
    async with Sandbox(config=config, state_file=state) as second:
        assert second.clock.offset >= offset
        async with TikTokClient(token, api_base=second.api_base, requests_per_second=None) as c:
            (kept,) = await c.get_audiences(ADVERTISER, [audience_id], history_size=5)
            assert kept.name == "Kept" and kept.is_valid is False  # still calculating
            second.clock.advance(601)
            (done,) = await c.get_audiences(ADVERTISER, [audience_id])
            assert done.is_valid is True and done.cover_num == 1200
            await c.update_audience(
                ADVERTISER, audience_id, file_paths=[b.file_path], action="APPEND"
            )
            second.clock.advance(601)
        assert len(second.members(audience_id)) == 1250
        new_id = second.state.new_audience_id()
    async with Sandbox(config=config, state_file=state) as third:
        assert len(third.members(audience_id)) == 1250
        assert [op.action for op in third.state.audiences[audience_id].history] == [
            "CREATE",
            "APPEND",
        ]
        # The ID generator carries on instead of starting over.
        assert third.state.new_audience_id() not in {audience_id, new_id}


async def test_a_state_file_that_is_not_one_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something else"}')
    sandbox = Sandbox(state_file=bad)
    with pytest.raises(UsageError, match="state"):
        await sandbox.start()
    await sandbox.close()
    assert bad.read_text() == '{"format": "something else"}'  # a refused file is left alone


async def test_a_state_file_with_the_fields_no_longer_kept_still_loads(tmp_path: Path) -> None:
    """Earlier state files also hold a file's ``created``, an operation's ``result_size`` and
    an audience's ``modify_time``, which nothing read; they load as before."""
    state = tmp_path / "sandbox.json"
    config = SandboxConfig(operation_seconds=0, seed=9)
    async with Sandbox(config=config, state_file=state) as first:
        token = first.issue_token(token="t")
        async with TikTokClient(token, api_base=first.api_base, requests_per_second=None) as c:
            export = write(tmp_path / "a.txt", "a", 1200)
            a = await c.upload_file(ADVERTISER, export, "FIRST_SHA256")
            audience_id = await c.create_audience(ADVERTISER, "Old", [a.file_path], "FIRST_SHA256")
    doc = json.loads(state.read_text())
    for f in doc["files"]:
        f["created"] = 1.0
    for aud in doc["audiences"]:
        aud["modify_time"] = 1.0
        for op in aud["history"]:
            op["result_size"] = 1200
            for f in op["files"]:
                f["created"] = 1.0
    state.write_text(json.dumps(doc))
    async with Sandbox(config=config, state_file=state) as second:
        assert len(second.members(audience_id)) == 1200
        assert a.file_path in second.state.files
