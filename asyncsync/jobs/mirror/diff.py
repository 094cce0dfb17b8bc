"""Mirror diff: the IDs added to and removed from an audience since its last delivery.

The prepare stage writes parts that, read in index order, are one sorted stream of unique
digests (hex lines of equal length). The snapshot (:mod:`asyncsync.store.snapshots`) holds the
digests last delivered, sorted, in binary. :func:`diff_parts` merges the two sorted streams
block by block and writes

- the added digests (in the export, not in the snapshot) and the removed ones (in the snapshot,
  not in the export) as part files by the pipeline's part writer (hex lines, capped at
  ``max_file_bytes``, MD5 computed while writing, renamed when complete), from a binary spill
  of each side;
- the new snapshot body (the export's digests, binary), to be sealed once TikTok accepted the
  operations.

Memory is flat: at most ``2 * block_rows`` digests of each side are held at once (about
``block_rows * (4 * digest_size + 2 * (2 * digest_size + 1) + 16)`` bytes; the default 1 M rows
of SHA256 is about 300 MB), whatever the sizes of the export and the snapshot. Time and disk are
linear: each side is read once; the export's digests are written once more as the new snapshot.

The choice between the diff, a REPLACE and nothing is
:func:`asyncsync.jobs.mirror.plan.choose_mode`.
"""

from __future__ import annotations

import binascii
import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

import numpy as np
import numpy.typing as npt

from asyncsync.errors import StateError, UsageError
from asyncsync.pipeline.parts import PartInfo, PartSource, rows_per_part, write_part
from asyncsync.store.snapshots import PendingSnapshot, Snapshot, SnapshotWriter

__all__ = ["DiffResult", "diff_parts"]

DEFAULT_BLOCK_ROWS: Final = 1 << 20

Digests = npt.NDArray[np.void]  # really fixed-width bytes ("S<size>"), one digest a row


# -- reading the export's parts ------------------------------------------------------------


def _iter_part_digests(
    paths: Sequence[Path], digest_size: int, block_rows: int
) -> Iterator[Digests]:
    """The digests of the parts, in order, as blocks of at most ``block_rows`` rows; checks
    that the stream is strictly increasing (the merge relies on it)."""
    width = 2 * digest_size
    line = width + 1
    dtype = f"S{digest_size}"
    last: bytes | None = None
    for path in paths:
        with open(path, "rb") as f:
            while True:
                raw = f.read(block_rows * line)
                if not raw:
                    break
                if len(raw) % line:
                    raise StateError(f"{path}: part is not whole lines of {width} hex digits")
                lines = np.frombuffer(raw, dtype=np.uint8).reshape(-1, line)
                if not (lines[:, width] == 10).all():
                    raise StateError(f"{path}: part is not whole lines of {width} hex digits")
                try:
                    binary = binascii.unhexlify(np.ascontiguousarray(lines[:, :width]).tobytes())
                except binascii.Error:
                    raise StateError(f"{path}: part holds a line that is not hex") from None
                block = np.frombuffer(binary, dtype=dtype)
                first = bytes(binary[:digest_size])
                if (last is not None and first <= last) or bool((block[1:] <= block[:-1]).any()):
                    raise StateError(f"{path}: parts are not sorted and unique; cannot diff them")
                last = bytes(binary[-digest_size:])
                yield block


def _iter_run_digests(
    paths: Sequence[Path], digest_size: int, block_rows: int
) -> Iterator[Digests]:
    """The digests of files of sorted unique binary digests (prepare's unique runs), in order,
    as blocks of at most ``block_rows`` rows; checks that the stream is strictly increasing."""
    dtype = f"S{digest_size}"
    last: bytes | None = None
    for path in paths:
        with open(path, "rb") as f:
            while raw := f.read(block_rows * digest_size):
                if len(raw) % digest_size:
                    raise StateError(f"{path}: not whole {digest_size}-byte digests")
                block = np.frombuffer(raw, dtype=dtype)
                first = bytes(raw[:digest_size])
                if (last is not None and first <= last) or bool((block[1:] <= block[:-1]).any()):
                    raise StateError(f"{path}: digests are not sorted and unique; cannot diff them")
                last = bytes(raw[-digest_size:])
                yield block


def _iter_snapshot(snapshot: Snapshot, block_rows: int) -> Iterator[Digests]:
    dtype = f"S{snapshot.header.digest_size}"
    for raw in snapshot.iter_body(block_rows):
        yield np.frombuffer(raw, dtype=dtype)


# -- writing diff parts --------------------------------------------------------------------


class _DiffSide:
    """One side of the diff (added or removed): its digests spilled in binary to
    ``<prefix>.bin``, then written as capped hex part files by the pipeline's own part writer
    (``<prefix>/part-NNNNN.txt``, MD5 computed while writing, renamed when complete)."""

    def __init__(
        self, out_dir: Path, prefix: str, digest_size: int, max_file_bytes: int, rel: str
    ) -> None:
        self.dir = out_dir / prefix
        self.spill = out_dir / f"{prefix}.bin"
        self.size = digest_size
        self.rel = f"{rel}/{prefix}" if rel else prefix
        self.per_part = rows_per_part(max_file_bytes, digest_size)
        if self.per_part < 1:
            raise UsageError(f"max_file_bytes {max_file_bytes} holds no {2 * digest_size}-hex line")
        self.rows = 0
        self._f: BinaryIO | None = None

    def write(self, block: Digests) -> None:
        if self._f is None:
            self._f = open(self.spill, "wb")
        self._f.write(block.tobytes())
        self.rows += len(block)

    def close(self) -> list[PartInfo]:
        if self._f is None:
            return []
        self._f.close()
        self._f = None
        self.dir.mkdir(exist_ok=True)
        parts = []
        for k, first in enumerate(range(0, self.rows, self.per_part), start=1):
            source = PartSource(str(self.spill), first, min(first + self.per_part, self.rows))
            part = write_part(k, [source], self.size, str(self.dir))
            parts.append(dataclasses.replace(part, file=f"{self.rel}/{part.file}"))
        self.spill.unlink()
        return parts

    def abort(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        self.spill.unlink(missing_ok=True)


# -- the diff ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class DiffResult:
    """What :func:`diff_parts` found and wrote.

    ``added`` and ``removed`` are the part files (empty when ``write_diff`` was false);
    ``snapshot`` the new snapshot's body (the export's digests; None when not asked for);
    ``old_ok`` is false when the
    old snapshot's body failed its checksum (the diff is then meaningless: send a REPLACE).
    """

    added: tuple[PartInfo, ...]
    removed: tuple[PartInfo, ...]
    added_rows: int
    removed_rows: int
    unchanged_rows: int
    new_rows: int
    old_rows: int
    snapshot: PendingSnapshot | None
    old_ok: bool


def _split(a: Digests, b: Digests) -> tuple[Digests, Digests, int]:
    """(a - b, b - a, |a & b|) of two sorted unique blocks."""
    if not len(b):
        return a, b, 0
    if not len(a):
        return a, b, 0
    idx = np.searchsorted(b, a)
    found = idx < len(b)
    found[found] = b[idx[found]] == a[found]
    in_a = np.zeros(len(b), dtype=bool)
    in_a[idx[found]] = True
    return a[~found], b[~in_a], int(found.sum())


def diff_parts(
    new_parts: Sequence[Path],
    old: Snapshot | None,
    *,
    out_dir: Path,
    digest_size: int,
    max_file_bytes: int,
    snapshot_path: Path | None,
    write_diff: bool = True,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    rel: str = "",
    binary: bool = False,
) -> DiffResult:
    """Merge the export's parts (``new_parts`` in index order) with the ``old`` snapshot.

    ``binary``: ``new_parts`` are files of sorted unique binary digests instead (the unique
    runs of :func:`asyncsync.pipeline.prepare.count`, for a dry run that writes no part).

    Writes ``added/part-NNNNN.txt`` and ``removed/part-NNNNN.txt`` into ``out_dir`` (only when
    ``write_diff``; their :attr:`PartInfo.file` is ``rel/added/part-NNNNN.txt``...) and the
    new snapshot body to ``snapshot_path`` (when given). Synchronous and CPU/IO bound: run it
    in a thread. Raises :class:`StateError` when the parts are not sorted and unique.
    """
    if old is not None and old.header.digest_size != digest_size:
        raise StateError("the snapshot's digest size differs from the export's")
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = None if snapshot_path is None else SnapshotWriter(snapshot_path, digest_size)
    add_w = _DiffSide(out_dir, "added", digest_size, max_file_bytes, rel)
    rem_w = _DiffSide(out_dir, "removed", digest_size, max_file_bytes, rel)
    empty = np.empty(0, dtype=f"S{digest_size}")
    read = _iter_run_digests if binary else _iter_part_digests
    new_it = read(new_parts, digest_size, block_rows)
    old_it: Iterator[Digests] = iter(()) if old is None else _iter_snapshot(old, block_rows)
    a_buf, b_buf = empty, empty
    a_done, b_done = False, old is None
    unchanged = new_rows = old_rows = 0
    try:
        while True:
            if not a_done and len(a_buf) < block_rows:
                block = next(new_it, None)
                if block is None:
                    a_done = True
                else:
                    if writer is not None:
                        writer.write(block.tobytes())
                    new_rows += len(block)
                    a_buf = np.concatenate((a_buf, block)) if len(a_buf) else block
            if not b_done and len(b_buf) < block_rows:
                block = next(old_it, None)
                if block is None:
                    b_done = True
                else:
                    old_rows += len(block)
                    b_buf = np.concatenate((b_buf, block)) if len(b_buf) else block
            if not len(a_buf) and not len(b_buf) and a_done and b_done:
                break
            # Everything up to the smaller of the open sides' last digests is final: the side
            # holding it is consumed whole, so each round makes progress. (A side still open
            # is never empty here: its iterator yields no empty block.)
            limits = [buf[-1] for buf, done in ((a_buf, a_done), (b_buf, b_done)) if not done]
            if limits:
                cut = min(limits)
                ia = int(np.searchsorted(a_buf, cut, side="right"))
                ib = int(np.searchsorted(b_buf, cut, side="right"))
            else:
                ia, ib = len(a_buf), len(b_buf)
            added, removed, same = _split(a_buf[:ia], b_buf[:ib])
            unchanged += same
            if write_diff:
                if len(added):
                    add_w.write(added)
                if len(removed):
                    rem_w.write(removed)
            else:
                add_w.rows += len(added)
                rem_w.rows += len(removed)
            a_buf, b_buf = a_buf[ia:], b_buf[ib:]
        pending = None if writer is None else writer.finish()
        added_parts = add_w.close()
        removed_parts = rem_w.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        add_w.abort()
        rem_w.abort()
        raise
    return DiffResult(
        added=tuple(added_parts),
        removed=tuple(removed_parts),
        added_rows=add_w.rows,
        removed_rows=rem_w.rows,
        unchanged_rows=unchanged,
        new_rows=new_rows,
        old_rows=old_rows,
        snapshot=pending,
        old_ok=old is None or bool(old.body_ok),
    )
