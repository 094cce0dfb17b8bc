"""The keys and values of ``asyncsync sync --json`` (``SyncResult.to_json``) are a contract:
a run, a dry run, a paused run, a mirror and its dry run give exactly these, and a journaled
result read back gives the same JSON. (``national_phones`` is the one key added since the
typed results: the exact count behind ``sync``'s ``--default-country`` hint.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers.ids import DIGEST_LINE, maids
from helpers.sandbox import client_for, sync_options

from asyncsync import SyncResult, sync_audience
from asyncsync.errors import Paused
from asyncsync.jobs import MirrorSummary, Pending, PlanSummary
from asyncsync.sandbox import Sandbox

VOLATILE = ("elapsed_s", "file_paths", "audience_id", "day", "resume_after", "api_calls")


def stable(value: Any) -> Any:
    """``value`` as JSON, with the keys whose values vary between runs masked."""
    if isinstance(value, dict):
        return {k: "*" if k in VOLATILE and v is not None else stable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


def summary(result: SyncResult) -> dict[str, Any]:
    out = result.to_json()
    assert json.loads(json.dumps(out)) == out  # plain JSON types
    again = SyncResult.from_json(out).to_json()
    assert again == out
    return stable(out)


def write_ids(path: Path, ids: list[str]) -> Path:
    path.write_text("\n".join(ids) + "\n")
    return path


async def scenario(sandbox: Sandbox, tmp_path: Path) -> dict[str, Any]:
    got: dict[str, Any] = {}
    export = write_ids(tmp_path / "a.txt", maids(1, 1500) + maids(1, 10) + ["bad", ""])
    opts = sync_options(tmp_path, sandbox, paths_per_call=2, max_file_bytes=300 * DIGEST_LINE)
    async with client_for(sandbox) as client:
        dry = await sync_audience(client, export, name="j", dry_run=True, **opts)
        assert isinstance(dry.plan, PlanSummary) and dry.plan.operations[0].action == "create"
        got["dry"] = summary(dry)
        done = await sync_audience(client, export, name="j", **opts)
        got["done"] = summary(done)
        got["again"] = summary(await sync_audience(client, export, name="j", **opts))
        # 30 APPENDs: the daily quota (24 operations a day per audience) pauses the 25th.
        more = write_ids(tmp_path / "more.txt", maids(4, 3000))
        with pytest.raises(Paused) as paused:
            await sync_audience(
                client, more, audience_id=done.audience_id, action="append",
                **opts | {"paths_per_call": 1, "max_file_bytes": 100 * DIGEST_LINE},
            )  # fmt: skip
        pending = paused.value.result.pending
        assert isinstance(pending, Pending) and pending.reason == "daily quota"
        assert pending.resume_after is not None and len(pending.operations) == 8
        got["paused"] = summary(paused.value.result)
        mopts = sync_options(tmp_path, sandbox)
        day0 = maids(2, 2000)
        first = await sync_audience(
            client, write_ids(tmp_path / "m0.txt", day0), name="m", action="mirror", **mopts
        )
        got["mirror_create"] = summary(first)
        sandbox.clock.advance(86_400)
        day1 = write_ids(tmp_path / "m1.txt", day0[100:] + maids(3, 150))
        got["mirror_dry"] = summary(
            await sync_audience(client, day1, name="m", action="mirror", dry_run=True, **mopts)
        )
        diff = await sync_audience(client, day1, name="m", action="mirror", **mopts)
        assert isinstance(diff.mirror, MirrorSummary) and diff.mirror.mode == "diff"
        got["mirror_diff"] = summary(diff)
    return got


async def test_sync_json_keys_and_values(sandbox: Sandbox, tmp_path: Path) -> None:
    got = await scenario(sandbox, tmp_path)
    assert got == EXPECTED


EXPECTED: dict[str, Any] = {
    "again": {
        "action": "create",
        "api_calls": "*",
        "audience_id": "*",
        "bytes_uploaded": 0,
        "calculate_type": "FIRST_SHA256",
        "duplicates": 10,
        "elapsed_s": "*",
        "file_paths": "*",
        "job_id": "1",
        "national_phones": 0,
        "mirror": None,
        "parts": 5,
        "paused": False,
        "pending": {},
        "plan": None,
        "rejected": {"empty": 1, "malformed": 1, "zero_id": 0},
        "resumed": True,
        "retries": 0,
        "rows_invalid": 2,
        "rows_read": 1512,
        "rows_valid": 1510,
        "rows_written": 1500,
    },
    "done": {
        "action": "create",
        "api_calls": "*",
        "audience_id": "*",
        "bytes_uploaded": 97500,
        "calculate_type": "FIRST_SHA256",
        "duplicates": 10,
        "elapsed_s": "*",
        "file_paths": "*",
        "job_id": "1",
        "national_phones": 0,
        "mirror": None,
        "parts": 5,
        "paused": False,
        "pending": {},
        "plan": None,
        "rejected": {"empty": 1, "malformed": 1, "zero_id": 0},
        "resumed": False,
        "retries": 0,
        "rows_invalid": 2,
        "rows_read": 1512,
        "rows_valid": 1510,
        "rows_written": 1500,
    },
    "dry": {
        "action": "create",
        "api_calls": "*",
        "audience_id": None,
        "bytes_uploaded": 0,
        "calculate_type": "FIRST_SHA256",
        "duplicates": 10,
        "elapsed_s": "*",
        "file_paths": "*",
        "job_id": None,
        "national_phones": 0,
        "mirror": None,
        "parts": 5,
        "paused": False,
        "pending": {},
        "plan": {
            "already_done": False,
            "audience_id": None,
            "bytes": 97500,
            "calls": {"append": 2, "create": 1, "upload": 5},
            "operations": [
                {"action": "create", "batch": 0, "file_paths": "*"},
                {"action": "APPEND", "batch": 1, "file_paths": "*"},
                {"action": "APPEND", "batch": 2, "file_paths": "*"},
            ],
            "parts": 5,
            "problems": [],
            "quota": {
                "day": "*",
                "fits_today": True,
                "operations_needed": 2,
                "operations_remaining": 24,
                "operations_used": 0,
                "replaces_remaining": 1,
                "replaces_used": 0,
            },
            "resumes_job": None,
            "uploads": 5,
            "uploads_reused": 0,
        },
        "rejected": {"empty": 1, "malformed": 1, "zero_id": 0},
        "resumed": False,
        "retries": 0,
        "rows_invalid": 2,
        "rows_read": 1512,
        "rows_valid": 1510,
        "rows_written": 1500,
    },
    "mirror_create": {
        "action": "mirror",
        "api_calls": "*",
        "audience_id": "*",
        "bytes_uploaded": 130000,
        "calculate_type": "FIRST_SHA256",
        "duplicates": 0,
        "elapsed_s": "*",
        "file_paths": "*",
        "job_id": "3",
        "national_phones": 0,
        "mirror": {
            "added": 2000,
            "export_rows": 2000,
            "mode": "create",
            "reason": "first run: the audience is created",
            "removed": 0,
            "snapshot": "recorded",
            "snapshot_rows": 0,
            "unchanged": 0,
        },
        "parts": 10,
        "paused": False,
        "pending": {},
        "plan": None,
        "rejected": {"empty": 0, "malformed": 0, "zero_id": 0},
        "resumed": False,
        "retries": 0,
        "rows_invalid": 0,
        "rows_read": 2000,
        "rows_valid": 2000,
        "rows_written": 2000,
    },
    "mirror_diff": {
        "action": "mirror",
        "api_calls": "*",
        "audience_id": "*",
        "bytes_uploaded": 16250,
        "calculate_type": "FIRST_SHA256",
        "duplicates": 0,
        "elapsed_s": "*",
        "file_paths": "*",
        "job_id": "4",
        "national_phones": 0,
        "mirror": {
            "added": 150,
            "export_rows": 2050,
            "mode": "diff",
            "reason": "150 added and 100 removed IDs since the last delivery",
            "removed": 100,
            "snapshot": "recorded",
            "snapshot_rows": 2000,
            "unchanged": 1900,
        },
        "parts": 2,
        "paused": False,
        "pending": {},
        "plan": None,
        "rejected": {"empty": 0, "malformed": 0, "zero_id": 0},
        "resumed": False,
        "retries": 0,
        "rows_invalid": 0,
        "rows_read": 2050,
        "rows_valid": 2050,
        "rows_written": 2050,
    },
    "mirror_dry": {
        "action": "mirror",
        "api_calls": "*",
        "audience_id": "*",
        "bytes_uploaded": 0,
        "calculate_type": "FIRST_SHA256",
        "duplicates": 0,
        "elapsed_s": "*",
        "file_paths": "*",
        "job_id": None,
        "national_phones": 0,
        "mirror": {
            "added": 150,
            "export_rows": 2050,
            "mode": "diff",
            "reason": "150 added and 100 removed IDs since the last delivery",
            "removed": 100,
            "snapshot": "unchanged",
            "snapshot_rows": 2000,
            "unchanged": 1900,
        },
        "parts": 2,
        "paused": False,
        "pending": {},
        "plan": {
            "added": 150,
            "already_done": False,
            "audience_id": "*",
            "bytes": 16250,
            "calls": {"append": 1, "remove": 1, "upload": 2},
            "cover_num": 2000,
            "export_rows": 2050,
            "mode": "diff",
            "operations": [
                {"action": "APPEND", "batch": 0, "file_paths": "*"},
                {"action": "REMOVE", "batch": 1, "file_paths": "*"},
            ],
            "parts": 2,
            "problems": [],
            "quota": {
                "day": "*",
                "fits_today": True,
                "operations_needed": 2,
                "operations_remaining": 24,
                "operations_used": 0,
                "replaces_remaining": 1,
                "replaces_used": 0,
            },
            "reason": "150 added and 100 removed IDs since the last delivery",
            "removed": 100,
            "resumes_job": None,
            "snapshot_rows": 2000,
            "unchanged": 1900,
            "uploads": 2,
            "uploads_reused": 0,
        },
        "rejected": {"empty": 0, "malformed": 0, "zero_id": 0},
        "resumed": False,
        "retries": 0,
        "rows_invalid": 0,
        "rows_read": 2050,
        "rows_valid": 2050,
        "rows_written": 2050,
    },
    "paused": {
        "action": "append",
        "api_calls": "*",
        "audience_id": "*",
        "bytes_uploaded": 195000,
        "calculate_type": "FIRST_SHA256",
        "duplicates": 0,
        "elapsed_s": "*",
        "file_paths": "*",
        "job_id": "2",
        "national_phones": 0,
        "mirror": None,
        "parts": 30,
        "paused": True,
        "pending": {
            "audience_id": "*",
            "operations": [
                {"action": "APPEND", "batch": 22, "file_paths": "*"},
                {"action": "APPEND", "batch": 23, "file_paths": "*"},
                {"action": "APPEND", "batch": 24, "file_paths": "*"},
                {"action": "APPEND", "batch": 25, "file_paths": "*"},
                {"action": "APPEND", "batch": 26, "file_paths": "*"},
                {"action": "APPEND", "batch": 27, "file_paths": "*"},
                {"action": "APPEND", "batch": 28, "file_paths": "*"},
                {"action": "APPEND", "batch": 29, "file_paths": "*"},
            ],
            "reason": "daily quota",
            "resume_after": "*",
        },
        "plan": None,
        "rejected": {"empty": 0, "malformed": 0, "zero_id": 0},
        "resumed": False,
        "retries": 0,
        "rows_invalid": 0,
        "rows_read": 3000,
        "rows_valid": 3000,
        "rows_written": 3000,
    },
}


def test_a_result_journaled_without_the_national_count_reads_as_unknown() -> None:
    old = {
        "audience_id": "1", "action": "create", "calculate_type": "PHONE_SHA256",
        "file_paths": ["f"], "parts": 1, "rows_read": 3, "rows_valid": 2, "rows_invalid": 1,
        "rejected": {"empty": 0, "malformed": 1, "zero_id": 0}, "duplicates": 0,
        "rows_written": 2, "bytes_uploaded": 130, "api_calls": 3, "retries": 0,
        "elapsed_s": 0.5, "resumed": False, "paused": False, "pending": {}, "plan": None,
        "job_id": "1", "mirror": None,
    }  # fmt: skip
    result = SyncResult.from_json(old)
    assert result.national_phones is None
    assert result.to_json() == {**old, "national_phones": None}
