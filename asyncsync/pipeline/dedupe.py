"""Exact dedupe over any input size, with flat memory: partition, spill, sort, merge.

Each hashed chunk's binary digests are bucketed by their first ``bits`` bits and appended to
the spill files of the process that hashed it (:func:`spill_ranges`): one file per *range* of
``range_buckets(bits)`` consecutive buckets (:data:`SPILL_RANGES` ranges), each chunk's rows of
a range one run after another, bucket after bucket (a chunk of a Parquet column is spilled as it
is hashed, as several such runs). When the input is read, runs of consecutive buckets (a
contiguous slice of the digest space, sized to ``merge_rows``) are loaded from every run of
every spill file, sorted and made unique (:func:`merge_group`) into one file of sorted unique
digests each. Concatenated in bucket order those files are the globally sorted, unique
digest stream the parts are cut from, so the output depends only on the set of IDs, never on
chunk sizes, worker count or timing. The merges go through the buckets in order, so a range's
spill files are read by no later merge once the merges past its last bucket are done, and can
be deleted while the others run (:func:`ranges_done`).

Cost: digest_size bytes of disk per valid ID for the spill, as much again for the unique runs
when they are all kept (``prepare`` reuses a few files for them instead), and while a group
merges about 3.5 x digest_size + 8 bytes of memory per row of that group (at most
``merge_rows`` rows unless one bucket alone is larger; 1,024 buckets keep a bucket under one
million rows up to about a billion IDs).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from asyncsync.rules.engine import native_for

__all__ = [
    "SPILL_RANGES",
    "MergeSource",
    "SpillRun",
    "bucket_counts_to_offsets",
    "count_group",
    "group_sources",
    "merge_group",
    "plan_groups",
    "range_buckets",
    "range_path",
    "ranges_done",
    "read_spilled",
    "sort_unique",
    "spill_chunk",
    "spill_ranges",
    "spill_stem",
]

Rows = npt.NDArray[np.uint8]
Counts = npt.NDArray[np.int32]
Offsets = npt.NDArray[np.int64]

SPILL_RANGES: Final = 16
"""Into how many files, by ranges of buckets, each process's spill is split: the merges go
through the buckets in order, so a range's files are deleted once the merges are past it, while
the rest still run (at 100 M rows the spill is 3.2 GB, and deleting it all at the end waited on
the disk for seconds: ``benchmarks/README.md``)."""


def _buckets(rows: Rows, bits: int) -> npt.NDArray[np.uint16]:
    high = rows[:, 0].astype(np.uint16) << 8
    return ((high | rows[:, 1]) >> (16 - bits)).astype(np.uint16)


def spill_chunk(digests: bytes, size: int, bits: int, path: str) -> Counts:
    """Write ``digests`` (``size`` bytes each) to ``path`` grouped by bucket; return the
    number of digests per bucket (``2**bits`` counts). One file for one chunk: the merge reads
    it as a :class:`MergeSource` per group (``prepare`` spills by ranges instead,
    :func:`spill_ranges`)."""
    data, counts = _bucketed(digests, size, bits)
    with open(path, "wb") as f:
        f.write(data)
    return counts


def _bucketed(digests: bytes, size: int, bits: int) -> tuple[memoryview, Counts]:
    """``digests`` grouped by bucket (stable within a bucket), and the count of each bucket."""
    native = native_for()
    if native is not None:  # the same bytes, by a counting sort in C
        data, raw_counts = native.bucket_digests(digests, size, bits)
        counts: Counts = np.frombuffer(raw_counts, dtype=np.int32).copy()
        return memoryview(data).cast("B"), counts
    rows = np.frombuffer(digests, dtype=np.uint8).reshape(-1, size)
    buckets = _buckets(rows, bits)
    order = np.argsort(buckets, kind="stable")
    ordered = rows.view(f"V{size}").reshape(len(rows))[order]
    counts = np.bincount(buckets, minlength=1 << bits).astype(np.int32)
    return memoryview(ordered.view(np.uint8).reshape(-1).data), counts


def range_buckets(bits: int) -> int:
    """Buckets per spill range (the last range may not be full)."""
    return max(1, (1 << bits) // SPILL_RANGES)


def spill_stem(spill_dir: str) -> str:
    """The name the spill files of the calling thread start with in ``spill_dir``.

    Each process (each thread, for a parent that hashes on a thread while its pool starts)
    appends to its own files, so a run's offset is the file's size when it starts."""
    return os.path.join(spill_dir, f"w{threading.get_native_id()}")


def range_path(stem: str, r: int) -> str:
    """The spill file of range ``r`` of the files named from ``stem``."""
    return f"{stem}-r{r:02d}.bin"


def spill_ranges(digests: bytes, size: int, bits: int, stem: str) -> tuple[Counts, Offsets]:
    """Append ``digests`` grouped by bucket to the range files of ``stem``: the rows of each
    range of buckets (:func:`range_buckets`) at the end of its own file.

    Returns the number of digests per bucket (``2**bits`` counts) and, for each range, the byte
    offset in its file where these rows start (0 for a range without rows, whose file may
    not exist). Only the calling thread may write to ``stem``'s files (:func:`spill_stem`).
    """
    data, counts = _bucketed(digests, size, bits)
    width = range_buckets(bits)
    firsts = np.arange(0, len(counts), width)
    starts = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    offsets = np.zeros(len(firsts), dtype=np.int64)
    for r, first in enumerate(firsts.tolist()):
        lo = int(starts[first]) * size
        hi = int(starts[min(first + width, len(counts))]) * size
        if hi == lo:
            continue
        fd = os.open(range_path(stem, r), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            offsets[r] = os.fstat(fd).st_size
            piece = data[lo:hi]
            while piece:
                piece = piece[os.write(fd, piece) :]
        finally:
            os.close(fd)
    return counts, offsets


@dataclass(frozen=True, slots=True)
class SpillRun:
    """One run of digests a chunk spilled with :func:`spill_ranges`: the files' ``stem``,
    the rows of each bucket (``counts``) and where they start in each range's file
    (``offsets``, bytes)."""

    stem: str
    counts: Counts
    offsets: Offsets


def read_spilled(runs: Iterable[SpillRun], size: int, bits: int) -> bytes:
    """The digests of ``runs``, run after run, each in bucket order (for checks and tests)."""
    width = range_buckets(bits)
    out = bytearray()
    for run in runs:
        for r, first in enumerate(range(0, len(run.counts), width)):
            n = int(run.counts[first : first + width].sum()) * size
            if n:
                with open(range_path(run.stem, r), "rb") as f:
                    f.seek(int(run.offsets[r]))
                    out += f.read(n)
    return bytes(out)


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


def group_sources(
    runs: Sequence[SpillRun], groups: Sequence[tuple[int, int]], size: int, bits: int
) -> Iterator[list[MergeSource]]:
    """Where each group's rows are in the spill files (in each run, in each range the group
    spans), group after group; runs without rows in a group are left out."""
    if not runs:
        for _ in groups:
            yield []
        return
    width = range_buckets(bits)
    counts = np.stack([r.counts for r in runs]).astype(np.int64)
    starts = np.zeros((len(runs), counts.shape[1] + 1), dtype=np.int64)
    np.cumsum(counts, axis=1, out=starts[:, 1:])
    offsets = np.stack([r.offsets for r in runs])
    for first, last in groups:
        sources: list[MergeSource] = []
        for r in range(first // width, (last - 1) // width + 1):
            lo, hi = max(first, r * width), min(last, (r + 1) * width)
            rows = starts[:, hi] - starts[:, lo]
            at = offsets[:, r] + (starts[:, lo] - starts[:, r * width]) * size
            padded = np.zeros(last - first, dtype=np.int64)
            for i in np.flatnonzero(rows).tolist():
                padded[lo - first : hi - first] = counts[i, lo:hi]
                sources.append(
                    MergeSource(range_path(runs[i].stem, r), int(at[i]), tuple(padded.tolist()))
                )
        yield sources


def ranges_done(last: int, bits: int) -> int:
    """How many spill ranges no merge reads any more once every group up to the one ending
    before bucket ``last`` is merged (groups are merged in bucket order)."""
    width = range_buckets(bits)
    if last >= 1 << bits:
        return -(-(1 << bits) // width)  # all of them, the last one perhaps not full
    return last // width


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
    per source), so the sort's gather stays within one bucket's few hundred KiB at a time."""
    if not sources:
        return bytearray()
    matrix = np.array([s.counts for s in sources], dtype=np.int64).reshape(len(sources), -1)
    per_bucket = matrix.sum(axis=0)
    bucket_start = np.concatenate(([0], np.cumsum(per_bucket)[:-1]))
    within = np.cumsum(matrix, axis=0) - matrix
    dest = (bucket_start + within) * size
    total = int(per_bucket.sum())
    buf = bytearray(total * size)
    view = memoryview(buf)
    fds: dict[str, int] = {}  # a range file holds the rows of many sources
    try:
        for src, at, counts in zip(sources, dest.tolist(), matrix.tolist(), strict=True):
            pieces = [view[d : d + c * size] for d, c in zip(at, counts, strict=True) if c]
            want = sum(len(p) for p in pieces)
            if not want:
                continue
            fd = fds.get(src.path)
            if fd is None:
                fd = fds[src.path] = os.open(src.path, os.O_RDONLY)
            got = 0
            for i in range(0, len(pieces), 512):
                batch = pieces[i : i + 512]
                got += os.preadv(fd, batch, src.offset + got)
            if got != want:
                raise OSError(f"{src.path}: spill file shorter than expected")
    finally:
        for fd in fds.values():
            os.close(fd)
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
