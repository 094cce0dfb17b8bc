"""The snapshot store: round trip, atomic replacement, and every way a file can be untrustworthy."""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path

import pytest

from asyncsync.errors import StateError
from asyncsync.store.snapshots import HEADER_BYTES, SnapshotStore, SnapshotWriter

API = "http://127.0.0.1:1"
ADV = "7000000000000000001"


def body(n: int, size: int = 32, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    return b"".join(sorted({rng.randbytes(size) for _ in range(n)}))


def commit(store: SnapshotStore, tmp: Path, data: bytes, audience: str = "1", size: int = 32,
           last_op_id: int | None = 3) -> Path:  # fmt: skip
    writer = SnapshotWriter(tmp / f"pending-{audience}", size)
    for i in range(0, len(data), 1000 * size):
        writer.write(data[i : i + 1000 * size])
    return store.commit(
        writer.finish(),
        api_base=API,
        advertiser_id=ADV,
        audience_id=audience,
        calculate_type="FIRST_SHA256" if size == 32 else "FIRST_MD5",
        last_op_id=last_op_id,
        job_id=7,
        written_at=1.0,
    )


def test_committed_snapshot_reads_back_with_its_header_and_checksum(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "state")
    data = body(2500)
    path = commit(store, tmp_path, data)
    assert path.stat().st_size == HEADER_BYTES + len(data)  # 32 bytes a member
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    snap, why = store.load(API, ADV, "1", calculate_type="FIRST_SHA256")
    assert snap is not None and why == ""
    assert snap.count == 2500 and snap.header.last_op_id == 3 and snap.header.job_id == 7
    assert b"".join(snap.iter_body(block_rows=333)) == data
    assert snap.body_ok is True


def test_md5_snapshots_take_16_bytes_a_member(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "state")
    data = body(100, size=16)
    path = commit(store, tmp_path, data, size=16)
    assert path.stat().st_size == HEADER_BYTES + 100 * 16
    snap, _ = store.load(API, ADV, "1")
    assert snap is not None and snap.header.digest_size == 16 and snap.verify()


def test_missing_torn_foreign_and_garbage_files_are_not_trusted(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "state")
    assert store.load(API, ADV, "1")[1] == "no snapshot of this audience was recorded"
    path = commit(store, tmp_path, body(50))
    assert "FIRST_MD5" in store.load(API, ADV, "1", calculate_type="FIRST_MD5")[1]
    # Another audience's file in this audience's place.
    other = store.path_for(API, ADV, "2")
    other.write_bytes(path.read_bytes())
    snap, why = store.load(API, ADV, "2")
    assert snap is None and "another audience" in why
    # Torn: the body is shorter than the header says.
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size - 1)
    snap, why = store.load(API, ADV, "1")
    assert snap is None and "torn" in why
    # A flipped header byte.
    path = commit(store, tmp_path, body(50))
    raw = bytearray(path.read_bytes())
    raw[20] ^= 1
    path.write_bytes(bytes(raw))
    snap, why = store.load(API, ADV, "1")
    assert snap is None and "checksum" in why
    path.write_bytes(os.urandom(5000))
    snap, why = store.load(API, ADV, "1")
    assert snap is None and "magic" in why


def test_a_flipped_body_byte_fails_the_streamed_checksum(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "state")
    path = commit(store, tmp_path, body(300))
    with path.open("r+b") as f:
        f.seek(HEADER_BYTES + 100)
        byte = f.read(1)
        f.seek(HEADER_BYTES + 100)
        f.write(bytes([byte[0] ^ 0x80]))
    snap, _ = store.load(API, ADV, "1")
    assert snap is not None  # the header is sound...
    assert not snap.verify() and snap.body_ok is False  # ...the body is not


def test_a_failed_commit_leaves_the_previous_snapshot_in_place(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "state")
    commit(store, tmp_path, body(40))
    writer = SnapshotWriter(tmp_path / "bad", 32)
    writer.write(body(10, seed=1))
    pending = writer.finish()
    with (tmp_path / "bad").open("ab") as f:
        f.write(b"x")  # no longer the size the writer reported
    with pytest.raises(StateError, match="wrong size"):
        store.commit(
            pending, api_base=API, advertiser_id=ADV, audience_id="1",
            calculate_type="FIRST_SHA256", last_op_id=None, job_id=None, written_at=2.0,
        )  # fmt: skip
    snap, _ = store.load(API, ADV, "1")
    assert snap is not None and snap.count == 40 and snap.verify()


def test_name_index_maps_names_per_api_and_advertiser(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "state")
    assert store.audience_for_name(API, ADV, "Buyers") is None
    store.remember_name(API, ADV, "Buyers", "11")
    store.remember_name(API, ADV, "Churned", "12")
    store.remember_name(API, ADV, "Buyers", "13")
    assert store.audience_for_name(API, ADV, "Buyers") == "13"
    assert store.audience_for_name(API + "/", ADV, "Churned") == "12"
    assert store.audience_for_name(API, "7000000000000000002", "Buyers") is None
    (store.root / "index.json").write_text("{not json")
    with pytest.raises(StateError, match="index"):
        store.audience_for_name(API, ADV, "Buyers")
