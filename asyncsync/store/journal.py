"""The job journal: a SQLite file that records every step of a sync so that a rerun resumes it.

One journal per state directory (``journal.sqlite3``, a rollback journal: every commit is in
the file itself; file mode 0600 in a 0700 directory) holds:

- ``jobs``: one row per sync job, keyed by (api_base, advertiser_id, target, action) where target
  is ``name:<name>`` or ``id:<audience_id>``, with the fingerprint of its input, its status
  (``active``, ``paused``, ``done``, ``abandoned``), the audience it works on, the prepare summary
  once prepare finished, and the final result of a finished job;
- ``parts``: the parts of a job (index, file, bytes, rows, md5) and, once uploaded, the
  ``file_path`` TikTok returned;
- ``operations``: every audience operation (``create``, ``APPEND``, ``REMOVE``, ``REPLACE``) as an
  intent row committed *before* the request and completed with an outcome *after* it. An intent
  whose outcome is still NULL is an operation whose result is unknown (the process died or the
  answer was lost); the sync job reconciles it against TikTok's state before acting again.

Every write is its own transaction, committed before the caller moves on, so a process killed at
any instruction leaves a journal that says exactly what was sent. Jobs and operations are also
flushed to disk at each commit (``synchronous=FULL``), so that even a power cut cannot lose an
intent; part records are not (a lost one costs a re-upload, not a second audience).
Timestamps are epoch seconds of the sync job's clock (the quota day is the UTC day of it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from asyncsync.errors import StateError
from asyncsync.store._fs import LockHeld, atomic_write_bytes, exclusive_lock

__all__ = [
    "JOURNAL_FILENAME",
    "SCHEMA_VERSION",
    "JobRow",
    "JobStatus",
    "Journal",
    "OperationKind",
    "OperationRow",
    "Outcome",
    "PartRow",
]

JOURNAL_FILENAME: Final = "journal.sqlite3"
SCHEMA_VERSION: Final = 3
"""1: the first release. 2: a mirror job's stored plan carries its own ``version`` (schema 1
plans are the same fields without it: the upgrade adds ``"version": 1``). 3: the ``meta``
table holds ``seq``, the count of durable writes, mirrored in ``journal.seq``."""
SEQ_FILENAME: Final = "journal.seq"
"""Beside the journal: the ``seq`` of its last durable write, written (and fsynced) after each
commit. A journal whose own ``seq`` is behind it has lost committed state."""

_UPGRADES: Final = {
    3: "",
    2: "UPDATE jobs SET prepared = json_set(prepared, '$.mirror.version', 1) "
    "WHERE prepared IS NOT NULL AND json_type(prepared, '$.mirror') = 'object' "
    "AND json_type(prepared, '$.mirror.version') IS NULL;",
}
"""SQL that brings a journal from the schema before the key to the key's schema."""

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS jobs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    key           TEXT NOT NULL,
    api_base      TEXT NOT NULL,
    advertiser_id TEXT NOT NULL,
    target        TEXT NOT NULL,
    action        TEXT NOT NULL,
    fingerprint   TEXT NOT NULL,
    resumable     INTEGER NOT NULL,
    status        TEXT NOT NULL,
    audience_id   TEXT,
    calculate_type TEXT,
    prepared      TEXT,
    result        TEXT,
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_key ON jobs (key, id);
CREATE TABLE IF NOT EXISTS parts (
    job_id      INTEGER NOT NULL REFERENCES jobs (id),
    idx         INTEGER NOT NULL,
    file        TEXT NOT NULL,
    bytes       INTEGER NOT NULL,
    rows        INTEGER NOT NULL,
    md5         TEXT NOT NULL,
    file_path   TEXT,
    uploaded_at REAL,
    PRIMARY KEY (job_id, idx)
);
CREATE TABLE IF NOT EXISTS operations (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id        INTEGER NOT NULL REFERENCES jobs (id),
    api_base      TEXT NOT NULL,
    advertiser_id TEXT NOT NULL,
    audience_id   TEXT,
    kind          TEXT NOT NULL,
    batch         INTEGER NOT NULL,
    file_paths    TEXT NOT NULL,
    detail        TEXT NOT NULL,
    intent_at     REAL NOT NULL,
    outcome       TEXT,
    result_at     REAL
);
CREATE INDEX IF NOT EXISTS operations_by_job ON operations (job_id, id);
CREATE INDEX IF NOT EXISTS operations_by_audience
    ON operations (api_base, advertiser_id, audience_id, intent_at);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (name, value) VALUES ('seq', 0);
"""


class JobStatus(StrEnum):
    """The status of a job row."""

    ACTIVE = "active"
    PAUSED = "paused"
    """Stopped by a daily quota or a running operation; the same command resumes it."""
    DONE = "done"
    ABANDONED = "abandoned"
    """Given up (``--restart``, superseded, refused before any operation); never resumed."""


class OperationKind(StrEnum):
    """The kind of an operation row: a create, or the TikTok action of an update."""

    CREATE = "create"
    APPEND = "APPEND"
    REMOVE = "REMOVE"
    REPLACE = "REPLACE"


class Outcome(StrEnum):
    """Outcomes of an operation row (NULL while the result is unknown)."""

    DONE = "done"
    """TikTok accepted the operation (or reconciliation found it applied)."""
    ABSENT = "absent"
    """Reconciliation found the operation was never applied."""
    BUSY = "busy"
    """Refused because another operation was running; nothing happened."""
    QUOTA = "quota"
    """Refused because a daily quota was used up; nothing happened."""
    FAILED = "failed"
    """Refused for another reason; nothing happened."""

    @staticmethod
    def applied_or_unknown(outcome: Outcome | None) -> bool:
        """Whether TikTok applied, or may have applied, an operation of this outcome."""
        return outcome is None or outcome is Outcome.DONE


@dataclass(frozen=True, slots=True)
class JobRow:
    id: int
    key: str
    api_base: str
    advertiser_id: str
    target: str
    action: str
    fingerprint: dict[str, Any]
    resumable: bool
    status: JobStatus
    audience_id: str | None
    calculate_type: str | None
    prepared: dict[str, Any] | None
    result: dict[str, Any] | None
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class PartRow:
    index: int
    file: str
    bytes: int
    rows: int
    md5: str
    file_path: str | None
    uploaded_at: float | None


@dataclass(frozen=True, slots=True)
class OperationRow:
    id: int
    job_id: int
    audience_id: str | None
    kind: OperationKind
    batch: int
    file_paths: tuple[str, ...]
    detail: dict[str, Any]
    intent_at: float
    outcome: Outcome | None
    result_at: float | None


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _job(row: sqlite3.Row) -> JobRow:
    return JobRow(
        id=row["id"],
        key=row["key"],
        api_base=row["api_base"],
        advertiser_id=row["advertiser_id"],
        target=row["target"],
        action=row["action"],
        fingerprint=json.loads(row["fingerprint"]),
        resumable=bool(row["resumable"]),
        status=JobStatus(row["status"]),
        audience_id=row["audience_id"],
        calculate_type=row["calculate_type"],
        prepared=_loads(row["prepared"]),
        result=_loads(row["result"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _part(row: sqlite3.Row) -> PartRow:
    return PartRow(
        index=row["idx"],
        file=row["file"],
        bytes=row["bytes"],
        rows=row["rows"],
        md5=row["md5"],
        file_path=row["file_path"],
        uploaded_at=row["uploaded_at"],
    )


def _operation(row: sqlite3.Row) -> OperationRow:
    return OperationRow(
        id=row["id"],
        job_id=row["job_id"],
        audience_id=row["audience_id"],
        kind=OperationKind(row["kind"]),
        batch=row["batch"],
        file_paths=tuple(json.loads(row["file_paths"])),
        detail=json.loads(row["detail"]),
        intent_at=row["intent_at"],
        outcome=None if row["outcome"] is None else Outcome(row["outcome"]),
        result_at=row["result_at"],
    )


def job_key(api_base: str, advertiser_id: str, target: str, action: str) -> str:
    """The identity of a job: the same command (same API, advertiser, audience, action)."""
    return _dumps([api_base.rstrip("/"), advertiser_id, target, action])


def _open_problem(path: Path, exc: sqlite3.Error) -> str:
    """One line saying why the journal at ``path`` could not be opened, by SQLite's error."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name == "SQLITE_FULL" or name.startswith("SQLITE_IOERR"):
        return (
            f"cannot write the journal {path}: {exc}; is the disk full? Free space and run the "
            "same command again (the journal is kept)"
        )
    if name in ("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH"):
        return f"the journal {path} is not writable: {exc}"
    if name in ("SQLITE_BUSY", "SQLITE_LOCKED"):
        return f"the journal {path} is locked by another process: {exc}"
    return (
        f"the journal {path} is corrupt or not writable: {exc} "
        "(move it away to start with an empty journal)"
    )


def _write_problem(path: Path, exc: sqlite3.Error) -> str:
    """One line saying why a write to the journal failed."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")):
        return (
            f"cannot write the journal {path}: the state directory became read-only ({exc}); "
            "make it writable and run the same command again (the journal is kept)"
        )
    return f"cannot write the journal {path}: {exc}"


class Journal:
    """The SQLite journal of a state directory; a context manager that closes the connection.

    Opening creates the directory (mode 0700) and the file (mode 0600) when missing, and raises
    :class:`StateError` when the file is not a usable journal (corrupt, written by a newer
    version, or not writable), before the sync job makes any network call.
    """

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / JOURNAL_FILENAME
        self._db: sqlite3.Connection | None = None
        self._sync_level = 2
        self._seq = 0
        self._open()

    # -- lifecycle -------------------------------------------------------------------------

    def _open(self) -> None:
        try:
            if not self.state_dir.exists():
                self.state_dir.mkdir(mode=0o700, parents=True)
                os.chmod(self.state_dir, 0o700)
            if not self.path.exists():
                fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
                os.close(fd)
            mode = stat.S_IMODE(self.path.stat().st_mode)
            if mode & 0o077:
                os.chmod(self.path, 0o600)
        except OSError as exc:
            raise StateError(
                f"cannot create the journal {self.path}: {exc.strerror or exc}"
            ) from exc
        if not os.access(self.path, os.R_OK | os.W_OK):
            raise StateError(f"the journal {self.path} is not readable and writable by this user")
        try:
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise StateError(f"cannot open the journal {self.path}: {exc}") from exc
        db.row_factory = sqlite3.Row
        try:
            # A rollback journal: every commit lands in the journal file itself, so no
            # companion file holds committed state (losing a -wal file lost jobs), and no
            # shared-memory index is mapped (a read-only file system made it a SIGBUS).
            db.execute("PRAGMA journal_mode=DELETE").fetchone()
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StateError(
                    f"the journal {self.path} was written by a newer asyncsync "
                    f"(schema {version}, this version reads {SCHEMA_VERSION})"
                )
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise StateError(f"the journal {self.path} is corrupt: {check}")
            if version < SCHEMA_VERSION:
                # executescript commits on its own, so the script carries its transaction.
                steps = "".join(
                    _UPGRADES[v] for v in range(max(version, 1) + 1, SCHEMA_VERSION + 1)
                )
                db.executescript(
                    f"BEGIN IMMEDIATE;{_SCHEMA}{steps}PRAGMA user_version={SCHEMA_VERSION};COMMIT;"
                )
            seq = db.execute("SELECT value FROM meta WHERE name = 'seq'").fetchone()[0]
        except sqlite3.Error as exc:
            db.close()
            raise StateError(_open_problem(self.path, exc)) from exc
        except BaseException:
            db.close()
            raise
        recorded = self._recorded_seq()
        if recorded is not None and seq < recorded:
            db.close()
            raise StateError(
                f"the journal {self.path} has lost committed state: it holds {seq} writes but "
                f"{self.seq_path.name} beside it records {recorded} (its companion files were "
                "deleted, or it was truncated or restored from an older copy). It no longer "
                "knows everything it sent, so nothing is run: restore the journal, or move the "
                "state directory aside to start afresh (a create is refused anyway while an "
                "audience of its name exists)"
            )
        self._seq = seq
        self._db = db
        if recorded is None and seq:
            self._record_seq()

    @property
    def seq_path(self) -> Path:
        return self.state_dir / SEQ_FILENAME

    def _recorded_seq(self) -> int | None:
        """The ``seq`` in ``journal.seq``; None when there is none. A damaged file is refused."""
        try:
            text = self.seq_path.read_text(encoding="ascii")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise StateError(f"cannot read {self.seq_path}: {exc}") from exc
        try:
            value = int(text.strip())
        except ValueError:
            raise StateError(
                f"{self.seq_path} is damaged ({text[:40]!r}); it records how far the journal "
                "got: restore it, or move the state directory aside to start afresh"
            ) from None
        return value

    def _record_seq(self) -> None:
        """Write ``seq`` to ``journal.seq`` durably (temporary file, fsync, rename, fsync of
        the directory), after the commit it counts."""
        try:
            atomic_write_bytes(self.seq_path, f"{self._seq}\n".encode("ascii"))
        except OSError as exc:
            raise StateError(
                f"cannot write {self.seq_path}: {exc.strerror or exc} (is the state directory "
                "read-only or the disk full?)"
            ) from exc

    def _bump(self) -> None:
        """Inside a durable write's transaction: count it."""
        self.db.execute("UPDATE meta SET value = value + 1 WHERE name = 'seq'")
        self._seq += 1

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StateError(f"the journal {self.path} is closed")
        return self._db

    @staticmethod
    @contextlib.contextmanager
    def _transaction(db: sqlite3.Connection) -> Iterator[None]:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _sync(self, durable: bool) -> None:
        # synchronous=NORMAL survives a killed process but not a power cut: enough
        # for part uploads (a lost record costs one re-upload), not for operation intents.
        level = 2 if durable else 1
        if level != self._sync_level:
            self.db.execute(f"PRAGMA synchronous={level}")
            self._sync_level = level

    def _write(
        self, sql: str, params: Iterable[Any] = (), *, durable: bool = True
    ) -> sqlite3.Cursor:
        seq = self._seq
        try:
            self._sync(durable)
            with self._transaction(self.db):
                cur = self.db.execute(sql, tuple(params))
                if durable:
                    self._bump()
        except sqlite3.Error as exc:
            self._seq = seq
            raise StateError(_write_problem(self.path, exc)) from exc
        if durable:
            self._record_seq()
        return cur

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        try:
            return self.db.execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            raise StateError(f"cannot read the journal {self.path}: {exc}") from exc

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Hold the job's lock file for the block: two runs of one job never overlap.

        Raises StateError at once when another process holds it.
        """
        locks = self.state_dir / "locks"
        path = locks / f"job-{hashlib.sha256(key.encode()).hexdigest()[:24]}.lock"
        with contextlib.ExitStack() as stack:
            try:
                locks.mkdir(mode=0o700, exist_ok=True)
                stack.enter_context(exclusive_lock(path, blocking=False))
            except LockHeld:
                raise StateError(
                    "another asyncsync process is running this same job right now "
                    f"(lock {path}); wait for it to finish"
                ) from None
            except OSError as exc:
                raise StateError(f"cannot create a lock file in {locks}: {exc.strerror}") from exc
            yield

    # -- jobs ------------------------------------------------------------------------------

    def find_job(self, key: str) -> JobRow | None:
        """The latest resumable job of ``key`` that is not abandoned, if any."""
        rows = self._read(
            "SELECT * FROM jobs WHERE key = ? AND resumable = 1 AND status != ? "
            "ORDER BY id DESC LIMIT 1",
            (key, JobStatus.ABANDONED),
        )
        return _job(rows[0]) if rows else None

    def get_job(self, job_id: int) -> JobRow:
        rows = self._read("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise StateError(f"job {job_id} is not in the journal {self.path}")
        return _job(rows[0])

    def create_job(
        self,
        *,
        key: str,
        api_base: str,
        advertiser_id: str,
        target: str,
        action: str,
        fingerprint: dict[str, Any],
        resumable: bool,
        audience_id: str | None,
        now: float,
    ) -> JobRow:
        cur = self._write(
            "INSERT INTO jobs (key, api_base, advertiser_id, target, action, fingerprint, "
            "resumable, status, audience_id, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                api_base.rstrip("/"),
                advertiser_id,
                target,
                action,
                _dumps(fingerprint),
                int(resumable),
                JobStatus.ACTIVE,
                audience_id,
                now,
                now,
            ),
        )
        assert cur.lastrowid is not None
        return self.get_job(cur.lastrowid)

    def set_status(
        self, job_id: int, status: JobStatus, *, now: float, result: dict[str, Any] | None = None
    ) -> None:
        self._write(
            "UPDATE jobs SET status = ?, result = coalesce(?, result), updated_at = ? WHERE id = ?",
            (status, None if result is None else _dumps(result), now, job_id),
        )

    def set_prepared(
        self, job_id: int, summary: dict[str, Any], calculate_type: str, *, now: float
    ) -> None:
        """Record that prepare finished: the parts table now lists every part of the job."""
        self._write(
            "UPDATE jobs SET prepared = ?, calculate_type = ?, updated_at = ? WHERE id = ?",
            (_dumps(summary), calculate_type, now, job_id),
        )

    def claimed_audience_ids(self, api_base: str, advertiser_id: str) -> set[str]:
        """Audience IDs any journaled job of this advertiser created or worked on."""
        rows = self._read(
            "SELECT audience_id FROM jobs WHERE api_base = ? AND advertiser_id = ? "
            "AND audience_id IS NOT NULL "
            "UNION SELECT audience_id FROM operations WHERE api_base = ? AND advertiser_id = ? "
            "AND audience_id IS NOT NULL",
            (api_base.rstrip("/"), advertiser_id, api_base.rstrip("/"), advertiser_id),
        )
        return {r[0] for r in rows}

    def advertiser_audience_ids(self, advertiser_id: str) -> set[str]:
        """Audience IDs any journaled job of this advertiser worked on, whatever API base it
        spelled (one TikTok can be addressed several ways)."""
        rows = self._read(
            "SELECT audience_id FROM jobs WHERE advertiser_id = ? AND audience_id IS NOT NULL "
            "UNION SELECT audience_id FROM operations WHERE advertiser_id = ? "
            "AND audience_id IS NOT NULL",
            (advertiser_id, advertiser_id),
        )
        return {r[0] for r in rows}

    def audiences_of_key(self, key: str) -> list[str]:
        """The audiences the jobs of ``key`` worked on, newest job first."""
        rows = self._read(
            "SELECT audience_id FROM jobs WHERE key = ? AND audience_id IS NOT NULL "
            "GROUP BY audience_id ORDER BY max(id) DESC",
            (key,),
        )
        return [r[0] for r in rows]

    # -- parts -----------------------------------------------------------------------------

    def parts(self, job_id: int) -> dict[int, PartRow]:
        rows = self._read("SELECT * FROM parts WHERE job_id = ? ORDER BY idx", (job_id,))
        return {r["idx"]: _part(r) for r in rows}

    def record_part(
        self, job_id: int, *, index: int, file: str, bytes: int, rows: int, md5: str
    ) -> PartRow:
        """Insert the part, or update it; a changed MD5 forgets the part's old upload."""
        self._write(
            "INSERT INTO parts (job_id, idx, file, bytes, rows, md5) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (job_id, idx) DO UPDATE SET file = excluded.file, "
            "bytes = excluded.bytes, rows = excluded.rows, "
            "file_path = CASE WHEN parts.md5 = excluded.md5 THEN parts.file_path END, "
            "uploaded_at = CASE WHEN parts.md5 = excluded.md5 THEN parts.uploaded_at END, "
            "md5 = excluded.md5",
            (job_id, index, file, bytes, rows, md5),
            durable=False,
        )
        found = self._read("SELECT * FROM parts WHERE job_id = ? AND idx = ?", (job_id, index))
        return _part(found[0])

    def truncate_parts(self, job_id: int, last_index: int) -> None:
        """Forget parts with an index above ``last_index`` (a re-run of prepare wrote fewer)."""
        self._write("DELETE FROM parts WHERE job_id = ? AND idx > ?", (job_id, last_index))

    def record_upload(self, job_id: int, index: int, file_path: str, *, now: float) -> None:
        self._write(
            "UPDATE parts SET file_path = ?, uploaded_at = ? WHERE job_id = ? AND idx = ?",
            (file_path, now, job_id, index),
            durable=False,
        )

    def forget_uploads(self, job_id: int, indices: Iterable[int]) -> None:
        """Forget the file_paths of these parts (TikTok reported them expired)."""
        idx = list(indices)
        seq = self._seq
        try:
            self._sync(True)
            with self._transaction(self.db):
                self.db.executemany(
                    "UPDATE parts SET file_path = NULL, uploaded_at = NULL "
                    "WHERE job_id = ? AND idx = ?",
                    [(job_id, i) for i in idx],
                )
                self._bump()
        except sqlite3.Error as exc:
            self._seq = seq
            raise StateError(_write_problem(self.path, exc)) from exc
        self._record_seq()

    # -- operations ------------------------------------------------------------------------

    def begin_operation(
        self,
        job: JobRow,
        *,
        kind: OperationKind,
        batch: int,
        audience_id: str | None,
        file_paths: Iterable[str],
        detail: dict[str, Any] | None = None,
        now: float,
    ) -> int:
        """Commit the intent of an operation, before its request is sent; returns its id."""
        cur = self._write(
            "INSERT INTO operations (job_id, api_base, advertiser_id, audience_id, kind, batch, "
            "file_paths, detail, intent_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                job.id,
                job.api_base,
                job.advertiser_id,
                audience_id,
                kind,
                batch,
                _dumps(list(file_paths)),
                _dumps(detail or {}),
                now,
            ),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def finish_operation(
        self,
        op_id: int,
        outcome: Outcome,
        *,
        now: float,
        audience_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Commit the outcome of an operation; ``audience_id`` (the audience a create made)
        becomes the job's audience in the same transaction."""
        row = self._read("SELECT detail FROM operations WHERE id = ?", (op_id,))
        merged = json.loads(row[0][0]) if row else {}
        merged.update(detail or {})
        seq = self._seq
        try:
            self._sync(True)
            with self._transaction(self.db):
                self._bump()
                self.db.execute(
                    "UPDATE operations SET outcome = ?, result_at = ?, "
                    "audience_id = coalesce(?, audience_id), detail = ? WHERE id = ?",
                    (outcome, now, audience_id, _dumps(merged), op_id),
                )
                if audience_id is not None:
                    self.db.execute(
                        "UPDATE jobs SET audience_id = ?, updated_at = ? "
                        "WHERE id = (SELECT job_id FROM operations WHERE id = ?)",
                        (audience_id, now, op_id),
                    )
        except sqlite3.Error as exc:
            self._seq = seq
            raise StateError(_write_problem(self.path, exc)) from exc
        self._record_seq()

    def operations(self, job_id: int) -> list[OperationRow]:
        rows = self._read("SELECT * FROM operations WHERE job_id = ? ORDER BY id", (job_id,))
        return [_operation(r) for r in rows]

    def operations_on(
        self, api_base: str, advertiser_id: str, audience_id: str
    ) -> list[OperationRow]:
        """Every journaled operation on an audience, of any job, oldest first."""
        rows = self._read(
            "SELECT * FROM operations WHERE api_base = ? AND advertiser_id = ? "
            "AND audience_id = ? ORDER BY id",
            (api_base.rstrip("/"), advertiser_id, audience_id),
        )
        return [_operation(r) for r in rows]

    def operations_between(
        self, api_base: str, advertiser_id: str, audience_id: str, start: float, end: float
    ) -> list[OperationRow]:
        """Operations on an audience, of any job, whose intent falls in ``[start, end)`` and
        that TikTok applied or may have applied (outcome done or still unknown)."""
        rows = self._read(
            "SELECT * FROM operations WHERE api_base = ? AND advertiser_id = ? "
            "AND audience_id = ? AND intent_at >= ? AND intent_at < ? "
            "AND (outcome IS NULL OR outcome = ?) ORDER BY id",
            (api_base.rstrip("/"), advertiser_id, audience_id, start, end, Outcome.DONE),
        )
        return [_operation(r) for r in rows]
