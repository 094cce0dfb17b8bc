"""Exact dedupe over any input size, with flat memory: partition, spill, sort, merge.

Each hashed chunk's binary digests are bucketed by their first ``bits`` bits and written to one
spill file per chunk, bucket after bucket (:func:`spill_chunk`; a chunk of a Parquet column
is spilled as it is hashed, as several such runs one after another in its file, each a
:func:`spill_run`). When the input is read, runs of consecutive buckets (a contiguous slice of
the digest space, sized to ``merge_rows``) are loaded from every run of every spill file,
sorted and made unique (:func:`merge_group`) into one file of sorted unique digests each.
Concatenated in bucket order those files are the globally sorted, unique
digest stream the parts are cut from, so the output depends only on the set of IDs, never on
chunk sizes, worker count or timing.

Cost: digest_size bytes of disk per valid ID for the spill, as much again for the unique runs
when they are all kept (``prepare`` reuses a few files for them instead), and while a group
merges about 3.5 x digest_size + 8 bytes of memory per row of that group (at most
``merge_rows`` rows unless one bucket alone is larger; 1,024 buckets keep a bucket under one
million rows up to about a billion IDs).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from asyncsync.rules.engine import native_for

__all__ = [
    "MergeSource",
    "bucket_counts_to_offsets",
    "count_group",
    "merge_group",
    "plan_groups",
    "sort_unique",
    "spill_chunk",
    "spill_run",
]

Rows = npt.NDArray[np.uint8]
Counts = npt.NDArray[np.int32]
Offsets = npt.NDArray[np.int64]


def _buckets(rows: Rows, bits: int) -> npt.NDArray[np.uint16]:
    high = rows[:, 0].astype(np.uint16) << 8
    return ((high | rows[:, 1]) >> (16 - bits)).astype(np.uint16)


def spill_chunk(digests: bytes, size: int, bits: int, path: str) -> Counts:
    """Write ``digests`` (``size`` bytes each) to ``path`` grouped by bucket; return the
    number of digests per bucket (``2**bits`` counts)."""
    with open(path, "wb") as f:
        return spill_run(digests, size, bits, f)


def spill_run(digests: bytes, size: int, bits: int, f: BinaryIO) -> Counts:
    """Write ``digests`` grouped by bucket at the current end of the open spill file ``f``; a
    file may hold several such runs one after another (a chunk spilled as it is hashed).
    Returns the number of digests per bucket (``2**bits`` counts)."""
    native = native_for()
    if native is not None:  # the same bytes, by a counting sort in C
        data, raw_counts = native.bucket_digests(digests, size, bits)
        f.write(data)
        counts: Counts = np.frombuffer(raw_counts, dtype=np.int32).copy()
        return counts
    rows = np.frombuffer(digests, dtype=np.uint8).reshape(-1, size)
    buckets = _buckets(rows, bits)
    order = np.argsort(buckets, kind="stable")
    f.write(rows.view(f"V{size}").reshape(len(rows))[order].data)
    return np.bincount(buckets, minlength=1 << bits).astype(np.int32)


def bucket_counts_to_offsets(counts: Counts) -> Offsets:
    """Row offset of each bucket in a spill file (``len(counts) + 1`` entries)."""
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets


def plan_groups(totals: Offsets, merge_rows: int) -> list[tuple[int, int]]:
    """Runs ``[first, last)`` of consecutive buckets holding about ``merge_rows`` rows each."""
    groups: list[tuple[int, int]] = []
    start, rows = 0, 0
    for b, n in enumerate(totals.tolist()):
        if rows and rows + n > merge_rows:
            groups.append((start, b))
            start, rows = b, 0
        rows += n
    if rows or not groups:
        groups.append((start, len(totals)))
    return groups


def sort_unique(rows: Rows) -> Rows:
    """``rows`` (one digest a row) sorted bytewise with repeated rows removed."""
    n, size = rows.shape
    if n < 2:
        return rows
    word = 8 if size % 8 == 0 else 4
    keys = np.ascontiguousarray(rows).view(f">u{word}")
    order = np.argsort(keys[:, 0])
    # Gather whole rows as one opaque item each: much faster than 2-D fancy indexing.
    flat = np.ascontiguousarray(rows).view(f"V{size}").reshape(n)
    srt = flat[order].view(np.uint8).reshape(n, size)
    k = srt.view(keys.dtype)
    tie = np.flatnonzero(k[1:, 0] == k[:-1, 0])
    if len(tie) == 0:
        return srt
    # Rows sharing the leading word (true duplicates, mostly) are ordered by all their bytes;
    # they form contiguous runs, which a full-key sort of just those rows keeps in place.
    involved = np.zeros(n, dtype=bool)
    involved[tie] = True
    involved[tie + 1] = True
    idx = np.flatnonzero(involved)
    sub = k[idx]
    reorder = np.lexsort(sub.T[::-1])
    srt_flat = srt.view(f"V{size}").reshape(n)
    srt_flat[idx] = srt_flat[idx][reorder]
    keep = np.ones(n, dtype=bool)
    keep[tie + 1] = ~(k[tie + 1] == k[tie]).all(axis=1)
    return srt_flat[keep].view(np.uint8).reshape(-1, size)


@dataclass(frozen=True, slots=True)
class MergeSource:
    """The rows of a group's buckets in one spill file: they start at byte ``offset`` and
    hold ``counts[j]`` rows of the group's ``j``-th bucket, bucket after bucket."""

    path: str
    offset: int
    counts: tuple[int, ...]


def _load_group(sources: Sequence[MergeSource], size: int) -> bytearray:
    """The rows of a group, laid out bucket after bucket as they are read (one ``preadv``
    per spill file), so the sort's gather stays within one bucket's few hundred KiB at a time."""
    matrix = np.array([s.counts for s in sources], dtype=np.int64).reshape(len(sources), -1)
    per_bucket = matrix.sum(axis=0)
    bucket_start = np.concatenate(([0], np.cumsum(per_bucket)[:-1]))
    within = np.cumsum(matrix, axis=0) - matrix
    dest = (bucket_start + within) * size
    total = int(per_bucket.sum())
    buf = bytearray(total * size)
    view = memoryview(buf)
    for src, row_dest, row_counts in zip(sources, dest.tolist(), matrix.tolist(), strict=True):
        pieces = [view[d : d + c * size] for d, c in zip(row_dest, row_counts, strict=True) if c]
        want = sum(len(p) for p in pieces)
        if not want:
            continue
        fd = os.open(src.path, os.O_RDONLY)
        try:
            got = 0
            for i in range(0, len(pieces), 512):
                batch = pieces[i : i + 512]
                got += os.preadv(fd, batch, src.offset + got)
        finally:
            os.close(fd)
        if got != want:
            raise OSError(f"{src.path}: spill file shorter than expected")
    return buf


def _sort_unique_group(sources: Sequence[MergeSource], size: int) -> tuple[int, memoryview]:
    """Load ``sources`` and sort and dedupe them: (rows loaded, the unique digests' bytes).

    The one engine dispatch of the merge and the count, so both see the same unique rows."""
    buf = _load_group(sources, size)
    total = len(buf) // size
    native = native_for()
    if native is not None:  # the same bytes, by a distribution sort in C, in place
        kept = int(native.sort_unique(buf, size))
        return total, memoryview(buf)[: kept * size]
    unique = sort_unique(np.frombuffer(buf, dtype=np.uint8).reshape(-1, size))
    return total, memoryview(unique.data).cast("B")


def merge_group(
    sources: Sequence[MergeSource], size: int, out_path: str, overwrite: bool = False
) -> tuple[int, int]:
    """Load ``sources``, sort and dedupe them, write the unique digests to ``out_path``.

    ``overwrite``: write them over the start of ``out_path`` (created if missing) without
    truncating it, so that its pages still in the page cache are reused; bytes past the unique
    rows are left as they were, and the caller reads only the rows returned.

    Returns (rows loaded, unique rows written).
    """
    total, unique = _sort_unique_group(sources, size)
    flags = os.O_WRONLY | os.O_CREAT | (0 if overwrite else os.O_TRUNC)
    with open(os.open(out_path, flags, 0o600), "wb") as f:
        f.write(unique)
    return total, len(unique) // size


def count_group(sources: Sequence[MergeSource], size: int) -> tuple[int, int]:
    """Load ``sources`` and count them: (rows loaded, unique rows). Writes nothing."""
    total, unique = _sort_unique_group(sources, size)
    return total, len(unique) // size
