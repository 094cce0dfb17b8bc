"""What the process-pool workers run: hash a chunk and spill it, merge a group, write a part.

Top-level functions taking and returning small picklable values; the bulk data (input bytes of
plain files, digests, parts) moves through files, not through the pool's pipes.
"""

from __future__ import annotations

import ctypes
import multiprocessing.forkserver
import os
import signal
import sys
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from asyncsync.heap import keep_freed_memory
from asyncsync.pipeline.dedupe import SpillRun, spill_ranges, spill_stem
from asyncsync.pipeline.parquet import (
    ColumnJob,
    RowGroupJob,
    column_arrays,
    column_hashes,
    joined_hashes,
)
from asyncsync.pipeline.source import (
    DataJob,
    Job,
    RangeJob,
    count_line_ends,
    csv_values,
    read_range,
)
from asyncsync.rules.hashing import ChunkHashes, hash_chunk, hash_values
from asyncsync.rules.limits import HashAlgo, IdType

__all__ = ["ChunkResult", "HashSettings", "hash_job", "init_worker", "ready"]

_PR_SET_PDEATHSIG = 1
_ORPHANED_EXIT = 70


def ready() -> int:
    """A no-op job: its result tells that the pool has started."""
    return os.getpid()


def init_worker(lifeline: Connection | None = None, arrow: bool = False) -> None:
    """Run once in each pool process: end with the parent, keep freed heap memory.

    Ctrl-C in a terminal reaches the whole process group: workers ignore SIGINT so that only
    the parent reacts (it cancels the stage and shuts the pool down), without worker tracebacks.

    A worker must never outlive the command that started it, however that command ends (a
    SIGKILL included): a leftover worker holds memory and the command's stdout, so that
    ``asyncsync … | cat`` would never end. See :func:`_end_with_parent`.

    Every chunk allocates the same few large numpy arrays; by default glibc maps and unmaps
    each one, and touching fresh pages again costs about a third of the worker's time in the
    kernel: :func:`asyncsync.heap.keep_freed_memory` lets the heap reuse them (the heap still
    stays within the per-worker bound of ``PrepareOptions``). A no-op without glibc.

    ``arrow`` (the command reads Parquet): Arrow's buffers come from that same heap (its system
    allocator) rather than from mimalloc, pyarrow's default, which held about 50 MB more per
    worker for the same record batches.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _end_with_parent(lifeline)
    keep_freed_memory()
    if arrow:
        import pyarrow as pa

        pa.set_memory_pool(pa.system_memory_pool())


def _end_with_parent(lifeline: Connection | None) -> None:
    """Make this worker exit when the command that owns the pool is gone.

    Two mechanisms, each enough on its own:

    * ``lifeline``, the read end of a pipe whose only write end the command holds (any
      platform): a thread waits on it and ends the process at end-of-file, which the kernel
      signals as soon as the command dies, however it dies.
    * Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` makes the kernel kill this worker when its
      parent dies, even while the worker is busy in native code. Under the forkserver start
      method that parent is the fork server, not the command. The fork server exits when the
      command does, once no process holds the write end of its "alive" pipe; but every
      process it forks inherits a copy of that end, so the worker closes its copy first:
      otherwise the workers would keep the fork server alive, and it them.
    """
    _release_fork_server()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no prctl
            pass
    if lifeline is not None:
        threading.Thread(
            target=_exit_when_closed, args=(lifeline,), name="asyncsync-lifeline", daemon=True
        ).start()


def _release_fork_server() -> None:
    """Close this process's inherited copy of the fork server's "alive" pipe (a no-op outside
    a forkserver child, or where the standard library keeps it elsewhere)."""
    server = getattr(multiprocessing.forkserver, "_forkserver", None)
    fd = getattr(server, "_forkserver_alive_fd", None)
    if not isinstance(fd, int):
        return
    try:
        os.close(fd)
    except OSError:
        return
    # This process starts no processes; if it ever did, a fresh fork server would be started.
    server._forkserver_alive_fd = None  # type: ignore[union-attr]


def _exit_when_closed(lifeline: Connection) -> None:
    try:
        lifeline.recv_bytes()  # nothing is ever sent: this returns or raises at end-of-file
    except (EOFError, OSError):
        pass
    os._exit(_ORPHANED_EXIT)


@dataclass(frozen=True, slots=True)
class HashSettings:
    id_type: IdType
    hash_algo: HashAlgo
    sample_cap: int
    bucket_bits: int
    spill_dir: str
    default_country: str | None = None
    """Region of phone numbers written without ``+``/``00`` (``--default-country``)."""


@dataclass(frozen=True, slots=True)
class ChunkResult:
    """What one chunk gave; ``sample`` lines are 1-based within the chunk."""

    seq: int
    input_index: int
    rows: int
    newlines: int
    bytes_read: int
    valid: int
    rejected: tuple[int, int, int]
    sample: tuple[tuple[int, str], ...]
    spill: tuple[SpillRun, ...]
    """Where the chunk's digests went (one run, except for Parquet chunks: see
    :func:`hash_job`), and how many in each bucket."""
    national: int = 0
    """Phone lines rejected as national numbers (without ``--default-country``)."""


def hash_job(job: Job, settings: HashSettings) -> ChunkResult:
    """Read (or take) the chunk, normalize + validate + hash it, spill its digests by bucket."""
    kw = {
        "id_type": settings.id_type,
        "hash_algo": settings.hash_algo,
        "sample_cap": settings.sample_cap,
        "default_country": settings.default_country,
    }
    stem = spill_stem(settings.spill_dir)
    if isinstance(job, ColumnJob | RowGroupJob):
        return _hash_column_job(job, settings, kw, stem)
    if isinstance(job, RangeJob):
        data = read_range(job)
        bytes_read = job.end - job.start
    else:
        data = job.data
        bytes_read = len(data)
    if isinstance(job, DataJob) and job.csv is not None:
        values, lines = csv_values(job)
        hashed = hash_values(values, **kw)  # type: ignore[arg-type]
        sample = tuple((lines[i], reason) for i, reason in hashed.sample)
    else:
        hashed = hash_chunk(data, **kw)  # type: ignore[arg-type]
        sample = tuple((i + 1, reason) for i, reason in hashed.sample)
    counts, offsets = spill_ranges(hashed.digests, hashed.digest_size, settings.bucket_bits, stem)
    return ChunkResult(
        seq=job.seq,
        input_index=job.input_index,
        rows=hashed.rows,
        newlines=count_line_ends(data),
        bytes_read=bytes_read,
        valid=hashed.valid,
        rejected=hashed.rejected,
        sample=sample,
        spill=(SpillRun(stem, counts, offsets),),
        national=hashed.national,
    )


def _hash_column_job(
    job: ColumnJob | RowGroupJob, settings: HashSettings, kw: dict[str, Any], stem: str
) -> ChunkResult:
    """Hash a Parquet chunk array by array and spill its digests as they come, in runs of about
    ``run_rows`` rows (a :class:`RowGroupJob`; a :class:`ColumnJob` is one run), so that a
    worker holds a few record batches and their digests, never a whole row group's."""
    run_rows = job.run_rows if isinstance(job, RowGroupJob) else None
    runs: list[SpillRun] = []
    held: list[ChunkHashes] = []
    rows = valid = bytes_read = national = 0
    rejected = [0, 0, 0]
    sample: list[tuple[int, str]] = []

    def spill() -> None:
        hashed = joined_hashes(held, **kw)
        held.clear()
        bits = settings.bucket_bits
        counts, offsets = spill_ranges(hashed.digests, hashed.digest_size, bits, stem)
        runs.append(SpillRun(stem, counts, offsets))

    for hashed, nbytes in column_hashes(column_arrays(job), **kw):
        if len(sample) < settings.sample_cap:
            sample.extend((rows + i + 1, reason) for i, reason in hashed.sample)
        rows += hashed.rows
        valid += hashed.valid
        bytes_read += nbytes
        national += hashed.national
        rejected = [a + b for a, b in zip(rejected, hashed.rejected, strict=True)]
        held.append(hashed)
        if run_rows is not None and sum(h.rows for h in held) >= run_rows:
            spill()
    if held or not runs:
        spill()
    return ChunkResult(
        seq=job.seq,
        input_index=job.input_index,
        rows=rows,
        newlines=rows,  # one line per value
        bytes_read=bytes_read,
        valid=valid,
        rejected=(rejected[0], rejected[1], rejected[2]),
        sample=tuple(sample[: settings.sample_cap]),
        spill=tuple(runs),
        national=national,
    )
