"""The SQLite job journal: private files, corruption detection, parts, intents and results."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from asyncsync.errors import StateError
from asyncsync.jobs.mirror.plan import MirrorMode, MirrorPlan
from asyncsync.jobs.mirror.strategy import journaled_plan
from asyncsync.store.journal import (
    JOURNAL_FILENAME,
    SCHEMA_VERSION,
    JobStatus,
    Journal,
    OperationKind,
    Outcome,
    job_key,
)

API = "http://127.0.0.1:1"


def _job(journal: Journal, *, target: str = "name:n", now: float = 1000.0) -> int:
    job = journal.create_job(
        key=job_key(API, "1", target, "create"),
        api_base=API,
        advertiser_id="1",
        target=target,
        action="create",
        fingerprint={"inputs": []},
        resumable=True,
        audience_id=None,
        now=now,
    )
    return job.id


def test_journal_is_created_private_with_a_rollback_journal(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Journal(state) as journal:
        _job(journal)
        mode = journal.db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "delete"  # no companion file holds committed state
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / JOURNAL_FILENAME).stat().st_mode) == 0o600


def test_garbage_journal_file_is_a_state_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / JOURNAL_FILENAME).write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateError, match=JOURNAL_FILENAME):
        Journal(tmp_path)


def test_journal_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / JOURNAL_FILENAME)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(StateError, match="newer"):
        Journal(tmp_path)


def test_state_dir_that_is_a_file_is_a_state_error(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("x")
    with pytest.raises(StateError, match="cannot create the journal"):
        Journal(blocker)


def test_reopened_journal_finds_the_job_and_its_parts(tmp_path: Path) -> None:
    with Journal(tmp_path) as journal:
        job_id = _job(journal)
        journal.record_part(job_id, index=0, file="part-00000.txt", bytes=10, rows=1, md5="a" * 32)
        journal.record_upload(job_id, 0, "fp-0", now=1001.0)
    with Journal(tmp_path) as journal:
        job = journal.find_job(job_key(API, "1", "name:n", "create"))
        assert job is not None and job.id == job_id and job.status == "active"
        assert journal.parts(job_id)[0].file_path == "fp-0"


def test_same_md5_keeps_the_upload_and_a_changed_md5_forgets_it(tmp_path: Path) -> None:
    with Journal(tmp_path) as journal:
        job_id = _job(journal)
        journal.record_part(job_id, index=0, file="p0", bytes=10, rows=1, md5="a" * 32)
        journal.record_upload(job_id, 0, "fp-0", now=1.0)
        again = journal.record_part(job_id, index=0, file="p0", bytes=10, rows=1, md5="a" * 32)
        assert again.file_path == "fp-0"
        changed = journal.record_part(job_id, index=0, file="p0", bytes=11, rows=1, md5="b" * 32)
        assert changed.file_path is None and changed.md5 == "b" * 32


def test_intent_without_result_counts_toward_the_day_until_it_is_found_absent(
    tmp_path: Path,
) -> None:
    with Journal(tmp_path) as journal:
        job = journal.get_job(_job(journal))
        op = journal.begin_operation(
            job, kind="APPEND", batch=1, audience_id="42", file_paths=["x"], now=1000.0
        )
        (row,) = journal.operations(job.id)
        assert row.outcome is None and row.file_paths == ("x",)
        assert len(journal.operations_between(API, "1", "42", 0.0, 86400.0)) == 1
        journal.finish_operation(op, Outcome.ABSENT, now=1001.0)
        assert journal.operations_between(API, "1", "42", 0.0, 86400.0) == []


def test_finished_create_records_the_audience_it_made(tmp_path: Path) -> None:
    with Journal(tmp_path) as journal:
        job = journal.get_job(_job(journal))
        op = journal.begin_operation(
            job, kind="create", batch=0, audience_id=None, file_paths=["x"],
            detail={"known_ids": ["7"]}, now=5.0,
        )  # fmt: skip
        journal.finish_operation(op, Outcome.DONE, now=6.0, audience_id="99")
        (row,) = journal.operations(job.id)
        assert row.audience_id == "99" and row.detail == {"known_ids": ["7"]}
        assert journal.claimed_audience_ids(API, "1") == {"99"}


def test_a_second_holder_of_a_job_lock_is_refused(tmp_path: Path) -> None:
    with Journal(tmp_path) as first, Journal(tmp_path) as second, first.lock("k"):
        with pytest.raises(StateError, match="same job"), second.lock("k"):
            pass
        with second.lock("other"):
            pass
    with Journal(tmp_path) as journal, journal.lock("k"):
        assert os.listdir(tmp_path / "locks")


FIXTURES = Path(__file__).parent / "fixtures"


def test_journal_of_schema_1_is_upgraded_and_keeps_its_jobs(tmp_path: Path) -> None:
    """A journal written by the first release (finished create and mirror jobs) opens with
    this one: its jobs, operations and results are read, and the stored mirror plan gains
    its version."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / JOURNAL_FILENAME).write_bytes((FIXTURES / "journal-schema1.sqlite3").read_bytes())
    with Journal(state) as journal:
        assert journal.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        create, first, second = (journal.get_job(i) for i in (1, 2, 3))
        assert [j.status for j in (create, first, second)] == [JobStatus.DONE] * 3
        assert create.result is not None and create.result["audience_id"] == create.audience_id
        assert [op.outcome for op in journal.operations(3)] == [Outcome.DONE]
        assert second.prepared is not None
        assert second.prepared["mirror"]["version"] == 1
        plan = journaled_plan(second)
        assert plan is not None and plan.mode is MirrorMode.REPLACE
        assert plan.parts == (1, 2, 3, 4, 5, 6) and plan.export_rows == 1200
        assert [s.kind for s in plan.steps()] == [OperationKind.REPLACE]
    # Opening again changes nothing more.
    with Journal(state) as journal:
        assert journal.get_job(3).prepared == second.prepared


def test_journal_lock_module_imports_without_fcntl() -> None:
    """``import asyncsync`` and the store work where ``fcntl`` does not exist (Windows): the
    lock imports its platform module only when a lock is taken."""
    code = (
        "import sys; sys.modules['fcntl'] = None\n"
        "import asyncsync, asyncsync.store.journal, asyncsync.store.snapshots\n"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_a_mirror_plan_of_a_newer_version_is_refused_in_one_line() -> None:
    plan = MirrorPlan.from_json({"mode": "diff", "reason": "r", "added": 1, "removed": 0,
        "unchanged": 0, "export_rows": 1, "snapshot_rows": 0, "replace_threshold": 0.5,
        "paths_per_call": 500, "baseline_op_id": None, "snapshot_count": 1,
        "snapshot_xxh3": None, "added_parts": [1], "parts": [1]})  # fmt: skip
    assert plan.version == 1 and MirrorPlan.from_json(plan.to_json()) == plan
    with pytest.raises(StateError, match="newer") as refused:
        MirrorPlan.from_json({**plan.to_json(), "version": 2})
    assert "\n" not in str(refused.value)
