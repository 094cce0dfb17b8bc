"""The mirror diff (a merge of sorted runs) against a set oracle, and the choice of operations."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncsync.errors import StateError
from asyncsync.jobs.mirror.diff import diff_parts
from asyncsync.jobs.mirror.plan import choose_mode
from asyncsync.pipeline.parts import PartInfo
from asyncsync.store.snapshots import Snapshot, SnapshotStore, SnapshotWriter

API = "http://127.0.0.1:1"
ADV = "1"


def digest(i: int, size: int) -> bytes:
    return hashlib.sha256(i.to_bytes(4, "big")).digest()[:size]


def write_parts(root: Path, items: set[bytes], per_part: int) -> list[Path]:
    """Export-like parts: the sorted digests as hex lines, ``per_part`` lines a file."""
    root.mkdir(parents=True, exist_ok=True)
    ordered = sorted(items)
    paths = []
    for k, start in enumerate(range(0, len(ordered), per_part), start=1):
        path = root / f"part-{k:05d}.txt"
        path.write_bytes(
            b"".join(d.hex().encode() + b"\n" for d in ordered[start : start + per_part])
        )
        paths.append(path)
    return paths


def snapshot_of(root: Path, items: set[bytes], size: int) -> Snapshot:
    store = SnapshotStore(root / "state")
    writer = SnapshotWriter(root / "pending", size)
    writer.write(b"".join(sorted(items)))
    store.commit(
        writer.finish(), api_base=API, advertiser_id=ADV, audience_id="9",
        calculate_type="X", last_op_id=None, job_id=None, written_at=0.0,
    )  # fmt: skip
    snap, why = store.load(API, ADV, "9")
    assert snap is not None, why
    return snap


def read_parts(parts: tuple[PartInfo, ...]) -> set[bytes]:
    """The digests of diff parts, checking each file's recorded MD5 and size."""
    out: set[bytes] = set()
    for p in parts:
        raw = p.path.read_bytes()
        assert hashlib.md5(raw).hexdigest() == p.md5 and len(raw) == p.bytes
        out |= {bytes.fromhex(line.decode()) for line in raw.split()}
    return out


@settings(max_examples=40, deadline=None)
@given(
    old=st.sets(st.integers(0, 400), max_size=150),
    new=st.sets(st.integers(0, 400), min_size=1, max_size=150),
    block_rows=st.integers(1, 9),
    per_part=st.integers(1, 40),
    size=st.sampled_from([16, 32]),
    has_old=st.booleans(),
)
def test_diff_equals_set_differences_whatever_the_blocks_and_parts(
    old: set[int], new: set[int], block_rows: int, per_part: int, size: int, has_old: bool
) -> None:
    old_d = {digest(i, size) for i in old} if has_old else set()
    new_d = {digest(i, size) for i in new}
    cap = 7 * (2 * size + 1)  # seven lines a diff part
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        snap = snapshot_of(root, old_d, size) if has_old else None
        result = diff_parts(
            write_parts(root / "in", new_d, per_part), snap, out_dir=root / "diff",
            digest_size=size, max_file_bytes=cap, snapshot_path=root / "new.snap",
            block_rows=block_rows, rel="diff",
        )  # fmt: skip
        added, removed = read_parts(result.added), read_parts(result.removed)
        assert added == new_d - old_d and removed == old_d - new_d
        assert result.added_rows == len(added) and result.removed_rows == len(removed)
        assert result.unchanged_rows == len(new_d & old_d)
        assert (result.new_rows, result.old_rows, result.old_ok) == (len(new_d), len(old_d), True)
        assert all(p.bytes <= cap and p.file.startswith("diff/") for p in result.added)
        assert [p.index for p in result.removed] == list(range(1, len(result.removed) + 1))
        assert result.snapshot is not None and result.snapshot.count == len(new_d)
        body = (root / "new.snap").read_bytes()[4096:]
        assert body == b"".join(sorted(new_d))


def test_diff_refuses_parts_that_are_not_sorted(tmp_path: Path) -> None:
    a, b = sorted([digest(1, 32), digest(2, 32)])
    (tmp_path / "p1.txt").write_bytes(b.hex().encode() + b"\n")
    (tmp_path / "p2.txt").write_bytes(a.hex().encode() + b"\n")
    with pytest.raises(StateError, match="not sorted"):
        diff_parts(
            [tmp_path / "p1.txt", tmp_path / "p2.txt"], None, out_dir=tmp_path / "d",
            digest_size=32, max_file_bytes=10_000, snapshot_path=None,
        )  # fmt: skip


def test_a_corrupt_snapshot_body_is_reported_by_the_diff(tmp_path: Path) -> None:
    old = {digest(i, 32) for i in range(100)}
    snap = snapshot_of(tmp_path, old, 32)
    raw = bytearray(snap.path.read_bytes())
    raw[4096 + 5] ^= 1
    snap.path.write_bytes(bytes(raw))
    result = diff_parts(
        write_parts(tmp_path / "in", old, 30), snap, out_dir=tmp_path / "d",
        digest_size=32, max_file_bytes=10_000, snapshot_path=None,
    )  # fmt: skip
    assert result.old_ok is False


def decide(**changes: object) -> tuple[str, str]:
    values: dict[str, object] = {
        "has_audience": True,
        "snapshot_problem": "",
        "added": 10,
        "removed": 10,
        "old_rows": 1000,
        "replace_threshold": 0.5,
        "replaces_left_today": 1,
        "operations_left_today": 24,
        "diff_operations": 2,
    }
    values.update(changes)
    d = choose_mode(**values)  # type: ignore[arg-type]
    return d.mode, d.reason


def test_mode_choice_and_its_reasons() -> None:
    assert decide(has_audience=False)[0] == "create"
    mode, why = decide(snapshot_problem="no snapshot of this audience was recorded")
    assert mode == "replace" and "no snapshot" in why
    assert decide(added=0, removed=0)[0] == "nothing"
    assert decide() == ("diff", "10 added and 10 removed IDs since the last delivery")
    mode, why = decide(added=400, removed=200)
    assert mode == "replace" and "60%" in why and "threshold of 50%" in why
    mode, why = decide(added=400, removed=200, replaces_left_today=0)
    assert mode == "diff" and "REPLACE is used up" in why
    assert decide(added=400, removed=200, replaces_left_today=0, operations_left_today=1)[0] == (
        "replace"
    )
    assert decide(added=400, removed=200, replace_threshold=float("inf"))[0] == "diff"
    assert decide(added=1, removed=0, replace_threshold=0.0)[0] == "replace"
