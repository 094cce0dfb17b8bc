"""The snapshot store: what this tool last delivered to each audience, kept beside the journal.

A mirror sync (``--action mirror``) compares a new export with the snapshot of the audience and
sends only the difference. A REMOVE file must hold the removed digests themselves, so the
snapshot keeps them all: the audience's digests, sorted bytewise and unique, in binary.

One file per (API base, advertiser, audience) under ``STATE_DIR/snapshots/``::

    [0, 4096)     header block: MAGIC, u32 little-endian JSON length, the JSON header, the
                  xxh3-128 of those bytes (16 bytes), zero padding
    [4096, ...)   count x digest_size bytes: the sorted unique binary digests

Size: **32 bytes a member for SHA256 digests, 16 for MD5**, plus 4 KiB (100 M SHA256 members:
3.2 GB). The JSON header names the audience, its ``calculate_type``, ``digest_size``, ``count``,
the xxh3-128 of the body, and ``last_op_id``: the journal's id of the last operation the
snapshot accounts for (any later operation on the audience by another job makes it stale).

A snapshot is written under a temporary name, fsynced and renamed over the old one (then the
directory is fsynced), so a reader sees the old file or the new one, never a mix. A file whose
magic, header checksum, identity or size is wrong is "no trustworthy snapshot" (the caller falls
back to REPLACE); the body's checksum is verified while the body is streamed
(:meth:`Snapshot.iter_body` sets :attr:`Snapshot.body_ok` at the end).

``index.json`` in the same directory maps (API base, advertiser, name) to the audience this tool
last mirrored under that name, for ``--name NAME --action mirror``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final

import xxhash

from asyncsync.errors import StateError
from asyncsync.fsync import fsync_dir
from asyncsync.store._fs import atomic_write_bytes, exclusive_lock

__all__ = [
    "HEADER_BYTES",
    "MAGIC",
    "SNAPSHOT_DIR",
    "PendingSnapshot",
    "Snapshot",
    "SnapshotHeader",
    "SnapshotStore",
    "SnapshotWriter",
]

SNAPSHOT_DIR: Final = "snapshots"
MAGIC: Final = b"ASNAP01\n"
HEADER_BYTES: Final = 4096
FORMAT_VERSION: Final = 1
INDEX_NAME: Final = "index.json"
_LEN: Final = struct.Struct("<I")
_CHECK_BYTES: Final = 16
_READ_ROWS: Final = 1 << 20


@dataclass(frozen=True, kw_only=True)
class SnapshotHeader:
    """The JSON header of a snapshot file."""

    api_base: str
    advertiser_id: str
    audience_id: str
    calculate_type: str
    digest_size: int
    count: int
    body_xxh3: str
    """Hex xxh3-128 of the body bytes."""
    last_op_id: int | None
    """Journal id of the last audience operation this snapshot accounts for."""
    job_id: int | None
    written_at: float
    format: int = FORMAT_VERSION
    history: dict[str, float | int] | None = None
    """Where TikTok's history of the audience stood when the snapshot was sealed (newest
    ``opt_time`` and the entries stamped with it); None when it could not be read. A later
    history entry that no journaled operation accounts for is an operation made outside."""

    def encode(self) -> bytes:
        text = json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()
        head = MAGIC + _LEN.pack(len(text)) + text
        block = head + xxhash.xxh3_128_digest(head)
        if len(block) > HEADER_BYTES:
            raise StateError(f"snapshot header too long ({len(block)} bytes)")
        return block + b"\0" * (HEADER_BYTES - len(block))

    @classmethod
    def decode(cls, block: bytes) -> SnapshotHeader | str:
        """The header in ``block``, or why it is not one (a string)."""
        if len(block) < len(MAGIC) + _LEN.size or not block.startswith(MAGIC):
            return "it is not an asyncsync snapshot (bad magic)"
        (length,) = _LEN.unpack_from(block, len(MAGIC))
        end = len(MAGIC) + _LEN.size + length
        if end + _CHECK_BYTES > min(len(block), HEADER_BYTES):
            return "its header is truncated"
        if xxhash.xxh3_128_digest(block[:end]) != block[end : end + _CHECK_BYTES]:
            return "its header checksum does not match"
        try:
            data = json.loads(block[len(MAGIC) + _LEN.size : end])
            if data.get("format") != FORMAT_VERSION:
                return f"its format {data.get('format')!r} is not {FORMAT_VERSION}"
            header = cls(**data)
        except (ValueError, TypeError) as exc:
            return f"its header is unreadable ({exc})"
        if header.digest_size not in (16, 32) or header.count < 0:
            return "its header holds impossible values"
        return header


@dataclass(frozen=True, kw_only=True)
class PendingSnapshot:
    """A written body (header block still blank), ready to be sealed into the store."""

    path: Path
    digest_size: int
    count: int
    body_xxh3: str


class SnapshotWriter:
    """Write a snapshot body: sorted unique digests appended block by block.

    The first ``HEADER_BYTES`` are left blank for :meth:`SnapshotStore.commit`. Memory: none
    beyond the blocks handed to :meth:`write`.
    """

    def __init__(self, path: Path, digest_size: int) -> None:
        self.path = path
        self.digest_size = digest_size
        self.count = 0
        self._hash = xxhash.xxh3_128()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: BinaryIO | None = open(path, "wb")
        self._file.write(b"\0" * HEADER_BYTES)

    def write(self, digests: bytes | memoryview) -> None:
        if self._file is None:
            raise StateError(f"{self.path}: snapshot writer is closed")
        if len(digests) % self.digest_size:
            raise StateError("snapshot block is not a whole number of digests")
        self._hash.update(digests)
        self._file.write(digests)
        self.count += len(digests) // self.digest_size

    def finish(self) -> PendingSnapshot:
        if self._file is None:
            raise StateError(f"{self.path}: snapshot writer is closed")
        self._file.close()
        self._file = None
        return PendingSnapshot(
            path=self.path,
            digest_size=self.digest_size,
            count=self.count,
            body_xxh3=self._hash.hexdigest(),
        )

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self.path.unlink(missing_ok=True)


class Snapshot:
    """A snapshot file whose header was checked; its body is read with :meth:`iter_body`."""

    def __init__(self, path: Path, header: SnapshotHeader) -> None:
        self.path = path
        self.header = header
        self.body_ok: bool | None = None
        """None until the body was read through; then whether its checksum matched."""

    @property
    def count(self) -> int:
        return self.header.count

    def iter_body(self, block_rows: int = _READ_ROWS) -> Iterator[bytes]:
        """The body in blocks of at most ``block_rows`` digests; verifies the checksum at the
        end (``body_ok``). A body that ends early or runs long also sets ``body_ok = False``."""
        size = self.header.digest_size
        h = xxhash.xxh3_128()
        left = self.header.count * size
        with open(self.path, "rb") as f:
            f.seek(HEADER_BYTES)
            while left:
                block = f.read(min(left, block_rows * size))
                if not block or len(block) % size:
                    self.body_ok = False
                    return
                left -= len(block)
                h.update(block)
                yield block
            extra = f.read(1)
        self.body_ok = not extra and h.hexdigest() == self.header.body_xxh3

    def verify(self) -> bool:
        """Read the whole body and check its checksum (streaming; flat memory)."""
        for _ in self.iter_body():
            pass
        return bool(self.body_ok)


class SnapshotStore:
    """The snapshots of one state directory (``STATE_DIR/snapshots``)."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.root = Path(state_dir) / SNAPSHOT_DIR

    def _ensure(self) -> None:
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(
                f"cannot create the snapshot store {self.root}: {exc.strerror or exc}"
            ) from exc

    def path_for(self, api_base: str, advertiser_id: str, audience_id: str) -> Path:
        key = "\n".join((api_base.rstrip("/"), advertiser_id, audience_id)).encode()
        tag = hashlib.sha256(key).hexdigest()[:16]
        return self.root / f"{advertiser_id}-{audience_id}-{tag}.snap"

    def load(
        self,
        api_base: str,
        advertiser_id: str,
        audience_id: str,
        *,
        calculate_type: str | None = None,
    ) -> tuple[Snapshot | None, str]:
        """The audience's snapshot with a sound header, or (None, why there is none).

        Checks the magic, the header checksum, that the header names this API base, advertiser
        and audience (and ``calculate_type`` when given), and the file size. The body checksum
        is checked as the body is read.
        """
        path = self.path_for(api_base, advertiser_id, audience_id)
        try:
            with open(path, "rb") as f:
                block = f.read(HEADER_BYTES)
                size = os.fstat(f.fileno()).st_size
        except FileNotFoundError:
            return None, "no snapshot of this audience was recorded"
        except OSError as exc:
            return None, f"the snapshot {path} cannot be read ({exc.strerror or exc})"
        header = SnapshotHeader.decode(block)
        if isinstance(header, str):
            return None, f"the snapshot {path.name} is not trustworthy: {header}"
        if (header.api_base, header.advertiser_id, header.audience_id) != (
            api_base.rstrip("/"),
            advertiser_id,
            audience_id,
        ):
            return None, f"the snapshot {path.name} belongs to another audience"
        if calculate_type is not None and header.calculate_type != calculate_type:
            return None, (
                f"the snapshot holds {header.calculate_type} digests, this input gives "
                f"{calculate_type}"
            )
        if size != HEADER_BYTES + header.count * header.digest_size:
            return None, f"the snapshot {path.name} is truncated or torn (size {size} bytes)"
        return Snapshot(path, header), ""

    def commit(
        self,
        pending: PendingSnapshot,
        *,
        api_base: str,
        advertiser_id: str,
        audience_id: str,
        calculate_type: str,
        last_op_id: int | None,
        job_id: int | None,
        written_at: float,
        history: dict[str, float | int] | None = None,
    ) -> Path:
        """Seal ``pending`` with its header and rename it over the audience's snapshot.

        ``pending.path`` must be on the same file system as the store (it is renamed).
        """
        self._ensure()
        header = SnapshotHeader(
            api_base=api_base.rstrip("/"),
            advertiser_id=advertiser_id,
            audience_id=audience_id,
            calculate_type=calculate_type,
            digest_size=pending.digest_size,
            count=pending.count,
            body_xxh3=pending.body_xxh3,
            last_op_id=last_op_id,
            job_id=job_id,
            written_at=written_at,
            history=history,
        )
        dest = self.path_for(api_base, advertiser_id, audience_id)
        try:
            fd = os.open(pending.path, os.O_WRONLY)
            try:
                if os.fstat(fd).st_size != HEADER_BYTES + pending.count * pending.digest_size:
                    raise StateError(f"{pending.path}: pending snapshot has the wrong size")
                os.pwrite(fd, header.encode(), 0)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.chmod(pending.path, 0o600)
            os.replace(pending.path, dest)
            fsync_dir(self.root)
        except OSError as exc:
            raise StateError(f"cannot record the snapshot {dest}: {exc.strerror or exc}") from exc
        return dest

    def discard(self, api_base: str, advertiser_id: str, audience_id: str) -> None:
        """Forget the audience's snapshot (the next mirror sends a REPLACE)."""
        path = self.path_for(api_base, advertiser_id, audience_id)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise StateError(f"cannot remove the snapshot {path}: {exc.strerror or exc}") from exc

    # -- names -----------------------------------------------------------------------------

    @staticmethod
    def _name_key(api_base: str, advertiser_id: str, name: str) -> str:
        return json.dumps([api_base.rstrip("/"), advertiser_id, name])

    @contextlib.contextmanager
    def _index_lock(self) -> Iterator[Path]:
        self._ensure()
        index = self.root / INDEX_NAME
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(
                    exclusive_lock(self.root / (INDEX_NAME + ".lock"), blocking=True)
                )
            except OSError as exc:
                raise StateError(f"cannot lock {index}: {exc.strerror or exc}") from exc
            yield index

    def _read_index(self, index: Path) -> dict[str, Any]:
        try:
            data = json.loads(index.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StateError(
                f"the snapshot index {index} is unreadable ({exc}); move it away to start over"
            ) from None
        names = data.get("names") if isinstance(data, dict) else None
        if not isinstance(names, dict):
            raise StateError(f"the snapshot index {index} is corrupt; move it away to start over")
        return names

    def audience_for_name(self, api_base: str, advertiser_id: str, name: str) -> str | None:
        """The audience this tool last mirrored under ``name`` for this advertiser, if any."""
        index = self.root / INDEX_NAME
        if not index.exists():
            return None
        with self._index_lock():
            value = self._read_index(index).get(self._name_key(api_base, advertiser_id, name))
        return value if isinstance(value, str) else None

    def remember_name(self, api_base: str, advertiser_id: str, name: str, audience_id: str) -> None:
        """Record that ``name`` mirrors into ``audience_id`` (atomically, under a lock)."""
        with self._index_lock() as index:
            names = self._read_index(index)
            key = self._name_key(api_base, advertiser_id, name)
            if names.get(key) == audience_id:
                return
            names[key] = audience_id
            body = json.dumps({"version": 1, "names": names}, indent=1, sort_keys=True)
            try:
                atomic_write_bytes(index, body.encode())
            except OSError as exc:
                raise StateError(f"cannot write {index}: {exc.strerror or exc}") from exc
